//! How writing an artifact fails.

use std::path::PathBuf;

use super::context::FlattenError;
use crate::artifact::ArtifactError;
use crate::disk::DiskError;
use crate::stage::TaskError;

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("failed to flatten the image")]
    Flatten(#[from] FlattenError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error("{} is not a kiln manifest", path.display())]
    NotAManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Sbom(#[from] crate::sbom::SbomError),
}
