//! How the store fails.

use std::path::PathBuf;

use crate::reference::{Digest, ImageName, Version};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error(
        "{name}:{version} is already stored as {existing}, and this build made {new}; versions never change: bump the version"
    )]
    VersionConflict {
        name: ImageName,
        version: Version,
        existing: Digest,
        new: Digest,
    },
    #[error("no image {0} in the store")]
    NotFound(String),
    #[error(
        "the content ({written} bytes) hashes to {actual}, not to {expected} ({size} bytes); nothing was kept"
    )]
    Mismatch {
        expected: Digest,
        size: u64,
        actual: Digest,
        written: u64,
    },
    #[error("blob {digest} is larger than its {size} bytes; nothing was kept")]
    TooLarge { digest: Digest, size: u64 },
    #[error("blob {digest} in the store is damaged: {reason}")]
    Damaged { digest: Digest, reason: String },
    #[error("layer {digest} has media type {media_type}, which kiln cannot read")]
    UnsupportedLayer { digest: Digest, media_type: String },
    #[error("{} is not a valid OCI image layout: {reason}", path.display())]
    InvalidLayout { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;
