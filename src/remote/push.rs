//! Pushing a stored image: blobs the registry lacks (HEAD first, mounted
//! from another repository of the same registry when kiln pushed them
//! there), then the manifest as its exact stored bytes.

use std::collections::BTreeMap;
use std::path::Path;

use super::{BlobTransfer, Registry, RemoteError, Result};
use crate::oci::{Descriptor, Manifest};
use crate::reference::Digest;
use crate::report::{Direction, Event, Reporter, TransferOutcome};
use crate::store::{ImageEntry, Store, StoreError};

#[derive(Clone, Debug, Default)]
pub struct PushReport {
    pub blobs: Vec<(Descriptor, TransferOutcome)>,
    /// The tag pointed at this image already: nothing was sent.
    pub unchanged: bool,
}

impl PushReport {
    pub fn sent_bytes(&self) -> u64 {
        self.blobs
            .iter()
            .filter(|(_, outcome)| *outcome == TransferOutcome::Sent)
            .map(|(descriptor, _)| descriptor.size)
            .sum()
    }
}

/// Where kiln has seen each blob on a registry: `$KILN_HOME/remotes/HOST.json`.
fn known_blobs_path(home: &Path, host: &str) -> std::path::PathBuf {
    home.join("remotes")
        .join(format!("{}.json", host.replace([':', '/'], "_")))
}

fn known_blobs(home: &Path, host: &str) -> BTreeMap<Digest, String> {
    std::fs::read(known_blobs_path(home, host))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn remember_blobs(home: &Path, host: &str, known: &BTreeMap<Digest, String>) {
    let path = known_blobs_path(home, host);
    let Some(dir) = path.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    if let Ok(mut temp) = tempfile::NamedTempFile::new_in(dir) {
        use std::io::Write;
        if temp
            .write_all(&serde_json::to_vec(known).expect("a map serializes"))
            .is_ok()
        {
            let _ = temp.persist(&path);
        }
    }
}

/// Where a push goes: a repository of a registry, and the tag to set.
pub struct PushTarget<'a> {
    pub registry: &'a Registry,
    pub repository: &'a str,
    pub tag: &'a str,
    /// A channel tag moves; a version tag that points elsewhere is refused.
    pub movable: bool,
}

/// Pushes `entry` to `target`. `home` keeps which repositories of a
/// registry hold which blobs, for cross-repository mounts.
pub async fn push(
    store: &Store,
    home: &Path,
    entry: &ImageEntry,
    target: PushTarget<'_>,
    reporter: &dyn Reporter,
) -> Result<PushReport> {
    let PushTarget {
        registry,
        repository,
        tag,
        movable,
    } = target;
    let manifest_bytes = store.read_blob(&entry.manifest)?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|error| StoreError::Damaged {
            digest: entry.manifest.digest.clone(),
            reason: format!("it is not an image manifest: {error}"),
        })?;
    let started = std::time::Instant::now();
    let mut report = PushReport::default();
    if let Some(existing) = registry.tag_digest(repository, tag).await? {
        if existing == entry.manifest.digest {
            report.unchanged = true;
            reporter.report(Event::ImagePushed {
                build: format!("{}/{repository}:{tag}", registry.host()),
                reference: format!("{}:{}", entry.name, entry.version),
                digest: entry.manifest.digest.clone(),
                sent_bytes: 0,
                unchanged: true,
                seconds: started.elapsed().as_secs_f64(),
            });
            return Ok(report);
        }
        if !movable {
            return Err(RemoteError::TagConflict {
                host: registry.host().to_owned(),
                reference: format!("{repository}:{tag}"),
                existing,
                new: entry.manifest.digest.clone(),
            });
        }
    }
    let label = format!("{}/{repository}:{tag}", registry.host());
    let blobs = push_blobs(
        store, home, registry, repository, &label, &manifest, reporter,
    )
    .await?;
    report.blobs = blobs;
    registry
        .put_manifest(repository, tag, &entry.manifest.media_type, &manifest_bytes)
        .await?;
    reporter.report(Event::ImagePushed {
        build: label,
        reference: format!("{}:{}", entry.name, entry.version),
        digest: entry.manifest.digest.clone(),
        sent_bytes: report.sent_bytes(),
        unchanged: false,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(report)
}

/// Sends the config and layers of `manifest` that `repository` lacks (HEAD
/// first, a cross-repository mount when kiln pushed the blob elsewhere on
/// the same registry), reporting each under `label`.
pub async fn push_blobs(
    store: &Store,
    home: &Path,
    registry: &Registry,
    repository: &str,
    label: &str,
    manifest: &Manifest,
    reporter: &dyn Reporter,
) -> Result<Vec<(Descriptor, TransferOutcome)>> {
    let mut known = known_blobs(home, registry.host());
    let mut blobs = Vec::new();
    for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let transfer = BlobTransfer::new(reporter, label, descriptor);
        let outcome = if registry.blob_exists(repository, &descriptor.digest).await? {
            TransferOutcome::Present
        } else {
            transfer.moving(Direction::Push);
            let path = store.blob_path(&descriptor.digest);
            let mount_from = known
                .get(&descriptor.digest)
                .filter(|other| *other != repository)
                .cloned();
            let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let upload = registry.upload_blob(
                repository,
                &descriptor.digest,
                descriptor.size,
                &path,
                mount_from.as_deref(),
                &sent,
            );
            tokio::pin!(upload);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            // The upload says whether it mounted the blob or sent it.
            loop {
                tokio::select! {
                    result = &mut upload => break result?,
                    _ = tick.tick() => transfer.progress(
                        sent.load(std::sync::atomic::Ordering::Relaxed),
                    ),
                }
            }
        };
        transfer.finished(outcome);
        known.insert(descriptor.digest.clone(), repository.to_owned());
        blobs.push((descriptor.clone(), outcome));
    }
    remember_blobs(home, registry.host(), &known);
    Ok(blobs)
}
