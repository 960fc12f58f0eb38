//! `kiln images [NAME]`: the stored images with their digests, sizes,
//! creation times and parents.

use kiln::oci;
use kiln::reference::RemoteRef;
use kiln::store::Store;

use super::{Exit, reporters::human_bytes};

/// The tags of a registry repository, each with its digest.
fn run_remote(name: &str, options: &kiln::remote::RemoteOptions) -> Exit {
    let remote: RemoteRef = match name.parse() {
        Ok(remote) => remote,
        Err(reason) => {
            eprintln!("error: invalid remote `{name}`: {reason}");
            return Exit::Usage;
        }
    };
    let listed = kiln::remote::Registry::new(&remote.host, options).and_then(|registry| {
        kiln::remote::block_on(async {
            let mut rows = Vec::new();
            for tag in registry.tags(remote.repository.as_str()).await? {
                let digest = registry
                    .tag_digest(remote.repository.as_str(), &tag)
                    .await?;
                rows.push((
                    tag,
                    digest.map_or_else(|| "-".to_owned(), |digest| digest.to_string()),
                ));
            }
            Ok(rows)
        })
    });
    match listed {
        Ok(rows) => {
            let width = rows
                .iter()
                .map(|(tag, _)| tag.len())
                .max()
                .unwrap_or(0)
                .max(3);
            println!("{:<width$}  DIGEST", "TAG");
            for (tag, digest) in rows {
                println!("{tag:<width$}  {digest}");
            }
            Exit::Success
        }
        Err(error) => {
            eprintln!(
                "error: failed to list {name}: {}",
                super::diagnostics::error_chain(&error)
            );
            Exit::Failure
        }
    }
}

pub fn run(name: Option<&str>, options: &kiln::remote::RemoteOptions) -> Exit {
    if let Some(name) = name
        && RemoteRef::looks_remote(name)
    {
        return run_remote(name, options);
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
    let mut rows = vec![
        [
            "NAME", "VERSION", "DIGEST", "SIZE", "CREATED", "PARENT", "CHANNELS",
        ]
        .map(str::to_owned),
    ];
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
        let channels: Vec<String> = store
            .channels_of(&entry.name)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, version)| version == &entry.version)
            .map(|(channel, _)| channel.to_string())
            .collect();
        rows.push([
            entry.name.to_string(),
            entry.version.to_string(),
            entry.manifest.digest.to_string(),
            human_bytes(size),
            annotation(oci::ANNOTATION_CREATED),
            parent,
            if channels.is_empty() {
                "-".to_owned()
            } else {
                channels.join(",")
            },
        ]);
    }
    super::reporters::print_table(&rows);
    exit
}
