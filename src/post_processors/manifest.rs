//! `manifest`: a JSON record of the build (image, digests, layers, stages,
//! artifacts), appended across runs like Packer's manifest post-processor.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::template::check::{Checker, HostPath, optional};
use crate::template::keypath::KeyPath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestSettings {
    /// `None`: `kiln-manifest.json` in the output folder.
    pub path: Option<PathBuf>,
}

impl ManifestSettings {
    pub fn summary(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => "kiln-manifest.json".to_owned(),
        }
    }
}

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ManifestSettings> {
    let raw: RawManifest = cx.shape(at, true)?;
    let path = optional(raw.path.as_deref(), |path| {
        cx.host_path(&at.key("path"), path, HostPath::Unchecked)
    })?;
    Some(ManifestSettings { path })
}
