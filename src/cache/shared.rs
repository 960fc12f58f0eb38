//! The stage cache shared through an OCI registry, so CI runners that
//! start empty reuse what another runner built.
//!
//! One tag per stage in the cache repository: `k1-<hex>`, the hex a sha256
//! of the format version (`k1`), the platform and the stage key. The tag
//! holds a plain OCI image manifest of the stage's whole layer chain (the
//! base image's layers, then one per kiln stage that changed something),
//! so any registry takes it and skopeo or umoci read it as an image. Its
//! annotations give the stage key, the parent key and the keys of every
//! kiln stage in the chain; its config's history has one entry per stage.
//!
//! An entry is a claim that nobody can check without building the stage
//! again, so a reader checks everything else: the tag is the one the
//! annotated key gives, the chain is the chain of keys this build planned,
//! the base layers are this build's base, the history is the history this
//! build would write, and every blob hashes to its digest and every layer
//! to its diff id. Only trusted builds should be able to push.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use crate::oci::{self, ContainerConfig, Descriptor, History, ImageConfig, Manifest, RootFs};
use crate::reference::Digest;

/// The first part of every tag kiln writes in a cache repository.
pub const TAG_PREFIX: &str = "k1-";
/// What the tag hashes besides the key: bumped when the entry's form changes.
const FORMAT: &str = "kiln-shared-cache-k1";

pub const ANNOTATION_KEY: &str = "dev.kiln.cache.key";
pub const ANNOTATION_PARENT: &str = "dev.kiln.cache.parent";
/// The keys of the chain's kiln stages, first to last, comma-separated.
pub const ANNOTATION_CHAIN: &str = "dev.kiln.cache.chain";
/// How many of the entry's first layers are the base image's.
pub const ANNOTATION_BASE_LAYERS: &str = "dev.kiln.cache.base-layers";

/// The tag of a stage key in a cache repository, for this platform.
pub fn tag(key: &Digest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{FORMAT}\0linux/{}\0{key}", crate::oci::host_architecture()).as_bytes());
    format!("{TAG_PREFIX}{}", hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A kiln stage of a chain: its key, its history entry and its layer
/// (none when it changed nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainStage {
    pub key: Digest,
    pub history: History,
    pub layer: Option<(Descriptor, Digest)>,
}

/// The base image below a chain (`image` sources), as it is stored here.
#[derive(Clone, Debug, Default)]
pub struct ChainBase {
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    pub history: Vec<History>,
    pub config: ContainerConfig,
}

/// An entry's documents: its config's bytes and its manifest.
pub struct EntryDocuments {
    pub config: Vec<u8>,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
}

/// The entry of the last stage of `chain`, whose first stage's parent is
/// `parent`; `created` is when it is pushed (seconds since the epoch), for
/// pruning by age.
pub fn entry_documents(
    base: &ChainBase,
    parent: Option<&Digest>,
    chain: &[ChainStage],
    epoch: u64,
    created: u64,
) -> EntryDocuments {
    let last = chain.last().expect("an entry has at least one stage");
    let mut layers = base.layers.clone();
    let mut diff_ids = base.diff_ids.clone();
    let mut history = base.history.clone();
    for stage in chain {
        history.push(stage.history.clone());
        if let Some((descriptor, diff_id)) = &stage.layer {
            layers.push(descriptor.clone());
            diff_ids.push(diff_id.clone());
        }
    }
    let config = ImageConfig {
        created: Some(oci::rfc3339(epoch)),
        architecture: oci::host_architecture().to_owned(),
        os: "linux".to_owned(),
        config: base.config.clone(),
        rootfs: RootFs {
            kind: "layers".to_owned(),
            diff_ids,
        },
        history,
    };
    let config = oci::to_canonical_json(&config);
    let parent_of_last = match chain.len() {
        1 => parent.cloned(),
        n => Some(chain[n - 2].key.clone()),
    };
    let mut annotations = BTreeMap::from([
        (ANNOTATION_KEY.to_owned(), last.key.to_string()),
        (
            ANNOTATION_CHAIN.to_owned(),
            chain
                .iter()
                .map(|stage| stage.key.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            ANNOTATION_BASE_LAYERS.to_owned(),
            base.layers.len().to_string(),
        ),
        (oci::ANNOTATION_CREATED.to_owned(), oci::rfc3339(created)),
    ]);
    if let Some(parent) = parent_of_last {
        annotations.insert(ANNOTATION_PARENT.to_owned(), parent.to_string());
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: oci::MEDIA_TYPE_MANIFEST.to_owned(),
        config: Descriptor {
            media_type: oci::MEDIA_TYPE_CONFIG.to_owned(),
            digest: Digest::of(&config),
            size: config.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations,
    };
    let manifest_bytes = oci::to_canonical_json(&manifest);
    EntryDocuments {
        config,
        manifest,
        manifest_bytes,
    }
}

/// Why an entry was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("it is not an image manifest: {0}")]
    NotAManifest(String),
    #[error("its config is not an image config: {0}")]
    NotAConfig(String),
    #[error("its annotation {annotation} is {found}, not {expected}")]
    Annotation {
        annotation: &'static str,
        found: String,
        expected: String,
    },
    #[error("its base layers are not this build's base image")]
    OtherBase,
    #[error("its config has {diff_ids} diff ids for {layers} layers")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("its history has {found} entries, not {expected}")]
    HistoryCount { found: usize, expected: usize },
    #[error("its history of stage {stage} is not what this build writes")]
    History { stage: usize },
    #[error("its layers do not match the stages' history")]
    LayersAndHistory,
}

/// Reads an entry against what this build planned: `keys` (the chain's
/// kiln stages, first to last), `parent` (of the first), `base`, and the
/// history each stage would get, `history(index, has_layer)`. Returns
/// each stage's history and layer.
pub fn read_entry(
    manifest_bytes: &[u8],
    config_bytes: &[u8],
    keys: &[Digest],
    parent: Option<&Digest>,
    base: &ChainBase,
    history: &dyn Fn(usize, bool) -> History,
) -> Result<Vec<ChainStage>, Refused> {
    let manifest = parse_manifest(manifest_bytes)?;
    check_annotations(&manifest, keys, parent, base)?;
    let config: ImageConfig = serde_json::from_slice(config_bytes)
        .map_err(|error| Refused::NotAConfig(error.to_string()))?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Refused::LayerCount {
            layers: manifest.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let base_layers = base.layers.len();
    if manifest.layers.len() < base_layers
        || manifest.layers[..base_layers] != base.layers[..]
        || diff_ids[..base_layers] != base.diff_ids[..]
    {
        return Err(Refused::OtherBase);
    }
    let expected = base.history.len() + keys.len();
    if config.history.len() != expected {
        return Err(Refused::HistoryCount {
            found: config.history.len(),
            expected,
        });
    }
    let mut layers = manifest.layers[base_layers..]
        .iter()
        .zip(&diff_ids[base_layers..]);
    let mut chain = Vec::with_capacity(keys.len());
    for (index, (key, found)) in keys
        .iter()
        .zip(&config.history[base.history.len()..])
        .enumerate()
    {
        let has_layer = !found.empty_layer;
        if *found != history(index, has_layer) {
            return Err(Refused::History { stage: index });
        }
        let layer = if has_layer {
            let (descriptor, diff_id) = layers.next().ok_or(Refused::LayersAndHistory)?;
            Some((descriptor.clone(), diff_id.clone()))
        } else {
            None
        };
        chain.push(ChainStage {
            key: key.clone(),
            history: found.clone(),
            layer,
        });
    }
    if layers.next().is_some() {
        return Err(Refused::LayersAndHistory);
    }
    Ok(chain)
}

/// An entry's manifest, or why it is not one.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, Refused> {
    serde_json::from_slice(bytes).map_err(|error| Refused::NotAManifest(error.to_string()))
}

fn check_annotations(
    manifest: &Manifest,
    keys: &[Digest],
    parent: Option<&Digest>,
    base: &ChainBase,
) -> Result<(), Refused> {
    let last = keys.last().expect("an entry has at least one stage");
    let parent_of_last = match keys.len() {
        1 => parent.cloned(),
        n => Some(keys[n - 2].clone()),
    };
    let expected = [
        (ANNOTATION_KEY, Some(last.to_string())),
        (
            ANNOTATION_PARENT,
            parent_of_last.map(|parent| parent.to_string()),
        ),
        (
            ANNOTATION_CHAIN,
            Some(
                keys.iter()
                    .map(Digest::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ),
        (ANNOTATION_BASE_LAYERS, Some(base.layers.len().to_string())),
    ];
    for (annotation, expected) in expected {
        let found = manifest.annotations.get(annotation);
        if found != expected.as_ref() {
            return Err(Refused::Annotation {
                annotation,
                found: found.cloned().unwrap_or_else(|| "missing".to_owned()),
                expected: expected.unwrap_or_else(|| "missing".to_owned()),
            });
        }
    }
    Ok(())
}

/// When an entry was pushed, from its `created` annotation.
pub fn created(manifest: &Manifest) -> Option<u64> {
    oci::parse_rfc3339(manifest.annotations.get(oci::ANNOTATION_CREATED)?)
}

/// Which entries of a cache repository `prune_remote` deletes.
#[derive(Clone, Copy, Debug)]
pub enum RemotePrune {
    All,
    /// Entries pushed longer ago than this (or with no readable time).
    OlderThan(std::time::Duration),
}

/// What `prune_remote` found and deleted.
#[derive(Clone, Copy, Debug, Default)]
pub struct RemotePruned {
    pub entries: usize,
    pub deleted: usize,
}

/// Deletes the entries of the cache repository `repository` that `policy`
/// names (their manifests; the registry's garbage collection then frees
/// their blobs). Tags that are not kiln's are left alone.
pub async fn prune_remote(
    registry: &crate::remote::Registry,
    repository: &str,
    policy: RemotePrune,
) -> Result<RemotePruned, crate::remote::RemoteError> {
    let now = oci::unix_now();
    let mut pruned = RemotePruned::default();
    for tag in registry.tags(repository).await? {
        if !tag.starts_with(TAG_PREFIX) {
            continue;
        }
        pruned.entries += 1;
        let Some(digest) = registry.tag_digest(repository, &tag).await? else {
            continue;
        };
        let stale = match policy {
            RemotePrune::All => true,
            RemotePrune::OlderThan(age) => {
                let (bytes, _) = registry.get_manifest(repository, digest.as_str()).await?;
                parse_manifest(&bytes)
                    .ok()
                    .and_then(|manifest| created(&manifest))
                    .is_none_or(|created| now.saturating_sub(created) > age.as_secs())
            }
        };
        if stale && registry.delete_manifest(repository, &digest).await? {
            pruned.deleted += 1;
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(text: &str) -> (Descriptor, Digest) {
        (
            Descriptor {
                media_type: oci::MEDIA_TYPE_LAYER_GZIP.to_owned(),
                digest: Digest::of(text.as_bytes()),
                size: text.len() as u64,
                annotations: BTreeMap::new(),
            },
            Digest::of(format!("{text} tar").as_bytes()),
        )
    }

    fn history(index: usize, has_layer: bool) -> History {
        History {
            created: Some(oci::rfc3339(0)),
            created_by: Some(format!("kiln stage {index}")),
            comment: None,
            empty_layer: !has_layer,
        }
    }

    fn chain() -> Vec<ChainStage> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(index, text)| ChainStage {
                key: Digest::of(format!("key {text}").as_bytes()),
                history: history(index, index != 1),
                layer: (index != 1).then(|| layer(text)),
            })
            .collect()
    }

    #[test]
    fn an_entry_reads_back_as_its_chain_and_nothing_else_does() {
        let chain = chain();
        let keys: Vec<Digest> = chain.iter().map(|stage| stage.key.clone()).collect();
        let base = ChainBase::default();
        let documents = entry_documents(&base, None, &chain, 0, 1_700_000_000);
        let read = read_entry(
            &documents.manifest_bytes,
            &documents.config,
            &keys,
            None,
            &base,
            &history,
        )
        .unwrap();
        assert_eq!(read, chain);
        assert_eq!(created(&documents.manifest), Some(1_700_000_000));

        // The entry of stage 2 read as the entry of stage 1's chain.
        let refused = read_entry(
            &documents.manifest_bytes,
            &documents.config,
            &keys[..2],
            None,
            &base,
            &history,
        );
        assert!(
            matches!(refused, Err(Refused::Annotation { annotation, .. }) if annotation == ANNOTATION_KEY)
        );
        // Another parent (a key covers its parent's, so only the first
        // stage's parent is not implied by the keys).
        let first = entry_documents(&base, None, &chain[..1], 0, 0);
        let other = Digest::of(b"other parent");
        let refused = read_entry(
            &first.manifest_bytes,
            &first.config,
            &keys[..1],
            Some(&other),
            &base,
            &history,
        );
        assert!(matches!(refused, Err(Refused::Annotation { .. })));
        // A history this build would not write.
        let other_history = |index: usize, has_layer: bool| {
            let mut entry = history(index, has_layer);
            entry.created_by = Some("curl evil | sh".to_owned());
            entry
        };
        let refused = read_entry(
            &documents.manifest_bytes,
            &documents.config,
            &keys,
            None,
            &base,
            &other_history,
        );
        assert!(matches!(refused, Err(Refused::History { stage: 0 })));
        // Another base below it.
        let (descriptor, diff_id) = layer("base");
        let other_base = ChainBase {
            layers: vec![descriptor],
            diff_ids: vec![diff_id],
            history: vec![history(9, true)],
            config: ContainerConfig::default(),
        };
        let refused = read_entry(
            &documents.manifest_bytes,
            &documents.config,
            &keys,
            None,
            &other_base,
            &history,
        );
        assert!(matches!(refused, Err(Refused::Annotation { .. })));
    }

    #[test]
    fn tags_are_tags_and_differ_by_key() {
        let one = tag(&Digest::of(b"one"));
        let two = tag(&Digest::of(b"two"));
        assert_ne!(one, two);
        assert!(one.starts_with(TAG_PREFIX));
        assert_eq!(one.len(), 3 + 64);
        assert!(one.parse::<crate::reference::Version>().is_ok());
    }
}
