//! `kiln pull REMOTE_REF [--as NAME:VERSION]`: an image from a registry
//! into the store, as its repository path (without the host) and its tag
//! unless `--as`; pinned by digest alone, as version `sha256-HEX`.

use kiln::reference::{ImageName, RemoteRef, StoreRef, StoreTarget, Version};
use kiln::remote::{Registry, RemoteOptions, block_on};
use kiln::store::{Store, Tagged};

use super::{Exit, diagnostics::error_chain};

pub fn run(
    reference: &str,
    store_as: Option<&str>,
    key: Option<&std::path::Path>,
    options: &RemoteOptions,
    json: bool,
) -> Exit {
    let reporter = super::reporters::choose(json);
    let started = std::time::Instant::now();
    let remote: RemoteRef = match reference.parse() {
        Ok(remote) => remote,
        Err(reason) => {
            eprintln!("error: invalid remote reference `{reference}`: {reason}");
            return Exit::Usage;
        }
    };
    let (name, version): (ImageName, Version) = match (store_as, &remote.target) {
        (Some(store_as), _) => match store_as.parse::<StoreRef>() {
            Ok(StoreRef {
                name,
                target: StoreTarget::Version(version),
            }) => (name, version),
            _ => {
                eprintln!("error: --as takes NAME:VERSION, not `{store_as}`");
                return Exit::Usage;
            }
        },
        (None, _) => match remote.store_ref() {
            Some(StoreRef {
                name,
                target: StoreTarget::Version(version),
            }) => (name, version),
            _ => {
                eprintln!(
                    "error: pulling {remote} needs --as NAME:VERSION (it has no tag to use as the version)"
                );
                return Exit::Usage;
            }
        },
    };
    let key = match key.map(kiln::signing::PublicKey::read).transpose() {
        Ok(key) => key,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            return Exit::Usage;
        }
    };
    let result = (|| {
        let registry = Registry::new(&remote.host, options)?;
        // Checked before the store is touched: a refused image leaves
        // nothing behind. Then pulled by the digest that was checked.
        let verified = key
            .as_ref()
            .map(|key| {
                block_on(kiln::remote::signatures::verify_remote(
                    &registry, &remote, key,
                ))
            })
            .transpose()?;
        let mut pinned = remote.clone();
        if let Some(verified) = &verified {
            pinned.target = Some(StoreTarget::Digest(verified.digest.clone()));
        }
        let store = Store::open(&options.home.join("store"))?;
        let pulled = block_on(kiln::remote::pull::pull(
            &store,
            &registry,
            &pinned,
            &name,
            &version,
            reporter.as_ref(),
        ))?;
        if let Some(verified) = verified {
            kiln::signing::keep(&store, &verified.digest, &verified.signatures)?;
            if !json {
                eprintln!(
                    "{remote}: signature verified ({} attestations)",
                    verified.verified.attestations.len()
                );
            }
        }
        Ok::<_, kiln::remote::RemoteError>(pulled)
    })();
    match result {
        Ok(pulled) => {
            reporter.report(kiln::report::Event::ImageStored {
                build: remote.to_string(),
                reference: format!("{name}:{version}"),
                digest: pulled.digest,
                unchanged: pulled.tagged == Tagged::AlreadyStored,
                seconds: started.elapsed().as_secs_f64(),
            });
            Exit::Success
        }
        Err(error) => {
            eprintln!("error: failed to pull {remote}: {}", error_chain(&error));
            if error.is_conflict() {
                Exit::VersionConflict
            } else {
                Exit::Failure
            }
        }
    }
}
