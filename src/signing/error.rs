//! How signing and verifying fail.

use std::path::PathBuf;

use crate::reference::Digest;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("failed to read the key {path}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to use the key {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("failed to write the key {path}")]
    WriteKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write a key at {path}: {reason}")]
    KeyPath { path: PathBuf, reason: String },
    #[error("failed to draw random bytes for a signature")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to read the SBOM of {image}")]
    Sbom {
        image: Digest,
        #[source]
        source: Box<crate::sbom::SbomError>,
    },
    #[error("image {image} is not signed (it has no signature)")]
    Unsigned { image: Digest },
    #[error("failed to verify the signature of {image}: {reason}")]
    BadSignature { image: Digest, reason: String },
    #[error("failed to verify the attestation `{predicate_type}` of {image}: {reason}")]
    BadAttestation {
        image: Digest,
        predicate_type: String,
        reason: String,
    },
    #[error("failed to read the {what} of {image}: {reason}")]
    Unreadable {
        image: Digest,
        what: &'static str,
        reason: String,
    },
}
