//! `kiln sbom REF [--format cyclonedx|spdx] [-o FILE]`: the software bill
//! of materials of a stored image, as the store keeps it (or made from its
//! layers for an image stored without one); `kiln provenance REF`: the
//! provenance its last build recorded.

use std::path::Path;

use kiln::reference::{StoreRef, StoreTarget};
use kiln::sbom::{SbomFormat, Subject, sbom_of};
use kiln::store::Store;

use super::{Exit, diagnostics::error_chain};

pub fn run(reference: &str, format: SbomFormat, output: Option<&Path>) -> Exit {
    let reference: StoreRef = match reference.parse() {
        Ok(reference) => reference,
        Err(reason) => {
            eprintln!("error: invalid image reference `{reference}`: {reason}");
            return Exit::Usage;
        }
    };
    let made = Store::open_to_read(&kiln::kiln_home().join("store"), &reference)
        .map_err(kiln::sbom::SbomError::from)
        .and_then(|store| {
            let entry = store.resolve(&reference)?;
            let manifest = store.manifest(&entry)?;
            let epoch = super::build::source_date_epoch().unwrap_or(0);
            let version = match &reference.target {
                StoreTarget::Version(version) => version.clone(),
                StoreTarget::Digest(_) => entry.version.clone(),
            };
            let subject = Subject {
                name: &entry.name,
                version: &version,
                digest: &entry.manifest.digest,
                epoch,
            };
            sbom_of(&store, &manifest, &subject, format)
        });
    let bytes = match made {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!(
                "error: failed to make the SBOM of {reference}: {}",
                error_chain(&error)
            );
            return Exit::Failure;
        }
    };
    let written = match output {
        Some(path) => std::fs::write(path, &bytes),
        None => {
            use std::io::Write;
            std::io::stdout().lock().write_all(&bytes)
        }
    };
    match written {
        Ok(()) => Exit::Success,
        Err(error) => {
            eprintln!("error: failed to write the SBOM: {error}");
            Exit::Failure
        }
    }
}

/// `kiln provenance REF`.
pub fn provenance(reference: &str) -> Exit {
    let reference: StoreRef = match reference.parse() {
        Ok(reference) => reference,
        Err(reason) => {
            eprintln!("error: invalid image reference `{reference}`: {reason}");
            return Exit::Usage;
        }
    };
    let found =
        Store::open_to_read(&kiln::kiln_home().join("store"), &reference).and_then(|store| {
            let entry = store.resolve(&reference)?;
            kiln::provenance::provenance_of(&store, &entry.manifest.digest)
        });
    match found {
        Ok(Some(bytes)) => {
            use std::io::Write;
            match std::io::stdout().lock().write_all(&bytes) {
                Ok(()) => Exit::Success,
                Err(error) => {
                    eprintln!("error: failed to write the provenance: {error}");
                    Exit::Failure
                }
            }
        }
        Ok(None) => {
            eprintln!(
                "error: {reference} has no provenance here: it was pulled, or built by a kiln that did not record it"
            );
            Exit::Failure
        }
        Err(error) => {
            eprintln!(
                "error: failed to read the provenance of {reference}: {}",
                error_chain(&error)
            );
            Exit::Failure
        }
    }
}
