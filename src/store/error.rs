//! How the store fails.

use std::io;
use std::path::{Path, PathBuf};

use crate::reference::{Digest, ImageName, Version};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
    #[error("blob {digest} in the store is damaged: {reason}")]
    Damaged { digest: Digest, reason: String },
    #[error("layer {digest} has media type {media_type}, which kiln cannot read")]
    UnsupportedLayer { digest: Digest, media_type: String },
    #[error("{} is not a valid OCI image layout: {reason}", path.display())]
    InvalidLayout { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(super) fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
