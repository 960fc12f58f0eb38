//! Temp files in the store's `.kiln/tmp`, which a later kiln can tell apart:
//! a live one is locked by the process writing it, one left by a killed
//! build is not, and is removed by the next command that opens the store.
//!
//! A file is locked before it gets its working name (`blob-…`, `file-…`),
//! the way a build's work folder is, so no cleaner ever sees a live temp
//! file unlocked: it is created as `.new-…`, locked, then renamed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NEW: &str = ".new-";

/// A `.new-…` file this old belongs to a process killed between creating
/// and renaming it (it is empty).
const NEW_GRACE: Duration = Duration::from_secs(3600);

/// Files of kiln versions that did not lock their temp files: removed once
/// no build could still be writing them.
const UNLOCKED_GRACE: Duration = Duration::from_secs(86_400);

/// A locked temp file, removed when dropped unless persisted.
pub struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    /// A new, empty, locked temp file in `dir` named `PREFIX…`.
    pub fn create(dir: &Path, prefix: &str) -> io::Result<Self> {
        let (file, new_path) = tempfile::Builder::new()
            .prefix(NEW)
            .tempfile_in(dir)?
            .keep()
            .map_err(|error| error.error)?;
        let named = || -> io::Result<PathBuf> {
            file.lock()?;
            let suffix = new_path
                .file_name()
                .map(|name| name.to_string_lossy().replacen(NEW, "", 1))
                .unwrap_or_default();
            let path = dir.join(format!("{prefix}{suffix}"));
            fs::rename(&new_path, &path)?;
            Ok(path)
        };
        match named() {
            Ok(path) => Ok(Self {
                path,
                file,
                persisted: false,
            }),
            Err(error) => {
                let _ = fs::remove_file(&new_path);
                Err(error)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// Renames the file over `target`; the lock goes with the last handle.
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.persisted = true;
        Ok(())
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes the temp files in `dir` that no live process holds: those of
/// builds killed while they wrote.
pub fn remove_abandoned(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let age = || {
            entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .unwrap_or_default()
        };
        let abandoned = if name.starts_with(NEW) {
            age() > NEW_GRACE
        } else if name.starts_with(".tmp") {
            age() > UNLOCKED_GRACE
        } else {
            File::open(entry.path()).is_ok_and(|file| file.try_lock().is_ok())
        };
        if abandoned {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unlocked_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = TempFile::create(dir.path(), "blob-").unwrap();
        live.write_all(b"half a blob").unwrap();
        assert!(
            live.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("blob-")
        );
        let abandoned = dir.path().join("blob-killed");
        fs::write(&abandoned, b"left by a killed build").unwrap();
        let just_made = dir.path().join(".new-just-made");
        fs::write(&just_made, b"").unwrap();

        remove_abandoned(dir.path());
        assert!(live.path().exists(), "a live temp file is kept");
        assert!(!abandoned.exists(), "an unlocked one is removed");
        assert!(
            just_made.exists(),
            "a fresh .new- file may be about to be locked"
        );

        let target = dir.path().join("done");
        let path = live.path().to_owned();
        live.persist(&target).unwrap();
        assert!(!path.exists());
        assert_eq!(fs::read(&target).unwrap(), b"half a blob");

        let dropped = TempFile::create(dir.path(), "file-").unwrap();
        let path = dropped.path().to_owned();
        drop(dropped);
        assert!(!path.exists(), "a dropped temp file is removed");
    }
}
