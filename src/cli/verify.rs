//! `kiln verify REF [--root DIR]`: the store's copy of an image, or a
//! deployed tree, checked against what the image's digests promise.

use std::path::Path;
use std::time::Instant;

use kiln::file_index::drift::{self, DriftOptions};
use kiln::file_index::glob::Glob;
use kiln::image_diff::StoredImage;
use kiln::reference::StoreRef;
use kiln::store::Store;

use super::{Exit, diagnostics::error_chain, reporters::human_bytes};

pub fn run(reference: &str, root: Option<&Path>, ignore: &[String], json: bool) -> Exit {
    let reference: StoreRef = match reference.parse() {
        Ok(reference) => reference,
        Err(reason) => {
            eprintln!("error: invalid image reference `{reference}`: {reason}");
            return Exit::Usage;
        }
    };
    let mut globs = Vec::new();
    for pattern in ignore {
        match Glob::new(pattern) {
            Ok(glob) => globs.push(glob),
            Err(reason) => {
                eprintln!("error: invalid --ignore pattern `{pattern}`: {reason}");
                return Exit::Usage;
            }
        }
    }
    let store = match Store::open_to_read(&kiln::kiln_home().join("store"), &reference) {
        Ok(store) => store,
        Err(error) => {
            eprintln!(
                "error: failed to verify {reference}: {}",
                error_chain(&error)
            );
            return Exit::Failure;
        }
    };
    match root {
        None => blobs(&store, &reference, json),
        Some(root) => tree(&store, &reference, root, globs, json),
    }
}

fn blobs(store: &Store, reference: &StoreRef, json: bool) -> Exit {
    let entry = match store.resolve(reference) {
        Ok(entry) => entry,
        Err(error) => {
            eprintln!(
                "error: failed to verify {reference}: {}",
                error_chain(&error)
            );
            return Exit::Failure;
        }
    };
    let checks =
        kiln::store::verify::verify_image(store, &entry, kiln::bake::compression_threads());
    let damaged = checks
        .iter()
        .filter(|check| check.problem.is_some())
        .count();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "image": reference.to_string(),
                "digest": entry.manifest.digest,
                "blobs": checks,
                "damaged": damaged,
            })
        );
    } else {
        for check in &checks {
            match &check.problem {
                None => println!(
                    "ok       {:<11} {}  {}",
                    check.role,
                    check.digest,
                    human_bytes(check.size)
                ),
                Some(problem) => {
                    println!("DAMAGED  {:<11} {}  {problem}", check.role, check.digest)
                }
            }
        }
        if damaged == 0 {
            println!("{reference}: all {} blobs intact", checks.len());
        } else {
            println!("{reference}: {damaged} of {} blobs damaged", checks.len());
        }
    }
    if damaged == 0 {
        Exit::Success
    } else {
        Exit::Failure
    }
}

/// A changed value for a line of text: digests shortened.
fn short(value: &str) -> String {
    value.parse().map_or_else(
        |_| value.to_owned(),
        |digest| super::reporters::short(&digest),
    )
}

fn tree(store: &Store, reference: &StoreRef, root: &Path, ignore: Vec<Glob>, json: bool) -> Exit {
    let started = Instant::now();
    let image = match StoredImage::load(store, reference) {
        Ok(image) => image,
        Err(error) => {
            eprintln!(
                "error: failed to read the file index of {reference}: {}",
                error_chain(&error)
            );
            return Exit::Failure;
        }
    };
    let options = DriftOptions {
        ignore,
        threads: kiln::bake::compression_threads(),
    };
    let drift = match drift::check(root, &image.index, &options) {
        Ok(drift) => drift,
        Err(error) => {
            eprintln!(
                "error: failed to compare {} with {reference}: {error}",
                root.display()
            );
            return Exit::Failure;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "image": reference.to_string(),
                "digest": image.entry.manifest.digest,
                "root": root.display().to_string(),
                "drifted": drift.drifted(),
                "added": drift.added,
                "removed": drift.removed,
                "changed": drift.changed,
                "unreadable": drift.unreadable,
                "checked": drift.checked,
                "hashed": drift.hashed,
                "hashed_bytes": drift.hashed_bytes,
                "skipped": drift.skipped,
                "seconds": seconds,
            })
        );
    } else {
        for added in &drift.added {
            println!("added    {} ({})", added.path, added.kind);
        }
        for removed in &drift.removed {
            println!("removed  {} ({})", removed.path, removed.kind);
        }
        for changed in &drift.changed {
            let what: Vec<String> = changed
                .changes
                .iter()
                .map(|change| {
                    format!(
                        "{} {} → {}",
                        change.what,
                        short(&change.image),
                        short(&change.root)
                    )
                })
                .collect();
            println!("changed  {}: {}", changed.path, what.join("; "));
        }
        for unreadable in &drift.unreadable {
            println!("unreadable {}: {}", unreadable.path, unreadable.error);
        }
        let census = format!(
            "{} paths checked, {} files hashed ({}) in {seconds:.1}s",
            drift.checked,
            drift.hashed,
            human_bytes(drift.hashed_bytes)
        );
        if drift.drifted() {
            println!(
                "{reference}: {} drifted from the image ({} added, {} removed, {} changed, {} unreadable); {census}",
                root.display(),
                drift.added.len(),
                drift.removed.len(),
                drift.changed.len(),
                drift.unreadable.len()
            );
        } else {
            println!(
                "{reference}: {} matches the image; {census}",
                root.display()
            );
        }
    }
    if drift.drifted() {
        Exit::Failure
    } else {
        Exit::Success
    }
}

/// `kiln verify REF --key PUB`: the signature and attestations of a stored
/// image, or of an image on a registry (nothing is pulled).
pub fn signature(
    reference: &str,
    key_path: &Path,
    options: &kiln::remote::RemoteOptions,
    json: bool,
) -> Exit {
    use kiln::reference::RemoteRef;
    let key = match kiln::signing::PublicKey::read(key_path) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            return Exit::Usage;
        }
    };
    let checked: Result<(kiln::reference::Digest, kiln::signing::Verified), String> =
        if RemoteRef::looks_remote(reference) {
            let remote: RemoteRef = match reference.parse() {
                Ok(remote) => remote,
                Err(reason) => {
                    eprintln!("error: invalid remote reference `{reference}`: {reason}");
                    return Exit::Usage;
                }
            };
            kiln::remote::Registry::new(&remote.host, options)
                .map_err(|error| error_chain(&error))
                .and_then(|registry| {
                    kiln::remote::block_on(kiln::remote::signatures::verify_remote(
                        &registry, &remote, &key,
                    ))
                    .map(|remote| (remote.digest, remote.verified))
                    .map_err(|error| error_chain(&error))
                })
        } else {
            let local: StoreRef = match reference.parse() {
                Ok(local) => local,
                Err(reason) => {
                    eprintln!("error: invalid image reference `{reference}`: {reason}");
                    return Exit::Usage;
                }
            };
            Store::open_to_read(&kiln::kiln_home().join("store"), &local)
                .map_err(kiln::signing::SigningError::from)
                .and_then(|store| {
                    let entry = store.resolve(&local)?;
                    let verified =
                        kiln::signing::verify_stored(&store, &entry.manifest.digest, &key)?;
                    Ok((entry.manifest.digest, verified))
                })
                .map_err(|error| error_chain(&error))
        };
    match checked {
        Ok((digest, verified)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "image": reference,
                        "digest": digest,
                        "signed": true,
                        "keyid": key.keyid(),
                        "attestations": verified.attestations,
                    })
                );
            } else {
                for predicate_type in &verified.attestations {
                    println!("ok       attestation {predicate_type}");
                }
                println!(
                    "{reference}: {digest} is signed by key {} ({} attestations verified)",
                    &key.keyid()[..16],
                    verified.attestations.len()
                );
            }
            Exit::Success
        }
        Err(reason) => {
            eprintln!("error: failed to verify {reference}: {reason}");
            Exit::Failure
        }
    }
}
