//! `disk`: the flattened root as a VM disk: a bare ext4 filesystem, or a
//! bootable GPT disk, in raw, qcow2, vmdk, vhd or gce form.

use serde::Deserialize;

use super::context::PostContext;
use super::error::PostError;
use crate::artifact::Artifact;
use crate::disk::{BootMode, DiskFormat, DiskImage, DiskSettings, Filesystem, write_disk};
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
    boot: Option<BootMode>,
    cmdline: Option<String>,
    kernel: Option<String>,
    initrd: Option<String>,
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
    let boot = raw.boot.unwrap_or_default();
    let format = raw.format.unwrap_or(DiskFormat::Raw);
    let cmdline = match cx.optional_text(&at.key("cmdline"), raw.cmdline.as_deref()) {
        Some(Some(cmdline))
            if cmdline
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\') =>
        {
            // GRUB re-quotes words with `"` or `\` its own way: BIOS and
            // UEFI would boot different command lines.
            cx.report(
                &at.key("cmdline"),
                DiagnosticKind::Invalid(
                    "a kernel command line here is one line of words, without control characters, `\"` or `\\`"
                        .to_owned(),
                ),
            );
            None
        }
        other => other,
    };
    let kernel = cx.optional_image_path(&at.key("kernel"), raw.kernel.as_deref());
    let initrd = cx.optional_image_path(&at.key("initrd"), raw.initrd.as_deref());
    if boot == BootMode::None {
        for (key, given) in [
            ("cmdline", raw.cmdline.is_some()),
            ("kernel", raw.kernel.is_some()),
            ("initrd", raw.initrd.is_some()),
        ] {
            if given {
                cx.report_help(
                    &at.key(key),
                    DiagnosticKind::Invalid(format!(
                        "`{key}` is for a bootable disk, and this one has boot = \"none\""
                    )),
                    "set `boot` to \"uefi\", \"bios\" or \"hybrid\"".to_owned(),
                );
            }
        }
    }
    let size = size?;
    if format == DiskFormat::Gce
        && let Some(size) = size
            .filter(|size: &crate::template::units::ByteSize| !size.bytes().is_multiple_of(1 << 30))
    {
        cx.report(
            &at.key("size"),
            DiagnosticKind::InvalidValue {
                what: "size",
                value: size.to_string(),
                reason: "a gce disk is a whole number of GiB (Compute Engine imports no other)"
                    .to_owned(),
            },
        );
        return None;
    }
    if format == DiskFormat::Vhd
        && let Some(size) = size
            .filter(|size: &crate::template::units::ByteSize| !size.bytes().is_multiple_of(1 << 20))
    {
        cx.report(
            &at.key("size"),
            DiagnosticKind::InvalidValue {
                what: "size",
                value: size.to_string(),
                reason: "a vhd is a whole number of MiB (Azure imports no other)".to_owned(),
            },
        );
        return None;
    }
    Some(DiskSettings {
        format,
        size,
        fs: raw.fs.unwrap_or(Filesystem::Ext4),
        label: label?,
        boot,
        cmdline: cmdline?,
        kernel: kernel?,
        initrd: initrd?,
    })
}

/// Writes `NAME-VERSION.raw` (or `.qcow2`, `.vmdk`, `.vhd`, `.tar.gz`)
/// from the flattened root.
pub(crate) fn run(
    cx: &mut PostContext<'_>,
    settings: &DiskSettings,
) -> Result<Artifact, PostError> {
    let root = cx.flattened_root()?;
    let path = cx
        .output
        .join(format!("{}.{}", cx.stem(), settings.format.extension()));
    let architecture = cx.architecture()?;
    let image = DiskImage {
        digest: cx.image.digest,
        name: cx.image.name.as_str(),
        architecture: &architecture,
        epoch: cx.epoch,
    };
    Ok(write_disk(&root, &image, settings, &path)?)
}
