//! `kiln keygen -o KEY`: a new ECDSA P-256 key pair (KEY and KEY's `.pub`);
//! `kiln sign REF --key KEY`: a signature and attestations of a stored
//! image, kept in the store and pushed with it; `kiln verify REF --key
//! PUB` is in verify.rs.

use std::path::Path;

use kiln::reference::StoreRef;
use kiln::signing::{SigningKey, key, sign_stored};
use kiln::store::Store;

use super::{Exit, diagnostics::error_chain};

pub fn keygen(path: &Path) -> Exit {
    match key::keygen(path) {
        Ok(public) => {
            println!(
                "wrote the private key {} and the public key {}",
                path.display(),
                public.display()
            );
            Exit::Success
        }
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            Exit::Failure
        }
    }
}

pub fn sign(reference: &str, key_path: &Path) -> Exit {
    let reference: StoreRef = match reference.parse() {
        Ok(reference) => reference,
        Err(reason) => {
            eprintln!("error: invalid image reference `{reference}`: {reason}");
            return Exit::Usage;
        }
    };
    let key = match SigningKey::read(key_path) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            return Exit::Usage;
        }
    };
    let signed = Store::open_to_read(&kiln::kiln_home().join("store"), &reference)
        .map_err(kiln::signing::SigningError::from)
        .and_then(|store| {
            let _lock = store.lock()?;
            let entry = store.resolve(&reference)?;
            let provenance = kiln::provenance::provenance_of(&store, &entry.manifest.digest)?;
            let signatures = sign_stored(&store, &entry, &key, provenance)?;
            Ok((entry, signatures))
        });
    match signed {
        Ok((entry, signatures)) => {
            let attestations = signatures
                .attestations
                .as_ref()
                .map_or(0, |attestations| attestations.layers.len());
            println!(
                "signed {reference} ({}) with key {}: 1 signature, {attestations} attestations",
                entry.manifest.digest,
                &key.public().keyid()[..16]
            );
            Exit::Success
        }
        Err(error) => {
            eprintln!("error: failed to sign {reference}: {}", error_chain(&error));
            Exit::Failure
        }
    }
}
