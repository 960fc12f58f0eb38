//! cosign's layout of what vouches for an image, beside it in the same
//! repository (sigstore/cosign specs SIGNATURE_SPEC.md, ATTESTATION_SPEC.md):
//!
//! - `sha256-<hex>.sig`: one layer per signature, a "simple signing"
//!   payload naming the image's manifest digest, its ECDSA signature in
//!   the annotation `dev.cosignproject.cosign/signature`;
//! - `sha256-<hex>.att`: one DSSE envelope per attestation, each an
//!   in-toto statement about the image (its provenance, its SBOMs, and
//!   the image signature again as a `cosign/sign/v1` statement, the form
//!   cosign 3 signs images in), annotated with its `predicateType`;
//! - `sha256-<hex>.sbom`: the SBOM documents themselves, unsigned, as
//!   `cosign attach sbom` puts them.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};

use super::artifact::{Artifact, Layer};
use super::dsse::{Envelope, MEDIA_TYPE_ENVELOPE, PAYLOAD_TYPE_IN_TOTO};
use super::error::SigningError;
use super::key::{PublicKey, SigningKey};
use crate::reference::Digest;

pub const MEDIA_TYPE_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ANNOTATION_PREDICATE_TYPE: &str = "predicateType";
/// cosign 3's predicate for a plain image signature.
pub const PREDICATE_SIGN: &str = "https://sigstore.dev/cosign/sign/v1";
pub const PREDICATE_SLSA: &str = "https://slsa.dev/provenance/v1";
pub const PREDICATE_CYCLONEDX: &str = "https://cyclonedx.org/bom";
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";
const SIGNATURE_TYPE: &str = "cosign container image signature";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// The tag beside `image` that holds its `suffix` (`sig`, `att`, `sbom`).
pub fn tag(image: &Digest, suffix: &str) -> String {
    format!("sha256-{}.{suffix}", image.hex())
}

/// Whether `tag` is one of cosign's tags beside an image, not a version.
pub fn is_attachment_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .and_then(|rest| rest.rsplit_once('.'))
        .is_some_and(|(hex, suffix)| {
            hex.len() == 64
                && hex.bytes().all(|byte| byte.is_ascii_hexdigit())
                && matches!(suffix, "sig" | "att" | "sbom")
        })
}

/// What cosign signs: the image's digest and the name it was signed as.
pub fn simple_signing_payload(identity: &str, image: &Digest) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": { "docker-reference": identity },
            "image": { "docker-manifest-digest": image.to_string() },
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    }))
    .expect("JSON values serialize")
}

/// An in-toto statement about `image` with `predicate`.
pub fn statement(
    identity: &str,
    image: &Digest,
    predicate_type: &str,
    predicate: Value,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": identity, "digest": { "sha256": image.hex() } }],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .expect("JSON values serialize")
}

/// A signature and attestations of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signatures {
    pub signature: Artifact,
    pub attestations: Option<Artifact>,
}

/// Signs `image` as `identity`, with `statements` (predicate type, the
/// exact statement bytes) as its attestations.
pub fn sign(
    identity: &str,
    image: &Digest,
    key: &SigningKey,
    statements: &[(String, Vec<u8>)],
) -> Result<Signatures, SigningError> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let payload = simple_signing_payload(identity, image);
    let signature = key.sign(&payload)?;
    let signature = Artifact::new(vec![Layer {
        media_type: MEDIA_TYPE_SIMPLE_SIGNING.to_owned(),
        bytes: payload,
        annotations: BTreeMap::from([(ANNOTATION_SIGNATURE.to_owned(), base64.encode(signature))]),
    }]);
    let sign_statement = statement(identity, image, PREDICATE_SIGN, json!({}));
    let mut layers = Vec::with_capacity(statements.len() + 1);
    for (predicate_type, bytes) in std::iter::once((PREDICATE_SIGN, &sign_statement)).chain(
        statements
            .iter()
            .map(|(kind, bytes)| (kind.as_str(), bytes)),
    ) {
        let envelope = Envelope::sign(PAYLOAD_TYPE_IN_TOTO, bytes, key)?;
        layers.push(Layer {
            media_type: MEDIA_TYPE_ENVELOPE.to_owned(),
            bytes: serde_json::to_vec(&envelope).expect("an envelope serializes"),
            annotations: BTreeMap::from([
                (ANNOTATION_SIGNATURE.to_owned(), String::new()),
                (
                    ANNOTATION_PREDICATE_TYPE.to_owned(),
                    predicate_type.to_owned(),
                ),
            ]),
        });
    }
    Ok(Signatures {
        signature,
        attestations: Some(Artifact::new(layers)),
    })
}

/// What a verification found: the predicate types of the attestations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    pub attestations: Vec<String>,
}

fn signed_digest(payload: &[u8]) -> Result<String, String> {
    let payload: Value =
        serde_json::from_slice(payload).map_err(|_| "its payload is not JSON".to_owned())?;
    if payload["critical"]["type"] != SIGNATURE_TYPE {
        return Err("its payload is not a cosign image signature".to_owned());
    }
    payload["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "its payload names no image digest".to_owned())
}

/// Checks that `signatures` hold a signature of `image` by `key`, and
/// that every attestation is `key`'s and about `image`. One bad
/// attestation refuses the whole: it may be the one a user relies on.
pub fn verify(
    signatures: &Signatures,
    image: &Digest,
    key: &PublicKey,
) -> Result<Verified, SigningError> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let bad_signature = |reason: String| SigningError::BadSignature {
        image: image.clone(),
        reason,
    };
    let mut reasons = Vec::new();
    let mut signed = false;
    for (descriptor, payload) in signatures.signature.documents() {
        if descriptor.media_type != MEDIA_TYPE_SIMPLE_SIGNING {
            continue;
        }
        let Some(signature) = descriptor
            .annotations
            .get(ANNOTATION_SIGNATURE)
            .and_then(|text| base64.decode(text.as_bytes()).ok())
        else {
            reasons.push("a signature layer has no signature annotation".to_owned());
            continue;
        };
        if !key.verifies(payload, &signature) {
            reasons.push("it was not made by this key".to_owned());
            continue;
        }
        match signed_digest(payload) {
            Ok(digest) if digest == image.as_str() => signed = true,
            Ok(digest) => reasons.push(format!("it signs another image, {digest}")),
            Err(reason) => reasons.push(reason),
        }
    }
    if !signed {
        reasons.dedup();
        if reasons.is_empty() {
            reasons.push("it holds no cosign signature".to_owned());
        }
        return Err(bad_signature(reasons.join("; ")));
    }
    let mut verified = Verified::default();
    let Some(attestations) = &signatures.attestations else {
        return Ok(verified);
    };
    for (descriptor, bytes) in attestations.documents() {
        let predicate_type = descriptor
            .annotations
            .get(ANNOTATION_PREDICATE_TYPE)
            .cloned()
            .unwrap_or_else(|| "(unnamed)".to_owned());
        let bad = |reason: &str| SigningError::BadAttestation {
            image: image.clone(),
            predicate_type: predicate_type.clone(),
            reason: reason.to_owned(),
        };
        if descriptor.media_type != MEDIA_TYPE_ENVELOPE {
            return Err(bad(&format!(
                "its layer is {}, not a DSSE envelope",
                descriptor.media_type
            )));
        }
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|_| bad("it is not a DSSE envelope"))?;
        if envelope.payload_type != PAYLOAD_TYPE_IN_TOTO {
            return Err(bad("its payload is not an in-toto statement"));
        }
        let payload = envelope.verify(key).map_err(|reason| bad(&reason))?;
        let statement: Value =
            serde_json::from_slice(&payload).map_err(|_| bad("its statement is not JSON"))?;
        if statement["_type"] != STATEMENT_TYPE {
            return Err(bad("it is not an in-toto Statement v1"));
        }
        if statement["predicateType"] != predicate_type.as_str() {
            return Err(bad("its predicate type is not the one its layer names"));
        }
        let about_image = statement["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|subject| subject["digest"]["sha256"] == image.hex());
        if !about_image {
            return Err(bad("its subject is another image"));
        }
        verified.attestations.push(predicate_type);
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Digest {
        Digest::of(b"an image manifest")
    }

    fn signed(key: &SigningKey) -> Signatures {
        let provenance = statement(
            "golden/web",
            &image(),
            "https://slsa.dev/provenance/v1",
            json!({ "buildDefinition": {} }),
        );
        sign(
            "golden/web",
            &image(),
            key,
            &[("https://slsa.dev/provenance/v1".to_owned(), provenance)],
        )
        .unwrap()
    }

    #[test]
    fn a_signed_image_verifies_with_its_key_only() {
        let (key, _) = SigningKey::generate().unwrap();
        let signatures = signed(&key);
        let verified = verify(&signatures, &image(), key.public()).unwrap();
        assert_eq!(
            verified.attestations,
            [PREDICATE_SIGN, "https://slsa.dev/provenance/v1"]
        );
        let (other, _) = SigningKey::generate().unwrap();
        let error = verify(&signatures, &image(), other.public()).unwrap_err();
        assert!(
            error.to_string().contains("not made by this key"),
            "{error}"
        );
        let error = verify(&signatures, &Digest::of(b"another"), key.public()).unwrap_err();
        assert!(error.to_string().contains("signs another image"), "{error}");
    }

    #[test]
    fn a_changed_attestation_is_refused() {
        let (key, _) = SigningKey::generate().unwrap();
        let mut signatures = signed(&key);
        let attestations = signatures.attestations.as_mut().unwrap();
        let mut envelope: Envelope = serde_json::from_slice(&attestations.layers[1]).unwrap();
        let base64 = base64::engine::general_purpose::STANDARD;
        let mut payload = base64.decode(&envelope.payload).unwrap();
        let at = payload.iter().position(|byte| *byte == b'{').unwrap() + 1;
        payload[at] ^= 1;
        envelope.payload = base64.encode(payload);
        attestations.layers[1] = serde_json::to_vec(&envelope).unwrap();
        let error = verify(&signatures, &image(), key.public()).unwrap_err();
        assert!(
            matches!(&error, SigningError::BadAttestation { predicate_type, .. } if predicate_type == "https://slsa.dev/provenance/v1"),
            "{error}"
        );
    }
}
