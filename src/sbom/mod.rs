//! Software bills of materials: what packages an image holds, as
//! CycloneDX 1.6 JSON and SPDX 2.3 JSON, made from its layers
//! ([`inventory`]) and kept in the store beside it.
//!
//! Both documents are reproducible: their ids derive from the image's
//! digest, their times from `SOURCE_DATE_EPOCH`, their packages are sorted;
//! the same image gives the same bytes on any machine. A build stores them
//! as blobs, named by a note under `.kiln/sbom/`; `kiln sbom` prints them
//! (making them for an image stored before, or pulled), the `sbom`
//! post-processor writes them beside the other artifacts.

mod cyclonedx;
mod error;
pub mod inventory;
mod purl;
mod spdx;
mod subject;

use serde::{Deserialize, Serialize};

use crate::oci::Manifest;
use crate::reference::Digest;
use crate::store::Store;
pub use error::SbomError;
pub use inventory::{Inventory, Package};
pub use subject::Subject;

pub const MEDIA_TYPE_CYCLONEDX: &str = "application/vnd.cyclonedx+json";
pub const MEDIA_TYPE_SPDX: &str = "application/spdx+json";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SbomFormat {
    /// CycloneDX 1.6 JSON.
    #[default]
    Cyclonedx,
    /// SPDX 2.3 JSON.
    Spdx,
}

impl SbomFormat {
    /// The file name's ending: `.cdx.json`, `.spdx.json`.
    pub fn extension(self) -> &'static str {
        match self {
            SbomFormat::Cyclonedx => "cdx.json",
            SbomFormat::Spdx => "spdx.json",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Cyclonedx => MEDIA_TYPE_CYCLONEDX,
            SbomFormat::Spdx => MEDIA_TYPE_SPDX,
        }
    }
}

/// The document of `inventory` in `format`, as its exact bytes.
pub fn document(inventory: &Inventory, subject: &Subject<'_>, format: SbomFormat) -> Vec<u8> {
    let json = match format {
        SbomFormat::Cyclonedx => cyclonedx::document(inventory, subject),
        SbomFormat::Spdx => spdx::document(inventory, subject),
    };
    let mut bytes = serde_json::to_vec_pretty(&json).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

/// Where the store names the SBOM blobs of an image.
#[derive(Default, Serialize, Deserialize)]
struct SbomNote {
    cyclonedx: Option<Digest>,
    spdx: Option<Digest>,
}

fn note_path(store: &Store, image: &Digest) -> std::path::PathBuf {
    store
        .private_dir()
        .join("sbom")
        .join(format!("{}.json", image.hex()))
}

/// Makes both documents of a stored image and keeps them in the store
/// (once: an image that has them keeps them). `inventory` is the image's,
/// when the caller has it; else it is read from the layers.
pub fn store_sboms(
    store: &Store,
    manifest: &Manifest,
    subject: &Subject<'_>,
    inventory: Option<Inventory>,
) -> Result<(), SbomError> {
    let note = note_path(store, subject.digest);
    let known: SbomNote = store.read_private_json(&note)?;
    let present = |digest: &Option<Digest>| digest.as_ref().is_some_and(|d| store.has_blob(d));
    if present(&known.cyclonedx) && present(&known.spdx) {
        return Ok(());
    }
    let inventory = match inventory {
        Some(inventory) => inventory,
        None => inventory::inventory(store, manifest)?,
    };
    let mut note_of = SbomNote::default();
    for format in [SbomFormat::Cyclonedx, SbomFormat::Spdx] {
        let bytes = document(&inventory, subject, format);
        let descriptor = store.put_bytes(format.media_type(), &bytes)?;
        match format {
            SbomFormat::Cyclonedx => note_of.cyclonedx = Some(descriptor.digest),
            SbomFormat::Spdx => note_of.spdx = Some(descriptor.digest),
        }
    }
    store.write_private(
        &note,
        &serde_json::to_vec_pretty(&note_of).expect("notes serialize"),
    )?;
    Ok(())
}

/// The document of a stored image in `format`: the one kept in the store,
/// else made now from its layers (an image stored before SBOMs, or pulled).
pub fn sbom_of(
    store: &Store,
    manifest: &Manifest,
    subject: &Subject<'_>,
    format: SbomFormat,
) -> Result<Vec<u8>, SbomError> {
    let note: SbomNote = store.read_private_json(&note_path(store, subject.digest))?;
    let kept = match format {
        SbomFormat::Cyclonedx => note.cyclonedx,
        SbomFormat::Spdx => note.spdx,
    };
    if let Some(digest) = kept
        && let Ok(mut blob) = store.open_blob(&digest, None)
    {
        use std::io::Read;
        let mut bytes = Vec::new();
        if blob.read_to_end(&mut bytes).is_ok() {
            return Ok(bytes);
        }
    }
    let inventory = inventory::inventory(store, manifest)?;
    Ok(document(&inventory, subject, format))
}
