//! File operations that never leave an image root.
//!
//! Every path is resolved from a directory file descriptor of the root with
//! `openat2`: either refusing any symlink on the way (archives: an entry
//! must not write through a symlink an earlier entry made), or following
//! symlinks as if the root were `/` (the `file` provisioner: `/etc/x` in the
//! image, wherever its symlinks point, stays inside the root). Entries are
//! then made with `*at` calls relative to that directory.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// How symlinks on the way to an entry are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// Any symlink on the way is an error.
    NoSymlinks,
    /// Symlinks are followed, with the root as `/`.
    InRoot,
}

impl Resolve {
    /// `O_NOFOLLOW` for the last component too, when no symlink may be followed.
    fn open_flags(self) -> OFlags {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match self {
            Resolve::NoSymlinks => flags | OFlags::NOFOLLOW,
            Resolve::InRoot => flags,
        }
    }

    fn flags(self) -> ResolveFlags {
        match self {
            Resolve::NoSymlinks => {
                ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
            }
            Resolve::InRoot => ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        }
    }
}

pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// An entry path split into its parent components and its name, after
/// refusing absolute paths and `..`; `.` and empty components are dropped.
/// `None` for the root itself.
pub fn split_entry_path(path: &[u8]) -> Result<Option<(Vec<OsString>, OsString)>, String> {
    if path.starts_with(b"/") {
        return Err("it is an absolute path".to_owned());
    }
    let mut components = Vec::new();
    for component in Path::new(OsStr::from_bytes(path)).components() {
        match component {
            Component::Normal(name) => components.push(name.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err("it contains `..`".to_owned()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("it is an absolute path".to_owned());
            }
        }
    }
    Ok(components.pop().map(|name| (components, name)))
}

fn joined(components: &[OsString]) -> OsString {
    let mut path = OsString::from(".");
    for component in components {
        path.push("/");
        path.push(component);
    }
    path
}

/// Opens (and with `create`, makes, mode 0755) the directory at
/// `components` below `root`.
pub fn open_dir(
    root: &OwnedFd,
    components: &[OsString],
    resolve: Resolve,
    create: bool,
) -> io::Result<OwnedFd> {
    let open = |components: &[OsString]| {
        rustix::fs::openat2(
            root.as_fd(),
            joined(components).as_os_str(),
            resolve.open_flags(),
            Mode::empty(),
            resolve.flags(),
        )
    };
    match open(components) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) if create => {}
        Err(error) => return Err(describe(root, error.into(), components)),
    }
    // Make the missing directories one by one, each below a resolved parent.
    let mut fd = rustix::fs::openat2(
        root.as_fd(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve.flags(),
    )?;
    for depth in 1..=components.len() {
        fd = match open(&components[..depth]) {
            Ok(next) => next,
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(
                    fd.as_fd(),
                    components[depth - 1].as_os_str(),
                    Mode::from_raw_mode(0o755),
                ) {
                    Err(rustix::io::Errno::EXIST) => {
                        let path = joined(&components[..depth]);
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!(
                                "`{}` is a symlink to a directory that does not exist",
                                Path::new(&path).display()
                            ),
                        ));
                    }
                    other => other?,
                }
                let made = open(&components[..depth])
                    .map_err(|error| describe(root, error.into(), &components[..depth]))?;
                // Not left to the umask: the mode ends up in layers and digests.
                rustix::fs::fchmod(made.as_fd(), Mode::from_raw_mode(0o755))?;
                made
            }
            Err(error) => return Err(describe(root, error.into(), &components[..depth])),
        };
    }
    Ok(fd)
}

fn describe(root: &OwnedFd, error: io::Error, components: &[OsString]) -> io::Error {
    let path = Path::new(&joined(components))
        .strip_prefix(".")
        .map(Path::to_owned)
        .unwrap_or_default();
    // O_NOFOLLOW on a symlink reports "not a directory"; say what it is.
    let is_symlink = rustix::fs::statat(
        root.as_fd(),
        joined(components).as_os_str(),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|stat| {
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Symlink
    });
    let error = if is_symlink {
        io::Error::from_raw_os_error(libc::ELOOP)
    } else {
        error
    };
    let escape = |reason: String| io::Error::new(error.kind(), Escape(reason));
    match error.raw_os_error() {
        Some(libc::ELOOP) => escape(format!(
            "`{}` is a symlink, and symlinks are not followed here",
            path.display()
        )),
        Some(libc::ENOTDIR) => escape(format!("`{}` is not a directory", path.display())),
        Some(libc::EXDEV) => escape(format!("`{}` leads outside the root", path.display())),
        _ => io::Error::new(error.kind(), format!("`{}`: {error}", path.display())),
    }
}

/// A path that would leave the root, or go through something that is not a
/// plain directory: the input is refused, not retried.
#[derive(Debug)]
pub struct Escape(pub String);

impl std::fmt::Display for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Escape {}

/// Whether an error from this module is an [`Escape`].
/// Creates a regular file `name` in `dir` with the bytes of `data`: never
/// through a symlink nor over an existing entry, readable only by root until
/// done. The owner is set first, then the mode, since chown clears setuid
/// and setgid. Returns the open file, for xattrs and times.
pub fn create_file(
    dir: &OwnedFd,
    name: &OsStr,
    data: &mut dyn io::Read,
    owner: (u32, u32),
    mode: Mode,
) -> io::Result<OwnedFd> {
    let fd = rustix::fs::openat(
        dir.as_fd(),
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut file = std::fs::File::from(fd);
    io::copy(data, &mut file)?;
    let fd = OwnedFd::from(file);
    rustix::fs::fchown(
        fd.as_fd(),
        Some(rustix::fs::Uid::from_raw(owner.0)),
        Some(rustix::fs::Gid::from_raw(owner.1)),
    )?;
    rustix::fs::fchmod(fd.as_fd(), mode)?;
    Ok(fd)
}

pub fn is_escape(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<Escape>())
}

/// What is at `name` in `dir`, without following a symlink.
pub fn stat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

pub fn is_dir(stat: &rustix::fs::Stat) -> bool {
    rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory
}

/// Removes what is at `name` so a new entry can take its place; a directory
/// is removed with everything in it.
pub fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let Some(stat) = stat_at(dir, name)? else {
        return Ok(());
    };
    if !is_dir(&stat) {
        return Ok(rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty())?);
    }
    let child = rustix::fs::openat(
        dir.as_fd(),
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    empty_dir(&child)?;
    Ok(rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::REMOVEDIR)?)
}

/// Removes everything inside a directory, never following a symlink.
pub fn empty_dir(dir: &OwnedFd) -> io::Result<()> {
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(dir.as_fd())?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let entry_name = entry.file_name().to_bytes();
        if entry_name != b"." && entry_name != b".." {
            names.push(OsStr::from_bytes(entry_name).to_owned());
        }
    }
    for entry_name in names {
        remove_at(dir, &entry_name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_refuse_escapes() {
        assert_eq!(
            split_entry_path(b"./etc/motd").unwrap(),
            Some((vec![OsString::from("etc")], OsString::from("motd")))
        );
        assert_eq!(split_entry_path(b"./").unwrap(), None);
        assert!(split_entry_path(b"/etc/passwd").is_err());
        assert!(split_entry_path(b"etc/../../x").is_err());
    }

    #[test]
    fn symlinks_on_the_way_are_refused_or_confined() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("etc-link")).unwrap();
        std::os::unix::fs::symlink("/missing", root.path().join("dangling")).unwrap();
        let fd = open_root(root.path()).unwrap();
        let error = open_dir(
            &fd,
            &[OsString::from("escape"), OsString::from("x")],
            Resolve::NoSymlinks,
            true,
        )
        .unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
        let error = open_dir(
            &fd,
            &[OsString::from("dangling"), OsString::from("x")],
            Resolve::InRoot,
            true,
        )
        .unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
        // In-root resolution treats the absolute link as the image's /etc.
        std::fs::create_dir(root.path().join("etc")).unwrap();
        open_dir(
            &fd,
            &[OsString::from("etc-link"), OsString::from("nginx")],
            Resolve::InRoot,
            true,
        )
        .unwrap();
        assert!(root.path().join("etc/nginx").is_dir());
        std::fs::create_dir_all(root.path().join(outside.path().strip_prefix("/").unwrap()))
            .unwrap();
        open_dir(
            &fd,
            &[OsString::from("escape"), OsString::from("y")],
            Resolve::InRoot,
            true,
        )
        .unwrap();
        assert!(
            !outside.path().join("y").exists(),
            "nothing is made outside the root"
        );
    }
}
