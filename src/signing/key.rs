//! Keys: ECDSA P-256 with SHA-256, the one scheme cosign's signature spec
//! guarantees. The private key is PKCS#8 PEM (`PRIVATE KEY`), the public
//! key PKIX PEM (`PUBLIC KEY`), what `cosign verify --key` and OpenSSL
//! read. The private key's bytes never leave this module: no error, log or
//! debug print shows them.

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};

use super::error::SigningError;
use crate::reference::Digest;

/// The DER of a P-256 SubjectPublicKeyInfo up to its 65-byte point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A private key, ready to sign.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "SigningKey({})", self.public.keyid())
    }
}

/// A public key, ready to verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point: 0x04, x, y.
    point: Vec<u8>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// The label and DER of the first PEM block of `text`.
fn unpem(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok()?;
    Some((label.to_owned(), der))
}

fn read_key_file(path: &Path) -> Result<String, SigningError> {
    let bytes = std::fs::read(path).map_err(|source| SigningError::ReadKey {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| SigningError::BadKey {
        path: path.to_owned(),
        reason: "it is not a PEM file".to_owned(),
    })
}

impl SigningKey {
    /// A new key pair.
    pub fn generate() -> Result<(SigningKey, String), SigningError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| SigningError::Random)?;
        let key =
            SigningKey::from_pkcs8(pkcs8.as_ref()).map_err(|reason| SigningError::BadKey {
                path: PathBuf::from("(generated)"),
                reason,
            })?;
        Ok((key, pem("PRIVATE KEY", pkcs8.as_ref())))
    }

    fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(|rejected| format!("it is not an ECDSA P-256 PKCS#8 key ({rejected})"))?;
        let public = PublicKey {
            point: pair.public_key().as_ref().to_vec(),
        };
        Ok(SigningKey { pair, public })
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn read(path: &Path) -> Result<SigningKey, SigningError> {
        let text = read_key_file(path)?;
        let bad = |reason: &str| SigningError::BadKey {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let (label, der) = unpem(&text).ok_or_else(|| bad("it is not a PEM file"))?;
        match label.as_str() {
            "PRIVATE KEY" => SigningKey::from_pkcs8(&der).map_err(|reason| bad(&reason)),
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => Err(bad(
                "it is a password-protected cosign key; make one with `kiln keygen`, or convert it to an unencrypted PKCS#8 `PRIVATE KEY`",
            )),
            "EC PRIVATE KEY" => Err(bad(
                "it is a SEC1 key; convert it with `openssl pkcs8 -topk8 -nocrypt`",
            )),
            "PUBLIC KEY" => Err(bad("it is a public key; signing needs the private key")),
            other => Err(bad(&format!(
                "it holds a `{other}`, not a PKCS#8 `PRIVATE KEY`"
            ))),
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// An ASN.1 DER ECDSA signature of SHA-256(`message`).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| SigningError::Random)
    }
}

impl PublicKey {
    /// Reads a PKIX PEM public key.
    pub fn read(path: &Path) -> Result<PublicKey, SigningError> {
        let text = read_key_file(path)?;
        PublicKey::from_pem(&text).map_err(|reason| SigningError::BadKey {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        let (label, der) = unpem(text).ok_or("it is not a PEM file")?;
        if label != "PUBLIC KEY" {
            return Err(format!(
                "it holds a `{label}`, not a `PUBLIC KEY` (verifying takes the public key)"
            ));
        }
        match der.strip_prefix(SPKI_P256_PREFIX.as_slice()) {
            Some(point) if point.len() == 65 && point[0] == 4 => Ok(PublicKey {
                point: point.to_vec(),
            }),
            _ => Err("it is not an ECDSA P-256 public key".to_owned()),
        }
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn der(&self) -> Vec<u8> {
        [SPKI_P256_PREFIX.as_slice(), &self.point].concat()
    }

    pub fn to_pem(&self) -> String {
        pem("PUBLIC KEY", &self.der())
    }

    /// The key's id in envelopes: the hex SHA-256 of its DER.
    pub fn keyid(&self) -> String {
        Digest::of(&self.der()).hex().to_owned()
    }

    /// Whether `signature` (DER) is this key's over SHA-256(`message`).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

/// Writes a new key pair: the private key at `path` (mode 0600), the public
/// key beside it with the extension `.pub`. Neither may exist.
pub fn keygen(path: &Path) -> Result<PathBuf, SigningError> {
    let public_path = path.with_extension("pub");
    if public_path == path {
        return Err(SigningError::KeyPath {
            path: path.to_owned(),
            reason: "it ends in .pub, the public key's name".to_owned(),
        });
    }
    for target in [path, public_path.as_path()] {
        if target.symlink_metadata().is_ok() {
            return Err(SigningError::KeyPath {
                path: target.to_owned(),
                reason: "it exists; kiln does not overwrite a key".to_owned(),
            });
        }
    }
    let (key, private_pem) = SigningKey::generate()?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let write = |target: &Path, text: &str, mode: u32| -> Result<(), SigningError> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let failed = |source| SigningError::WriteKey {
            path: target.to_owned(),
            source,
        };
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(failed)?;
        temp.write_all(text.as_bytes()).map_err(failed)?;
        temp.as_file().sync_all().map_err(failed)?;
        temp.persist_noclobber(target)
            .map_err(|error| failed(error.error))?;
        Ok(())
    };
    write(path, &private_pem, 0o600)?;
    if let Err(error) = write(&public_path, &key.public().to_pem(), 0o644) {
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    Ok(public_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_what_its_public_key_verifies() {
        let (key, private_pem) = SigningKey::generate().unwrap();
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let public = PublicKey::from_pem(&key.public().to_pem()).unwrap();
        assert_eq!(&public, key.public());
        assert_eq!(public.der().len(), 91);
        let signature = key.sign(b"message").unwrap();
        assert!(public.verifies(b"message", &signature));
        assert!(!public.verifies(b"messagf", &signature));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(!other.public().verifies(b"message", &signature));
    }

    #[test]
    fn a_public_key_of_another_kind_is_refused() {
        let (_, private_pem) = SigningKey::generate().unwrap();
        assert!(PublicKey::from_pem(&private_pem).is_err());
        assert!(PublicKey::from_pem("not a key").is_err());
        let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(PublicKey::from_pem(ed25519).is_err());
    }
}
