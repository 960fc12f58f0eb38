//! Artifacts: files kiln writes into an output folder (disks, rootfs
//! tarballs, checksums, manifests, exports). Each is written to a temp file
//! beside its final path, hashed while written, fsynced and renamed into
//! place, so a failure or a kill never leaves a half-written file.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hashing::HashingWriter;
use crate::reference::Digest;

/// A file written into an output folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Digest,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to write {}", path.display())]
pub struct ArtifactError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl ArtifactError {
    pub fn at(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self {
            path: path.to_owned(),
            source,
        }
    }
}

/// What an artifact is written through: hashed, buffered, into its temp file.
pub type ArtifactWriter = HashingWriter<BufWriter<std::fs::File>>;

/// The folder a file goes into (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temp file beside `path`, removed unless persisted.
pub fn temp_beside(path: &Path, suffix: &str) -> io::Result<tempfile::NamedTempFile> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir)?;
    tempfile::Builder::new()
        .prefix(".kiln-")
        .suffix(suffix)
        .tempfile_in(dir)
}

/// Writes `path` through `write`, atomically (mode 0644).
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(ArtifactWriter) -> io::Result<ArtifactWriter>,
) -> Result<Artifact, ArtifactError> {
    let error = ArtifactError::at(path);
    let written = (|| {
        let temp = temp_beside(path, "")?;
        let writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, temp.reopen()?));
        let mut writer = write(writer)?;
        writer.flush()?;
        let (sha256, size, buffered) = writer.finish();
        buffered.into_inner().map_err(|error| error.into_error())?;
        place(temp, path)?;
        Ok(Artifact {
            path: path.to_owned(),
            size,
            sha256,
        })
    })();
    written.map_err(error)
}

/// Hashes a finished temp file and renames it to `path` (mode 0644).
pub fn persist(temp: tempfile::NamedTempFile, path: &Path) -> Result<Artifact, ArtifactError> {
    let error = ArtifactError::at(path);
    let persisted = (|| {
        let (sha256, size) = crate::hashing::digest_file(temp.path())?;
        place(temp, path)?;
        Ok(Artifact {
            path: path.to_owned(),
            size,
            sha256,
        })
    })();
    persisted.map_err(error)
}

fn place(temp: tempfile::NamedTempFile, path: &Path) -> io::Result<()> {
    temp.as_file().sync_all()?;
    temp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    temp.persist(path).map_err(|error| error.error)?;
    Ok(())
}
