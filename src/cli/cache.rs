//! `kiln cache ls|verify|prune`: what the stage cache holds, whether it is
//! still what was baked, and making room.

use kiln::cache::{Cache, PrunePolicy, prune};

use super::{CacheCommand, Exit, diagnostics::error_chain, reporters::human_bytes};

pub fn run(command: CacheCommand) -> Exit {
    let home = kiln::kiln_home();
    match command {
        CacheCommand::Ls => {
            // An empty home has no cache; listing it creates none.
            let entries = Cache::open_existing(&home)
                .and_then(|cache| cache.map_or_else(|| Ok(Vec::new()), |cache| cache.entries()));
            let entries = match entries {
                Ok(entries) => entries,
                Err(error) => {
                    eprintln!("error: failed to read the cache: {}", error_chain(&error));
                    return Exit::Failure;
                }
            };
            let mut rows = vec![["KEY", "IMAGE", "STAGE", "SIZE", "LAST USED"].map(str::to_owned)];
            for (entry, used) in entries {
                let used = used
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                rows.push([
                    entry.key.key.hex()[..16].to_owned(),
                    entry.image.clone(),
                    format!("{} ({})", entry.stage, entry.kind),
                    human_bytes(entry.size()),
                    kiln::oci::rfc3339(used),
                ]);
            }
            super::reporters::print_table(&rows);
            Exit::Success
        }
        CacheCommand::Verify => verify(&home),
        CacheCommand::Prune {
            remote: Some(repository),
            all,
            older_than,
            remote_args,
            ..
        } => prune_remote(&repository, all, older_than, &remote_args.options()),
        CacheCommand::Prune {
            all,
            keep_bytes,
            older_than,
            remote: None,
            ..
        } => {
            let policy = match (all, keep_bytes, older_than) {
                (true, _, _) => PrunePolicy::All,
                (_, Some(bytes), _) => PrunePolicy::KeepBytes(bytes),
                (_, _, Some(age)) => PrunePolicy::OlderThan(age),
                _ => {
                    eprintln!(
                        "error: failed to prune: say what to remove with --all, --keep-bytes SIZE or --older-than DURATION"
                    );
                    return Exit::Usage;
                }
            };
            match prune(&home, policy) {
                Ok(pruned) => {
                    println!(
                        "removed {} cache entries, {}",
                        pruned.entries,
                        human_bytes(pruned.bytes)
                    );
                    Exit::Success
                }
                Err(error) => {
                    eprintln!("error: failed to prune the cache: {}", error_chain(&error));
                    Exit::Failure
                }
            }
        }
    }
}

/// `kiln cache prune --remote REPO`: deletes the shared cache entries
/// pushed longer ago than `--older-than` (or all, with `--all`).
fn prune_remote(
    repository: &kiln::reference::RemoteRef,
    all: bool,
    older_than: Option<std::time::Duration>,
    options: &kiln::remote::RemoteOptions,
) -> Exit {
    use kiln::cache::shared::{RemotePrune, prune_remote};
    let policy = match (all, older_than) {
        (true, _) => RemotePrune::All,
        (_, Some(age)) => RemotePrune::OlderThan(age),
        _ => {
            eprintln!(
                "error: failed to prune {repository}: say what to remove with --all or --older-than DURATION"
            );
            return Exit::Usage;
        }
    };
    let pruned = kiln::remote::Registry::new(&repository.host, options).and_then(|registry| {
        kiln::remote::block_on(prune_remote(
            &registry,
            repository.repository.as_str(),
            policy,
        ))
    });
    match pruned {
        Ok(pruned) => {
            println!(
                "deleted {} of {} cache entries in {repository} (run the registry's garbage collection to free their blobs)",
                pruned.deleted, pruned.entries
            );
            Exit::Success
        }
        Err(error) => {
            eprintln!(
                "error: failed to prune {repository}: {}",
                error_chain(&error)
            );
            Exit::Failure
        }
    }
}

fn verify(home: &std::path::Path) -> Exit {
    let cache = match Cache::open_exclusive(home) {
        Ok(Some(cache)) => cache,
        Ok(None) => {
            println!("the cache is empty");
            return Exit::Success;
        }
        Err(error) => {
            eprintln!("error: failed to open the cache: {}", error_chain(&error));
            return Exit::Failure;
        }
    };
    let store = match kiln::store::Store::open(&home.join("store")) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: failed to open the store: {}", error_chain(&error));
            return Exit::Failure;
        }
    };
    let mut checking = |what: &str| eprintln!("checking {what}");
    let verified = match cache.verify(&store, &mut checking) {
        Ok(verified) => verified,
        Err(error) => {
            eprintln!("error: failed to verify the cache: {}", error_chain(&error));
            return Exit::Failure;
        }
    };
    for dropped in &verified.dropped {
        println!(
            "dropped {} ({}): {}",
            dropped.what,
            dropped.tree.display(),
            dropped.reason
        );
    }
    println!(
        "{} cached tree{} intact, {} dropped",
        verified.intact,
        if verified.intact == 1 { "" } else { "s" },
        verified.dropped.len()
    );
    if verified.dropped.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    }
}
