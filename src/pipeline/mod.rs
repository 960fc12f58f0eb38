//! The build pipeline: from a checked [`Template`] to an image in the store.
//!
//! Stages run in order: the source (stage 0), then each provisioner. Every
//! provisioner runs on a fresh overlayfs upper directory above the layers
//! so far; what it changed is baked into that stage's layer. Tests run on
//! the finished root, read-only. Only then are the config and manifest
//! written and the version tagged. The work folder (uppers, mounts) is
//! removed however the build ends; with `--on-error abort` the failed
//! stage's root is first copied out for inspection.

pub mod reporter;
mod workdir;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bake::{self, BakeError, TreeOptions};
use crate::cache::{self, Cache, CachedLayer, Lookup, StageKey};
use crate::image_test::ImageTest;
use crate::oci::{self, ContainerConfig, Descriptor, History, ImageConfig, Manifest, RootFs};
use crate::provisioners::Provisioner;
use crate::provisioners::shell::{ShellBody, ShellSpec};
use crate::redact::Redactor;
use crate::reference::{Digest, ImageRef};
use crate::sandbox::{self, Outcome, Overlay, SandboxError, Spec, Task};
use crate::sources::Source;
use crate::store::{Store, StoreError, Tagged};
use crate::template::Template;
use crate::unpack::{self, UnpackError, Whiteouts};
use reporter::{CacheStatus, Event, Reporter, StageResult};
use workdir::WorkDir;

/// What to do with a failed build's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    #[default]
    Cleanup,
    /// Copy the failed stage's root to `$KILN_HOME/failed/` first.
    Abort,
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// `$KILN_HOME`: the store, the cache and work folders live there.
    pub home: PathBuf,
    /// `SOURCE_DATE_EPOCH`: the creation time, and the clamp for mtimes.
    pub epoch: u64,
    pub on_error: OnError,
    /// Run every stage and refresh the cache.
    pub no_cache: bool,
}

/// A stored image.
#[derive(Clone, Debug)]
pub struct Built {
    pub reference: String,
    pub digest: Digest,
    pub manifest: Manifest,
    /// The same version with the same digest was stored already.
    pub unchanged: bool,
    /// Each stage: what it was, how long it took, whether it was cached.
    pub stages: Vec<StageRecord>,
    /// Each `[[test]]`: how long it took, whether it passed before.
    pub tests: Vec<TestRecord>,
}

/// A passed `[[test]]` of a finished build, for `kiln-manifest.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TestRecord {
    pub name: String,
    pub seconds: f64,
    /// `passed`: a failed test fails the build, so none is recorded.
    pub outcome: String,
    /// It passed before with the same image and settings and was not run.
    pub cached: bool,
}

/// The image's documents, made in memory before the tests run, so tests
/// can be cached by the digest the image will have. Stored only if they pass.
struct PreparedImage {
    file_index: Vec<u8>,
    config: Vec<u8>,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    digest: Digest,
}

fn descriptor_of(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    }
}

/// One stage of a finished build, for `kiln-manifest.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StageRecord {
    pub stage: usize,
    pub kind: String,
    pub seconds: f64,
    pub cache_hit: bool,
    /// The stage's layer, if it made one.
    pub layer: Option<Digest>,
}

/// Lines of output kept for the error of a failed stage.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{stage} ({kind}) failed: {reason}")]
    Stage {
        stage: String,
        kind: &'static str,
        reason: String,
        output: Vec<String>,
        kept: Option<PathBuf>,
    },
    #[error("test `{name}` failed: {reason}")]
    Test {
        name: String,
        reason: String,
        output: Vec<String>,
    },
    #[error("build cancelled")]
    Cancelled,
    #[error("source ({kind}): {reason}")]
    Source { kind: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bake(#[from] BakeError),
    #[error("failed to unpack {what}")]
    Unpack {
        what: String,
        #[source]
        source: UnpackError,
    },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    StageKey(#[from] cache::key::KeyError),
    #[error("failed to make the image's file index")]
    FileIndex(#[from] crate::file_index::IndexError),
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl BuildError {
    pub fn is_version_conflict(&self) -> bool {
        matches!(self, BuildError::Store(StoreError::VersionConflict { .. }))
    }

    /// The last lines a failed command printed, if any.
    pub fn output(&self) -> &[String] {
        match self {
            BuildError::Stage { output, .. } | BuildError::Test { output, .. } => output,
            _ => &[],
        }
    }

    /// Where `--on-error abort` kept the failed stage's root.
    pub fn kept_root(&self) -> Option<&Path> {
        match self {
            BuildError::Stage { kept, .. } => kept.as_deref(),
            _ => None,
        }
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Builds `template` into the store under `options.home`.
pub fn build(
    template: &Template,
    options: &BuildOptions,
    reporter: &dyn Reporter,
    cancelled: &AtomicBool,
) -> Result<Built, BuildError> {
    let name = format!("{}:{}", template.image.name, template.image.version);
    let result = Build::new(template, options, reporter, cancelled, name.clone())
        .and_then(|mut build| build.run());
    if let Err(error) = &result {
        reporter.report(Event::BuildFailed {
            build: name,
            error: crate::redact::Redactor::new(&template.variables)
                .redact(&error_chain(error))
                .into_owned(),
        });
    }
    result
}

/// `error: cause: cause`, on one line, as ripgrep prints a chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Everything a running build needs, in one place.
struct Build<'a> {
    template: &'a Template,
    options: &'a BuildOptions,
    reporter: &'a dyn Reporter,
    cancelled: &'a AtomicBool,
    name: String,
    store: Store,
    work: WorkDir,
    redactor: Redactor,
    started: Instant,
    /// Lower directories so far, bottom first, relative to the work folder.
    lowers: Vec<String>,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    history: Vec<History>,
    /// The base image's digest and reference, for an `image` source.
    parent: Option<(Digest, String)>,
    /// The base image's config, which this image's settings amend.
    parent_config: Option<ContainerConfig>,
    cache: Cache,
    /// The key of each stage run or reused so far.
    keys: Vec<StageKey>,
    /// The keys of this template's last build, to say why a stage missed.
    last_keys: Vec<StageKey>,
    /// The first stage with `cache = false`: it and every later stage run.
    uncached_from: Option<usize>,
    stage_records: Vec<StageRecord>,
    test_records: Vec<TestRecord>,
}

/// Whether a stage runs, and why.
enum Decision {
    Reuse(Box<cache::Entry>),
    Run(String),
}

impl<'a> Build<'a> {
    fn new(
        template: &'a Template,
        options: &'a BuildOptions,
        reporter: &'a dyn Reporter,
        cancelled: &'a AtomicBool,
        name: String,
    ) -> Result<Self, BuildError> {
        let store = Store::open(&options.home.join("store"))?;
        let work = WorkDir::create(&options.home)
            .map_err(io_error("create a work folder in", &options.home))?;
        let cache =
            Cache::open(&options.home).map_err(io_error("open the cache in", &options.home))?;
        let last_keys = cache.last_build(&template.path);
        Ok(Self {
            template,
            options,
            reporter,
            cancelled,
            name,
            store,
            work,
            redactor: template.redactor(),
            started: Instant::now(),
            lowers: Vec::new(),
            layers: Vec::new(),
            diff_ids: Vec::new(),
            history: Vec::new(),
            parent: None,
            parent_config: None,
            cache,
            keys: Vec::new(),
            last_keys,
            uncached_from: None,
            stage_records: Vec::new(),
            test_records: Vec::new(),
        })
    }

    fn run(&mut self) -> Result<Built, BuildError> {
        self.reporter.report(Event::BuildStarted {
            build: self.name.clone(),
            template: self.template.path.display().to_string(),
            stages: 1 + self.template.provisioners.len(),
            tests: self.template.tests.len(),
        });
        self.source()?;
        for (index, provisioner) in self.template.provisioners.iter().enumerate() {
            self.check_cancelled()?;
            self.provision(index + 1, provisioner)?;
        }
        self.cache
            .record_build(&self.template.path, &self.keys)
            .map_err(io_error("record the stage keys of", &self.template.path))?;
        let image = self.prepare_image()?;
        for test in &self.template.tests {
            self.check_cancelled()?;
            self.test(test, &image.digest)?;
        }
        self.check_cancelled()?;
        self.store_image(image)
    }

    fn check_cancelled(&self) -> Result<(), BuildError> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(BuildError::Cancelled);
        }
        Ok(())
    }

    /// A summary for history and progress: redacted, with paths relative
    /// to the template so the image does not depend on where it was built.
    fn describe(&self, text: &str) -> String {
        let dir = self
            .template
            .path
            .parent()
            .map(|dir| format!("{}/", dir.display()))
            .unwrap_or_default();
        self.redactor.redact(&text.replace(&dir, "")).into_owned()
    }

    fn stage_started(&self, stage: usize, name: &str, kind: &str, summary: &str) {
        self.reporter.report(Event::StageStarted {
            build: self.name.clone(),
            stage,
            name: name.to_owned(),
            kind: kind.to_owned(),
            summary: self.describe(summary),
        });
    }

    fn stage_finished(
        &mut self,
        stage: usize,
        started: Instant,
        result: StageResult,
        cache: CacheStatus,
    ) {
        self.stage_records.push(StageRecord {
            stage,
            kind: if stage == 0 {
                self.template.source.kind().to_owned()
            } else {
                self.template.provisioners[stage - 1].kind().to_owned()
            },
            seconds: started.elapsed().as_secs_f64(),
            cache_hit: cache == CacheStatus::Hit,
            layer: match &result {
                StageResult::Layer { digest, .. } => Some(digest.clone()),
                _ => None,
            },
        });
        self.reporter.report(Event::StageFinished {
            build: self.name.clone(),
            stage,
            seconds: started.elapsed().as_secs_f64(),
            result,
            cache,
        });
    }

    /// Whether stage `stage` (with key `key`) is reused from the cache or
    /// runs, and why it runs.
    fn decide(&self, stage: usize, key: &StageKey, cacheable: bool) -> Decision {
        if self.options.no_cache {
            return Decision::Run("--no-cache".to_owned());
        }
        if !cacheable {
            return Decision::Run("cache = false".to_owned());
        }
        if let Some(uncached) = self.uncached_from {
            return Decision::Run(format!(
                "parent changed: stage {uncached} has cache = false and always runs"
            ));
        }
        match self.cache.lookup(&key.key, &self.store) {
            Lookup::Hit(entry) => Decision::Reuse(entry),
            Lookup::Damaged(reason) => Decision::Run(format!("cache entry damaged: {reason}")),
            Lookup::Missing => match self.last_keys.get(stage) {
                None => Decision::Run("first build".to_owned()),
                Some(before) => Decision::Run(cache::key::difference(before, key)),
            },
        }
    }

    /// Adds a stage's layer (or its empty history entry) to the image, with
    /// its tree as the next overlay lower.
    fn add_stage(
        &mut self,
        stage: usize,
        history: History,
        layer: Option<(Descriptor, Digest, PathBuf)>,
    ) -> Result<StageResult, BuildError> {
        self.history.push(history);
        let Some((descriptor, diff_id, tree)) = layer else {
            return Ok(StageResult::Empty);
        };
        let link = format!("layer{stage}");
        std::os::unix::fs::symlink(&tree, self.work.path().join(&link))
            .map_err(io_error("link", &tree))?;
        self.lowers.push(link);
        self.diff_ids.push(diff_id);
        let result = StageResult::Layer {
            digest: descriptor.digest.clone(),
            size: descriptor.size,
        };
        self.layers.push(descriptor);
        Ok(result)
    }

    fn reuse(&mut self, stage: usize, entry: Box<cache::Entry>) -> Result<StageResult, BuildError> {
        let layer = entry.layer.as_ref().map(|layer| {
            (
                layer.descriptor.clone(),
                layer.diff_id.clone(),
                self.cache.tree_path(layer),
            )
        });
        self.add_stage(stage, entry.history.clone(), layer)
    }

    fn created(&self) -> String {
        oci::rfc3339(self.options.epoch)
    }

    // ---- the source ----------------------------------------------------

    fn source(&mut self) -> Result<(), BuildError> {
        let source = &self.template.source;
        let started = Instant::now();
        let kind = source.kind();
        self.stage_started(0, "source", kind, &source.summary());
        if let Source::Image(image) = source {
            let (result, cache) = self.base_image(&image.reference)?;
            self.stage_finished(0, started, result, cache);
            return Ok(());
        }
        let key = cache::key::source_key(self.template, self.options.epoch, None)?;
        let (result, cache) = match self.decide(0, &key, true) {
            Decision::Reuse(entry) => (self.reuse(0, entry)?, CacheStatus::Hit),
            Decision::Run(reason) => {
                let root = self
                    .work
                    .fresh_dir("source")
                    .map_err(io_error("create", self.work.path()))?;
                match source {
                    Source::Scratch | Source::Image(_) => {}
                    Source::Tarball(tarball) => self.unpack_tarball(tarball, &root)?,
                    Source::Directory(directory) => copy_directory(&directory.path, &root)?,
                    Source::Debootstrap(debootstrap) => self.debootstrap(debootstrap, &root)?,
                }
                let created_by =
                    self.describe(&format!("kiln source {kind}: {}", source.summary()));
                let result =
                    self.bake_stage(0, "source", kind, created_by, "source", false, &key)?;
                (result, CacheStatus::Miss { reason })
            }
        };
        self.keys.push(key);
        self.stage_finished(0, started, result, cache);
        Ok(())
    }

    fn unpack_tarball(
        &self,
        tarball: &crate::sources::tarball::TarballSource,
        root: &Path,
    ) -> Result<(), BuildError> {
        let source_error = |reason: String| BuildError::Source {
            kind: "tarball",
            reason,
        };
        if !tarball.path.is_file() {
            return Err(source_error(format!(
                "{} does not exist",
                tarball.path.display()
            )));
        }
        if let Some(expected) = &tarball.sha256 {
            let (actual, _) = crate::hashing::digest_file(&tarball.path)
                .map_err(io_error("read", &tarball.path))?;
            if &actual != expected {
                return Err(source_error(format!(
                    "{} has sha256 {actual}, but the template pins {expected}",
                    tarball.path.display()
                )));
            }
        }
        let file = std::fs::File::open(&tarball.path).map_err(io_error("open", &tarball.path))?;
        let mut reader = crate::sources::tarball::decompress(file, tarball.compression)
            .map_err(io_error("read", &tarball.path))?;
        unpack::unpack(&mut reader, root, Whiteouts::Literal).map_err(|source| {
            BuildError::Unpack {
                what: tarball.path.display().to_string(),
                source,
            }
        })?;
        Ok(())
    }

    fn debootstrap(
        &self,
        source: &crate::sources::debootstrap::DebootstrapSource,
        root: &Path,
    ) -> Result<(), BuildError> {
        let argv = crate::sources::debootstrap::command(source, root).map_err(|reason| {
            BuildError::Source {
                kind: "debootstrap",
                reason,
            }
        })?;
        let spec = Spec {
            base: self.work.path().to_owned(),
            overlay: None,
            task: Task::Host {
                argv,
                env: vec![(
                    "SOURCE_DATE_EPOCH".to_owned(),
                    self.options.epoch.to_string(),
                )],
                cwd: self.work.path().to_owned(),
            },
        };
        let (outcome, output) =
            self.sandboxed(&spec, None, &mut |build, line| Event::StageOutput {
                build,
                stage: 0,
                line,
            })?;
        match outcome {
            Outcome::Exited(0) => Ok(()),
            outcome => Err(BuildError::Stage {
                stage: "source".to_owned(),
                kind: "debootstrap",
                reason: outcome_reason(outcome, None),
                output,
                kept: None,
            }),
        }
    }

    fn base_image(
        &mut self,
        reference: &ImageRef,
    ) -> Result<(StageResult, CacheStatus), BuildError> {
        let ImageRef::Store(reference) = reference else {
            return Err(BuildError::Source {
                kind: "image",
                reason: format!(
                    "{reference} is on a registry; pulling a base image is not implemented yet: kiln pull it first"
                ),
            });
        };
        let entry = self.store.resolve(reference)?;
        let manifest = self.store.manifest(&entry)?;
        let config = self.store.config(&manifest)?;
        if manifest.layers.len() != config.rootfs.diff_ids.len() {
            return Err(BuildError::Source {
                kind: "image",
                reason: format!(
                    "{reference} has {} layers but {} diff ids",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        let mut unpacked = 0;
        for (index, (layer, diff_id)) in manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .enumerate()
        {
            let (tree, was_cached) = self.layer_tree(layer, diff_id)?;
            unpacked += usize::from(!was_cached);
            let link = format!("base{index}");
            std::os::unix::fs::symlink(&tree, self.work.path().join(&link))
                .map_err(io_error("link", &tree))?;
            self.lowers.push(link);
        }
        self.layers = manifest.layers.clone();
        self.diff_ids = config.rootfs.diff_ids.clone();
        self.history = config.history.clone();
        self.parent = Some((entry.manifest.digest.clone(), reference.to_string()));
        self.parent_config = Some(config.config.clone());
        self.keys.push(cache::key::source_key(
            self.template,
            self.options.epoch,
            Some(&entry.manifest.digest),
        )?);
        let cache = if unpacked == 0 {
            CacheStatus::Hit
        } else {
            CacheStatus::Miss {
                reason: format!("first use of the base image: unpacked {unpacked} of its layers"),
            }
        };
        Ok((
            StageResult::Base {
                layers: manifest.layers.len(),
            },
            cache,
        ))
    }

    /// The unpacked tree of a stored layer, made once and shared by builds
    /// under `$KILN_HOME/cache/layers/`, usable as an overlay lower.
    /// Whether it was there already comes with the path.
    fn layer_tree(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(PathBuf, bool), BuildError> {
        let layers = self.cache.layers_dir();
        let done = layers.join(diff_id.hex());
        if done.join("tree").is_dir() {
            return Ok((done.join("tree"), true));
        }
        std::fs::create_dir_all(&layers).map_err(io_error("create", &layers))?;
        let partial = tempfile::Builder::new()
            .prefix(".partial-")
            .tempdir_in(&layers)
            .map_err(io_error("create a folder in", &layers))?;
        let tree = partial.path().join("tree");
        std::fs::create_dir(&tree).map_err(io_error("create", &tree))?;
        let blob = self.store.open_blob(&layer.digest, Some(layer.size))?;
        let decompressed =
            crate::sources::tarball::decompress(blob, layer_compression(&layer.media_type)?)
                .map_err(io_error("read layer", &self.store.blob_path(&layer.digest)))?;
        let mut verified =
            crate::hashing::VerifyingReader::new(decompressed, diff_id.clone(), None);
        unpack::unpack(&mut verified, &tree, Whiteouts::ToOverlay).map_err(|source| {
            BuildError::Unpack {
                what: format!("layer {}", layer.digest),
                source,
            }
        })?;
        // Read to the end, so both digests are checked.
        io::copy(&mut verified, &mut io::sink()).map_err(|error| {
            BuildError::Store(StoreError::Damaged {
                digest: layer.digest.clone(),
                reason: error.to_string(),
            })
        })?;
        match std::fs::rename(partial.path(), &done) {
            Ok(()) => {
                let _ = partial.keep();
            }
            // Another build unpacked the same layer meanwhile: use theirs.
            Err(_) if done.join("tree").is_dir() => {}
            Err(error) => return Err(io_error("store", &done)(error)),
        }
        Ok((done.join("tree"), false))
    }

    // ---- provisioners ----------------------------------------------------

    fn provision(&mut self, stage: usize, provisioner: &Provisioner) -> Result<(), BuildError> {
        let started = Instant::now();
        let name = format!("provisioner[{}]", stage - 1);
        let kind = provisioner.kind();
        self.stage_started(stage, &name, kind, &provisioner.summary());
        let parent = self
            .keys
            .last()
            .expect("the source stage has a key")
            .key
            .clone();
        let key =
            cache::key::provisioner_key(self.template, provisioner, &parent, self.options.epoch)?;
        let decision = self.decide(stage, &key, provisioner.cache());
        if !provisioner.cache() && self.uncached_from.is_none() {
            self.uncached_from = Some(stage);
        }
        let reason = match decision {
            Decision::Reuse(entry) => {
                let result = self.reuse(stage, entry)?;
                self.keys.push(key);
                self.stage_finished(stage, started, result, CacheStatus::Hit);
                return Ok(());
            }
            Decision::Run(reason) => reason,
        };
        let upper = format!("upper{stage}");
        let max_retries = match provisioner {
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => spec.max_retries,
            Provisioner::File(_) => 0,
        };
        let mut attempt = 0;
        loop {
            self.work
                .fresh_dir(&upper)
                .map_err(io_error("create", self.work.path()))?;
            self.work
                .fresh_dir(&format!("work{stage}"))
                .map_err(io_error("create", self.work.path()))?;
            self.work
                .fresh_dir("merged")
                .map_err(io_error("create", self.work.path()))?;
            match self.run_provisioner(stage, &name, provisioner) {
                Ok(()) => break,
                Err(BuildError::Stage { reason, .. })
                    if attempt < max_retries && !self.cancelled.load(Ordering::SeqCst) =>
                {
                    attempt += 1;
                    self.reporter.report(Event::StageRetry {
                        build: self.name.clone(),
                        stage,
                        attempt,
                        reason,
                    });
                }
                Err(mut error) => {
                    if self.options.on_error == OnError::Abort
                        && let BuildError::Stage { kept, .. } = &mut error
                    {
                        *kept = Some(self.keep_failed_root(&upper)?);
                    }
                    return Err(error);
                }
            }
        }
        let created_by = self.describe(&format!("kiln {kind}: {}", history_text(provisioner)));
        let result = self.bake_stage(stage, &name, kind, created_by, &upper, true, &key)?;
        self.keys.push(key);
        self.stage_finished(stage, started, result, CacheStatus::Miss { reason });
        Ok(())
    }

    fn overlay(&self, upper: Option<String>, stage: usize) -> Overlay {
        Overlay {
            lowers: self.lowers.iter().rev().cloned().collect(),
            upper: upper.map(|upper| (upper, format!("work{stage}"))),
            merged: "merged".to_owned(),
        }
    }

    fn run_provisioner(
        &self,
        stage: usize,
        name: &str,
        provisioner: &Provisioner,
    ) -> Result<(), BuildError> {
        let overlay = self.overlay(Some(format!("upper{stage}")), stage);
        let base = self.work.path().to_owned();
        let failed =
            |outcome: Outcome, timeout: Option<Duration>, output: Vec<String>| BuildError::Stage {
                stage: name.to_owned(),
                kind: provisioner.kind(),
                reason: outcome_reason(outcome, timeout),
                output,
                kept: None,
            };
        let mut emit = |build, line| Event::StageOutput { build, stage, line };
        match provisioner {
            Provisioner::File(file) => {
                let spec = Spec {
                    base,
                    overlay: Some(overlay),
                    task: Task::CopyIn(file.into()),
                };
                match self.sandboxed(&spec, None, &mut emit)? {
                    (Outcome::Exited(0), _) => Ok(()),
                    (outcome, output) => Err(failed(outcome, None, output)),
                }
            }
            Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => {
                let local = matches!(provisioner, Provisioner::ShellLocal(_));
                for task in shell_tasks(
                    spec,
                    local,
                    self.template.path.parent().unwrap_or(Path::new("/")),
                ) {
                    let spec_run = Spec {
                        base: base.clone(),
                        overlay: Some(overlay.clone()),
                        task,
                    };
                    let timeout = spec.timeout.map(|timeout| timeout.as_std());
                    match self.sandboxed(&spec_run, timeout, &mut emit)? {
                        (Outcome::Exited(0), _) => {}
                        (outcome, output) => return Err(failed(outcome, timeout, output)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Copies the failed stage's root (its lowers and partial upper) to
    /// `$KILN_HOME/failed/NAME-VERSION-TIME/` for `--on-error abort`.
    fn keep_failed_root(&self, upper: &str) -> Result<PathBuf, BuildError> {
        let failed = self.options.home.join("failed");
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let destination = failed.join(format!(
            "{}-{}-{stamp}",
            self.template.image.name.as_str().replace('/', "_"),
            self.template.image.version
        ));
        std::fs::create_dir_all(&destination).map_err(io_error("create", &destination))?;
        let mut lowers: Vec<String> = self.lowers.iter().rev().cloned().collect();
        lowers.insert(0, upper.to_owned());
        let spec = Spec {
            base: self.work.path().to_owned(),
            overlay: Some(Overlay {
                lowers,
                upper: None,
                merged: "merged".to_owned(),
            }),
            task: Task::Flatten {
                destination: destination.clone(),
            },
        };
        match self.sandboxed(&spec, None, &mut |build, line| Event::StageOutput {
            build,
            stage: 0,
            line,
        })? {
            (Outcome::Exited(0), _) => Ok(destination),
            (outcome, output) => Err(BuildError::Stage {
                stage: "keeping the failed root".to_owned(),
                kind: "flatten",
                reason: outcome_reason(outcome, None),
                output,
                kept: None,
            }),
        }
    }

    /// Bakes the stage's upper (or the source's root) `dir_name` into a
    /// layer, or records an empty history entry when nothing changed; then
    /// moves the tree into the cache under the stage's key.
    #[allow(
        clippy::too_many_arguments,
        reason = "called for the source and for provisioners, with their own names"
    )]
    fn bake_stage(
        &mut self,
        stage: usize,
        name: &str,
        kind: &str,
        created_by: String,
        dir_name: &str,
        overlay_upper: bool,
        key: &StageKey,
    ) -> Result<StageResult, BuildError> {
        let dir = self.work.path().join(dir_name);
        let empty = bake::is_empty_tree(&dir).map_err(io_error("read", &dir))?;
        let history = History {
            created: Some(self.created()),
            created_by: Some(created_by),
            comment: Some(name.to_owned()),
            empty_layer: empty,
        };
        let layer = if empty {
            None
        } else {
            self.reporter.report(Event::BakeStarted {
                build: self.name.clone(),
                stage,
            });
            let options = TreeOptions {
                epoch: self.options.epoch,
                overlay_upper,
            };
            let build = self.name.clone();
            let reporter = self.reporter;
            let mut report = |bytes| {
                reporter.report(Event::BakeProgress {
                    build: build.clone(),
                    stage,
                    bytes,
                })
            };
            let layer = bake::bake_layer(&self.store, &dir, options, &mut report)?;
            crate::file_index::save_layer_index(&self.store, &layer.diff_id, &layer.files)?;
            Some(layer)
        };
        let entry = cache::Entry {
            key: key.clone(),
            stage: name.to_owned(),
            kind: kind.to_owned(),
            image: self.name.clone(),
            layer: layer.as_ref().map(|layer| CachedLayer {
                descriptor: layer.descriptor.clone(),
                diff_id: layer.diff_id.clone(),
                tree: String::new(),
                entries: 0,
                bytes: 0,
            }),
            history: history.clone(),
            checksum: String::new(),
        };
        let tree = self
            .cache
            .persist(entry, layer.is_some().then_some(dir.as_path()))
            .map_err(io_error("store in the cache", &dir))?;
        let layer = layer
            .zip(tree)
            .map(|(layer, tree)| (layer.descriptor, layer.diff_id, tree));
        self.add_stage(stage, history, layer)
    }

    // ---- tests ------------------------------------------------------------

    /// Runs a test, unless it passed before with the same key: the image
    /// digest it will have, the test's settings and its script files.
    fn test(&mut self, test: &ImageTest, image: &Digest) -> Result<(), BuildError> {
        let started = Instant::now();
        self.reporter.report(Event::TestStarted {
            build: self.name.clone(),
            name: test.name.clone(),
        });
        let key = cache::key::test_key(self.template, test, image)?;
        if !self.options.no_cache && self.cache.test_passed(&key) {
            self.test_finished(test, 0.0, true, true);
            return Ok(());
        }
        self.work
            .fresh_dir("merged")
            .map_err(io_error("create", self.work.path()))?;
        let shell = ShellSpec {
            body: test.body.clone(),
            env: test.env.clone(),
            shell: "/bin/sh".to_owned(),
            timeout: test.timeout,
            max_retries: 0,
            workdir: None,
            cache: true,
        };
        let timeout = test.timeout.map(|timeout| timeout.as_std());
        let mut result = Ok(());
        for task in shell_tasks(&shell, false, Path::new("/")) {
            let spec = Spec {
                base: self.work.path().to_owned(),
                overlay: Some(self.overlay(None, 0)),
                task,
            };
            let name = test.name.clone();
            let (outcome, output) =
                self.sandboxed(&spec, timeout, &mut |build, line| Event::TestOutput {
                    build,
                    name: name.clone(),
                    line,
                })?;
            if outcome != Outcome::Exited(0) {
                result = Err(BuildError::Test {
                    name: test.name.clone(),
                    reason: outcome_reason(outcome, timeout),
                    output,
                });
                break;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        self.test_finished(test, seconds, result.is_ok(), false);
        if result.is_ok() {
            self.cache
                .record_test_pass(&key)
                .map_err(io_error("record the result of test", Path::new(&test.name)))?;
        }
        result
    }

    fn test_finished(&mut self, test: &ImageTest, seconds: f64, passed: bool, cached: bool) {
        if passed {
            self.test_records.push(TestRecord {
                name: test.name.clone(),
                seconds,
                outcome: "passed".to_owned(),
                cached,
            });
        }
        self.reporter.report(Event::TestFinished {
            build: self.name.clone(),
            name: test.name.clone(),
            seconds,
            passed,
            cached,
        });
    }

    // ---- the image ----------------------------------------------------------

    /// The file index, config and manifest of the image, in memory.
    fn prepare_image(&self) -> Result<PreparedImage, BuildError> {
        let image = &self.template.image;
        let file_index =
            crate::file_index::index_of_layers(&self.store, &self.layers, &self.diff_ids)?
                .to_bytes();
        let redact = |text: &str| self.redactor.redact(text).into_owned();
        let config = ImageConfig {
            created: Some(self.created()),
            architecture: oci::host_architecture().to_owned(),
            os: "linux".to_owned(),
            // Sensitive values never reach the stored config.
            config: inherit_config(
                self.parent_config.clone().unwrap_or_default(),
                ContainerConfig {
                    user: image.user.as_deref().map(redact),
                    env: image.env.iter().map(|entry| redact(entry)).collect(),
                    entrypoint: image
                        .entrypoint
                        .as_ref()
                        .map(|args| args.iter().map(|arg| redact(arg)).collect()),
                    cmd: image
                        .cmd
                        .as_ref()
                        .map(|args| args.iter().map(|arg| redact(arg)).collect()),
                    working_dir: image.workdir.as_deref().map(redact),
                    labels: image
                        .labels
                        .iter()
                        .map(|(key, value)| (key.clone(), redact(value)))
                        .collect(),
                },
            ),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: self.diff_ids.clone(),
            },
            history: self.history.clone(),
        };
        let config = oci::to_canonical_json(&config);
        let config_descriptor = descriptor_of(oci::MEDIA_TYPE_CONFIG, &config);
        let mut annotations = BTreeMap::new();
        annotations.insert(
            oci::ANNOTATION_VERSION.to_owned(),
            image.version.to_string(),
        );
        annotations.insert(oci::ANNOTATION_CREATED.to_owned(), self.created());
        annotations.insert(oci::ANNOTATION_TITLE.to_owned(), image.name.to_string());
        if let Some(description) = &image.description {
            annotations.insert(
                oci::ANNOTATION_DESCRIPTION.to_owned(),
                self.redactor.redact(description).into_owned(),
            );
        }
        annotations.insert(
            oci::ANNOTATION_TEMPLATE_DIGEST.to_owned(),
            self.template.digest.to_string(),
        );
        if let Some((digest, reference)) = &self.parent {
            annotations.insert(oci::ANNOTATION_PARENT_DIGEST.to_owned(), digest.to_string());
            annotations.insert(oci::ANNOTATION_BASE_DIGEST.to_owned(), digest.to_string());
            annotations.insert(oci::ANNOTATION_BASE_NAME.to_owned(), reference.clone());
        }
        annotations.insert(
            crate::file_index::ANNOTATION_FILE_INDEX.to_owned(),
            Digest::of(&file_index).to_string(),
        );
        let manifest = Manifest {
            schema_version: 2,
            media_type: oci::MEDIA_TYPE_MANIFEST.to_owned(),
            config: config_descriptor,
            layers: self.layers.clone(),
            annotations,
        };
        let manifest_bytes = oci::to_canonical_json(&manifest);
        Ok(PreparedImage {
            file_index,
            config,
            digest: Digest::of(&manifest_bytes),
            manifest,
            manifest_bytes,
        })
    }

    /// Stores the tested image's documents and tags its version.
    fn store_image(&mut self, image: PreparedImage) -> Result<Built, BuildError> {
        self.store
            .put_bytes(crate::file_index::MEDIA_TYPE_FILE_INDEX, &image.file_index)?;
        self.store
            .put_bytes(oci::MEDIA_TYPE_CONFIG, &image.config)?;
        let descriptor = self
            .store
            .put_bytes(oci::MEDIA_TYPE_MANIFEST, &image.manifest_bytes)?;
        let template = &self.template.image;
        let tagged = self
            .store
            .tag(&template.name, &template.version, &descriptor)?;
        let built = Built {
            reference: self.name.clone(),
            digest: descriptor.digest.clone(),
            manifest: image.manifest,
            unchanged: tagged == Tagged::AlreadyStored,
            stages: self.stage_records.clone(),
            tests: self.test_records.clone(),
        };
        self.reporter.report(Event::ImageStored {
            build: self.name.clone(),
            reference: built.reference.clone(),
            digest: built.digest.clone(),
            unchanged: built.unchanged,
            seconds: self.started.elapsed().as_secs_f64(),
        });
        Ok(built)
    }

    /// Runs a sandbox task, reporting its output lines (redacted) and
    /// keeping the last few for an error message.
    fn sandboxed(
        &self,
        spec: &Spec,
        timeout: Option<Duration>,
        event: &mut dyn FnMut(String, String) -> Event,
    ) -> Result<(Outcome, Vec<String>), BuildError> {
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let outcome = sandbox::run(spec, timeout, self.cancelled, &mut |line| {
            let line = self.redactor.redact(line).into_owned();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            self.reporter.report(event(self.name.clone(), line));
        })?;
        // A terminal's SIGINT reaches the stage too; it ended because of the cancel.
        if outcome == Outcome::Cancelled || self.cancelled.load(Ordering::SeqCst) {
            return Err(BuildError::Cancelled);
        }
        Ok((outcome, tail.into()))
    }
}

/// The config of an image built on a base, as `FROM` gives it: the base's
/// env, labels, user, working dir, entrypoint and cmd, amended by the
/// template's. A new entrypoint drops the base's cmd, which was its argument.
fn inherit_config(base: ContainerConfig, own: ContainerConfig) -> ContainerConfig {
    let mut env = base.env;
    for entry in own.env {
        let name = entry
            .split_once('=')
            .map_or(entry.as_str(), |(name, _)| name);
        env.retain(|old| old.split_once('=').map_or(old.as_str(), |(old, _)| old) != name);
        env.push(entry);
    }
    let mut labels = base.labels;
    labels.extend(own.labels);
    let cmd = match (&own.entrypoint, own.cmd) {
        (_, Some(cmd)) => Some(cmd),
        (Some(_), None) => None,
        (None, None) => base.cmd,
    };
    ContainerConfig {
        user: own.user.or(base.user),
        env,
        entrypoint: own.entrypoint.or(base.entrypoint),
        cmd,
        working_dir: own.working_dir.or(base.working_dir),
        labels,
    }
}

fn outcome_reason(outcome: Outcome, timeout: Option<Duration>) -> String {
    match outcome {
        Outcome::Exited(code) => format!("exited with code {code}"),
        Outcome::TimedOut => format!(
            "timed out after {}",
            timeout.map_or_else(
                || "its timeout".to_owned(),
                |timeout| format!("{}s", timeout.as_secs_f64())
            )
        ),
        Outcome::Cancelled => "cancelled".to_owned(),
    }
}

/// A command line, and the host scripts to copy into the root's /tmp for it.
type ScriptRun = (Vec<String>, Vec<(PathBuf, String)>);

/// The sandbox tasks of a shell stage: one for inline commands (run with
/// `-e`, stopping at the first failure), or one per script.
pub(crate) fn shell_tasks(spec: &ShellSpec, local: bool, template_dir: &Path) -> Vec<Task> {
    let mut env: Vec<(String, String)> = Vec::new();
    if !local {
        env.push((
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ));
        env.push(("HOME".to_owned(), "/root".to_owned()));
    }
    env.extend(
        spec.env
            .iter()
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    let runs: Vec<ScriptRun> = match &spec.body {
        ShellBody::Inline(commands) => vec![(
            vec![
                spec.shell.clone(),
                "-e".to_owned(),
                "-c".to_owned(),
                commands.join("\n"),
            ],
            Vec::new(),
        )],
        ShellBody::Scripts(scripts) => scripts
            .iter()
            .enumerate()
            .map(|(index, script)| {
                if local {
                    (
                        vec![spec.shell.clone(), script.display().to_string()],
                        Vec::new(),
                    )
                } else {
                    let name = format!("kiln-script-{index}");
                    (
                        vec![spec.shell.clone(), format!("/tmp/{name}")],
                        vec![(script.clone(), name)],
                    )
                }
            })
            .collect(),
    };
    runs.into_iter()
        .map(|(argv, scripts)| {
            if local {
                Task::Host {
                    argv,
                    env: env.clone(),
                    cwd: template_dir.to_owned(),
                }
            } else {
                Task::Chroot {
                    argv,
                    env: env.clone(),
                    workdir: spec.workdir.clone().unwrap_or_else(|| "/".to_owned()),
                    scripts,
                }
            }
        })
        .collect()
}

/// What a provisioner's history entry says it did.
fn history_text(provisioner: &Provisioner) -> String {
    match provisioner {
        Provisioner::Shell(spec) | Provisioner::ShellLocal(spec) => match &spec.body {
            ShellBody::Inline(commands) => commands.join(" ; "),
            ShellBody::Scripts(_) => spec.summary(),
        },
        Provisioner::File(file) => file.summary(),
    }
}

fn layer_compression(media_type: &str) -> Result<crate::sources::tarball::Compression, BuildError> {
    crate::export::layer_compression(media_type).ok_or_else(|| BuildError::Source {
        kind: "image",
        reason: format!("layers of media type {media_type} are not supported"),
    })
}

/// Copies a host folder as the source root, keeping owners, modes, links
/// and times (`cp -a`).
fn copy_directory(source: &Path, root: &Path) -> Result<(), BuildError> {
    if !source.is_dir() {
        return Err(BuildError::Source {
            kind: "directory",
            reason: format!("{} is not a directory", source.display()),
        });
    }
    let output = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(source.join("."))
        .arg(root)
        .output()
        .map_err(io_error("run cp to copy", source))?;
    if !output.status.success() {
        return Err(BuildError::Source {
            kind: "directory",
            reason: format!(
                "cp -a failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
    }

    #[test]
    fn images_on_a_base_amend_its_config() {
        let base = ContainerConfig {
            env: strings(&["PATH=/bin", "LANG=C"]),
            entrypoint: Some(strings(&["/bin/sh"])),
            cmd: Some(strings(&["-l"])),
            labels: [("tier".to_owned(), "base".to_owned())].into(),
            user: Some("1000".to_owned()),
            ..ContainerConfig::default()
        };
        let own = ContainerConfig {
            env: strings(&["PATH=/usr/bin:/bin"]),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            ..ContainerConfig::default()
        };
        let config = inherit_config(base.clone(), own);
        assert_eq!(config.env, strings(&["LANG=C", "PATH=/usr/bin:/bin"]));
        assert_eq!(config.entrypoint, base.entrypoint);
        assert_eq!(config.cmd, base.cmd);
        assert_eq!(config.user.as_deref(), Some("1000"));
        assert_eq!(config.labels.len(), 2);
        let new_entrypoint = ContainerConfig {
            entrypoint: Some(strings(&["/app"])),
            ..ContainerConfig::default()
        };
        let config = inherit_config(base, new_entrypoint);
        assert_eq!(config.entrypoint, Some(strings(&["/app"])));
        assert_eq!(config.cmd, None, "a new entrypoint drops the base's cmd");
    }
}
