//! The build's side of the shared stage cache ([`crate::cache::shared`]):
//! before the stages run, the deepest stage missing here is looked up in
//! each `--cache-from` repository, from the last stage backwards, and one
//! hit restores the whole chain below it into the local cache; after them,
//! each stage that succeeded and may be shared is pushed to `--cache-to`.
//!
//! The shared cache only ever saves time: a registry that cannot be
//! reached, or an entry that fails a check, is a warning and the stage
//! runs; a push that fails is a warning and the build goes on.

use std::collections::{BTreeMap, BTreeSet};

use super::BuildContext;
use crate::cache::shared::{self, ChainBase, ChainStage, Refused};
use crate::cache::{self, CachedLayer};
use crate::io_error::IoError;
use crate::oci::Manifest;
use crate::plan::PlannedStage;
use crate::reference::{Digest, RemoteRef};
use crate::remote::{Registry, RemoteError, block_on, push::push_blobs};
use crate::report::{Direction, Event, TransferOutcome};
use crate::sources::Source;
use crate::unpack::{self, Whiteouts};

/// Why an entry could not be used.
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("failed to unpack layer {digest}")]
    Unpack {
        digest: Digest,
        #[source]
        source: unpack::UnpackError,
    },
}

/// A kiln stage as it finished in this build, for `--cache-to`.
pub(super) struct FinishedStage {
    pub number: usize,
    pub chain: ChainStage,
}

impl BuildContext<'_> {
    /// The repositories stages are looked up in: `--cache-from` (or
    /// `KILN_CACHE_FROM`), else the template's `[cache] from`.
    fn cache_from(&self) -> &[RemoteRef] {
        self.options
            .cache_from
            .as_deref()
            .unwrap_or(&self.plan.template.cache.from)
    }

    /// The repository stages are pushed to.
    fn cache_to(&self) -> Option<&RemoteRef> {
        self.options
            .cache_to
            .as_ref()
            .or(self.plan.template.cache.to.as_ref())
    }

    /// The first stage that is kiln's own: an `image` source's stage is
    /// the base, which is pulled, not cached.
    pub(super) fn first_kiln_stage(&self) -> usize {
        usize::from(matches!(self.plan.template.source, Source::Image(_)))
    }

    /// The base below every chain, as stored here (none but an `image`
    /// source's).
    fn chain_base(&self) -> Result<ChainBase, crate::store::StoreError> {
        let Some(base) = &self.plan.base else {
            return Ok(ChainBase::default());
        };
        let entry = self.store.resolve(&base.reference)?;
        let manifest = self.store.manifest(&entry)?;
        let config = self.store.config(&manifest)?;
        Ok(ChainBase {
            layers: manifest.layers,
            diff_ids: config.rootfs.diff_ids,
            history: config.history,
            config: config.config,
        })
    }

    /// Restores into the local cache the longest chain of stages a cache
    /// repository has and this cache lacks; returns, by stage number, the
    /// repository each restored stage came from.
    pub(super) fn restore_shared(&self) -> BTreeMap<usize, String> {
        let from = self.cache_from();
        let stages = &self.plan.stages;
        let first = self.first_kiln_stage();
        if from.is_empty() || self.options.no_cache || first >= stages.len() {
            return BTreeMap::new();
        }
        // Stages that can come from a cache: up to the first that always runs.
        let cacheable = stages[first..]
            .iter()
            .take_while(|stage| stage.cache)
            .count();
        let local = stages[first..first + cacheable]
            .iter()
            .take_while(|stage| self.cache.has_entry(&stage.key.key))
            .count();
        if local == cacheable {
            return BTreeMap::new();
        }
        let base = match self.chain_base() {
            Ok(base) => base,
            Err(_) => return BTreeMap::new(),
        };
        // Each repository in order; one that cannot be reached is left out.
        let mut registries: Vec<(&RemoteRef, Registry)> = Vec::new();
        for repository in from {
            match Registry::new(&repository.host, &self.options.remote) {
                Ok(registry) => registries.push((repository, registry)),
                Err(error) => self.cache_warning(&repository.to_string(), None, &error),
            }
        }
        // The deepest hit first, in any repository: it restores everything
        // below it. An entry refused halfway keeps the stages it restored.
        let mut restored = BTreeMap::new();
        for last in (first + local..first + cacheable).rev() {
            let tag = shared::tag(&stages[last].key.key);
            let mut index = 0;
            while index < registries.len() {
                if self.runner.is_cancelled() {
                    return BTreeMap::new();
                }
                let (repository, registry) = &registries[index];
                let label = repository.to_string();
                let digest =
                    match block_on(registry.tag_digest(repository.repository.as_str(), &tag)) {
                        Ok(Some(digest)) => digest,
                        Ok(None) => {
                            index += 1;
                            continue;
                        }
                        Err(error) => {
                            self.cache_warning(&label, None, &error);
                            registries.remove(index);
                            continue;
                        }
                    };
                let mut added = Vec::new();
                let outcome = self.restore_chain(
                    registry, repository, &digest, &base, first, last, &mut added,
                );
                restored.extend(added.into_iter().map(|number| (number, label.clone())));
                match outcome {
                    Ok(()) => return restored,
                    Err(error) => self.cache_warning(&label, Some(last), &error),
                }
                index += 1;
            }
        }
        restored
    }

    fn cache_warning(&self, repository: &str, stage: Option<usize>, error: &dyn std::error::Error) {
        self.report(Event::SharedCacheWarning {
            build: self.plan.reference.clone(),
            repository: repository.to_owned(),
            stage,
            message: self
                .redactor()
                .redact(&crate::error_chain(error))
                .into_owned(),
        });
    }

    /// Restores stages `first..=last` from the entry `digest` of
    /// `repository`, adding to `restored` the number of each stage it adds
    /// here (also when a later one fails).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; the chain's bounds and where it comes from"
    )]
    fn restore_chain(
        &self,
        registry: &Registry,
        repository: &RemoteRef,
        digest: &Digest,
        base: &ChainBase,
        first: usize,
        last: usize,
        restored: &mut Vec<usize>,
    ) -> Result<(), RestoreError> {
        let stages = &self.plan.stages[first..=last];
        let keys: Vec<Digest> = stages.iter().map(|stage| stage.key.key.clone()).collect();
        let repo = repository.repository.as_str();
        let label = self.plan.reference.as_str();
        let chain = block_on(async {
            let (bytes, _) = registry.get_manifest(repo, digest.as_str()).await?;
            let manifest = shared::parse_manifest(&bytes)?;
            self.fetch_blob(registry, repo, label, &manifest.config)
                .await?;
            let config = self.store.read_blob(&manifest.config)?;
            let history =
                |index: usize, has_layer: bool| self.stage_history(&stages[index], has_layer);
            let chain = shared::read_entry(
                &bytes,
                &config,
                &keys,
                stages[0].key.parent.as_ref(),
                base,
                &history,
            )?;
            for (stage, link) in stages.iter().zip(&chain) {
                if let (false, Some((descriptor, _))) =
                    (self.cache.has_entry(&stage.key.key), &link.layer)
                {
                    self.fetch_blob(registry, repo, label, descriptor).await?;
                }
            }
            Ok::<_, RestoreError>(chain)
        })?;
        for (stage, link) in stages.iter().zip(chain) {
            if self.cache.has_entry(&stage.key.key) {
                continue;
            }
            self.restore_stage(stage, link)?;
            restored.push(stage.number);
        }
        Ok(())
    }

    /// A blob into the store, unless it is there; verified as it arrives.
    async fn fetch_blob(
        &self,
        registry: &Registry,
        repository: &str,
        label: &str,
        descriptor: &crate::oci::Descriptor,
    ) -> Result<(), RestoreError> {
        let transfer = crate::remote::BlobTransfer::new(self.reporter(), label, descriptor);
        if self.store.has_blob(&descriptor.digest) {
            transfer.finished(TransferOutcome::Present);
            return Ok(());
        }
        transfer.moving(Direction::Pull);
        registry
            .download_blob(repository, descriptor, &self.store, &mut |bytes| {
                transfer.progress(bytes)
            })
            .await?;
        transfer.finished(TransferOutcome::Fetched);
        Ok(())
    }

    /// A stage's layer unpacked as an overlay lower (checked against its
    /// digest and diff id) and recorded in the local cache.
    fn restore_stage(&self, stage: &PlannedStage, link: ChainStage) -> Result<(), RestoreError> {
        let tree = match &link.layer {
            None => None,
            Some((descriptor, diff_id)) => {
                let dir = self
                    .work
                    .fresh_dir(&format!("restore{}", stage.number))
                    .map_err(IoError::at("create", self.work.path()))?;
                // One pass unpacks the layer and, on the other core, makes
                // its file index, which the image's index is made of.
                let reader = self.store.open_layer(descriptor, diff_id)?;
                let unpack_failed = |source| RestoreError::Unpack {
                    digest: descriptor.digest.clone(),
                    source,
                };
                let (unpacked, index) = crate::file_index::layer::with_index(reader, |reader| {
                    unpack::unpack(&mut *reader, &dir, Whiteouts::ToOverlay)?;
                    // To the end: the digests are checked there.
                    std::io::copy(reader, &mut std::io::sink())
                        .map_err(unpack::UnpackError::Read)?;
                    Ok::<_, unpack::UnpackError>(())
                });
                unpacked.map_err(unpack_failed)?;
                if let Ok(entries) = index {
                    crate::file_index::save_layer_index(&self.store, diff_id, &entries)?;
                }
                Some(dir)
            }
        };
        let entry = cache::Entry {
            key: stage.key.clone(),
            stage: stage.number,
            kind: stage.kind.to_owned(),
            image: self.plan.reference.clone(),
            layer: link.layer.map(|(descriptor, diff_id)| CachedLayer {
                descriptor,
                diff_id,
                tree: None,
                entries: 0,
                bytes: 0,
                overlay_upper: true,
            }),
            history: link.history,
            checksum: String::new(),
        };
        let path = tree.as_deref().unwrap_or(self.work.path());
        self.cache
            .persist(entry, tree.as_deref())
            .map_err(IoError::at("store in the cache", path))?;
        Ok(())
    }

    /// Pushes each finished stage, in order, to the `--cache-to`
    /// repository, up to the first that may not be shared (it uses a
    /// sensitive variable, or always runs): what is above it holds it.
    pub(super) fn push_shared(&self, finished: &[FinishedStage]) {
        let Some(repository) = self.cache_to() else {
            return;
        };
        if finished.is_empty() {
            return;
        }
        let label = repository.to_string();
        let failed = |error: &dyn std::error::Error| self.cache_warning(&label, None, error);
        let base = match self.chain_base() {
            Ok(base) => base,
            Err(error) => return failed(&error),
        };
        let registry = match Registry::new(&repository.host, &self.options.remote) {
            Ok(registry) => registry,
            Err(error) => return failed(&error),
        };
        let mut shareable = Vec::new();
        for stage in finished {
            let planned = &self.plan.stages[stage.number];
            if !planned.shareable() {
                if let Some(variable) = &planned.sensitive {
                    self.report(Event::SharedCacheSkipped {
                        build: self.plan.reference.clone(),
                        stage: stage.number,
                        variable: variable.clone(),
                    });
                }
                break;
            }
            shareable.push(stage);
        }
        if shareable.is_empty() {
            return;
        }
        let parent = self.plan.stages[shareable[0].number].key.parent.clone();
        let repo = repository.repository.as_str();
        let pushed = block_on(async {
            let mut present: BTreeSet<Digest> = BTreeSet::new();
            let mut pushed = Vec::new();
            let chain: Vec<ChainStage> =
                shareable.iter().map(|stage| stage.chain.clone()).collect();
            for (index, stage) in shareable.iter().enumerate() {
                if self.runner.is_cancelled() {
                    break;
                }
                let tag = shared::tag(&stage.chain.key);
                if registry.tag_digest(repo, &tag).await?.is_some() {
                    continue;
                }
                let documents = shared::entry_documents(
                    &base,
                    parent.as_ref(),
                    &chain[..=index],
                    self.plan.epoch,
                    crate::oci::unix_now(),
                );
                self.store
                    .put_bytes(crate::oci::MEDIA_TYPE_CONFIG, &documents.config)?;
                let missing = Manifest {
                    layers: documents
                        .manifest
                        .layers
                        .iter()
                        .filter(|layer| !present.contains(&layer.digest))
                        .cloned()
                        .collect(),
                    ..documents.manifest.clone()
                };
                push_blobs(
                    &self.store,
                    &self.options.home,
                    &registry,
                    repo,
                    &label,
                    &missing,
                    self.reporter(),
                )
                .await?;
                present.extend(
                    documents
                        .manifest
                        .layers
                        .iter()
                        .map(|layer| layer.digest.clone()),
                );
                registry
                    .put_manifest(
                        repo,
                        &tag,
                        crate::oci::MEDIA_TYPE_MANIFEST,
                        &documents.manifest_bytes,
                    )
                    .await?;
                pushed.push(stage.number);
            }
            Ok::<_, RemoteError>(pushed)
        });
        match pushed {
            Ok(pushed) => self.report(Event::SharedCachePushed {
                build: self.plan.reference.clone(),
                repository: label.clone(),
                present: shareable.len() - pushed.len(),
                stages: pushed,
            }),
            Err(error) => failed(&error),
        }
    }
}
