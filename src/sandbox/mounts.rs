//! Mount system calls: the classic `mount(2)` and the new mount API
//! (`open_tree`, `mount_setattr`, `move_mount`) that idmapped mounts and
//! recursive read-only binds need.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn context(what: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c =
        |text: &str| CString::new(text).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let source = source.map(c).transpose()?;
    let target_c = c_path(target)?;
    let fstype = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    let pointer = |value: &Option<CString>| {
        value
            .as_ref()
            .map_or(std::ptr::null(), |value| value.as_ptr())
    };
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let result = unsafe {
        libc::mount(
            pointer(&source),
            target_c.as_ptr(),
            pointer(&fstype),
            flags,
            pointer(&data).cast(),
        )
    };
    if result != 0 {
        return Err(context("mount on", target, io::Error::last_os_error()));
    }
    Ok(())
}

/// A bind mount of `source` on `target`, read-only when asked.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> io::Result<()> {
    let source_text = source.to_string_lossy();
    mount(Some(&source_text), target, None, libc::MS_BIND, None)?;
    if read_only {
        mount(
            None,
            target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        )?;
    }
    Ok(())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the mount tree at `source` (with everything mounted
/// below it when `recursive`), to change and attach elsewhere.
fn clone_tree(source: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let path = c_path(source)?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: a valid path string; the kernel returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(context(
            "clone the mount of",
            source,
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the fd was just returned by the kernel and is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn set_attributes(
    tree: &OwnedFd,
    attributes: &MountAttr,
    recursive: bool,
    what: &Path,
) -> io::Result<()> {
    let empty = c"";
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: the attribute struct lives for the call; its size is passed.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            flags,
            std::ptr::from_ref(attributes),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result != 0 {
        return Err(context(
            "set the mount attributes of",
            what,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn attach(tree: OwnedFd, target: &Path) -> io::Result<()> {
    let empty = c"";
    let target_c = c_path(target)?;
    // SAFETY: both strings are valid; the kernel takes the detached tree.
    let result = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if result != 0 {
        return Err(context(
            "attach a mount on",
            target,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Binds `source` on `target` through the id mapping of the user namespace
/// `userns`: a file owned by N on disk is owned by N inside the namespace,
/// and what the namespace's N writes is stored as N.
pub fn bind_idmapped(
    source: &Path,
    target: &Path,
    userns: &OwnedFd,
    read_only: bool,
) -> io::Result<()> {
    let tree = clone_tree(source, false)?;
    let attributes = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    set_attributes(&tree, &attributes, false, source)?;
    attach(tree, target)
}

/// Binds the whole mount tree at `source` on `target` with `attributes`
/// set on every mount in it (`/sys` read-only, submounts included).
pub fn bind_tree(source: &Path, target: &Path, attributes: u64) -> io::Result<()> {
    let tree = clone_tree(source, true)?;
    let attributes = MountAttr {
        attr_set: attributes,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    set_attributes(&tree, &attributes, true, source)?;
    attach(tree, target)
}
