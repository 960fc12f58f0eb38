//! `kiln diff A [B]`: what changed from image A to image B, or from A's
//! parent to A.

use kiln::image_diff::{self, ImageDiff, StoredImage};
use kiln::reference::StoreRef;
use kiln::store::Store;

use super::{Exit, diagnostics::error_chain, reporters::human_bytes};

fn parse(reference: &str) -> Result<StoreRef, Exit> {
    reference.parse().map_err(|reason| {
        eprintln!("error: invalid image reference `{reference}`: {reason}");
        Exit::Usage
    })
}

fn signed_bytes(delta: i128) -> String {
    let sign = if delta < 0 { "-" } else { "+" };
    format!(
        "{sign}{}",
        human_bytes(delta.unsigned_abs().try_into().unwrap_or(u64::MAX))
    )
}

pub fn run(a: &str, b: Option<&str>, json: bool) -> Exit {
    let a = match parse(a) {
        Ok(a) => a,
        Err(exit) => return exit,
    };
    let b = match b.map(parse).transpose() {
        Ok(b) => b,
        Err(exit) => return exit,
    };
    let what = match &b {
        Some(b) => format!("{a} with {b}"),
        None => format!("{a} with its parent"),
    };
    let loaded = Store::open_to_read(&kiln::kiln_home().join("store"), &a)
        .map_err(kiln::file_index::IndexError::from)
        .and_then(|store| {
            let first = StoredImage::load(&store, &a)?;
            let second = match &b {
                Some(b) => Some(StoredImage::load(&store, b)?),
                None => match first.parent_digest() {
                    Some(parent) => {
                        let entry = store
                            .list()?
                            .into_iter()
                            .find(|entry| entry.manifest.digest == parent)
                            .ok_or_else(|| {
                                kiln::store::StoreError::NotFound(format!(
                                    "{parent} (the parent of {a})"
                                ))
                            })?;
                        Some(StoredImage::of_entry(&store, entry)?)
                    }
                    None => None,
                },
            };
            Ok((first, second))
        });
    let (from, to) = match loaded {
        Ok((first, Some(second))) if b.is_some() => (first, second),
        Ok((first, Some(parent))) => (parent, first),
        Ok((_, None)) => {
            eprintln!(
                "error: failed to diff {a}: it was not built on another image; name the image to compare it with"
            );
            return Exit::Usage;
        }
        Err(error) => {
            eprintln!("error: failed to diff {what}: {}", error_chain(&error));
            return Exit::Failure;
        }
    };
    let diff = image_diff::diff(&from, &to);
    if json {
        println!("{}", serde_json::to_string(&diff).expect("diffs serialize"));
    } else {
        print_text(&diff);
    }
    Exit::Success
}

fn print_text(diff: &ImageDiff) {
    println!(
        "{} ({}) → {} ({})",
        diff.from, diff.from_digest, diff.to, diff.to_digest
    );
    let mut rows = Vec::new();
    for (sign, files) in [
        ("+", &diff.added),
        ("-", &diff.removed),
        ("~", &diff.changed),
    ] {
        for file in files {
            // A changed path says what changed; an added or removed one, what it is.
            let what = if file.changes.is_empty() {
                file.kind.clone()
            } else {
                file.changes.join(", ")
            };
            rows.push([
                sign.to_owned(),
                file.path.clone(),
                what,
                signed_bytes(file.delta()),
            ]);
        }
    }
    rows.sort_by(|x, y| x[1].cmp(&y[1]));
    super::reporters::print_table(&rows);
    for change in &diff.config {
        let show = |value: &Option<String>| {
            value
                .as_deref()
                .map_or("(unset)".to_owned(), |value| format!("{value:?}"))
        };
        println!(
            "config {}: {} → {}",
            change.field,
            show(&change.before),
            show(&change.after)
        );
    }
    if diff.is_empty() {
        println!("no difference");
    } else {
        println!(
            "{} added, {} removed, {} changed, {} config changes; files {}",
            diff.added.len(),
            diff.removed.len(),
            diff.changed.len(),
            diff.config.len(),
            signed_bytes(diff.size_delta)
        );
    }
}
