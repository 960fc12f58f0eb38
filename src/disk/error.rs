//! How writing a disk fails.

use std::io;
use std::path::PathBuf;

use crate::artifact::ArtifactError;
use crate::template::units::ByteSize;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("failed to run {program} (apt-get install {package})")]
    ToolMissing {
        program: String,
        package: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed: {stderr}")]
    ToolFailed { program: String, stderr: String },
    #[error("dumpe2fs did not say `{0}`")]
    Dumpe2fs(&'static str),
    #[error("find a {what} in the image: {hint}")]
    NoBootFile { what: &'static str, hint: String },
    #[error("boot a {architecture} image: bootable disks are made for amd64 only")]
    Architecture { architecture: String },
    #[error("find {path} on the host (apt-get install {package})")]
    HostFile {
        path: PathBuf,
        package: &'static str,
    },
    #[error(
        "fit the image in a disk of {size}: the root needs about {needed} MiB more \
         (raise `size`, or leave it out to fit)"
    )]
    TooSmall { size: ByteSize, needed: u64 },
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}
