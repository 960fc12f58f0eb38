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
