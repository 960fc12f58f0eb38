//! A deterministic tar of a directory tree, with overlayfs whiteouts turned
//! into OCI ones.
//!
//! Entries are sorted by name at every level (parent before children),
//! owners are numeric with no names, mtimes are clamped to the epoch, and
//! atime and ctime are never written. A pax header is written only when an
//! entry needs one (long names, xattrs, large ids). Headers are built here
//! rather than by `tar`'s `HeaderMode`, which would drop modes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::{EntryType, Header};

use crate::file_index::{FileEntry, FileKind};
use crate::hashing::HashingReader;

/// How a tree is read.
#[derive(Clone, Copy, Debug)]
pub struct TreeOptions {
    /// Seconds since the epoch: every mtime later than this is clamped to it.
    pub epoch: u64,
    /// The tree is an overlayfs upper directory: 0/0 character devices are
    /// whiteouts and the opaque mark ([`crate::overlay_marks`]) marks
    /// opaque directories.
    pub overlay_upper: bool,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Writes the tar of the tree at `root` (the root itself is not an entry)
/// into `out`, which is returned after the end-of-archive blocks.
pub fn write_tree<W: Write>(root: &Path, out: W, options: TreeOptions) -> io::Result<W> {
    let mut writer = TreeWriter {
        builder: tar::Builder::new(out),
        options,
        hardlinks: HashMap::new(),
        index: None,
    };
    writer.directory(root, &[])?;
    writer.builder.into_inner()
}

/// [`write_tree`], also returning the layer's file index: every entry
/// written, in order, with file contents hashed as they stream.
pub fn write_tree_indexed<W: Write>(
    root: &Path,
    out: W,
    options: TreeOptions,
) -> io::Result<(W, Vec<FileEntry>)> {
    let mut writer = TreeWriter {
        builder: tar::Builder::new(out),
        options,
        hardlinks: HashMap::new(),
        index: Some(Vec::new()),
    };
    writer.directory(root, &[])?;
    let index = writer.index.take().unwrap_or_default();
    Ok((writer.builder.into_inner()?, index))
}

struct TreeWriter<W: Write> {
    builder: tar::Builder<W>,
    options: TreeOptions,
    /// (device, inode) of files with several links, to the first path written.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    /// The layer's file index, when one is asked for.
    index: Option<Vec<FileEntry>>,
}

fn sorted_names(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// The index path of a tar path: `a/b` → `/a/b`.
fn index_path(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = parent.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

impl<W: Write> TreeWriter<W> {
    fn directory(&mut self, dir: &Path, relative: &[u8]) -> io::Result<()> {
        for name in sorted_names(dir)? {
            let path = dir.join(&name);
            let metadata = fs::symlink_metadata(&path)?;
            let entry_path = join(relative, name.as_bytes());
            self.entry(&path, &name, &metadata, entry_path)
                .map_err(|error| {
                    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
                })?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        path: &Path,
        name: &OsStr,
        metadata: &Metadata,
        entry_path: Vec<u8>,
    ) -> io::Result<()> {
        let file_type = metadata.file_type();
        if self.options.overlay_upper && file_type.is_char_device() && metadata.rdev() == 0 {
            let parent = &entry_path[..entry_path.len() - name.len()];
            let whiteout = [parent, WHITEOUT_PREFIX.as_bytes(), name.as_bytes()].concat();
            self.record(&entry_path, metadata, FileKind::Whiteout, |_| {});
            return self.marker(&whiteout);
        }
        if file_type.is_dir() {
            let xattrs = self.xattrs(path)?;
            let opaque = self.options.overlay_upper
                && xattr::get(path, crate::overlay_marks::OPAQUE)?
                    .is_some_and(|value| value == b"y");
            self.append(
                &entry_path,
                metadata,
                EntryType::Directory,
                0,
                None,
                &xattrs,
                io::empty(),
            )?;
            self.record(&entry_path, metadata, FileKind::Dir, |_| {});
            if opaque {
                self.record(&entry_path, metadata, FileKind::Opaque, |_| {});
                self.marker(&join(&entry_path, OPAQUE_WHITEOUT.as_bytes()))?;
            }
            return self.directory(path, &entry_path);
        }
        if file_type.is_symlink() {
            let target = fs::read_link(path)?;
            self.record(&entry_path, metadata, FileKind::Symlink, |entry| {
                entry.target = Some(target.to_string_lossy().into_owned());
            });
            return self.append(
                &entry_path,
                metadata,
                EntryType::Symlink,
                0,
                Some(target.as_os_str().as_bytes()),
                &[],
                io::empty(),
            );
        }
        if file_type.is_file() {
            if metadata.nlink() > 1 {
                let key = (metadata.dev(), metadata.ino());
                if let Some(first) = self.hardlinks.get(&key).cloned() {
                    self.record(&entry_path, metadata, FileKind::Hardlink, |entry| {
                        entry.target = Some(index_path(&first));
                    });
                    return self.append(
                        &entry_path,
                        metadata,
                        EntryType::Link,
                        0,
                        Some(&first),
                        &[],
                        io::empty(),
                    );
                }
                self.hardlinks.insert(key, entry_path.clone());
            }
            let xattrs = self.xattrs(path)?;
            let indexed = self.index.is_some();
            let mut hashing = HashingReader::new(File::open(path)?);
            // Contents are hashed only for a layer's index.
            let data: &mut dyn io::Read = if indexed {
                &mut hashing
            } else {
                hashing.get_mut()
            };
            self.append(
                &entry_path,
                metadata,
                EntryType::Regular,
                metadata.len(),
                None,
                &xattrs,
                data,
            )?;
            if !indexed {
                return Ok(());
            }
            let (digest, size) = hashing.finish();
            self.record(&entry_path, metadata, FileKind::File, |entry| {
                entry.sha256 = Some(digest.hex().to_owned());
                entry.size = size;
            });
            return Ok(());
        }
        let (kind, index_kind) = if file_type.is_char_device() {
            (EntryType::Char, FileKind::Char)
        } else if file_type.is_block_device() {
            (EntryType::Block, FileKind::Block)
        } else if file_type.is_fifo() {
            (EntryType::Fifo, FileKind::Fifo)
        } else {
            // Sockets cannot be stored in a tar; a running service's socket
            // has no place in an image anyway.
            return Ok(());
        };
        self.record(&entry_path, metadata, index_kind, |entry| {
            if index_kind != FileKind::Fifo {
                let device = metadata.rdev();
                entry.device = Some((libc::major(device), libc::minor(device)));
            }
        });
        self.append(&entry_path, metadata, kind, 0, None, &[], io::empty())
    }

    /// Adds an entry to the layer's index, when one is kept.
    fn record(
        &mut self,
        path: &[u8],
        metadata: &Metadata,
        kind: FileKind,
        fill: impl FnOnce(&mut FileEntry),
    ) {
        let Some(index) = &mut self.index else {
            return;
        };
        let mut entry = FileEntry::new(
            index_path(path),
            kind,
            metadata.mode() & 0o7777,
            metadata.uid(),
            metadata.gid(),
        );
        fill(&mut entry);
        index.push(entry);
    }

    /// xattrs to keep: everything but overlayfs' own bookkeeping.
    fn xattrs(&self, path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        let mut xattrs = Vec::new();
        for name in xattr::list(path)? {
            if crate::overlay_marks::is_bookkeeping(name.as_bytes()) {
                continue;
            }
            if let Some(value) = xattr::get(path, &name)? {
                xattrs.push((name, value));
            }
        }
        xattrs.sort();
        Ok(xattrs)
    }

    /// A whiteout marker: an empty regular file, owned by root, mode 0.
    fn marker(&mut self, path: &[u8]) -> io::Result<()> {
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_size(0);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        self.finish_header(header, path, None, Vec::new(), io::empty())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per entry kind, all in this file"
    )]
    fn append(
        &mut self,
        path: &[u8],
        metadata: &Metadata,
        kind: EntryType,
        size: u64,
        link: Option<&[u8]>,
        xattrs: &[(OsString, Vec<u8>)],
        data: impl io::Read,
    ) -> io::Result<()> {
        let mut header = Header::new_ustar();
        let mut pax = Vec::new();
        header.set_entry_type(kind);
        header.set_mode(metadata.mode() & 0o7777);
        for (field, id) in [("uid", metadata.uid()), ("gid", metadata.gid())] {
            let fits = u64::from(id) <= 0o7_777_777;
            let value = if fits { u64::from(id) } else { 0 };
            if field == "uid" {
                header.set_uid(value);
            } else {
                header.set_gid(value);
            }
            if !fits {
                pax.push((field.to_owned(), id.to_string().into_bytes()));
            }
        }
        let mtime = u64::try_from(metadata.mtime())
            .unwrap_or(0)
            .min(self.options.epoch);
        header.set_mtime(mtime);
        if size >= 0o77_777_777_777 {
            pax.push(("size".to_owned(), size.to_string().into_bytes()));
        }
        header.set_size(size);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            let device = metadata.rdev();
            header.set_device_major(libc::major(device))?;
            header.set_device_minor(libc::minor(device))?;
        }
        for (name, value) in xattrs {
            pax.push((
                format!("SCHILY.xattr.{}", name.to_string_lossy()),
                value.clone(),
            ));
        }
        self.finish_header(header, path, link, pax, data)
    }

    /// Sets the path and link name (by pax when too long), then writes a pax
    /// header if one is needed, the header, and the data.
    fn finish_header(
        &mut self,
        mut header: Header,
        path: &[u8],
        link: Option<&[u8]>,
        mut pax: Vec<(String, Vec<u8>)>,
        data: impl io::Read,
    ) -> io::Result<()> {
        if header.set_path(OsStr::from_bytes(path)).is_err() {
            pax.push(("path".to_owned(), path.to_vec()));
            set_truncated(&mut header.as_old_mut().name, path);
        }
        if let Some(link) = link
            && header.set_link_name_literal(link).is_err()
        {
            pax.push(("linkpath".to_owned(), link.to_vec()));
            set_truncated(&mut header.as_old_mut().linkname, link);
        }
        header.set_cksum();
        if !pax.is_empty() {
            pax.sort();
            let records = pax_records(&pax);
            let mut pax_header = Header::new_ustar();
            pax_header.set_entry_type(EntryType::XHeader);
            pax_header.set_size(records.len() as u64);
            pax_header.set_mode(0o644);
            pax_header.set_mtime(0);
            let base = path.rsplit(|byte| *byte == b'/').next().unwrap_or(path);
            let mut name = b"PaxHeaders/".to_vec();
            name.extend_from_slice(&base[..base.len().min(88)]);
            set_truncated(&mut pax_header.as_old_mut().name, &name);
            pax_header.set_cksum();
            self.builder.append(&pax_header, records.as_slice())?;
        }
        self.builder.append(&header, data)
    }
}

fn set_truncated(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    let len = value.len().min(field.len());
    field[..len].copy_from_slice(&value[..len]);
}

/// pax records: `LENGTH key=value\n`, where LENGTH counts the whole record.
fn pax_records(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        let body = key.len() + value.len() + 3;
        let mut length = body + body.to_string().len();
        if length.to_string().len() != body.to_string().len() {
            length = body + length.to_string().len();
        }
        out.extend_from_slice(length.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let records = pax_records(&[("path".to_owned(), b"a".to_vec())]);
        assert_eq!(records, b"9 path=a\n");
        let long = "x".repeat(95);
        let records = pax_records(&[("path".to_owned(), long.as_bytes().to_vec())]);
        let text = String::from_utf8(records.clone()).unwrap();
        let (length, _) = text.split_once(' ').unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), records.len());
    }
}
