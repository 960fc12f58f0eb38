//! Running the plan's stages: for each, reuse its cached layer when its key
//! is in the cache, or run it and bake what it changed into its layer.
//!
//! The source makes a root in the work folder (`tarball`, `debootstrap`,
//! `scratch`), is a host folder baked where it is (`directory`), or is a
//! base image whose layers are reused (`image`). Each provisioner runs on a
//! fresh overlay upper above the trees of the layers so far; a failed run
//! is retried from a clean upper up to its `max_retries`. A baked stage's
//! tree moves into the cache, where it is the lower of the stages above.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::image::{BaseImage, ImageBuilder, StageLayer};
use super::shared_cache::FinishedStage;
use super::{BuildContext, BuildError, OnError, StageFailure};
use crate::bake::{self, TreeOptions};
use crate::cache::shared::ChainStage;
use crate::cache::{self, CachedLayer, Lookup, StageKey};
use crate::io_error::IoError;
use crate::oci::History;
use crate::plan::{PlannedStage, Step};
use crate::record::StageRecord;
use crate::report::{CacheStatus, Event, MissReason, StageResult};
use crate::sandbox::Overlay;
use crate::sources::directory::DirectorySource;
use crate::sources::{Source, SourceError};
use crate::stage::{StageContext, TaskError};
use crate::unpack::{self, Whiteouts};

/// Whether a stage runs, and why.
enum Decision {
    Reuse(Box<cache::Entry>),
    Run(MissReason),
}

/// What a stage gave the image.
struct Finished {
    result: StageResult,
    cache: CacheStatus,
}

impl BuildContext<'_> {
    /// Runs (or reuses) every stage; returns the image so far and what
    /// each stage did.
    pub(super) fn run_stages(&self) -> Result<(ImageBuilder, Vec<StageRecord>), BuildError> {
        let plan = self.plan;
        let last_keys = self.cache.last_build(&plan.template.path);
        let mut image = ImageBuilder::default();
        let mut records = Vec::with_capacity(plan.stages.len());
        let mut uncached_from = None;
        if let Err(failure) = self.pull_base() {
            return Err(self.stage_failed(&plan.stages[0], failure, &image));
        }
        let restored = self.restore_shared();
        let mut finished_stages = Vec::new();
        for stage in &plan.stages {
            self.check_cancelled()?;
            let started = Instant::now();
            self.report(Event::StageStarted {
                build: plan.reference.clone(),
                stage: stage.number,
                name: stage_name(stage),
                kind: stage.kind.to_owned(),
                summary: self.redactor().redact(&stage.summary).into_owned(),
            });
            if !stage.cache && uncached_from.is_none() {
                uncached_from = Some(stage.number);
            }
            let finished = match (&stage.step, &plan.template.source) {
                (Step::Source, Source::Image(_)) => self.base_stage(&mut image),
                _ => {
                    let decision = self.decide(stage, uncached_from, &last_keys);
                    self.cached_stage(stage, decision, &mut image)
                }
            };
            let mut finished = match finished {
                Ok(finished) => finished,
                Err(failure) => {
                    let error = self.stage_failed(stage, failure, &image);
                    if !matches!(error, BuildError::Cancelled) {
                        self.push_shared(&finished_stages);
                    }
                    return Err(error);
                }
            };
            if finished.cache == CacheStatus::Hit
                && let Some(repository) = restored.get(&stage.number)
            {
                finished.cache = CacheStatus::Shared {
                    repository: repository.clone(),
                };
            }
            if stage.number >= self.first_kiln_stage() {
                let layer = match &finished.result {
                    StageResult::Layer { .. } => image
                        .last_layer()
                        .map(|(descriptor, diff_id)| (descriptor.clone(), diff_id.clone())),
                    _ => None,
                };
                finished_stages.push(FinishedStage {
                    number: stage.number,
                    chain: ChainStage {
                        key: stage.key.key.clone(),
                        history: image
                            .last_history()
                            .cloned()
                            .expect("a finished stage has a history entry"),
                        layer,
                    },
                });
            }
            let seconds = started.elapsed().as_secs_f64();
            records.push(StageRecord {
                stage: stage.number,
                kind: stage.kind.to_owned(),
                seconds,
                cache_hit: matches!(
                    finished.cache,
                    CacheStatus::Hit | CacheStatus::Shared { .. }
                ),
                cache_from: match &finished.cache {
                    CacheStatus::Shared { repository } => Some(repository.clone()),
                    _ => None,
                },
                layer: match &finished.result {
                    StageResult::Layer { digest, .. } => Some(digest.clone()),
                    _ => None,
                },
            });
            self.report(Event::StageFinished {
                build: plan.reference.clone(),
                stage: stage.number,
                seconds,
                result: finished.result,
                cache: finished.cache,
            });
        }
        self.push_shared(&finished_stages);
        let keys: Vec<StageKey> = plan.stages.iter().map(|stage| stage.key.clone()).collect();
        self.cache
            .record_build(&plan.template.path, &keys)
            .map_err(IoError::at("record the stage keys of", &plan.template.path))?;
        Ok((image, records))
    }

    /// Whether `stage` is reused from the cache or runs, and why it runs.
    fn decide(
        &self,
        stage: &PlannedStage,
        uncached_from: Option<usize>,
        last_keys: &[StageKey],
    ) -> Decision {
        if self.options.no_cache {
            return Decision::Run(MissReason::NoCache);
        }
        if !stage.cache {
            return Decision::Run(MissReason::CacheDisabled);
        }
        if let Some(uncached) = uncached_from {
            return Decision::Run(MissReason::AfterUncached { stage: uncached });
        }
        match self.cache.lookup(&stage.key.key, &self.store) {
            Lookup::Hit(entry) => {
                let treeless = entry
                    .layer
                    .as_ref()
                    .is_some_and(|layer| layer.tree.is_none());
                if treeless && !self.is_host_folder(stage) {
                    return Decision::Run(MissReason::Damaged("its tree is missing".to_owned()));
                }
                Decision::Reuse(entry)
            }
            Lookup::Damaged(reason) => Decision::Run(MissReason::Damaged(reason)),
            Lookup::Missing => match last_keys.get(stage.number) {
                None => Decision::Run(MissReason::FirstBuild),
                Some(before) => Decision::Run(cache::key::difference(before, &stage.key)),
            },
        }
    }

    /// A source or provisioner stage: reused, or run and baked.
    fn cached_stage(
        &self,
        stage: &PlannedStage,
        decision: Decision,
        image: &mut ImageBuilder,
    ) -> Result<Finished, StageFailure> {
        let reason = match decision {
            Decision::Reuse(entry) => {
                let layer = entry.layer.as_ref().map(|layer| StageLayer {
                    descriptor: layer.descriptor.clone(),
                    diff_id: layer.diff_id.clone(),
                    tree: self.reused_tree(layer),
                });
                let result = self.add_stage(image, entry.history.clone(), layer)?;
                return Ok(Finished {
                    result,
                    cache: CacheStatus::Hit,
                });
            }
            Decision::Run(reason) => reason,
        };
        let (tree, overlay_upper) = match stage.step {
            Step::Source => (
                self.make_source_root(stage, &self.plan.template.source)?,
                false,
            ),
            Step::Provisioner(index) => (self.run_provisioner(stage, index, image)?, true),
        };
        let history = self.stage_history(stage, true);
        let result = self.bake_stage(stage, &tree, overlay_upper, history, image)?;
        Ok(Finished {
            result,
            cache: CacheStatus::Miss { reason },
        })
    }

    /// The tree of a reused layer: its cached tree, or for a `directory`
    /// source, the folder itself (its key says its content is the layer's).
    fn reused_tree(&self, layer: &CachedLayer) -> PathBuf {
        match (self.cache.tree_path(layer), &self.plan.template.source) {
            (Some(tree), _) => tree,
            (None, Source::Directory(DirectorySource { path })) => path.clone(),
            // `decide` reuses a treeless entry only for a directory source.
            (None, _) => self.work.path().join("empty"),
        }
    }

    /// Whether the stage is a `directory` source: a host folder baked where
    /// it is, its own tree.
    fn is_host_folder(&self, stage: &PlannedStage) -> bool {
        stage.step == Step::Source && matches!(self.plan.template.source, Source::Directory(_))
    }

    /// Makes the source's root: a fresh folder in the work folder, or the
    /// host folder of a `directory` source.
    fn make_source_root(
        &self,
        stage: &PlannedStage,
        source: &Source,
    ) -> Result<PathBuf, StageFailure> {
        if let Source::Directory(directory) = source {
            if !directory.path.is_dir() {
                return Err(SourceError::Missing(directory.path.clone()).into());
            }
            return Ok(directory.path.clone());
        }
        let root = self
            .work
            .fresh_dir("source")
            .map_err(IoError::at("create", self.work.path()))?;
        let cx = self.stage_context(stage);
        match source {
            Source::Scratch => {}
            Source::Tarball(tarball) => tarball.unpack(&root)?,
            Source::Debootstrap(debootstrap) => debootstrap.run(&cx, &root)?,
            Source::Directory(_) | Source::Image(_) => {
                unreachable!("directory and image sources make no root in the work folder")
            }
        }
        Ok(root)
    }

    fn stage_context(&self, stage: &PlannedStage) -> StageContext<'_> {
        StageContext {
            runner: self.runner,
            number: stage.number,
            work: self.work.path(),
            template_dir: self.plan.template_dir(),
            epoch: self.plan.epoch,
            variables: &self.plan.variables,
        }
    }

    /// Runs provisioner `index` on a fresh upper, retrying a failed command
    /// from a clean upper; returns the upper.
    fn run_provisioner(
        &self,
        stage: &PlannedStage,
        index: usize,
        image: &ImageBuilder,
    ) -> Result<PathBuf, StageFailure> {
        let provisioner = &self.plan.template.provisioners[index];
        let folder = format!("stage{}", stage.number);
        let upper = format!("{folder}/upper");
        let work = format!("{folder}/work");
        let cx = self.stage_context(stage);
        let mut attempt = 0;
        loop {
            for dir in [folder.as_str(), "merged"] {
                self.work
                    .fresh_dir(dir)
                    .map_err(IoError::at("create", self.work.path()))?;
            }
            for dir in [&upper, &work] {
                let path = self.work.path().join(dir);
                std::fs::create_dir(&path).map_err(IoError::at("create", &path))?;
            }
            let overlay = Overlay {
                lowers: self.lower_names(image),
                upper: Some((upper.clone(), work.clone())),
                merged: "merged".to_owned(),
            };
            match provisioner.run(&cx, overlay) {
                Ok(()) => {
                    let upper = self.work.path().join(&upper);
                    if !matches!(provisioner, crate::provisioners::Provisioner::File(_)) {
                        crate::hygiene::clean_stage_output(&upper)
                            .map_err(IoError::at("clean", &upper))?;
                    }
                    return Ok(upper);
                }
                Err(TaskError::Failed { failure, .. })
                    if attempt < provisioner.max_retries() && !self.runner.is_cancelled() =>
                {
                    attempt += 1;
                    self.report(Event::StageRetry {
                        build: self.plan.reference.clone(),
                        stage: stage.number,
                        attempt,
                        reason: failure.to_string(),
                    });
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The overlay lowers of the layers so far, top first, as names of
    /// links in the work folder (they keep the mount options short).
    pub(super) fn lower_names(&self, image: &ImageBuilder) -> Vec<String> {
        (0..image.trees().len())
            .rev()
            .map(|index| format!("lower{index}"))
            .collect()
    }

    /// Adds a stage's history and layer to the image, and links its tree
    /// as the next lower.
    fn add_stage(
        &self,
        image: &mut ImageBuilder,
        history: History,
        layer: Option<StageLayer>,
    ) -> Result<StageResult, StageFailure> {
        let result = match &layer {
            Some(layer) => {
                let link = self
                    .work
                    .path()
                    .join(format!("lower{}", image.trees().len()));
                std::os::unix::fs::symlink(&layer.tree, &link)
                    .map_err(IoError::at("link", &layer.tree))?;
                StageResult::Layer {
                    digest: layer.descriptor.digest.clone(),
                    size: layer.descriptor.size,
                }
            }
            None => StageResult::Empty,
        };
        image.add(history, layer);
        Ok(result)
    }

    /// Bakes the stage's tree into a layer (none when it changed nothing),
    /// records it in the cache, moving a tree made in the work folder
    /// there, and adds it to the image.
    fn bake_stage(
        &self,
        stage: &PlannedStage,
        tree: &Path,
        overlay_upper: bool,
        mut history: History,
        image: &mut ImageBuilder,
    ) -> Result<StageResult, StageFailure> {
        let host_folder = match &self.plan.template.source {
            Source::Directory(directory) if self.is_host_folder(stage) => Some(directory),
            _ => None,
        };
        let empty = bake::is_empty_tree(tree).map_err(IoError::at("read", tree))?;
        history.empty_layer = empty;
        let layer = if empty {
            None
        } else {
            self.report(Event::BakeStarted {
                build: self.plan.reference.clone(),
                stage: stage.number,
            });
            let options = TreeOptions {
                epoch: self.plan.epoch,
                overlay_upper,
            };
            let mut report = |bytes| {
                self.report(Event::BakeProgress {
                    build: self.plan.reference.clone(),
                    stage: stage.number,
                    bytes,
                })
            };
            let layer = bake::bake_layer(&self.store, tree, options, &mut report)?;
            if let Some(directory) = host_folder {
                let planned = stage
                    .key
                    .files
                    .get(&directory.key_name(self.plan.template_dir()));
                if planned != Some(&layer.diff_id) {
                    return Err(SourceError::Changed {
                        path: directory.path.clone(),
                        planned: planned.cloned().unwrap_or_else(|| layer.diff_id.clone()),
                        baked: layer.diff_id,
                    }
                    .into());
                }
            }
            crate::file_index::save_layer_index(&self.store, &layer.diff_id, &layer.files)?;
            Some(layer)
        };
        let entry = cache::Entry {
            key: stage.key.clone(),
            stage: stage.number,
            kind: stage.kind.to_owned(),
            image: self.plan.reference.clone(),
            layer: layer.as_ref().map(|layer| CachedLayer {
                descriptor: layer.descriptor.clone(),
                diff_id: layer.diff_id.clone(),
                tree: None,
                entries: 0,
                bytes: 0,
                overlay_upper,
            }),
            history: history.clone(),
            checksum: String::new(),
        };
        // A host folder is its own tree; a tree made here moves into the cache.
        let kept = match (&layer, host_folder) {
            (Some(_), None) => Some(tree),
            _ => None,
        };
        let cached_tree = self
            .cache
            .persist(entry, kept)
            .map_err(IoError::at("store in the cache", tree))?;
        let layer = layer.map(|layer| StageLayer {
            descriptor: layer.descriptor,
            diff_id: layer.diff_id,
            tree: cached_tree.unwrap_or_else(|| tree.to_owned()),
        });
        self.add_stage(image, history, layer)
    }

    /// Pulls an `image` source's base from its registry, pinned to the
    /// digest the plan found there, unless it is stored already; keeps the
    /// signatures the plan checked (`verify_key`).
    fn pull_base(&self) -> Result<(), StageFailure> {
        let Some(base) = &self.plan.base else {
            return Ok(());
        };
        self.pull_base_image(base)?;
        if let Some(signatures) = &base.signatures {
            crate::signing::keep(&self.store, &base.digest, signatures).map_err(|error| {
                StageFailure::BasePull {
                    reference: base.reference.to_string(),
                    source: Box::new(error.into()),
                }
            })?;
        }
        Ok(())
    }

    fn pull_base_image(&self, base: &crate::plan::Base) -> Result<(), StageFailure> {
        let Some(remote) = &base.pull_from else {
            return Ok(());
        };
        if self.store.resolve(&base.reference).is_ok() {
            return Ok(());
        }
        let crate::reference::StoreTarget::Version(version) = &base.reference.target else {
            unreachable!("a base from a registry is stored under a version")
        };
        let failed = |source| StageFailure::BasePull {
            reference: remote.to_string(),
            source: Box::new(source),
        };
        let registry =
            crate::remote::Registry::new(&remote.host, &self.options.remote).map_err(failed)?;
        let pulled = crate::remote::block_on(crate::remote::pull::pull(
            &self.store,
            &registry,
            remote,
            &base.reference.name,
            version,
            self.reporter(),
        ))
        .map_err(failed)?;
        if pulled.digest != base.digest {
            return Err(StageFailure::BasePull {
                reference: remote.to_string(),
                source: Box::new(crate::remote::RemoteError::DigestMismatch {
                    host: remote.host.clone(),
                    what: format!("the manifest of {remote}"),
                    expected: base.digest.clone(),
                    actual: pulled.digest,
                }),
            });
        }
        Ok(())
    }

    /// An `image` source: the base's layers, each unpacked once into the
    /// cache as an overlay lower shared by every build on it.
    fn base_stage(&self, image: &mut ImageBuilder) -> Result<Finished, StageFailure> {
        let base = self
            .plan
            .base
            .as_ref()
            .expect("the plan resolves an image source's base");
        let entry = self.store.resolve(&base.reference)?;
        let manifest = self.store.manifest(&entry)?;
        let config = self.store.config(&manifest)?;
        if manifest.layers.len() != config.rootfs.diff_ids.len() {
            return Err(StageFailure::BaseLayerCount {
                layers: manifest.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        let mut unpacked = 0;
        let mut trees = Vec::with_capacity(manifest.layers.len());
        for (index, (layer, diff_id)) in manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .enumerate()
        {
            let (tree, was_there) = self.layer_tree(layer, diff_id)?;
            unpacked += usize::from(!was_there);
            let link = self.work.path().join(format!("lower{index}"));
            std::os::unix::fs::symlink(&tree, &link).map_err(IoError::at("link", &tree))?;
            trees.push(tree);
        }
        *image = ImageBuilder::on_base(
            BaseImage {
                digest: entry.manifest.digest.clone(),
                reference: base.reference.to_string(),
                config: config.config.clone(),
            },
            manifest.layers.clone(),
            &config,
            trees,
        );
        Ok(Finished {
            result: StageResult::Base {
                layers: manifest.layers.len(),
            },
            cache: if unpacked == 0 {
                CacheStatus::Hit
            } else {
                CacheStatus::Miss {
                    reason: MissReason::BaseFirstUse { unpacked },
                }
            },
        })
    }

    /// The unpacked tree of a stored layer, made once and shared by builds
    /// under `$KILN_HOME/cache/layers/`; says whether it was there already.
    fn layer_tree(
        &self,
        layer: &crate::oci::Descriptor,
        diff_id: &crate::reference::Digest,
    ) -> Result<(PathBuf, bool), StageFailure> {
        let layers = self.cache.layers_dir();
        let done = layers.join(diff_id.hex());
        if done.join("tree").is_dir() {
            return Ok((done.join("tree"), true));
        }
        std::fs::create_dir_all(&layers).map_err(IoError::at("create", &layers))?;
        let partial = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(&layers)
            .map_err(IoError::at("create a folder in", &layers))?;
        let tree = partial.path().join("tree");
        std::fs::create_dir(&tree).map_err(IoError::at("create", &tree))?;
        let mut reader = self.store.open_layer(layer, diff_id)?;
        unpack::unpack(&mut reader, &tree, Whiteouts::ToOverlay).map_err(|source| {
            StageFailure::BaseLayer {
                digest: layer.digest.clone(),
                source,
            }
        })?;
        reader.finish()?;
        let record = partial.path().join(crate::cache::LAYER_TREE_RECORD);
        std::fs::write(&record, crate::oci::to_canonical_json(layer))
            .map_err(IoError::at("write", &record))?;
        match std::fs::rename(partial.path(), &done) {
            Ok(()) => {
                let _ = partial.keep();
            }
            // Another build unpacked the same layer meanwhile: use theirs.
            Err(_) if done.join("tree").is_dir() => {}
            Err(error) => return Err(IoError::new("store", &done, error).into()),
        }
        Ok((done.join("tree"), false))
    }
}

impl BuildContext<'_> {
    /// A stage's failure as the build's error: a cancel is the build's
    /// cancel; with `--on-error abort`, a failed command's root is kept.
    fn stage_failed(
        &self,
        stage: &PlannedStage,
        failure: StageFailure,
        image: &ImageBuilder,
    ) -> BuildError {
        let task = match &failure {
            StageFailure::Task(task) | StageFailure::Source(SourceError::Task(task)) => Some(task),
            _ => None,
        };
        if matches!(task, Some(TaskError::Cancelled)) {
            return BuildError::Cancelled;
        }
        let mut kept = None;
        if self.options.on_error == OnError::Abort
            && matches!(task, Some(TaskError::Failed { .. }))
            && let Step::Provisioner(_) = stage.step
        {
            kept = Some(self.keep_failed_root(stage, image).map_err(Box::new));
        }
        BuildError::Stage {
            stage: stage.number,
            kind: stage.kind,
            failure: Box::new(failure),
            kept,
        }
    }
}

/// How events name a stage: `source`, or `provisioner N`.
fn stage_name(stage: &PlannedStage) -> String {
    match stage.step {
        Step::Source => "source".to_owned(),
        Step::Provisioner(_) => format!("stage {}", stage.number),
    }
}
