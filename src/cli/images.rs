//! `kiln images [NAME]`: the stored images with their digests, sizes,
//! creation times and parents.

use kiln::oci;
use kiln::reference::RemoteRef;
use kiln::store::Store;

use super::{Exit, reporters::human_bytes};

pub fn run(name: Option<&str>) -> Exit {
    if let Some(name) = name
        && RemoteRef::looks_remote(name)
    {
        eprintln!("error: failed to list {name}: listing a registry's tags is not implemented yet");
        return Exit::Failure;
    }
    let store = match Store::open(&kiln::kiln_home().join("store")) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {}", super::diagnostics::error_chain(&error));
            return Exit::Failure;
        }
    };
    let entries = match store.list() {
        Ok(entries) => entries,
        Err(error) => {
            eprintln!("error: {}", super::diagnostics::error_chain(&error));
            return Exit::Failure;
        }
    };
    let mut rows =
        vec![["NAME", "VERSION", "DIGEST", "SIZE", "CREATED", "PARENT"].map(str::to_owned)];
    let mut exit = Exit::Success;
    for entry in entries
        .iter()
        .filter(|entry| name.is_none_or(|name| entry.name.as_str() == name))
    {
        let manifest = match store.manifest(entry) {
            Ok(manifest) => manifest,
            Err(error) => {
                eprintln!(
                    "error: {}:{}: {}",
                    entry.name,
                    entry.version,
                    super::diagnostics::error_chain(&error)
                );
                exit = Exit::Failure;
                continue;
            }
        };
        let size = entry.manifest.size
            + manifest.config.size
            + manifest.layers.iter().map(|layer| layer.size).sum::<u64>();
        let annotation = |key: &str| {
            manifest
                .annotations
                .get(key)
                .cloned()
                .unwrap_or_else(|| "-".to_owned())
        };
        let parent = manifest
            .annotations
            .get(oci::ANNOTATION_BASE_NAME)
            .cloned()
            .unwrap_or_else(|| annotation(oci::ANNOTATION_PARENT_DIGEST));
        rows.push([
            entry.name.to_string(),
            entry.version.to_string(),
            entry.manifest.digest.to_string(),
            human_bytes(size),
            annotation(oci::ANNOTATION_CREATED),
            parent,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    exit
}
