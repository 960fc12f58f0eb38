//! Signatures and attestations: who vouches for an image, in cosign's
//! layout ([`cosign`]), kept in the store beside the image and pushed with
//! it, and checked before a base is used.
//!
//! `kiln sign` (or `[publish] sign` on every build) signs the image's
//! manifest digest and attests its provenance and both SBOMs, each a DSSE
//! envelope ([`dsse`]) with an ECDSA P-256 key ([`key`]). The store keeps
//! the two artifacts (`.sig`, `.att`) as blobs, named by a note under
//! `.kiln/signatures/`; signing again replaces them. A push sends them
//! under cosign's tags, with the SBOMs (`.sbom`), signed or not.

pub mod artifact;
pub mod cosign;
pub mod dsse;
mod error;
pub mod key;

use serde::{Deserialize, Serialize};

use crate::oci::Descriptor;
use crate::reference::Digest;
use crate::sbom::{SbomFormat, Subject};
use crate::store::{ImageEntry, Store};
pub use artifact::Artifact;
pub use cosign::{Signatures, Verified};
pub use error::SigningError;
pub use key::{PublicKey, SigningKey};

/// Where the store names the signature artifacts of an image.
#[derive(Default, Serialize, Deserialize)]
struct SignatureNote {
    signature: Option<Descriptor>,
    attestations: Option<Descriptor>,
}

fn note_path(store: &Store, image: &Digest) -> std::path::PathBuf {
    store
        .private_dir()
        .join("signatures")
        .join(format!("{}.json", image.hex()))
}

/// The image's SBOM in `format`, as the store keeps it.
fn sbom(store: &Store, entry: &ImageEntry, format: SbomFormat) -> Result<Vec<u8>, SigningError> {
    let manifest = store.manifest(entry)?;
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|epoch| epoch.parse().ok())
        .unwrap_or(0);
    let subject = Subject {
        name: &entry.name,
        version: &entry.version,
        digest: &entry.manifest.digest,
        epoch,
    };
    crate::sbom::sbom_of(store, &manifest, &subject, format).map_err(|source| SigningError::Sbom {
        image: entry.manifest.digest.clone(),
        source: Box::new(source),
    })
}

/// Signs a stored image with `key` and attests its `provenance` (the
/// statement the store keeps, when it has one) and SBOMs; keeps the result
/// in the store.
pub fn sign_stored(
    store: &Store,
    entry: &ImageEntry,
    key: &SigningKey,
    provenance: Option<Vec<u8>>,
) -> Result<Signatures, SigningError> {
    let image = &entry.manifest.digest;
    let identity = entry.name.to_string();
    let mut statements = Vec::new();
    if let Some(provenance) = provenance {
        statements.push((cosign::PREDICATE_SLSA.to_owned(), provenance));
    }
    for (format, predicate_type) in [
        (SbomFormat::Cyclonedx, cosign::PREDICATE_CYCLONEDX),
        (SbomFormat::Spdx, cosign::PREDICATE_SPDX),
    ] {
        let document: serde_json::Value = serde_json::from_slice(&sbom(store, entry, format)?)
            .map_err(|error| SigningError::Unreadable {
                image: image.clone(),
                what: "SBOM",
                reason: error.to_string(),
            })?;
        statements.push((
            predicate_type.to_owned(),
            cosign::statement(&identity, image, predicate_type, document),
        ));
    }
    let signatures = cosign::sign(&identity, image, key, &statements)?;
    keep(store, image, &signatures)?;
    Ok(signatures)
}

/// Keeps `signatures` of `image` in the store, replacing any before.
pub fn keep(store: &Store, image: &Digest, signatures: &Signatures) -> Result<(), SigningError> {
    let note = SignatureNote {
        signature: Some(signatures.signature.store(store)?),
        attestations: signatures
            .attestations
            .as_ref()
            .map(|attestations| attestations.store(store))
            .transpose()?,
    };
    store.write_private(
        &note_path(store, image),
        &serde_json::to_vec_pretty(&note).expect("notes serialize"),
    )?;
    Ok(())
}

/// The signatures the store keeps for `image`, if it is signed.
pub fn stored(store: &Store, image: &Digest) -> Result<Option<Signatures>, SigningError> {
    let note: SignatureNote = store.read_private_json(&note_path(store, image))?;
    let Some(signature) = note.signature else {
        return Ok(None);
    };
    Ok(Some(Signatures {
        signature: Artifact::load(store, &signature)?,
        attestations: note
            .attestations
            .map(|attestations| Artifact::load(store, &attestations))
            .transpose()?,
    }))
}

/// Checks the signatures the store keeps for `image` with `key`.
pub fn verify_stored(
    store: &Store,
    image: &Digest,
    key: &PublicKey,
) -> Result<Verified, SigningError> {
    let signatures = stored(store, image)?.ok_or_else(|| SigningError::Unsigned {
        image: image.clone(),
    })?;
    cosign::verify(&signatures, image, key)
}

/// The image's SBOMs as `cosign attach sbom` lays them out: one layer
/// each, CycloneDX then SPDX.
pub fn sbom_attachment(store: &Store, entry: &ImageEntry) -> Result<Artifact, SigningError> {
    let mut layers = Vec::new();
    for format in [SbomFormat::Cyclonedx, SbomFormat::Spdx] {
        layers.push(artifact::Layer {
            media_type: format.media_type().to_owned(),
            bytes: sbom(store, entry, format)?,
            annotations: Default::default(),
        });
    }
    Ok(Artifact::new(layers))
}
