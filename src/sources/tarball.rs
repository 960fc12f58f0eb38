//! `tarball`: a root filesystem from a .tar, .tar.gz or .tar.zst archive,
//! optionally pinned by its sha256.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::reference::Digest;
use crate::template::check::{Checker, HostPath};
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarball {
    path: String,
    sha256: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TarballSource {
    /// Absolute; it is read when the build starts, as Packer reads an ISO.
    pub path: PathBuf,
    pub compression: Compression,
    pub sha256: Option<Digest>,
}

impl TarballSource {
    pub fn summary(&self) -> String {
        match &self.sha256 {
            Some(digest) => format!("{} ({digest})", self.path.display()),
            None => self.path.display().to_string(),
        }
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
    let compression = if name.ends_with(".tar") {
        Compression::None
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Compression::Gzip
    } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        Compression::Zstd
    } else {
        cx.report_help(
            &at.key("path"),
            DiagnosticKind::Invalid(format!("cannot tell the archive format of `{name}`")),
            "name it .tar, .tar.gz (.tgz) or .tar.zst (.tzst)".to_owned(),
        );
        return None;
    };
    Some(TarballSource {
        path,
        compression,
        sha256: sha256?,
    })
}

/// A reader of the uncompressed tar inside `reader`.
pub fn decompress<'r, R: std::io::Read + 'r>(
    reader: R,
    compression: Compression,
) -> std::io::Result<Box<dyn std::io::Read + 'r>> {
    let buffered = std::io::BufReader::with_capacity(1 << 20, reader);
    Ok(match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(buffered)?),
    })
}
