//! Unpacking tar archives (rootfs tarballs, OCI layers) into a directory
//! without ever writing outside it.
//!
//! Absolute entries and `..` are refused; parents are resolved without
//! following any symlink, so an archive cannot plant `etc -> /etc` and
//! then write `etc/passwd` through it; hardlinks must point at entries
//! inside the root. Owners, modes (setuid included), device nodes, xattrs
//! and long names are kept. OCI whiteouts can be turned into overlayfs
//! ones, so an unpacked layer serves as an overlay lower directory.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use tar::EntryType;

use crate::confined::{self, Resolve};

/// What to do with OCI whiteout files (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// A plain root filesystem: names are taken literally.
    Literal,
    /// An OCI layer to be used as an overlay lower: whiteouts become 0/0
    /// character devices, opaque markers the opaque mark ([`crate::overlay_marks`]).
    ToOverlay,
    /// An OCI layer applied onto the layers below it in the same folder:
    /// whiteouts remove what they name, opaque markers empty their folder.
    Apply,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("failed to read the archive")]
    Read(#[source] io::Error),
    #[error("refused entry `{entry}`: {reason}")]
    Refused { entry: String, reason: String },
    #[error("failed to unpack entry `{entry}`")]
    Write {
        entry: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Unpacks `archive` (an uncompressed tar stream) into the existing
/// directory `root`.
pub fn unpack(
    archive: impl Read,
    root: &Path,
    whiteouts: Whiteouts,
) -> Result<UnpackStats, UnpackError> {
    let root_fd = confined::open_root(root).map_err(|source| UnpackError::Write {
        entry: root.display().to_string(),
        source,
    })?;
    let mut archive = tar::Archive::new(archive);
    let mut stats = UnpackStats::default();
    let mut directory_times = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let refused = |reason: String| UnpackError::Refused {
            entry: shown.clone(),
            reason,
        };
        let Some((parents, name)) = confined::split_entry_path(&raw_path).map_err(refused)? else {
            continue;
        };
        stats.entries += 1;
        stats.bytes += entry.header().size().unwrap_or(0);
        let written = write_entry(&root_fd, &mut entry, &parents, &name, whiteouts);
        match written {
            Ok(Some(time)) => directory_times.push((parents, name, time)),
            Ok(None) => {}
            Err(EntryError::Refused(reason)) => return Err(refused(reason)),
            Err(EntryError::Io(source)) => {
                return Err(UnpackError::Write {
                    entry: shown,
                    source,
                });
            }
        }
    }
    // Directory times last: writing entries into them changed them.
    for (parents, name, time) in directory_times.into_iter().rev() {
        let set =
            confined::open_dir(&root_fd, &parents, Resolve::NoSymlinks, false).and_then(|dir| {
                Ok(rustix::fs::utimensat(
                    dir.as_fd(),
                    name.as_os_str(),
                    &time,
                    AtFlags::SYMLINK_NOFOLLOW,
                )?)
            });
        set.map_err(|source| UnpackError::Write {
            entry: Path::new(&name).display().to_string(),
            source,
        })?;
    }
    Ok(stats)
}

enum EntryError {
    Refused(String),
    Io(io::Error),
}

impl From<io::Error> for EntryError {
    fn from(error: io::Error) -> Self {
        EntryError::Io(error)
    }
}

impl From<rustix::io::Errno> for EntryError {
    fn from(error: rustix::io::Errno) -> Self {
        EntryError::Io(error.into())
    }
}

fn timestamps(mtime: u64) -> Timestamps {
    let time = Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

/// Writes one entry; returns the times to set on it later for a directory.
fn write_entry<R: Read>(
    root: &OwnedFd,
    entry: &mut tar::Entry<'_, R>,
    parents: &[OsString],
    name: &OsStr,
    whiteouts: Whiteouts,
) -> Result<Option<Timestamps>, EntryError> {
    let header = entry.header();
    let kind = header.entry_type();
    let mode = Mode::from_raw_mode(header.mode().map_err(EntryError::Io)? & 0o7777);
    let uid = header.uid().map_err(EntryError::Io)?;
    let gid = header.gid().map_err(EntryError::Io)?;
    let ids = (
        u32::try_from(uid).map_err(|_| EntryError::Refused("its uid is too large".into()))?,
        u32::try_from(gid).map_err(|_| EntryError::Refused("its gid is too large".into()))?,
    );
    let owner = (
        Some(rustix::fs::Uid::from_raw(ids.0)),
        Some(rustix::fs::Gid::from_raw(ids.1)),
    );
    let times = timestamps(header.mtime().unwrap_or(0));
    let dir = confined::open_dir(root, parents, Resolve::NoSymlinks, true).map_err(|error| {
        if confined::is_escape(&error) {
            EntryError::Refused(error.to_string())
        } else {
            EntryError::Io(error)
        }
    })?;

    if whiteouts != Whiteouts::Literal
        && let Some(hidden) = name.as_bytes().strip_prefix(b".wh.")
    {
        match (whiteouts, hidden == b".wh..opq") {
            (Whiteouts::ToOverlay, true) => {
                rustix::fs::fsetxattr(
                    dir.as_fd(),
                    crate::overlay_marks::OPAQUE,
                    b"y",
                    XattrFlags::empty(),
                )?;
            }
            (Whiteouts::ToOverlay, false) => {
                let hidden = OsStr::from_bytes(hidden);
                confined::remove_at(&dir, hidden)?;
                rustix::fs::mknodat(
                    dir.as_fd(),
                    hidden,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )?;
            }
            (_, true) => confined::empty_dir(&dir)?,
            (_, false) => confined::remove_at(&dir, OsStr::from_bytes(hidden))?,
        }
        return Ok(None);
    }

    let existing = confined::stat_at(&dir, name)?;
    let existing_is_dir = existing.as_ref().is_some_and(confined::is_dir);
    if existing.is_some() && !(kind == EntryType::Directory && existing_is_dir) {
        confined::remove_at(&dir, name)?;
    }
    match kind {
        EntryType::Directory => {
            if !existing_is_dir {
                rustix::fs::mkdirat(dir.as_fd(), name, Mode::from_raw_mode(0o700))?;
            }
            let fd = rustix::fs::openat(
                dir.as_fd(),
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fchown(fd.as_fd(), owner.0, owner.1)?;
            rustix::fs::fchmod(fd.as_fd(), mode)?;
            set_xattrs(&fd, entry)?;
            Ok(Some(times))
        }
        EntryType::Regular | EntryType::Continuous => {
            let fd = confined::create_file(&dir, name, entry, ids, mode)?;
            set_xattrs(&fd, entry)?;
            rustix::fs::futimens(fd.as_fd(), &times)?;
            Ok(None)
        }
        EntryType::Symlink => {
            let target = link_target(entry, "symlink")?;
            rustix::fs::symlinkat(OsStr::from_bytes(&target), dir.as_fd(), name)?;
            rustix::fs::chownat(
                dir.as_fd(),
                name,
                owner.0,
                owner.1,
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            rustix::fs::utimensat(dir.as_fd(), name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(None)
        }
        EntryType::Link => {
            let target = link_target(entry, "hardlink")?;
            let Some((target_parents, target_name)) = confined::split_entry_path(&target)
                .map_err(|reason| EntryError::Refused(format!("its link target {reason}")))?
            else {
                return Err(EntryError::Refused("a hardlink to the root".into()));
            };
            let target_dir = confined::open_dir(root, &target_parents, Resolve::NoSymlinks, false)
                .map_err(|error| EntryError::Refused(format!("its link target: {error}")))?;
            match confined::stat_at(&target_dir, &target_name)? {
                Some(stat) if !confined::is_dir(&stat) => {}
                Some(_) => return Err(EntryError::Refused("a hardlink to a directory".into())),
                None => {
                    return Err(EntryError::Refused(
                        "a hardlink to an entry that is not in the archive before it".into(),
                    ));
                }
            }
            rustix::fs::linkat(
                target_dir.as_fd(),
                target_name.as_os_str(),
                dir.as_fd(),
                name,
                AtFlags::empty(),
            )?;
            Ok(None)
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let file_type = match kind {
                EntryType::Char => FileType::CharacterDevice,
                EntryType::Block => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            let major = entry.header().device_major().ok().flatten().unwrap_or(0);
            let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
            rustix::fs::mknodat(
                dir.as_fd(),
                name,
                file_type,
                mode,
                rustix::fs::makedev(major, minor),
            )?;
            rustix::fs::chownat(
                dir.as_fd(),
                name,
                owner.0,
                owner.1,
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            rustix::fs::chmodat(dir.as_fd(), name, mode, AtFlags::empty())?;
            rustix::fs::utimensat(dir.as_fd(), name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(None)
        }
        other => Err(EntryError::Refused(format!(
            "entries of type {other:?} are not supported"
        ))),
    }
}

/// The target of a symlink or hardlink entry, which it must have.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, kind: &str) -> Result<Vec<u8>, EntryError> {
    entry
        .link_name_bytes()
        .map(|target| target.into_owned())
        .ok_or_else(|| EntryError::Refused(format!("a {kind} without a target")))
}

/// Applies the entry's `SCHILY.xattr.*` pax records, except overlayfs' own
/// (an archive must not steer how kiln's overlay mounts see it).
fn set_xattrs<R: Read>(fd: &OwnedFd, entry: &mut tar::Entry<'_, R>) -> Result<(), EntryError> {
    let Some(extensions) = entry.pax_extensions().map_err(EntryError::Io)? else {
        return Ok(());
    };
    for extension in extensions {
        let extension = extension.map_err(EntryError::Io)?;
        let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        if crate::overlay_marks::is_bookkeeping(name) {
            continue;
        }
        let name = OsStr::from_bytes(name);
        rustix::fs::fsetxattr(
            fd.as_fd(),
            name,
            extension.value_bytes(),
            XattrFlags::empty(),
        )?;
    }
    Ok(())
}
