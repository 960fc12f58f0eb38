//! `disk`: the flattened root as an ext4 filesystem in a raw or qcow2 VM disk.

use serde::Deserialize;

use super::context::PostContext;
use super::error::PostError;
use crate::artifact::Artifact;
use crate::disk::{DiskFormat, DiskSettings, Filesystem, write_disk};
use crate::template::check::Checker;
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    format: Option<DiskFormat>,
    size: Option<String>,
    fs: Option<Filesystem>,
    label: Option<String>,
}

/// ext4 labels are at most 16 bytes.
const MAX_LABEL_BYTES: usize = 16;

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<DiskSettings> {
    let raw: RawDisk = cx.shape(at, true)?;
    let size = cx.optional_parsed(&at.key("size"), raw.size.as_deref(), "size");
    let label = match cx.optional_text(&at.key("label"), raw.label.as_deref()) {
        Some(Some(label)) if label.len() > MAX_LABEL_BYTES || label.is_empty() => {
            cx.report(
                &at.key("label"),
                DiagnosticKind::InvalidValue {
                    what: "label",
                    value: label,
                    reason: format!("an ext4 label is 1 to {MAX_LABEL_BYTES} bytes"),
                },
            );
            None
        }
        other => other,
    };
    Some(DiskSettings {
        format: raw.format.unwrap_or(DiskFormat::Raw),
        size: size?,
        fs: raw.fs.unwrap_or(Filesystem::Ext4),
        label: label?,
    })
}

/// Writes `NAME-VERSION.raw` or `.qcow2` from the flattened root.
pub(crate) fn run(
    cx: &mut PostContext<'_>,
    settings: &DiskSettings,
) -> Result<Artifact, PostError> {
    let root = cx.flattened_root()?;
    let path = cx
        .output
        .join(format!("{}.{}", cx.stem(), settings.format.extension()));
    Ok(write_disk(
        &root,
        cx.image.digest,
        cx.image.name.as_str(),
        settings,
        cx.epoch,
        &path,
    )?)
}
