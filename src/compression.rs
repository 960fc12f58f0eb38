//! Compressions of tar streams kiln reads and writes: what a tarball source
//! is, what a rootfs artifact is written as, and how a layer's media type
//! says its blob is compressed.

use std::io::{self, BufReader, Read};

use serde::{Deserialize, Serialize};

use crate::oci;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer's media type names, if kiln reads it.
    pub fn of_layer(media_type: &str) -> Option<Self> {
        match media_type {
            oci::MEDIA_TYPE_LAYER_GZIP | oci::DOCKER_MEDIA_TYPE_LAYER_GZIP => Some(Self::Gzip),
            oci::MEDIA_TYPE_LAYER_TAR => Some(Self::None),
            oci::MEDIA_TYPE_LAYER_ZSTD => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The compression of an archive, from its file name: `.tar`,
    /// `.tar.gz` or `.tgz`, `.tar.zst` or `.tzst`.
    pub fn of_archive_name(name: &str) -> Option<Self> {
        if name.ends_with(".tar") {
            Some(Self::None)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Self::Gzip)
        } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
            Some(Self::Zstd)
        } else {
            None
        }
    }

    /// What a tar compressed this way is called: `tar`, `tar.gz`, `tar.zst`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::None => "tar",
            Self::Gzip => "tar.gz",
            Self::Zstd => "tar.zst",
        }
    }
}

/// A reader of the uncompressed stream inside `reader`.
pub fn decompress<'r, R: Read + 'r>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'r>> {
    let buffered = BufReader::with_capacity(1 << 20, reader);
    Ok(match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(buffered)?),
    })
}
