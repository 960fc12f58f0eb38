//! A build's private work folder under `$KILN_HOME/tmp`.
//!
//! It holds each stage's overlay upper and work directories and the mount
//! point; it is removed when the build ends, whatever the outcome. A build
//! killed outright leaves its folder behind; it holds a lock on it while it
//! lives, so the next build can tell an abandoned folder from a busy one
//! and remove it.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub struct WorkDir {
    dir: tempfile::TempDir,
    _lock: File,
}

const LOCK: &str = ".lock";

impl WorkDir {
    pub fn create(home: &Path) -> io::Result<Self> {
        let tmp = home.join("tmp");
        fs::create_dir_all(&tmp)?;
        remove_abandoned(&tmp);
        let dir = tempfile::Builder::new().prefix("build-").tempdir_in(&tmp)?;
        let lock = File::create(dir.path().join(LOCK))?;
        lock.lock()?;
        Ok(Self { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh, empty directory `name` inside the work folder.
    pub fn fresh_dir(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.path().join(name);
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        fs::create_dir(&path)?;
        Ok(path)
    }
}

fn remove_abandoned(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("build-") {
            continue;
        }
        let abandoned =
            File::open(entry.path().join(LOCK)).is_ok_and(|lock| lock.try_lock().is_ok());
        if abandoned {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
