//! `kiln images [NAME]`: the stored images with their digests, sizes,
//! creation times (the reproducible epoch the image records), when each was
//! stored, parents, channels and the AMIs made of it.

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
                if kiln::signing::cosign::is_attachment_tag(&tag) {
                    continue;
                }
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
    // An empty home has no store; listing it creates none.
    let store = match Store::open_existing(&kiln::kiln_home().join("store")) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {}", super::diagnostics::error_chain(&error));
            return Exit::Failure;
        }
    };
    let entries = match store.as_ref().map(Store::list).transpose() {
        Ok(entries) => entries.unwrap_or_default(),
        Err(error) => {
            eprintln!("error: {}", super::diagnostics::error_chain(&error));
            return Exit::Failure;
        }
    };
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|entry| name.is_none_or(|name| entry.name.as_str() == name))
        .collect();
    if let Some(name) = name
        && entries.is_empty()
    {
        eprintln!("error: no image {name} in the store");
        return Exit::Failure;
    }
    let mut rows = vec![
        [
            "NAME", "VERSION", "DIGEST", "SIZE", "CREATED", "STORED", "PARENT", "CHANNELS", "AMIS",
        ]
        .map(str::to_owned),
    ];
    let mut exit = Exit::Success;
    for entry in &entries {
        let Some(store) = &store else { break };
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
        let amis: Vec<String> = store
            .amis_of(&entry.name)
            .unwrap_or_default()
            .remove(entry.version.as_str())
            .unwrap_or_default()
            .into_iter()
            .map(|record| format!("{}:{}", record.region, record.image_id))
            .collect();
        rows.push([
            entry.name.to_string(),
            entry.version.to_string(),
            entry.manifest.digest.to_string(),
            human_bytes(size),
            annotation(oci::ANNOTATION_CREATED),
            entry.stored.clone().unwrap_or_else(|| "-".to_owned()),
            parent,
            if channels.is_empty() {
                "-".to_owned()
            } else {
                channels.join(",")
            },
            if amis.is_empty() {
                "-".to_owned()
            } else {
                amis.join(",")
            },
        ]);
    }
    super::reporters::print_table(&rows);
    exit
}
