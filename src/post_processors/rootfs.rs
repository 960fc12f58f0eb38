//! `rootfs`: the flattened root as one tarball, baked like the layers.

use serde::{Deserialize, Serialize};

use crate::sources::tarball::Compression;
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
        match self.compression {
            Compression::None => "rootfs.tar".to_owned(),
            Compression::Gzip => "rootfs.tar.gz".to_owned(),
            Compression::Zstd => "rootfs.tar.zst".to_owned(),
        }
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
    cx: &mut super::run::PostContext<'_>,
    settings: &RootfsSettings,
) -> Result<(), String> {
    use crate::bake::{TreeOptions, compression_threads, gzip::ParallelGzip, tar::write_tree};

    let root = cx.flattened_root()?;
    let name = format!(
        "{}.{}",
        cx.stem(),
        settings.summary().trim_start_matches("rootfs.")
    );
    let options = TreeOptions {
        epoch: cx.inputs.epoch,
        overlay_upper: false,
    };
    let compression = settings.compression;
    cx.write_artifact(&name, |out| match compression {
        Compression::None => write_tree(&root, out, options),
        Compression::Gzip => write_tree(
            &root,
            ParallelGzip::new(out, compression_threads())?,
            options,
        )?
        .finish(),
        Compression::Zstd => write_tree(&root, zstd::Encoder::new(out, 3)?, options)?.finish(),
    })?;
    Ok(())
}
