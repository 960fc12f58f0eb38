//! `disk`: the flattened root as an ext4 filesystem in a raw or qcow2 VM disk.

use serde::{Deserialize, Serialize};

use crate::template::check::Checker;
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;
use crate::template::units::ByteSize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    format: Option<DiskFormat>,
    size: Option<String>,
    fs: Option<Filesystem>,
    label: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskSettings {
    pub format: DiskFormat,
    /// `None`: the smallest size that fits, plus headroom.
    pub size: Option<ByteSize>,
    pub fs: Filesystem,
    pub label: Option<String>,
}

impl DiskSettings {
    pub fn summary(&self) -> String {
        let format = match self.format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        };
        match self.size {
            Some(size) => format!("{format} ext4, {size}"),
            None => format!("{format} ext4, fitted"),
        }
    }
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
