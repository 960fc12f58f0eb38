//! `checksum`: a `SHA256SUMS` file (as `sha256sum -c` reads it) of every
//! artifact written before it.

use serde::Deserialize;

use super::context::PostContext;
use super::error::PostError;

/// The file `checksum` writes.
pub const CHECKSUM_FILE: &str = "SHA256SUMS";
use crate::artifact::Artifact;
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChecksum {}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<()> {
    cx.shape::<RawChecksum>(at, true).map(|_| ())
}

/// Writes `SHA256SUMS` of every artifact so far, named relative to the
/// output folder.
pub(crate) fn run(cx: &mut PostContext<'_>) -> Result<Artifact, PostError> {
    use std::io::Write;

    let mut text = String::new();
    for artifact in &cx.artifacts {
        let name = artifact
            .path
            .strip_prefix(cx.output)
            .unwrap_or(&artifact.path);
        text.push_str(&format!("{}  {}\n", artifact.sha256.hex(), name.display()));
    }
    Ok(cx.write_artifact(CHECKSUM_FILE, |mut out| {
        out.write_all(text.as_bytes())?;
        Ok(out)
    })?)
}
