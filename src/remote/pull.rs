//! Pulling an image into the store: the manifest (the platform's, from an
//! index), then every blob, each verified before it is kept; the version
//! is tagged only when everything arrived intact.

use super::{BlobTransfer, MEDIA_TYPE_DOCKER_LIST, Registry, RemoteError, Result};
use crate::oci::{self, Manifest};
use crate::reference::{Digest, ImageName, RemoteRef, StoreTarget, Version};
use crate::report::{Direction, Reporter, TransferOutcome};
use crate::store::{Store, Tagged};

#[derive(Debug)]
pub struct Pulled {
    pub digest: Digest,
    pub tagged: Tagged,
    pub fetched_blobs: usize,
}

/// A remote image's manifest for this platform (chosen from an index), as
/// its exact bytes, verified against the digest asked for.
pub struct Resolved {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// Fetches the manifest `remote` names, the platform's from an index.
pub async fn resolve(registry: &Registry, remote: &RemoteRef) -> Result<Resolved> {
    let repository = remote.repository.as_str();
    let reference = match &remote.target {
        Some(StoreTarget::Version(tag)) => tag.to_string(),
        Some(StoreTarget::Digest(digest)) => digest.to_string(),
        None => "latest".to_owned(),
    };
    let (mut bytes, mut media_type) = registry.get_manifest(repository, &reference).await?;
    if media_type == oci::MEDIA_TYPE_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST {
        let index: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| RemoteError::Unreadable {
                host: remote.host.clone(),
                what: format!("the index of {remote}"),
                source,
            })?;
        let architecture = oci::host_architecture();
        let chosen = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|manifest| {
                manifest["platform"]["os"] == "linux"
                    && manifest["platform"]["architecture"] == architecture
            })
            .and_then(|manifest| manifest["digest"].as_str())
            .ok_or_else(|| RemoteError::NoPlatform {
                reference: remote.to_string(),
                architecture,
            })?
            .to_owned();
        (bytes, media_type) = registry.get_manifest(repository, &chosen).await?;
    }
    let digest = Digest::of(&bytes);
    Ok(Resolved {
        bytes,
        media_type,
        digest,
    })
}

/// Pulls `remote` into `store` as `name:version`.
pub async fn pull(
    store: &Store,
    registry: &Registry,
    remote: &RemoteRef,
    name: &ImageName,
    version: &Version,
    reporter: &dyn Reporter,
) -> Result<Pulled> {
    let label = remote.to_string();
    let repository = remote.repository.as_str();
    let Resolved {
        bytes, media_type, ..
    } = resolve(registry, remote).await?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| RemoteError::Unreadable {
            host: remote.host.clone(),
            what: format!("the manifest of {remote}"),
            source,
        })?;
    let mut fetched_blobs = 0;
    for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let transfer = BlobTransfer::new(reporter, &label, descriptor);
        let outcome = if store.has_blob(&descriptor.digest) {
            TransferOutcome::Present
        } else {
            transfer.moving(Direction::Pull);
            registry
                .download_blob(repository, descriptor, store, &mut |bytes| {
                    transfer.progress(bytes)
                })
                .await?;
            fetched_blobs += 1;
            TransferOutcome::Fetched
        };
        transfer.finished(outcome);
    }
    let descriptor = store.put_bytes(&media_type, &bytes)?;
    let tagged = store.tag(name, version, &descriptor)?;
    Ok(Pulled {
        digest: descriptor.digest,
        tagged,
        fetched_blobs,
    })
}
