//! DSSE envelopes (github.com/secure-systems-lab/dsse): a payload, its
//! type, and signatures over the pre-authentication encoding
//! `DSSEv1 LEN(type) type LEN(body) body`, so that neither the type nor
//! the body can be swapped without breaking the signature. The exact
//! bytes are signed: nothing is canonicalized.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::SigningError;
use super::key::{PublicKey, SigningKey};

/// The payload type of an in-toto statement.
pub const PAYLOAD_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
/// The media type of an envelope as an OCI layer.
pub const MEDIA_TYPE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 (standard alphabet, padded).
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the DER signature.
    pub sig: String,
}

/// The bytes a DSSE signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    bytes.extend_from_slice(payload);
    bytes
}

fn base64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Envelope {
    /// `payload` of `payload_type`, signed by `key`.
    pub fn sign(
        payload_type: &str,
        payload: &[u8],
        key: &SigningKey,
    ) -> Result<Envelope, SigningError> {
        let signature = key.sign(&pae(payload_type, payload))?;
        Ok(Envelope {
            payload_type: payload_type.to_owned(),
            payload: base64().encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: key.public().keyid(),
                sig: base64().encode(signature),
            }],
        })
    }

    /// The payload, when one of the signatures is `key`'s (key ids are
    /// hints, as in cosign: every signature is tried).
    pub fn verify(&self, key: &PublicKey) -> Result<Vec<u8>, String> {
        let payload = base64()
            .decode(self.payload.as_bytes())
            .map_err(|_| "its payload is not base64".to_owned())?;
        if self.signatures.is_empty() {
            return Err("it has no signature".to_owned());
        }
        let signed = pae(&self.payload_type, &payload);
        let verified = self.signatures.iter().any(|signature| {
            base64()
                .decode(signature.sig.as_bytes())
                .is_ok_and(|sig| key.verifies(&signed, &sig))
        });
        if verified {
            Ok(payload)
        } else {
            Err("no signature in it is the key's".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_the_specs_encoding() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn an_envelope_verifies_until_a_byte_changes() {
        let (key, _) = SigningKey::generate().unwrap();
        let envelope = Envelope::sign(PAYLOAD_TYPE_IN_TOTO, b"{\"a\":1}", &key).unwrap();
        assert_eq!(envelope.verify(key.public()).unwrap(), b"{\"a\":1}");
        let mut tampered = envelope.clone();
        tampered.payload = base64().encode(b"{\"a\":2}");
        assert!(tampered.verify(key.public()).is_err());
        let mut retyped = envelope.clone();
        retyped.payload_type = "text/plain".to_owned();
        assert!(retyped.verify(key.public()).is_err());
        let (other, _) = SigningKey::generate().unwrap();
        assert!(envelope.verify(other.public()).is_err());
    }
}
