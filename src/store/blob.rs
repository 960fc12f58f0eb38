//! Writing one blob: hash while writing to a temp file beside the layout,
//! then fsync, rename into place under its digest, and make it read-only.

use std::fs::{File, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::{Result, StoreError};
use super::temp::TempFile;
use crate::hashing::HashingWriter;
use crate::io_error::IoError;
use crate::reference::Digest;

pub struct BlobWriter {
    writer: HashingWriter<BufWriter<TempFile>>,
    blobs_dir: PathBuf,
}

impl BlobWriter {
    pub(super) fn new(tmp_dir: &Path, blobs_dir: PathBuf) -> Result<Self> {
        let temp = TempFile::create(tmp_dir, "blob-")
            .map_err(IoError::at("create a temp file in", tmp_dir))?;
        Ok(Self {
            writer: HashingWriter::new(BufWriter::with_capacity(1 << 20, temp)),
            blobs_dir,
        })
    }

    pub fn written(&self) -> u64 {
        self.writer.written()
    }

    /// Commits only if the content is what `expected` and `size` say;
    /// otherwise the temp file is dropped and nothing is kept.
    pub fn commit_expected(self, expected: &Digest, size: u64) -> Result<()> {
        let actual = Digest::from_sha256(&self.writer.hasher_snapshot());
        let written = self.writer.written();
        if &actual != expected || written != size {
            return Err(StoreError::Mismatch {
                expected: expected.clone(),
                size,
                actual,
                written,
            });
        }
        self.commit().map(|_| ())
    }

    /// Makes the blob durable and visible under its digest; returns the
    /// digest and size. A blob that is there already is left as it is.
    pub fn commit(self) -> Result<(Digest, u64)> {
        let (digest, size, buffered) = self.writer.finish();
        let temp = buffered
            .into_inner()
            .map_err(|error| IoError::new("write", &self.blobs_dir, error.into_error()))?;
        let target = self.blobs_dir.join(digest.hex());
        // A blob there already is kept if it is intact, and replaced if it
        // was damaged: writing the same content again heals the store.
        if target.is_file()
            && crate::hashing::digest_file(&target).is_ok_and(|(existing, _)| existing == digest)
        {
            return Ok((digest, size));
        }
        let file: &File = temp.as_file();
        file.sync_all().map_err(IoError::at("sync", temp.path()))?;
        file.set_permissions(Permissions::from_mode(0o444))
            .map_err(IoError::at("set permissions of", temp.path()))?;
        temp.persist(&target)
            .map_err(IoError::at("store blob", &target))?;
        sync_dir(&self.blobs_dir)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Makes a folder's entries (a file renamed into it) durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(IoError::at("sync", path))?;
    Ok(())
}
