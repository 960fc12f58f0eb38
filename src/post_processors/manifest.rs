//! `manifest`: a JSON record of the build (image, digests, layers, stages,
//! tests, artifacts), appended across runs like Packer's manifest
//! post-processor.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::context::PostContext;
use super::error::PostError;
use crate::io_error::IoError;

/// The file `manifest` writes unless it is given a `path`.
pub const MANIFEST_FILE: &str = "kiln-manifest.json";
use crate::artifact::{Artifact, write_atomically};
use crate::record::{StageRecord, TestRecord};
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

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<ManifestSettings> {
    let raw: RawManifest = cx.shape(at, true)?;
    let path = optional(raw.path.as_deref(), |path| {
        cx.host_path(&at.key("path"), path, HostPath::Unchecked)
    })?;
    Some(ManifestSettings { path })
}

/// One build in `kiln-manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestBuild {
    pub name: String,
    pub version: String,
    pub digest: crate::reference::Digest,
    pub parent: Option<String>,
    pub layers: Vec<crate::oci::Descriptor>,
    pub stages: Vec<StageRecord>,
    /// The image's `[[test]]` results.
    #[serde(default)]
    pub tests: Vec<TestRecord>,
    pub artifacts: Vec<Artifact>,
    /// The AMIs made of the build's disk, one per region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<crate::aws::ami::AmiRecord>,
    pub template: PathBuf,
    pub kiln_version: String,
    /// Seconds since the epoch.
    pub built_at: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct ManifestFile {
    builds: Vec<ManifestBuild>,
}

/// Appends this build to the manifest file, under a lock, as Packer's
/// manifest post-processor does.
pub(crate) fn run(
    cx: &mut PostContext<'_>,
    settings: &ManifestSettings,
) -> Result<Artifact, PostError> {
    let path = settings
        .path
        .clone()
        .unwrap_or_else(|| cx.output.join(MANIFEST_FILE));
    let image = &cx.image;
    let build = ManifestBuild {
        name: image.name.to_string(),
        version: image.version.to_string(),
        digest: image.digest.clone(),
        parent: image
            .manifest
            .annotations
            .get(crate::oci::ANNOTATION_PARENT_DIGEST)
            .cloned(),
        layers: image.manifest.layers.clone(),
        stages: image.stages.to_vec(),
        tests: image.tests.to_vec(),
        artifacts: cx.artifacts.clone(),
        amis: Vec::new(),
        template: image.template.to_owned(),
        kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
        built_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    };
    update(&path, |file| file.builds.push(build))
}

/// Adds the AMIs to the newest build of `digest` in the manifest file.
pub(crate) fn record_amis(
    path: &Path,
    digest: &crate::reference::Digest,
    amis: &[crate::aws::ami::AmiRecord],
) -> Result<Artifact, PostError> {
    update(path, |file| {
        if let Some(build) = file
            .builds
            .iter_mut()
            .rev()
            .find(|build| &build.digest == digest)
        {
            for ami in amis {
                build
                    .amis
                    .retain(|old| !(old.region == ami.region && old.name == ami.name));
                build.amis.push(ami.clone());
            }
        }
    })
}

/// Changes the manifest file under a lock and replaces it atomically.
fn update(path: &Path, change: impl FnOnce(&mut ManifestFile)) -> Result<Artifact, PostError> {
    use std::io::Write;

    let dir = crate::artifact::folder_of(path).to_owned();
    std::fs::create_dir_all(&dir).map_err(IoError::at("create", &dir))?;
    // The folder is the lock: builds sharing a manifest append in turn,
    // and no lock file is left beside it.
    let lock = std::fs::File::open(&dir).map_err(IoError::at("lock", &dir))?;
    lock.lock().map_err(IoError::at("lock", &dir))?;
    let mut file: ManifestFile = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| PostError::NotAManifest {
            path: path.to_owned(),
            source,
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => ManifestFile::default(),
        Err(error) => return Err(IoError::new("read", path, error).into()),
    };
    change(&mut file);
    let bytes = serde_json::to_vec_pretty(&file).expect("manifests serialize");
    Ok(write_atomically(path, |mut out| {
        out.write_all(&bytes)?;
        Ok(out)
    })?)
}
