//! `tarball`: a root filesystem from a .tar, .tar.gz or .tar.zst archive,
//! optionally pinned by its sha256.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::SourceError;
use crate::cache::key::{KeyError, KeyInputs};
use crate::compression::{Compression, decompress};
use crate::io_error::IoError;
use crate::reference::Digest;
use crate::template::check::{Checker, HostPath, relative};
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;
use crate::unpack::{self, Whiteouts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarball {
    path: String,
    sha256: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TarballSource {
    /// Absolute.
    pub path: PathBuf,
    pub compression: Compression,
    pub sha256: Option<Digest>,
}

impl TarballSource {
    pub fn summary(&self, dir: &Path) -> String {
        let path = relative(&self.path, dir);
        match &self.sha256 {
            Some(digest) => format!("{path} ({digest})"),
            None => path,
        }
    }

    /// The archive's content, wherever it lives, and how it is read.
    pub fn key_inputs(&self, inputs: &mut KeyInputs) -> Result<(), KeyError> {
        let TarballSource {
            path,
            compression,
            sha256,
        } = self;
        let (digest, _) = crate::hashing::digest_file(path).map_err(KeyError::at(path))?;
        inputs.setting("compression", compression);
        inputs.setting("sha256", sha256);
        inputs.file_digest(inputs.relative(path), digest);
        Ok(())
    }

    /// Checks the pin, then unpacks the archive into `root`, never writing
    /// outside it.
    pub fn unpack(&self, root: &Path) -> Result<(), SourceError> {
        if !self.path.is_file() {
            return Err(SourceError::Missing(self.path.clone()));
        }
        if let Some(expected) = &self.sha256 {
            let (actual, _) =
                crate::hashing::digest_file(&self.path).map_err(IoError::at("read", &self.path))?;
            if &actual != expected {
                return Err(SourceError::PinMismatch {
                    path: self.path.clone(),
                    actual,
                    expected: expected.clone(),
                });
            }
        }
        let file = std::fs::File::open(&self.path).map_err(IoError::at("open", &self.path))?;
        let reader = decompress(file, self.compression).map_err(IoError::at("read", &self.path))?;
        unpack::unpack(reader, root, Whiteouts::Literal).map_err(|source| SourceError::Unpack {
            path: self.path.clone(),
            source,
        })?;
        Ok(())
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<TarballSource> {
    let raw: RawTarball = cx.shape(at, true)?;
    let path = cx.host_path(&at.key("path"), &raw.path, HostPath::Unchecked);
    let sha256 = cx.optional_parsed(&at.key("sha256"), raw.sha256.as_deref(), "sha256");
    let path = path?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(compression) = Compression::of_archive_name(&name) else {
        cx.report_help(
            &at.key("path"),
            DiagnosticKind::Invalid(format!("cannot tell the archive format of `{name}`")),
            "name it .tar, .tar.gz (.tgz) or .tar.zst (.tzst)".to_owned(),
        );
        return None;
    };
    // Read when the build starts, but a missing archive is a template error.
    if !cx.host_path_exists(&at.key("path"), &path, HostPath::File) {
        return None;
    }
    Some(TarballSource {
        path,
        compression,
        sha256: sha256?,
    })
}
