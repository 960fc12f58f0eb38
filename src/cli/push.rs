//! `kiln push REF REMOTE`: a stored image to a registry repository.

use kiln::reference::{RemoteRef, StoreRef, StoreTarget};
use kiln::remote::push::BlobOutcome;
use kiln::remote::{Registry, RemoteOptions, block_on};
use kiln::store::Store;

use super::{Exit, diagnostics::error_chain, reporters::human_bytes};

pub fn run(reference: &str, remote: &str, options: &RemoteOptions) -> Exit {
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
    let result = (|| {
        let store = Store::open(&options.home.join("store"))?;
        let entry = store.resolve(&reference)?;
        let tag = match &remote.target {
            Some(StoreTarget::Version(tag)) => tag.to_string(),
            Some(StoreTarget::Digest(_)) => {
                return Err(kiln::remote::RemoteError::Invalid(
                    "push to a tag, not a digest".to_owned(),
                ));
            }
            None => entry.version.to_string(),
        };
        let registry = Registry::new(&remote.host, options)?;
        let report = block_on(kiln::remote::push::push(
            &store,
            &options.home,
            &entry,
            &registry,
            remote.repository.as_str(),
            &tag,
            false,
        ))?;
        Ok((report, tag))
    })();
    match result {
        Ok((report, tag)) => {
            let target = format!("{}/{}:{tag}", remote.host, remote.repository);
            if report.unchanged {
                println!("{target} is {reference} already; nothing to send");
                return Exit::Success;
            }
            for (descriptor, outcome) in &report.blobs {
                let what = match outcome {
                    BlobOutcome::Sent => "sent",
                    BlobOutcome::Mounted => "mounted",
                    BlobOutcome::Present => "present",
                };
                println!(
                    "{what:<8} {} ({})",
                    descriptor.digest,
                    human_bytes(descriptor.size)
                );
            }
            println!(
                "pushed {reference} to {target} ({} sent)",
                human_bytes(report.sent_bytes())
            );
            Exit::Success
        }
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
