//! Post-processors: artifacts derived from a stored image, written into the
//! output folder in template order.
//!
//! One file per kind; [`PostProcessor`] is the closed set, dispatched by
//! `match`. Each kind's file holds its check, its settings, and the code
//! that writes its artifact; what an artifact's cache key is made of is
//! here, beside the file name each kind writes.

pub mod checksum;
pub mod context;
pub mod disk;
mod error;
pub mod manifest;
pub mod rootfs;
pub mod sbom;
pub mod shell_local;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::cache::key::KeyInputs;
use crate::disk::DiskSettings;
use crate::provisioners::shell::ShellSpec;
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;
use checksum::CHECKSUM_FILE;
use context::PostContext;
pub use error::PostError;
use manifest::MANIFEST_FILE;

pub const KINDS: &[&str] = &[
    "disk",
    "rootfs",
    "sbom",
    "checksum",
    "manifest",
    "shell-local",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum PostProcessor {
    Disk(DiskSettings),
    Rootfs(rootfs::RootfsSettings),
    Sbom(sbom::SbomSettings),
    Checksum,
    Manifest(manifest::ManifestSettings),
    ShellLocal(ShellSpec),
}

/// The first `disk` post-processor that makes a raw bootable disk (what an
/// AMI is made of), with its place in the list.
pub fn raw_bootable_disk(post_processors: &[PostProcessor]) -> Option<(usize, &DiskSettings)> {
    post_processors
        .iter()
        .enumerate()
        .find_map(|(index, post)| match post {
            PostProcessor::Disk(disk)
                if disk.format == crate::disk::DiskFormat::Raw
                    && disk.boot != crate::disk::BootMode::None =>
            {
                Some((index, disk))
            }
            _ => None,
        })
}

impl PostProcessor {
    pub fn kind(&self) -> &'static str {
        match self {
            PostProcessor::Disk(_) => "disk",
            PostProcessor::Rootfs(_) => "rootfs",
            PostProcessor::Sbom(_) => "sbom",
            PostProcessor::Checksum => "checksum",
            PostProcessor::Manifest(_) => "manifest",
            PostProcessor::ShellLocal(_) => "shell-local",
        }
    }

    pub fn summary(&self, dir: &Path) -> String {
        match self {
            PostProcessor::Disk(disk) => disk.summary(),
            PostProcessor::Rootfs(rootfs) => rootfs.summary(),
            PostProcessor::Sbom(sbom) => sbom.summary(),
            PostProcessor::Checksum => "sha256 of every artifact before it".to_owned(),
            PostProcessor::Manifest(_) => "a record of the build, appended".to_owned(),
            PostProcessor::ShellLocal(spec) => spec.summary(dir),
        }
    }

    /// The file it writes, given the output folder and the artifacts' stem
    /// (`NAME-VERSION`); `None` for a host command, which writes what it likes.
    pub fn artifact_path(&self, output: &Path, stem: &str) -> Option<PathBuf> {
        Some(match self {
            PostProcessor::Disk(disk) => output.join(format!("{stem}.{}", disk.format.extension())),
            PostProcessor::Rootfs(rootfs) => {
                output.join(format!("{stem}.{}", rootfs.compression.extension()))
            }
            PostProcessor::Sbom(sbom) => output.join(format!("{stem}.{}", sbom.format.extension())),
            PostProcessor::Checksum => output.join(CHECKSUM_FILE),
            PostProcessor::Manifest(manifest) => manifest
                .path
                .clone()
                .unwrap_or_else(|| output.join(MANIFEST_FILE)),
            PostProcessor::ShellLocal(_) => return None,
        })
    }

    /// What its artifact is made from, beside the image: its settings, and
    /// for `checksum` the artifacts before it. `None` for the kinds that
    /// run every time: `manifest` appends a record of each build, and a
    /// host command's effects are its own.
    pub fn artifact_inputs(&self, inputs: &mut KeyInputs, earlier: &[Artifact]) -> Option<()> {
        match self {
            PostProcessor::Disk(disk) => {
                let DiskSettings {
                    format,
                    size,
                    fs,
                    label,
                    boot,
                    cmdline,
                    kernel,
                    initrd,
                } = disk;
                inputs
                    .setting("format", format)
                    .setting("size", size)
                    .setting("fs", fs)
                    .setting("label", label);
                // Left out when `none`, so the keys of existing disks stay.
                if *boot != crate::disk::BootMode::None {
                    inputs
                        .setting("boot", boot)
                        .setting("cmdline", cmdline)
                        .setting("kernel", kernel)
                        .setting("initrd", initrd)
                        .setting("bootloaders", &crate::disk::bootloader_versions());
                }
            }
            PostProcessor::Rootfs(rootfs::RootfsSettings { compression }) => {
                inputs.setting("compression", compression);
            }
            PostProcessor::Sbom(sbom::SbomSettings { format }) => {
                inputs
                    .setting("format", format)
                    .setting("kiln", &env!("CARGO_PKG_VERSION"));
            }
            PostProcessor::Checksum => {
                let sums: Vec<(String, &str)> = earlier
                    .iter()
                    .map(|artifact| {
                        (
                            artifact.path.display().to_string(),
                            artifact.sha256.as_str(),
                        )
                    })
                    .collect();
                inputs.setting("artifacts", &sums);
            }
            PostProcessor::Manifest(_) | PostProcessor::ShellLocal(_) => return None,
        }
        Some(())
    }

    /// Writes its artifact, the `index`th of the template; returns it, or
    /// `None` for a host command.
    pub fn run(
        &self,
        cx: &mut PostContext<'_>,
        index: usize,
    ) -> Result<Option<Artifact>, PostError> {
        Ok(Some(match self {
            PostProcessor::Disk(settings) => disk::run(cx, settings)?,
            PostProcessor::Rootfs(settings) => rootfs::run(cx, settings)?,
            PostProcessor::Sbom(settings) => sbom::run(cx, settings)?,
            PostProcessor::Checksum => checksum::run(cx)?,
            PostProcessor::Manifest(settings) => manifest::run(cx, settings)?,
            PostProcessor::ShellLocal(spec) => {
                shell_local::run(cx, spec, index)?;
                return Ok(None);
            }
        }))
    }
}

pub(crate) fn check_all(cx: &mut Checker<'_>) -> Option<Vec<PostProcessor>> {
    let checked: Vec<Option<PostProcessor>> = (0..cx.array_len("post_processor")?)
        .map(|index| {
            let at = KeyPath::root().key("post_processor").index(index);
            match cx.kind(&at, "post-processor", KINDS)?.as_str() {
                "disk" => disk::check(cx, &at).map(PostProcessor::Disk),
                "rootfs" => rootfs::check(cx, &at).map(PostProcessor::Rootfs),
                "sbom" => sbom::check(cx, &at).map(PostProcessor::Sbom),
                "checksum" => checksum::check(cx, &at).map(|()| PostProcessor::Checksum),
                "manifest" => manifest::check(cx, &at).map(PostProcessor::Manifest),
                "shell-local" => shell_local::check(cx, &at).map(PostProcessor::ShellLocal),
                _ => unreachable!("Checker::kind only returns one of KINDS"),
            }
        })
        .collect();
    checked.into_iter().collect()
}
