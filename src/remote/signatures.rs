//! cosign's tags on a registry: pushing an image's signature, attestations
//! and SBOMs beside it (`sha256-<hex>.sig`, `.att`, `.sbom`), and fetching
//! the first two to verify before anything is pulled.

use std::path::Path;

use super::push::push_blobs;
use super::{Registry, Result};
use crate::reference::Digest;
use crate::signing::artifact::{Artifact, MAX_DOCUMENT};
use crate::signing::cosign::tag;
use crate::signing::{Signatures, SigningError};
use crate::store::{ImageEntry, Store};

/// Pushes what the store holds about `entry` under cosign's tags of
/// `repository`: the SBOMs always, the signature and attestations when the
/// image is signed. A tag that names the same artifact already is left.
/// Says which tags it set. Their few small blobs are not reported as
/// transfers.
pub async fn push_attachments(
    store: &Store,
    home: &Path,
    registry: &Registry,
    repository: &str,
    entry: &ImageEntry,
) -> Result<Vec<String>> {
    let image = &entry.manifest.digest;
    let sbom = crate::signing::sbom_attachment(store, entry)?;
    // Its blobs are sent from the store, like every other.
    sbom.store(store)?;
    let mut artifacts = vec![("sbom", sbom)];
    if let Some(signatures) = crate::signing::stored(store, image)? {
        artifacts.push(("sig", signatures.signature));
        if let Some(attestations) = signatures.attestations {
            artifacts.push(("att", attestations));
        }
    }
    let mut pushed = Vec::new();
    for (suffix, artifact) in artifacts {
        let tag = tag(image, suffix);
        if registry.tag_digest(repository, &tag).await? == Some(artifact.digest()) {
            continue;
        }
        let label = format!("{}/{repository}:{tag}", registry.host());
        push_blobs(
            store,
            home,
            registry,
            repository,
            &label,
            &artifact.manifest,
            &crate::report::Silent,
        )
        .await?;
        registry
            .put_manifest(
                repository,
                &tag,
                &artifact.manifest.media_type,
                &artifact.manifest_bytes,
            )
            .await?;
        pushed.push(tag);
    }
    Ok(pushed)
}

async fn fetch_artifact(
    registry: &Registry,
    repository: &str,
    tag: &str,
) -> Result<Option<Artifact>> {
    let Some(digest) = registry.tag_digest(repository, tag).await? else {
        return Ok(None);
    };
    let (manifest_bytes, _) = registry.get_manifest(repository, digest.as_str()).await?;
    let manifest: crate::oci::Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|error| SigningError::Unreadable {
            image: digest.clone(),
            what: "signature manifest",
            reason: error.to_string(),
        })?;
    let config = registry
        .get_document(repository, &manifest.config, MAX_DOCUMENT)
        .await?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        layers.push(
            registry
                .get_document(repository, layer, MAX_DOCUMENT)
                .await?,
        );
    }
    let artifact = Artifact::from_parts(manifest_bytes, config, layers).map_err(|reason| {
        SigningError::Unreadable {
            image: digest,
            what: "signature manifest",
            reason,
        }
    })?;
    Ok(Some(artifact))
}

/// The signature and attestations of `image` in `repository`, if it has a
/// signature there.
pub async fn fetch(
    registry: &Registry,
    repository: &str,
    image: &Digest,
) -> Result<Option<Signatures>> {
    let Some(signature) = fetch_artifact(registry, repository, &tag(image, "sig")).await? else {
        return Ok(None);
    };
    let attestations = fetch_artifact(registry, repository, &tag(image, "att")).await?;
    Ok(Some(Signatures {
        signature,
        attestations,
    }))
}

/// What a registry's signatures of an image said.
pub struct RemoteVerified {
    /// The platform manifest's digest: pull by it, not by the tag again.
    pub digest: Digest,
    pub signatures: Signatures,
    pub verified: crate::signing::Verified,
}

/// Resolves `remote` to its platform manifest and checks its signature and
/// attestations on the registry with `key`; reads no layer.
pub async fn verify_remote(
    registry: &Registry,
    remote: &crate::reference::RemoteRef,
    key: &crate::signing::PublicKey,
) -> Result<RemoteVerified> {
    let resolved = super::pull::resolve(registry, remote).await?;
    let digest = resolved.digest;
    let signatures = fetch(registry, remote.repository.as_str(), &digest)
        .await?
        .ok_or_else(|| SigningError::Unsigned {
            image: digest.clone(),
        })?;
    let verified = crate::signing::cosign::verify(&signatures, &digest, key)?;
    Ok(RemoteVerified {
        digest,
        signatures,
        verified,
    })
}
