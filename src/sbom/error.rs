//! How making an SBOM fails.

use crate::reference::Digest;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to read layer {digest}")]
    Layer {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read /{path}: a package database over 256 MiB")]
    TooLarge { path: String },
}
