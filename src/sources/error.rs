//! How making a source's root fails.

use std::path::PathBuf;

use crate::reference::Digest;
use crate::stage::TaskError;
use crate::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} has sha256 {actual}, but the template pins {expected}", path.display())]
    PinMismatch {
        path: PathBuf,
        actual: Digest,
        expected: Digest,
    },
    #[error(
        "{} changed while kiln read it (its tar hashed to {planned} when the build was planned, and to {baked} when it was baked); build again once it stays the same",
        path.display()
    )]
    Changed {
        path: PathBuf,
        planned: Digest,
        baked: Digest,
    },
    #[error(
        "mmdebstrap is not installed: apt-get install mmdebstrap (kiln runs it confined, in a user namespace)"
    )]
    NoBootstrapTool,
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error("failed to unpack {}", path.display())]
    Unpack {
        path: PathBuf,
        #[source]
        source: UnpackError,
    },
    #[error(transparent)]
    Task(#[from] TaskError),
}
