//! Drift: a deployed tree (a mounted disk, a chroot, a VM's filesystem)
//! compared with the file index of the image it came from.
//!
//! The tree is walked once, never following a symlink. Types, modes,
//! owners, link targets and sizes are compared first; only files whose size
//! still matches are hashed, largest first, on every core. The contents of
//! pseudo and in-memory filesystems mounted in the tree (`/proc`, `/sys`,
//! `/dev`, `/run`) are runtime state and are not compared; neither is a
//! disk's `/lost+found` the image does not have, nor what an `--ignore`
//! pattern matches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::glob::Glob;
use super::{FileEntry, FileIndex, FileKind};

/// What `check` compares and how.
#[derive(Clone, Debug)]
pub struct DriftOptions {
    pub ignore: Vec<Glob>,
    /// Threads hashing files.
    pub threads: usize,
}

/// One difference of a changed path: what, and its value in the image and
/// in the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub what: &'static str,
    pub image: String,
    pub root: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathKind {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub path: String,
    pub changes: Vec<Change>,
}

/// A path of the tree that could not be read (a damaged filesystem after
/// an unclean shutdown says `Bad message`), so it could not be compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub path: String,
    pub error: String,
}

/// The drift of a tree from an image, each list sorted by path.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Drift {
    pub added: Vec<PathKind>,
    pub removed: Vec<PathKind>,
    pub changed: Vec<Changed>,
    /// Paths that could not be read: neither matching nor known to differ.
    pub unreadable: Vec<Unreadable>,
    /// Paths of the tree compared with the index.
    pub checked: u64,
    /// Files hashed, and their bytes.
    pub hashed: u64,
    pub hashed_bytes: u64,
    /// Paths skipped: ignored, or below a pseudo filesystem.
    pub skipped: u64,
}

impl Drift {
    /// Whether the tree differs from the image, or could not all be read.
    pub fn drifted(&self) -> bool {
        !(self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.unreadable.is_empty())
    }
}

/// Filesystems whose content is runtime state, by `statfs` magic.
const RUNTIME_FILESYSTEMS: &[i64] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0102_1994, // tmpfs, devtmpfs
    0x1cd1,      // devpts
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x7363_6673, // securityfs
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
    0xcafe_4a11, // bpf
    0x6165_676c, // pstore
    0xde5e_81e4, // efivarfs
    0x1980_0202, // mqueue
    0x9584_58f6, // hugetlbfs
    0x6265_6570, // configfs
    0x6573_5543, // fusectl
    0x4249_4e4d, // binfmt_misc
    0x0187,      // autofs
    0x6e73_6673, // nsfs
    0x858_458f6, // ramfs
];

fn is_runtime_filesystem(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|stat| RUNTIME_FILESYSTEMS.contains(&stat.f_type))
}

fn kind_of(file_type: fs::FileType) -> Option<FileKind> {
    Some(if file_type.is_file() {
        FileKind::File
    } else if file_type.is_dir() {
        FileKind::Dir
    } else if file_type.is_symlink() {
        FileKind::Symlink
    } else if file_type.is_char_device() {
        FileKind::Char
    } else if file_type.is_block_device() {
        FileKind::Block
    } else if file_type.is_fifo() {
        FileKind::Fifo
    } else {
        return None;
    })
}

fn kind_name(kind: Option<FileKind>) -> String {
    kind.map_or("socket", FileKind::name).to_owned()
}

/// A hashed file that did not match: its path, the digest the image
/// gives it, and what the tree holds (or why it could not be read).
type Mismatch<'a> = (&'a str, String, io::Result<String>);

/// A file to hash: its index path, where it is, and the digest it should have.
struct Candidate<'a> {
    path: &'a str,
    on_disk: PathBuf,
    size: u64,
    expected: &'a str,
}

struct Walk<'a> {
    index: HashMap<&'a str, &'a FileEntry>,
    options: &'a DriftOptions,
    seen: HashSet<&'a str>,
    changes: BTreeMap<String, Vec<Change>>,
    added: Vec<PathKind>,
    unreadable: Vec<Unreadable>,
    candidates: Vec<Candidate<'a>>,
    checked: u64,
    skipped: u64,
}

/// Compares the tree at `root` with `index`.
pub fn check(root: &Path, index: &FileIndex, options: &DriftOptions) -> io::Result<Drift> {
    let root_metadata = fs::symlink_metadata(root)?;
    if !root_metadata.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut walk = Walk {
        index: index
            .entries
            .iter()
            .map(|entry| (entry.path.as_str(), entry))
            .collect(),
        options,
        seen: HashSet::new(),
        changes: BTreeMap::new(),
        added: Vec::new(),
        unreadable: Vec::new(),
        candidates: Vec::new(),
        checked: 0,
        skipped: 0,
    };
    walk.directory(root, "", root_metadata.dev())?;
    let (hashed, hashed_bytes) = walk.hash_candidates();
    let removed = index
        .entries
        .iter()
        .filter(|entry| !walk.seen.contains(entry.path.as_str()))
        .filter(|entry| !walk.ignored_here_or_above(&entry.path))
        .map(|entry| PathKind {
            path: entry.path.clone(),
            kind: entry.kind.name().to_owned(),
        })
        .collect();
    walk.added.sort_by(|a, b| a.path.cmp(&b.path));
    walk.unreadable.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Drift {
        added: walk.added,
        removed,
        unreadable: walk.unreadable,
        changed: walk
            .changes
            .into_iter()
            .map(|(path, changes)| Changed { path, changes })
            .collect(),
        checked: walk.checked,
        hashed,
        hashed_bytes,
        skipped: walk.skipped,
    })
}

impl<'a> Walk<'a> {
    fn ignored(&self, path: &str) -> bool {
        // mke2fs makes it on every ext4 disk, kiln's own included.
        let bookkeeping = path == "/lost+found" && !self.index.contains_key(path);
        bookkeeping || self.options.ignore.iter().any(|glob| glob.matches(path))
    }

    /// Whether the path or a folder above it is ignored.
    fn ignored_here_or_above(&self, path: &str) -> bool {
        let mut at = path;
        loop {
            if self.ignored(at) {
                return true;
            }
            match at.rsplit_once('/') {
                Some((up, _)) if !up.is_empty() => at = up,
                _ => return false,
            }
        }
    }

    fn change(&mut self, path: &str, what: &'static str, image: String, root: String) {
        self.changes
            .entry(path.to_owned())
            .or_default()
            .push(Change { what, image, root });
    }

    /// Notes a path that could not be read; what the index has below it
    /// is not reported removed.
    fn unreadable(&mut self, path: &str, error: &io::Error) {
        if let Some((&key, _)) = self.index.get_key_value(path) {
            self.seen.insert(key);
        }
        self.mark_seen_below(path);
        self.unreadable.push(Unreadable {
            path: path.to_owned(),
            error: error.to_string(),
        });
    }

    /// Walks a folder of the tree. Only an unreadable root is an error:
    /// below it, what cannot be read is reported by path, and the walk goes on.
    fn directory(&mut self, dir: &Path, relative: &str, device: u64) -> io::Result<()> {
        let listed = fs::read_dir(dir).and_then(|entries| {
            entries
                .map(|entry| entry.map(|entry| entry.file_name()))
                .collect::<io::Result<Vec<_>>>()
        });
        let mut names = match listed {
            Ok(names) => names,
            Err(error) if relative.is_empty() => {
                return Err(io::Error::new(
                    error.kind(),
                    format!("{}: {error}", dir.display()),
                ));
            }
            Err(error) => {
                self.unreadable(relative, &error);
                return Ok(());
            }
        };
        names.sort();
        for name in names {
            let path = format!("{relative}/{}", name.to_string_lossy());
            if self.ignored(&path) {
                self.skipped += 1;
                continue;
            }
            let on_disk = dir.join(&name);
            let metadata = match fs::symlink_metadata(&on_disk) {
                Ok(metadata) => metadata,
                // Gone between listing and looking: a live machine.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    self.unreadable(&path, &error);
                    continue;
                }
            };
            self.checked += 1;
            let kind = kind_of(metadata.file_type());
            // A mounted /proc or /run: its root's mode and owner are the
            // mount's, and what is below is runtime state.
            let runtime_mount = kind == Some(FileKind::Dir)
                && metadata.dev() != device
                && is_runtime_filesystem(&on_disk);
            let indexed = self
                .index
                .get_key_value(path.as_str())
                .map(|(&key, &entry)| (key, entry));
            match indexed {
                Some((key, entry)) => {
                    self.seen.insert(key);
                    if !runtime_mount {
                        self.compare(key, entry, kind, &metadata, &on_disk);
                    } else if entry.kind != FileKind::Dir {
                        self.change(key, "type", entry.kind.name().to_owned(), kind_name(kind));
                    }
                }
                None => self.added.push(PathKind {
                    path: path.clone(),
                    kind: kind_name(kind),
                }),
            }
            if runtime_mount {
                self.skipped += 1;
                self.mark_seen_below(&path);
            } else if kind == Some(FileKind::Dir)
                && indexed.is_none_or(|(_, entry)| entry.kind == FileKind::Dir)
            {
                self.directory(&on_disk, &path, metadata.dev())?;
            }
        }
        Ok(())
    }

    /// Index paths below a skipped mount are not reported removed.
    fn mark_seen_below(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        let below: Vec<&'a str> = self
            .index
            .keys()
            .filter(|path| path.starts_with(&prefix))
            .copied()
            .collect();
        self.seen.extend(below);
    }

    fn compare(
        &mut self,
        path: &'a str,
        entry: &'a FileEntry,
        kind: Option<FileKind>,
        metadata: &fs::Metadata,
        on_disk: &Path,
    ) {
        if kind != Some(entry.kind) {
            self.change(path, "type", entry.kind.name().to_owned(), kind_name(kind));
            return;
        }
        let mode = metadata.mode() & 0o7777;
        if entry.kind != FileKind::Symlink && mode != entry.mode {
            self.change(
                path,
                "mode",
                format!("{:04o}", entry.mode),
                format!("{mode:04o}"),
            );
        }
        if (metadata.uid(), metadata.gid()) != (entry.uid, entry.gid) {
            self.change(
                path,
                "owner",
                entry.owner(),
                format!("{}:{}", metadata.uid(), metadata.gid()),
            );
        }
        match entry.kind {
            FileKind::Symlink => match fs::read_link(on_disk) {
                Ok(target) => {
                    let target = target.to_string_lossy().into_owned();
                    let expected = entry.target.clone().unwrap_or_default();
                    if target != expected {
                        self.change(path, "target", expected, target);
                    }
                }
                Err(error) => self.unreadable(path, &error),
            },
            FileKind::File => {
                if metadata.len() != entry.size {
                    self.change(
                        path,
                        "content",
                        format!("{} bytes", entry.size),
                        format!("{} bytes", metadata.len()),
                    );
                } else if let Some(expected) = &entry.sha256 {
                    self.candidates.push(Candidate {
                        path,
                        on_disk: on_disk.to_owned(),
                        size: entry.size,
                        expected,
                    });
                }
            }
            FileKind::Char | FileKind::Block => {
                let rdev = metadata.rdev();
                let device = (libc::major(rdev), libc::minor(rdev));
                let expected = entry.device.unwrap_or_default();
                if device != expected {
                    self.change(
                        path,
                        "device",
                        format!("{}:{}", expected.0, expected.1),
                        format!("{}:{}", device.0, device.1),
                    );
                }
            }
            _ => {}
        }
    }

    /// Hashes every candidate on `options.threads` threads, largest first,
    /// recording content changes. Returns files and bytes hashed.
    fn hash_candidates(&mut self) -> (u64, u64) {
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.sort_by_key(|candidate| std::cmp::Reverse(candidate.size));
        let next = AtomicUsize::new(0);
        let mismatches: Mutex<Vec<Mismatch<'_>>> = Mutex::new(Vec::new());
        let threads = self.options.threads.clamp(1, candidates.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        let Some(candidate) = candidates.get(at) else {
                            break;
                        };
                        let actual = match hash_file(&candidate.on_disk) {
                            Ok(hex) if hex == candidate.expected => continue,
                            Ok(hex) => Ok(format!("sha256:{hex}")),
                            Err(error) => Err(error),
                        };
                        mismatches.lock().expect("no hashing thread panics").push((
                            candidate.path,
                            format!("sha256:{}", candidate.expected),
                            actual,
                        ));
                    }
                });
            }
        });
        for (path, image, root) in mismatches.into_inner().expect("no hashing thread panics") {
            match root {
                Ok(root) => self.change(path, "content", image, root),
                Err(error) => self.unreadable(path, &error),
            }
        }
        let bytes = candidates.iter().map(|candidate| candidate.size).sum();
        (candidates.len() as u64, bytes)
    }
}

/// The hex sha256 of a file, opened without following a symlink, read in
/// large chunks.
fn hash_file(path: &Path) -> io::Result<String> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let (digest, _) = crate::hashing::digest_reader(io::BufReader::with_capacity(256 << 10, file))?;
    Ok(digest.hex().to_owned())
}
