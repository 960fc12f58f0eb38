//! `rootfs`: the flattened root as one tarball, baked like the layers.

use serde::{Deserialize, Serialize};

use super::context::PostContext;
use super::error::PostError;
use crate::artifact::Artifact;
use crate::bake::{TreeOptions, compression_threads, gzip::ParallelGzip, tar::write_tree};
use crate::compression::Compression;
use crate::template::check::Checker;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRootfs {
    compression: Option<Compression>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RootfsSettings {
    pub compression: Compression,
}

impl RootfsSettings {
    pub fn summary(&self) -> String {
        let how = match self.compression {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        };
        format!("the flattened root as one tar, {how}")
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<RootfsSettings> {
    let raw: RawRootfs = cx.shape(at, true)?;
    Some(RootfsSettings {
        compression: raw.compression.unwrap_or(Compression::Gzip),
    })
}

/// Writes `NAME-VERSION.tar[.gz|.zst]`: the flattened root, baked like a layer.
pub(crate) fn run(
    cx: &mut PostContext<'_>,
    settings: &RootfsSettings,
) -> Result<Artifact, PostError> {
    let root = cx.flattened_root()?;
    let name = format!("{}.{}", cx.stem(), settings.compression.extension());
    let options = TreeOptions {
        epoch: cx.epoch,
        overlay_upper: false,
    };
    let compression = settings.compression;
    Ok(cx.write_artifact(&name, |out| match compression {
        Compression::None => write_tree(&root, out, options),
        Compression::Gzip => write_tree(
            &root,
            ParallelGzip::new(out, compression_threads())?,
            options,
        )?
        .finish(),
        Compression::Zstd => write_tree(&root, zstd::Encoder::new(out, 3)?, options)?.finish(),
    })?)
}
