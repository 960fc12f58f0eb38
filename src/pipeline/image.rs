//! The image under construction: its layers, diff ids and history, the
//! trees below the next stage, and the base it amends, kept apart from the
//! context the build runs in. When the stages are done it becomes the
//! image's documents (file index, config, manifest), made in memory so the
//! tests can be keyed by the digest the image will have; they are stored
//! only once the tests pass.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::file_index::{self, IndexError};
use crate::oci::{self, ContainerConfig, Descriptor, History, ImageConfig, Manifest, RootFs};
use crate::redact::Redactor;
use crate::reference::Digest;
use crate::store::Store;
use crate::template::image::ImageSpec;

/// A stage's layer as it joins the image: its blob, its diff id and the
/// tree that serves as an overlay lower for the stages above it.
pub struct StageLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub tree: PathBuf,
}

/// The base an `image` source starts from.
pub struct BaseImage {
    pub digest: Digest,
    pub reference: String,
    pub config: ContainerConfig,
}

#[derive(Default)]
pub struct ImageBuilder {
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    history: Vec<History>,
    /// The trees of the layers so far, bottom first.
    trees: Vec<PathBuf>,
    base: Option<BaseImage>,
}

/// The image's documents, in memory, and its digest.
pub struct PreparedImage {
    /// The merged file index of its layers, and its bytes as stored.
    pub index: file_index::FileIndex,
    pub file_index: Vec<u8>,
    pub config: Vec<u8>,
    /// Its config's `config`: what the image's commands run with.
    pub container_config: ContainerConfig,
    /// Its layers' diff ids, in order.
    pub diff_ids: Vec<Digest>,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub digest: Digest,
}

impl ImageBuilder {
    /// Starts from a base image: its layers, their trees, its history.
    pub fn on_base(
        base: BaseImage,
        layers: Vec<Descriptor>,
        config: &ImageConfig,
        trees: Vec<PathBuf>,
    ) -> Self {
        Self {
            layers,
            diff_ids: config.rootfs.diff_ids.clone(),
            history: config.history.clone(),
            trees,
            base: Some(base),
        }
    }

    /// Adds a stage: its history entry, and its layer if it made one.
    pub fn add(&mut self, history: History, layer: Option<StageLayer>) {
        self.history.push(history);
        if let Some(layer) = layer {
            self.layers.push(layer.descriptor);
            self.diff_ids.push(layer.diff_id);
            self.trees.push(layer.tree);
        }
    }

    /// The history entry of the stage added last.
    pub fn last_history(&self) -> Option<&History> {
        self.history.last()
    }

    /// The layer added last, with its diff id.
    pub fn last_layer(&self) -> Option<(&Descriptor, &Digest)> {
        self.layers.last().zip(self.diff_ids.last())
    }

    /// The trees of the layers so far, bottom first.
    pub fn trees(&self) -> &[PathBuf] {
        &self.trees
    }

    /// The file index, config and manifest of the image, in memory.
    /// Sensitive values never reach them.
    pub fn prepare(
        &self,
        store: &Store,
        image: &ImageSpec,
        template_digest: &Digest,
        created: &str,
        redactor: &Redactor,
    ) -> Result<PreparedImage, IndexError> {
        let index = file_index::index_of_layers(store, &self.layers, &self.diff_ids)?;
        let file_index = index.to_bytes();
        let redact = |text: &str| redactor.redact(text).into_owned();
        let config = ImageConfig {
            created: Some(created.to_owned()),
            architecture: oci::host_architecture().to_owned(),
            os: "linux".to_owned(),
            config: inherit_config(
                self.base
                    .as_ref()
                    .map(|base| base.config.clone())
                    .unwrap_or_default(),
                ContainerConfig {
                    user: image.user.as_deref().map(redact),
                    env: image.env.iter().map(|entry| redact(entry)).collect(),
                    entrypoint: image
                        .entrypoint
                        .as_ref()
                        .map(|args| args.iter().map(|arg| redact(arg)).collect()),
                    cmd: image
                        .cmd
                        .as_ref()
                        .map(|args| args.iter().map(|arg| redact(arg)).collect()),
                    working_dir: image.workdir.as_deref().map(redact),
                    labels: image
                        .labels
                        .iter()
                        .map(|(key, value)| (key.clone(), redact(value)))
                        .collect(),
                },
            ),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: self.diff_ids.clone(),
            },
            history: self.history.clone(),
        };
        let container_config = config.config.clone();
        let config = oci::to_canonical_json(&config);
        let mut annotations = BTreeMap::new();
        annotations.insert(
            oci::ANNOTATION_VERSION.to_owned(),
            image.version.to_string(),
        );
        annotations.insert(oci::ANNOTATION_CREATED.to_owned(), created.to_owned());
        annotations.insert(oci::ANNOTATION_TITLE.to_owned(), image.name.to_string());
        if let Some(description) = &image.description {
            annotations.insert(oci::ANNOTATION_DESCRIPTION.to_owned(), redact(description));
        }
        annotations.insert(
            oci::ANNOTATION_TEMPLATE_DIGEST.to_owned(),
            template_digest.to_string(),
        );
        if let Some(base) = &self.base {
            annotations.insert(
                oci::ANNOTATION_PARENT_DIGEST.to_owned(),
                base.digest.to_string(),
            );
            annotations.insert(
                oci::ANNOTATION_BASE_DIGEST.to_owned(),
                base.digest.to_string(),
            );
            annotations.insert(oci::ANNOTATION_BASE_NAME.to_owned(), base.reference.clone());
        }
        annotations.insert(
            file_index::ANNOTATION_FILE_INDEX.to_owned(),
            Digest::of(&file_index).to_string(),
        );
        let manifest = Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_MANIFEST.to_owned(),
            config: descriptor_of(oci::MEDIA_TYPE_CONFIG, &config),
            layers: self.layers.clone(),
            annotations,
        };
        let manifest_bytes = oci::to_canonical_json(&manifest);
        Ok(PreparedImage {
            index,
            file_index,
            config,
            container_config,
            diff_ids: self.diff_ids.clone(),
            digest: Digest::of(&manifest_bytes),
            manifest,
            manifest_bytes,
        })
    }
}

fn descriptor_of(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    }
}

/// The config of an image built on a base, as `FROM` gives it: the base's
/// env, labels, user, working dir, entrypoint and cmd, amended by the
/// template's. A new entrypoint drops the base's cmd, which was its argument.
fn inherit_config(base: ContainerConfig, own: ContainerConfig) -> ContainerConfig {
    let mut env = base.env;
    for entry in own.env {
        let name = entry
            .split_once('=')
            .map_or(entry.as_str(), |(name, _)| name);
        env.retain(|old| old.split_once('=').map_or(old.as_str(), |(old, _)| old) != name);
        env.push(entry);
    }
    let mut labels = base.labels;
    labels.extend(own.labels);
    let cmd = match (&own.entrypoint, own.cmd) {
        (_, Some(cmd)) => Some(cmd),
        (Some(_), None) => None,
        (None, None) => base.cmd,
    };
    ContainerConfig {
        user: own.user.or(base.user),
        env,
        entrypoint: own.entrypoint.or(base.entrypoint),
        cmd,
        working_dir: own.working_dir.or(base.working_dir),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
    }

    #[test]
    fn images_on_a_base_amend_its_config() {
        let base = ContainerConfig {
            env: strings(&["PATH=/bin", "LANG=C"]),
            entrypoint: Some(strings(&["/bin/sh"])),
            cmd: Some(strings(&["-l"])),
            labels: [("tier".to_owned(), "base".to_owned())].into(),
            user: Some("1000".to_owned()),
            ..ContainerConfig::default()
        };
        let own = ContainerConfig {
            env: strings(&["PATH=/usr/bin:/bin"]),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            ..ContainerConfig::default()
        };
        let config = inherit_config(base.clone(), own);
        assert_eq!(config.env, strings(&["LANG=C", "PATH=/usr/bin:/bin"]));
        assert_eq!(config.entrypoint, base.entrypoint);
        assert_eq!(config.cmd, base.cmd);
        assert_eq!(config.user.as_deref(), Some("1000"));
        assert_eq!(config.labels.len(), 2);
        let new_entrypoint = ContainerConfig {
            entrypoint: Some(strings(&["/app"])),
            ..ContainerConfig::default()
        };
        let config = inherit_config(base, new_entrypoint);
        assert_eq!(config.entrypoint, Some(strings(&["/app"])));
        assert_eq!(config.cmd, None, "a new entrypoint drops the base's cmd");
    }
}
