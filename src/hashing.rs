//! Readers and writers that hash (sha256) and count what passes through, so
//! blobs are digested while they stream and never held in memory.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::reference::Digest;

pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The sha256 of what was written so far, without finishing.
    pub fn hasher_snapshot(&self) -> Vec<u8> {
        self.hasher.clone().finalize().to_vec()
    }

    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (
            Digest::from_sha256(&self.hasher.finalize()),
            self.written,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read; at end of stream, fails unless the content matched
/// the expected digest and size. Readers of the store use it, so a damaged
/// blob is an error, never data.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    expected: Digest,
    expected_size: Option<u64>,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
            expected,
            expected_size,
            verified: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if let Some(size) = self.expected_size
            && self.read > size
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {} is larger than its {size} bytes", self.expected),
            ));
        }
        if n == 0 && !buf.is_empty() && !self.verified {
            let actual = Digest::from_sha256(&std::mem::take(&mut self.hasher).finalize());
            if actual != self.expected || self.expected_size.is_some_and(|size| size != self.read) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is damaged: its content hashes to {actual}",
                        self.expected
                    ),
                ));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// The inner reader, to read past the hashing.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The digest and size of everything read.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(&self.hasher.finalize()), self.read)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Hashes everything a reader yields, streaming.
pub fn digest_reader(reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

/// Hashes a whole file, streaming.
pub fn digest_file(path: &std::path::Path) -> io::Result<(Digest, u64)> {
    digest_reader(std::fs::File::open(path)?)
}
