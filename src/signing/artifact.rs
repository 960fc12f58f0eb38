//! An OCI manifest and the few small documents it names (a signature, the
//! attestations, the SBOMs), held as bytes: what kiln keeps and pushes
//! beside an image under cosign's tags.

use std::collections::BTreeMap;

use serde_json::json;

use crate::oci::{self, Descriptor, Manifest};
use crate::reference::Digest;
use crate::store::{Store, StoreError};

/// The most one attached document may weigh (an SBOM of a large image is
/// a few MiB).
pub const MAX_DOCUMENT: u64 = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub config: Vec<u8>,
    /// The layers' bytes, in the manifest's order.
    pub layers: Vec<Vec<u8>>,
}

/// A layer to be: its media type, bytes and annotations.
pub struct Layer {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

fn descriptor(media_type: &str, bytes: &[u8], annotations: BTreeMap<String, String>) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        annotations,
    }
}

impl Artifact {
    /// An image manifest of `layers`, with a config like cosign's: empty
    /// but for the layers' digests, with no time in it.
    pub fn new(layers: Vec<Layer>) -> Artifact {
        let descriptors: Vec<Descriptor> = layers
            .iter()
            .map(|layer| descriptor(&layer.media_type, &layer.bytes, layer.annotations.clone()))
            .collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{ "created": "0001-01-01T00:00:00Z" }],
            "os": "",
            "rootfs": {
                "type": "layers",
                "diff_ids": descriptors.iter().map(|layer| layer.digest.to_string()).collect::<Vec<_>>(),
            },
        }))
        .expect("JSON values serialize");
        let manifest = Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_MANIFEST.to_owned(),
            config: descriptor(oci::MEDIA_TYPE_CONFIG, &config, BTreeMap::new()),
            layers: descriptors,
            annotations: BTreeMap::new(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
        Artifact {
            manifest,
            manifest_bytes,
            config,
            layers: layers.into_iter().map(|layer| layer.bytes).collect(),
        }
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.manifest_bytes)
    }

    /// The layers with their descriptors.
    pub fn documents(&self) -> impl Iterator<Item = (&Descriptor, &[u8])> {
        self.manifest
            .layers
            .iter()
            .zip(self.layers.iter().map(Vec::as_slice))
    }

    /// Checks that `bytes` are a manifest whose blobs are `config` and
    /// `layers`, by digest and size.
    pub fn from_parts(
        manifest_bytes: Vec<u8>,
        config: Vec<u8>,
        layers: Vec<Vec<u8>>,
    ) -> Result<Artifact, String> {
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|error| format!("it is not an image manifest: {error}"))?;
        let matches = |descriptor: &Descriptor, bytes: &[u8]| {
            descriptor.digest == Digest::of(bytes) && descriptor.size == bytes.len() as u64
        };
        if !matches(&manifest.config, &config) {
            return Err("its config does not match its digest".to_owned());
        }
        if manifest.layers.len() != layers.len()
            || !manifest
                .layers
                .iter()
                .zip(&layers)
                .all(|(descriptor, bytes)| matches(descriptor, bytes))
        {
            return Err("a layer does not match its digest".to_owned());
        }
        Ok(Artifact {
            manifest,
            manifest_bytes,
            config,
            layers,
        })
    }

    /// Keeps the blobs and the manifest in the store.
    pub fn store(&self, store: &Store) -> Result<Descriptor, StoreError> {
        store.put_bytes(oci::MEDIA_TYPE_CONFIG, &self.config)?;
        for (descriptor, bytes) in self.documents() {
            store.put_bytes(&descriptor.media_type, bytes)?;
        }
        store.put_bytes(oci::MEDIA_TYPE_MANIFEST, &self.manifest_bytes)
    }

    /// Reads an artifact the store keeps, every blob verified.
    pub fn load(store: &Store, manifest: &Descriptor) -> Result<Artifact, StoreError> {
        let manifest_bytes = store.read_blob(manifest)?;
        let parsed: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|error| StoreError::Damaged {
                digest: manifest.digest.clone(),
                reason: format!("it is not an image manifest: {error}"),
            })?;
        let config = store.read_blob(&parsed.config)?;
        let layers = parsed
            .layers
            .iter()
            .map(|layer| store.read_blob(layer))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Artifact {
            manifest: parsed,
            manifest_bytes,
            config,
            layers,
        })
    }
}
