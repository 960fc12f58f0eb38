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

/// One build in `kiln-manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestBuild {
    pub name: String,
    pub version: String,
    pub digest: crate::reference::Digest,
    pub parent: Option<String>,
    pub layers: Vec<crate::oci::Descriptor>,
    pub stages: Vec<crate::pipeline::StageRecord>,
    /// The image's `[[test]]` results.
    #[serde(default)]
    pub tests: Vec<crate::pipeline::TestRecord>,
    pub artifacts: Vec<super::run::Artifact>,
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
    cx: &mut super::run::PostContext<'_>,
    settings: &ManifestSettings,
) -> Result<(), String> {
    use std::io::Write;

    let path = settings
        .path
        .clone()
        .unwrap_or_else(|| cx.inputs.output.join("kiln-manifest.json"));
    let dir = path
        .parent()
        .map(std::path::Path::to_owned)
        .unwrap_or_default();
    std::fs::create_dir_all(&dir)
        .map_err(|error| format!("cannot make {}: {error}", dir.display()))?;
    // The folder is the lock: builds sharing a manifest append in turn,
    // and no lock file is left beside it.
    let lock = std::fs::File::open(&dir)
        .map_err(|error| format!("cannot lock {}: {error}", dir.display()))?;
    lock.lock()
        .map_err(|error| format!("cannot lock {}: {error}", dir.display()))?;
    let mut file: ManifestFile = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|error| format!("{} is not a kiln manifest: {error}", path.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => ManifestFile::default(),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let manifest = &cx.inputs.built.manifest;
    file.builds.push(ManifestBuild {
        name: cx.inputs.entry.name.to_string(),
        version: cx.inputs.entry.version.to_string(),
        digest: cx.inputs.built.digest.clone(),
        parent: manifest
            .annotations
            .get(crate::oci::ANNOTATION_PARENT_DIGEST)
            .cloned(),
        layers: manifest.layers.clone(),
        stages: cx.inputs.built.stages.clone(),
        tests: cx.inputs.built.tests.clone(),
        artifacts: cx.artifacts.clone(),
        template: cx.inputs.template.path.clone(),
        kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
        built_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    });
    let bytes = serde_json::to_vec_pretty(&file).expect("manifests serialize");
    let artifact = super::run::write_atomically(&path, |mut out| {
        out.write_all(&bytes)?;
        Ok(out)
    })?;
    cx.add(artifact);
    Ok(())
}
