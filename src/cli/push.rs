//! `kiln push REF REMOTE`: a stored image to a registry repository.

use kiln::reference::{RemoteRef, StoreRef, StoreTarget};
use kiln::remote::{Registry, RemoteOptions, block_on};
use kiln::store::Store;

use super::{Exit, diagnostics::error_chain};

pub fn run(reference: &str, remote: &str, options: &RemoteOptions, json: bool) -> Exit {
    let reporter = super::reporters::choose(json);
    let reference: StoreRef = match reference.parse() {
        Ok(reference) => reference,
        Err(reason) => {
            eprintln!("error: invalid image reference `{reference}`: {reason}");
            return Exit::Usage;
        }
    };
    let remote: RemoteRef = match remote.parse() {
        Ok(remote) => remote,
        Err(reason) => {
            eprintln!("error: invalid remote `{remote}`: {reason}");
            return Exit::Usage;
        }
    };
    if let Some(StoreTarget::Digest(_)) = &remote.target {
        eprintln!("error: invalid remote `{remote}`: push to a tag, not a digest");
        return Exit::Usage;
    }
    let result = (|| -> Result<_, kiln::remote::RemoteError> {
        let store = Store::open_to_read(&options.home.join("store"), &reference)?;
        let entry = store.resolve(&reference)?;
        let tag = match &remote.target {
            Some(StoreTarget::Version(tag)) => tag.to_string(),
            _ => entry.version.to_string(),
        };
        let registry = Registry::new(&remote.host, options)?;
        let target = kiln::remote::push::PushTarget {
            registry: &registry,
            repository: remote.repository.as_str(),
            tag: &tag,
            movable: false,
        };
        let report = block_on(kiln::remote::push::push(
            &store,
            &options.home,
            &entry,
            target,
            reporter.as_ref(),
        ))?;
        block_on(kiln::remote::signatures::push_attachments(
            &store,
            &options.home,
            &registry,
            remote.repository.as_str(),
            &entry,
        ))?;
        Ok(report)
    })();
    match result {
        Ok(_) => Exit::Success,
        Err(error) => {
            eprintln!("error: failed to push {reference}: {}", error_chain(&error));
            if error.is_conflict() {
                Exit::VersionConflict
            } else {
                Exit::Failure
            }
        }
    }
}
