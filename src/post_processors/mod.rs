//! Post-processors: artifacts derived from a stored image, written into the
//! output folder in template order.
//!
//! One file per kind; [`PostProcessor`] is the closed set, dispatched by `match`.

pub mod checksum;
pub mod disk;
pub mod manifest;
pub mod rootfs;
pub mod run;
pub mod shell_local;

use serde::{Deserialize, Serialize};

use crate::provisioners::shell::ShellSpec;
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

pub const KINDS: &[&str] = &["disk", "rootfs", "checksum", "manifest", "shell-local"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum PostProcessor {
    Disk(disk::DiskSettings),
    Rootfs(rootfs::RootfsSettings),
    Checksum,
    Manifest(manifest::ManifestSettings),
    ShellLocal(ShellSpec),
}

impl PostProcessor {
    pub fn kind(&self) -> &'static str {
        match self {
            PostProcessor::Disk(_) => "disk",
            PostProcessor::Rootfs(_) => "rootfs",
            PostProcessor::Checksum => "checksum",
            PostProcessor::Manifest(_) => "manifest",
            PostProcessor::ShellLocal(_) => "shell-local",
        }
    }

    pub fn summary(&self) -> String {
        match self {
            PostProcessor::Disk(disk) => disk.summary(),
            PostProcessor::Rootfs(rootfs) => rootfs.summary(),
            PostProcessor::Checksum => "SHA256SUMS".to_owned(),
            PostProcessor::Manifest(manifest) => manifest.summary(),
            PostProcessor::ShellLocal(spec) => spec.summary(),
        }
    }
}

pub(crate) fn check_all(cx: &mut Checker<'_>) -> Option<Vec<PostProcessor>> {
    let checked: Vec<Option<PostProcessor>> = (0..cx.array_len("post_processor")?)
        .map(|index| {
            let at = KeyPath::root().key("post_processor").index(index);
            match cx.kind(&at, "post-processor", KINDS)?.as_str() {
                "disk" => disk::check(cx, &at).map(PostProcessor::Disk),
                "rootfs" => rootfs::check(cx, &at).map(PostProcessor::Rootfs),
                "checksum" => checksum::check(cx, &at).map(|()| PostProcessor::Checksum),
                "manifest" => manifest::check(cx, &at).map(PostProcessor::Manifest),
                "shell-local" => shell_local::check(cx, &at).map(PostProcessor::ShellLocal),
                _ => unreachable!("Checker::kind only returns one of KINDS"),
            }
        })
        .collect();
    checked.into_iter().collect()
}
