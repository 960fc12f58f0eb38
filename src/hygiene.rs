//! Machine hygiene: what a build leaves in a root that belongs to one
//! machine or one moment rather than to the image. A fresh `debootstrap`
//! root loses the build host's `resolv.conf` and `hostname` and its
//! machine id; every stage's new files lose SSH host keys (each machine
//! makes its own on first boot) and caches whose bytes differ from build
//! to build with the same inputs, so two cold builds give one digest.

use std::fs;
use std::io;
use std::path::Path;

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
    // An empty resolv.conf, not none: a stage's name servers are bound
    // onto it, and a VM's DHCP client or resolver fills it in.
    truncate_file(&root.join("etc/resolv.conf"))?;
    remove_file(&root.join("etc/hostname"))?;
    clean_stage_output(root)
}

/// Cleans what a stage wrote: `dir` is its new files (an overlay's upper
/// folder) or a whole new root.
pub fn clean_stage_output(dir: &Path) -> io::Result<()> {
    // Empty: systemd makes a machine id on first boot, and treats that
    // boot as the first.
    truncate_file(&dir.join("etc/machine-id"))?;
    remove_file(&dir.join("var/lib/dbus/machine-id"))?;
    let ssh = dir.join("etc/ssh");
    if let Ok(entries) = fs::read_dir(&ssh) {
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("ssh_host_")
                && (name.ends_with("_key") || name.ends_with("_key.pub"))
            {
                remove_file(&entry.path())?;
            }
        }
    }
    for leftover in BUILD_LEFTOVERS {
        remove_file(&dir.join(leftover))?;
    }
    Ok(())
}

/// Removes `path` if it is a regular file (never through a symlink).
fn remove_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_file() => fs::remove_file(path),
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Empties `path` if it is a regular file with something in it (never
/// through a symlink).
fn truncate_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_file() && metadata.len() > 0 => {
            use std::os::unix::fs::OpenOptionsExt;
            let file = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            file.set_len(0)
        }
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files_keys_and_caches_go_and_symlinks_stay() {
        let root = tempfile::tempdir().unwrap();
        let at = |path: &str| root.path().join(path);
        for dir in ["etc/ssh", "var/cache/ldconfig", "var/lib/dbus"] {
            fs::create_dir_all(at(dir)).unwrap();
        }
        fs::write(at("etc/resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        fs::write(at("etc/hostname"), "buildhost\n").unwrap();
        fs::write(at("etc/machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
        fs::write(at("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        fs::write(at("etc/ssh/ssh_host_ed25519_key.pub"), "public").unwrap();
        fs::write(at("etc/ssh/sshd_config"), "kept").unwrap();
        fs::write(at("var/cache/ldconfig/aux-cache"), "varies").unwrap();
        std::os::unix::fs::symlink("/etc/machine-id", at("var/lib/dbus/machine-id")).unwrap();
        clean_new_root(root.path()).unwrap();
        assert_eq!(fs::read(at("etc/resolv.conf")).unwrap(), b"");
        assert!(!at("etc/hostname").exists());
        assert_eq!(fs::read(at("etc/machine-id")).unwrap(), b"");
        assert!(!at("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(!at("etc/ssh/ssh_host_ed25519_key.pub").exists());
        assert!(at("etc/ssh/sshd_config").exists());
        assert!(!at("var/cache/ldconfig/aux-cache").exists());
        assert!(
            fs::symlink_metadata(at("var/lib/dbus/machine-id"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
