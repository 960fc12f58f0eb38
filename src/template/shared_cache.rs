//! The `[cache]` section: registry repositories the stage cache is read
//! from (`from`, in order) and written to (`to`), shared by CI runners.
//! `--cache-from`, `--cache-to` and `KILN_CACHE_FROM`, `KILN_CACHE_TO`
//! take its place for a run.

use serde::{Deserialize, Serialize};

use super::check::Checker;
use super::error::DiagnosticKind;
use super::keypath::KeyPath;
use crate::reference::RemoteRef;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSharedCache {
    #[serde(default)]
    from: Vec<String>,
    to: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SharedCache {
    /// Repositories looked up, in order, for stages missing here.
    pub from: Vec<RemoteRef>,
    /// The repository every shareable stage that ran is pushed to.
    pub to: Option<RemoteRef>,
}

pub(crate) fn check(cx: &mut Checker<'_>) -> Option<SharedCache> {
    let at = KeyPath::root().key("cache");
    if cx.document().get("cache").is_none() {
        return Some(SharedCache::default());
    }
    let raw: RawSharedCache = cx.shape(&at, false)?;
    let from: Vec<Option<RemoteRef>> = raw
        .from
        .iter()
        .enumerate()
        .map(|(index, repository)| repository_at(cx, &at.key("from").index(index), repository))
        .collect();
    let to = match &raw.to {
        Some(repository) => Some(repository_at(cx, &at.key("to"), repository)?),
        None => None,
    };
    Some(SharedCache {
        from: from.into_iter().collect::<Option<_>>()?,
        to,
    })
}

fn repository_at(cx: &mut Checker<'_>, at: &KeyPath, text: &str) -> Option<RemoteRef> {
    let parsed: RemoteRef = cx.parsed(at, text, "cache repository")?;
    if parsed.target.is_some() {
        cx.report_help(
            at,
            DiagnosticKind::Invalid(
                "a cache repository is a repository, not a tag or digest".to_owned(),
            ),
            "each stage is a tag of its own in it; write HOST[:PORT]/REPOSITORY".to_owned(),
        );
        return None;
    }
    Some(parsed)
}
