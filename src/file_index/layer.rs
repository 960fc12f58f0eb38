//! A layer's index from its tar stream, for layers kiln did not bake
//! (pulled images, bases from other tools): read once, content hashed as
//! it streams, nothing written to disk.

use std::io::{self, Read};

use super::entry::{FileEntry, FileKind, normalize};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

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
                let (digest, size) = crate::hashing::digest_reader(&mut entry)?;
                record.sha256 = Some(digest.hex().to_owned());
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

/// A reader that hands a copy of every chunk it reads to an indexer.
pub struct Indexing<R> {
    inner: R,
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

impl<R: Read> Read for Indexing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read > 0
            && let Some(chunks) = &self.chunks
            && chunks.send(buf[..read].to_vec()).is_err()
        {
            self.chunks = None;
        }
        Ok(read)
    }
}

/// The chunks an [`Indexing`] reader sent, read back as one stream.
struct Chunks {
    received: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.received.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let read = buf.len().min(self.chunk.len() - self.at);
        buf[..read].copy_from_slice(&self.chunk[self.at..self.at + read]);
        self.at += read;
        Ok(read)
    }
}

/// Runs `consume` on a tar stream (it must read it to its end) while
/// another thread indexes the same bytes: one pass over a layer both
/// unpacks it and makes its index, on two cores. Returns what `consume`
/// gave and the index.
pub fn with_index<R: Read, T>(
    reader: R,
    consume: impl FnOnce(&mut io::BufReader<Indexing<R>>) -> T,
) -> (T, io::Result<Vec<FileEntry>>) {
    let (sender, received) = std::sync::mpsc::sync_channel(32);
    let indexer = std::thread::spawn(move || {
        let mut chunks = Chunks {
            received,
            chunk: Vec::new(),
            at: 0,
        };
        let entries = index_tar(&mut chunks);
        // What follows the tar's end (padding) is read, so the sender
        // never waits on a reader that stopped.
        let _ = io::copy(&mut chunks, &mut io::sink());
        entries
    });
    let mut reader = io::BufReader::with_capacity(
        1 << 20,
        Indexing {
            inner: reader,
            chunks: Some(sender),
        },
    );
    let consumed = consume(&mut reader);
    drop(reader);
    let entries = indexer
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the layer indexer stopped")));
    (consumed, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(size);
        header
    }

    #[test]
    fn tar_entries_whiteouts_and_links_become_index_entries() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut append = |path: &str, mut header: tar::Header, link: Option<&str>, data: &[u8]| {
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, data).unwrap();
        };
        append(
            "./etc/",
            header(tar::EntryType::Directory, 0o755, 0),
            None,
            b"",
        );
        append(
            "./etc/a",
            header(tar::EntryType::Regular, 0o4755, 3),
            None,
            b"abc",
        );
        append(
            "etc/b",
            header(tar::EntryType::Link, 0o644, 0),
            Some("./etc/a"),
            b"",
        );
        append(
            "etc/s",
            header(tar::EntryType::Symlink, 0o777, 0),
            Some("a"),
            b"",
        );
        append(
            "etc/.wh.gone",
            header(tar::EntryType::Regular, 0, 0),
            None,
            b"",
        );
        append(
            "var/.wh..wh..opq",
            header(tar::EntryType::Regular, 0, 0),
            None,
            b"",
        );
        let bytes = builder.into_inner().unwrap();
        let entries = index_tar(&mut bytes.as_slice()).unwrap();
        let summary: Vec<(&str, FileKind, u32, Option<&str>)> = entries
            .iter()
            .map(|entry| {
                (
                    entry.path.as_str(),
                    entry.kind,
                    entry.mode,
                    entry.target.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("/etc", FileKind::Dir, 0o755, None),
                ("/etc/a", FileKind::File, 0o4755, None),
                ("/etc/b", FileKind::Hardlink, 0o644, Some("/etc/a")),
                ("/etc/s", FileKind::Symlink, 0o777, Some("a")),
                ("/etc/gone", FileKind::Whiteout, 0, None),
                ("/var", FileKind::Opaque, 0, None),
            ]
        );
        assert_eq!(entries[1].size, 3);
        assert_eq!(
            entries[1].sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }
}
