//! The one way to read a stored layer: its blob checked against its digest
//! and size, decompressed by its media type, and the tar checked against
//! the diff id the image's config gives it. Builds (base image trees), file
//! indexes and exports all read layers through here.

use std::io::{self, Read};

use super::Store;
use super::error::{Result, StoreError};
use crate::compression::{Compression, decompress};
use crate::hashing::VerifyingReader;
use crate::oci::Descriptor;
use crate::reference::Digest;

/// The uncompressed tar of a stored layer. Reading it to the end checks
/// both digests; [`LayerReader::finish`] does that for what is left.
pub struct LayerReader {
    inner: VerifyingReader<Box<dyn Read>>,
    digest: Digest,
}

impl Store {
    /// Opens `layer`, whose tar must hash to `diff_id`.
    pub fn open_layer(&self, layer: &Descriptor, diff_id: &Digest) -> Result<LayerReader> {
        let compression = Compression::of_layer(&layer.media_type).ok_or_else(|| {
            StoreError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            }
        })?;
        let blob = self.open_blob(&layer.digest, Some(layer.size))?;
        let tar = decompress(blob, compression).map_err(|error| StoreError::Damaged {
            digest: layer.digest.clone(),
            reason: error.to_string(),
        })?;
        Ok(LayerReader {
            inner: VerifyingReader::new(tar, diff_id.clone(), None),
            digest: layer.digest.clone(),
        })
    }
}

impl LayerReader {
    /// The layer's blob digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Reads what is left (a tar reader stops at its end-of-archive
    /// blocks), so the blob and the tar are both checked to their last byte.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self.inner, &mut io::sink()).map_err(|error| StoreError::Damaged {
            digest: self.digest.clone(),
            reason: error.to_string(),
        })?;
        Ok(())
    }
}

impl Read for LayerReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}
