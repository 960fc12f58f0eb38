//! A build's private work folder under `$KILN_HOME/tmp`.
//!
//! It holds each stage's overlay upper and work directories and the mount
//! point; it is removed when the build ends, whatever the outcome. A build
//! killed outright leaves its folder behind; it holds a lock on it while it
//! lives, so the next build can tell an abandoned folder from a busy one
//! and remove it. A folder is locked before it gets its `build-` name, so
//! no build ever sees a live folder unlocked. A folder is renamed
//! `.removing-…` before it is removed, so one whose removal was cut short
//! (its lock file may be gone already) is still known for what it is.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub struct WorkDir {
    path: PathBuf,
    _lock: File,
}

const LOCK: &str = ".lock";
const PREFIX: &str = "build-";
const STARTING: &str = ".starting-";
const REMOVING: &str = ".removing-";

/// A folder still called `.starting-…` this long after it was made belongs
/// to a build killed while it started.
const STARTING_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

impl WorkDir {
    pub fn create(home: &Path) -> io::Result<Self> {
        let tmp = home.join("tmp");
        fs::create_dir_all(&tmp)?;
        remove_abandoned(&tmp);
        let starting = tempfile::Builder::new()
            .prefix(STARTING)
            .tempdir_in(&tmp)?
            .keep();
        let lock = File::create(starting.join(LOCK))?;
        lock.lock()?;
        let name = starting
            .file_name()
            .map(|name| name.to_string_lossy().replacen(STARTING, PREFIX, 1))
            .unwrap_or_default();
        let path = tmp.join(name);
        fs::rename(&starting, &path)?;
        Ok(Self { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

impl Drop for WorkDir {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Renames a work folder `.removing-…`, then removes it.
fn remove(path: &Path) {
    let Some(name) = path.file_name() else {
        return;
    };
    let removing = path.with_file_name(format!("{REMOVING}{}", name.to_string_lossy()));
    match fs::rename(path, &removing) {
        Ok(()) => {
            let _ = fs::remove_dir_all(&removing);
        }
        // Another build renamed it first, and removes it.
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {
            let _ = fs::remove_dir_all(path);
        }
    }
}

fn remove_abandoned(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let abandoned = if name.starts_with(PREFIX) {
            // A live build holds its lock; a folder without one is the
            // remains of an older kiln's cut-short removal.
            match File::open(entry.path().join(LOCK)) {
                Ok(lock) => lock.try_lock().is_ok(),
                Err(error) => error.kind() == io::ErrorKind::NotFound,
            }
        } else if name.starts_with(REMOVING) {
            // Its removal was cut short (or another build is at it: then
            // both remove what is left).
            let _ = fs::remove_dir_all(entry.path());
            continue;
        } else if name.starts_with(STARTING) {
            entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > STARTING_GRACE)
        } else {
            false
        };
        if abandoned {
            remove(&entry.path());
        }
    }
}
