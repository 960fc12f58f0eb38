//! `kiln verify REF`: every blob of a stored image read again and hashed,
//! on every core, so a flipped bit on disk is found before it ships.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::{ImageEntry, Store};
use crate::file_index::ANNOTATION_FILE_INDEX;
use crate::oci::Manifest;
use crate::reference::Digest;

/// One blob of the image and what reading it found.
#[derive(Clone, Debug, Serialize)]
pub struct BlobCheck {
    /// `manifest`, `config`, `layer N`, `file index`.
    pub role: String,
    pub digest: Digest,
    pub size: u64,
    /// `None`: the blob is intact.
    pub problem: Option<String>,
}

/// Hashes the blob file of `digest`, comparing digest and size.
fn check_blob(store: &Store, digest: &Digest, size: Option<u64>) -> Option<String> {
    let (actual, read) = match crate::hashing::digest_file(&store.blob_path(digest)) {
        Ok(hashed) => hashed,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Some("it is missing".to_owned());
        }
        Err(error) => return Some(format!("it cannot be read: {error}")),
    };
    if &actual != digest {
        return Some(format!("its content hashes to {actual}"));
    }
    match size {
        Some(size) if size != read => Some(format!("it holds {read} bytes, not {size}")),
        _ => None,
    }
}

/// Checks the manifest, config, layers and file index of a stored image,
/// `threads` blobs at a time. A manifest that cannot be read ends the
/// check there: what it names is unknown.
pub fn verify_image(store: &Store, entry: &ImageEntry, threads: usize) -> Vec<BlobCheck> {
    let mut checks = vec![BlobCheck {
        role: "manifest".to_owned(),
        digest: entry.manifest.digest.clone(),
        size: entry.manifest.size,
        problem: check_blob(store, &entry.manifest.digest, Some(entry.manifest.size)),
    }];
    let manifest: Manifest = match std::fs::read(store.blob_path(&entry.manifest.digest))
        .map_err(|error| error.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|error| error.to_string()))
    {
        Ok(manifest) => manifest,
        Err(reason) => {
            if checks[0].problem.is_none() {
                checks[0].problem = Some(format!("it is not an image manifest: {reason}"));
            }
            return checks;
        }
    };
    let mut blobs = vec![("config".to_owned(), manifest.config.clone())];
    for (index, layer) in manifest.layers.iter().enumerate() {
        blobs.push((format!("layer {}", index + 1), layer.clone()));
    }
    let file_index = manifest
        .annotations
        .get(ANNOTATION_FILE_INDEX)
        .and_then(|digest| digest.parse::<Digest>().ok())
        // An index not here yet (a pulled image) is made on first use.
        .filter(|digest| store.has_blob(digest));
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, blobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some((role, descriptor)) = blobs.get(at) else {
                        break;
                    };
                    let problem = check_blob(store, &descriptor.digest, Some(descriptor.size));
                    found.lock().expect("no check panics").push((
                        at,
                        BlobCheck {
                            role: role.clone(),
                            digest: descriptor.digest.clone(),
                            size: descriptor.size,
                            problem,
                        },
                    ));
                }
            });
        }
    });
    let mut found = found.into_inner().expect("no check panics");
    found.sort_by_key(|(at, _)| *at);
    checks.extend(found.into_iter().map(|(_, check)| check));
    if let Some(digest) = file_index {
        let size = std::fs::metadata(store.blob_path(&digest)).map_or(0, |meta| meta.len());
        checks.push(BlobCheck {
            role: "file index".to_owned(),
            problem: check_blob(store, &digest, None),
            digest,
            size,
        });
    }
    checks
}
