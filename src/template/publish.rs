//! The `[publish]` section: channels to move and registries to push to after
//! a good build.

use serde::{Deserialize, Serialize};

use super::check::Checker;
use super::error::DiagnosticKind;
use super::keypath::KeyPath;
use crate::reference::{ChannelName, RemoteRef};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPublish {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    remote: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    pub channels: Vec<ChannelName>,
    /// Repositories (`HOST[:PORT]/REPO`); the image's version is the tag.
    pub remote: Vec<RemoteRef>,
}

pub(crate) fn check(cx: &mut Checker<'_>) -> Option<Publish> {
    let at = KeyPath::root().key("publish");
    if cx.document().get("publish").is_none() {
        return Some(Publish::default());
    }
    let raw: RawPublish = cx.shape(&at, false)?;
    let channels: Vec<Option<ChannelName>> = raw
        .channels
        .iter()
        .enumerate()
        .map(|(index, channel)| {
            cx.parsed(&at.key("channels").index(index), channel, "channel name")
        })
        .collect();
    let remote: Vec<Option<RemoteRef>> = raw
        .remote
        .iter()
        .enumerate()
        .map(|(index, remote)| {
            let remote_at = at.key("remote").index(index);
            let parsed: RemoteRef = cx.parsed(&remote_at, remote, "remote repository")?;
            if parsed.target.is_some() {
                cx.report_help(
                    &remote_at,
                    DiagnosticKind::Invalid(
                        "a publish remote names a repository, not a tag or digest".to_owned(),
                    ),
                    "the image's version is pushed as the tag; write HOST[:PORT]/REPOSITORY"
                        .to_owned(),
                );
                return None;
            }
            Some(parsed)
        })
        .collect();
    Some(Publish {
        channels: channels.into_iter().collect::<Option<_>>()?,
        remote: remote.into_iter().collect::<Option<_>>()?,
    })
}
