//! Machine hygiene: what a build leaves in a root that belongs to one
//! machine or one moment rather than to the image. A fresh `debootstrap`
//! root loses the build host's `resolv.conf` and `hostname` and its
//! machine id; every stage's new files lose SSH host keys (each machine
//! makes its own on first boot) and caches whose bytes differ from build
//! to build with the same inputs, so two cold builds give one digest.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::confined::{self, Resolve};

/// Part of the keys of the stages cleaned here: a change to what is
/// cleaned runs them again.
pub const VERSION: u32 = 1;

/// Files a stage may write that differ between two builds of the same
/// inputs and that nothing needs: caches rebuilt on use, and logs of the
/// build itself.
const BUILD_LEFTOVERS: &[&str] = &[
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
];

/// Cleans a root just made by mmdebstrap.
pub fn clean_new_root(root: &Path) -> io::Result<()> {
    let dir = confined::open_root(root)?;
    // An empty resolv.conf, not none: a stage's name servers are bound
    // onto it, and a VM's DHCP client or resolver fills it in.
    truncate_file(&dir, "etc/resolv.conf")?;
    remove_file(&dir, "etc/hostname")?;
    clean(&dir)
}

/// Cleans what a stage wrote: `dir` is its new files (an overlay's upper
/// folder) or a whole new root.
pub fn clean_stage_output(dir: &Path) -> io::Result<()> {
    clean(&confined::open_root(dir)?)
}

fn clean(dir: &OwnedFd) -> io::Result<()> {
    // Empty: systemd makes a machine id on first boot, and treats that
    // boot as the first.
    truncate_file(dir, "etc/machine-id")?;
    remove_file(dir, "var/lib/dbus/machine-id")?;
    if let Some(ssh) = parent_dir(dir, "etc/ssh")? {
        let mut names: Vec<OsString> = Vec::new();
        for entry in rustix::fs::Dir::read_from(&ssh)? {
            names.push(OsStr::from_bytes(entry?.file_name().to_bytes()).to_owned());
        }
        for name in names {
            let text = name.to_string_lossy();
            if text.starts_with("ssh_host_")
                && (text.ends_with("_key") || text.ends_with("_key.pub"))
            {
                remove_regular(&ssh, &name)?;
            }
        }
    }
    for leftover in BUILD_LEFTOVERS {
        remove_file(dir, leftover)?;
    }
    Ok(())
}

/// The folder at `path` below `root`, through no symlink; `None` when it
/// is missing or reached through one (a stage's symlink is its own
/// business, and never leads kiln out of the root).
fn parent_dir(root: &OwnedFd, path: &str) -> io::Result<Option<OwnedFd>> {
    let components: Vec<OsString> = path.split('/').map(OsString::from).collect();
    match confined::open_dir(root, &components, Resolve::NoSymlinks, false) {
        Ok(dir) => Ok(Some(dir)),
        Err(error) if error.kind() == io::ErrorKind::NotFound || confined::is_escape(&error) => {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The folder holding `path` and the file's name.
fn locate(root: &OwnedFd, path: &str) -> io::Result<Option<(OwnedFd, OsString)>> {
    let (parent, name) = path.rsplit_once('/').unwrap_or((".", path));
    let dir = if parent == "." {
        Some(root.try_clone()?)
    } else {
        parent_dir(root, parent)?
    };
    Ok(dir.map(|dir| (dir, OsString::from(name))))
}

/// Removes `path` if it is a regular file (never through a symlink).
fn remove_file(root: &OwnedFd, path: &str) -> io::Result<()> {
    match locate(root, path)? {
        Some((dir, name)) => remove_regular(&dir, &name),
        None => Ok(()),
    }
}

fn remove_regular(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match confined::stat_at(dir, name)? {
        Some(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {
            Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
        }
        _ => Ok(()),
    }
}

/// Empties `path` if it is a regular file with something in it (never
/// through a symlink).
fn truncate_file(root: &OwnedFd, path: &str) -> io::Result<()> {
    let Some((dir, name)) = locate(root, path)? else {
        return Ok(());
    };
    match confined::stat_at(&dir, &name)? {
        Some(stat)
            if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                && stat.st_size > 0 =>
        {
            let fd = rustix::fs::openat(
                &dir,
                &name,
                OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Ok(rustix::fs::ftruncate(&fd, 0)?)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn host_files_keys_and_caches_go_and_symlinks_stay() {
        let root = tempfile::tempdir().unwrap();
        let at = |path: &str| root.path().join(path);
        for dir in ["etc/ssh", "var/cache/ldconfig", "var/lib/dbus", "var/log"] {
            fs::create_dir_all(at(dir)).unwrap();
        }
        fs::write(at("etc/resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        fs::write(at("etc/hostname"), "buildhost\n").unwrap();
        fs::write(at("etc/machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
        fs::write(at("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        fs::write(at("etc/ssh/ssh_host_ed25519_key.pub"), "public").unwrap();
        fs::write(at("etc/ssh/sshd_config"), "kept").unwrap();
        fs::write(at("var/cache/ldconfig/aux-cache"), "varies").unwrap();
        fs::write(at("var/log/dpkg.log"), "2026-12-02 05:00:00 install").unwrap();
        std::os::unix::fs::symlink("/etc/machine-id", at("var/lib/dbus/machine-id")).unwrap();
        // A stage's own symlink out of the root: kiln never follows it.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("aux-cache"), "host").unwrap();
        fs::create_dir_all(at("var/cache")).unwrap();
        fs::remove_dir_all(at("var/cache/ldconfig")).unwrap();
        std::os::unix::fs::symlink(outside.path(), at("var/cache/ldconfig")).unwrap();
        clean_new_root(root.path()).unwrap();
        assert_eq!(fs::read(outside.path().join("aux-cache")).unwrap(), b"host");
        assert_eq!(fs::read(at("etc/resolv.conf")).unwrap(), b"");
        assert!(!at("etc/hostname").exists());
        assert_eq!(fs::read(at("etc/machine-id")).unwrap(), b"");
        assert!(!at("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(!at("etc/ssh/ssh_host_ed25519_key.pub").exists());
        assert!(at("etc/ssh/sshd_config").exists());
        assert!(!at("var/log/dpkg.log").exists());
        assert!(
            fs::symlink_metadata(at("var/lib/dbus/machine-id"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
