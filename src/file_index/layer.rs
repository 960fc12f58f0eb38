//! A layer's index from its tar stream, for layers kiln did not bake
//! (pulled images, bases from other tools): read once, content hashed as
//! it streams, nothing written to disk.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use super::{FileEntry, FileKind, normalize};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// A reader that hashes what passes through it.
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

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The hex sha256 and length of what was read.
    pub fn finish(self) -> (String, u64) {
        let hash = self.hasher.finalize();
        let hex = hash.iter().map(|byte| format!("{byte:02x}")).collect();
        (hex, self.read)
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

/// The hex sha256 of everything `reader` yields, and its length.
pub fn hash_reader(reader: impl Read) -> io::Result<(String, u64)> {
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

fn pax_id(entry: &mut tar::Entry<'_, impl Read>, key: &str) -> io::Result<Option<u32>> {
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(None);
    };
    for extension in extensions {
        let extension = extension?;
        if extension.key_bytes() == key.as_bytes() {
            return Ok(std::str::from_utf8(extension.value_bytes())
                .ok()
                .and_then(|value| value.parse().ok()));
        }
    }
    Ok(None)
}

/// Every entry of a layer tar, in tar order, whiteouts as index entries.
pub fn index_tar(reader: &mut dyn Read) -> io::Result<Vec<FileEntry>> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = normalize(&raw_path);
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let header = entry.header().clone();
        let uid = match pax_id(&mut entry, "uid")? {
            Some(uid) => uid,
            None => u32::try_from(header.uid()?).unwrap_or(u32::MAX),
        };
        let gid = match pax_id(&mut entry, "gid")? {
            Some(gid) => gid,
            None => u32::try_from(header.gid()?).unwrap_or(u32::MAX),
        };
        let mut record = FileEntry::new(
            path.clone(),
            FileKind::File,
            header.mode()? & 0o7777,
            uid,
            gid,
        );
        if name == OPAQUE_WHITEOUT {
            record.path = if parent.is_empty() {
                "/".to_owned()
            } else {
                parent.to_owned()
            };
            record.kind = FileKind::Opaque;
            entries.push(record);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            record.path = format!("{parent}/{hidden}");
            record.kind = FileKind::Whiteout;
            entries.push(record);
            continue;
        }
        let link = || {
            entry
                .link_name_bytes()
                .map(|target| String::from_utf8_lossy(&target).into_owned())
        };
        match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let (hex, size) = hash_reader(&mut entry)?;
                record.sha256 = Some(hex);
                record.size = size;
            }
            tar::EntryType::Directory => record.kind = FileKind::Dir,
            tar::EntryType::Symlink => {
                record.kind = FileKind::Symlink;
                record.target = link();
            }
            tar::EntryType::Link => {
                record.kind = FileKind::Hardlink;
                record.target = link().map(|target| normalize(&target));
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                record.kind = if header.entry_type() == tar::EntryType::Char {
                    FileKind::Char
                } else {
                    FileKind::Block
                };
                record.device = Some((
                    header.device_major()?.unwrap_or(0),
                    header.device_minor()?.unwrap_or(0),
                ));
            }
            tar::EntryType::Fifo => record.kind = FileKind::Fifo,
            // pax and GNU long-name headers are read by `tar` itself; other
            // kinds cannot be unpacked and have no place in the index.
            _ => continue,
        }
        entries.push(record);
    }
    Ok(entries)
}
