//! The build engine: runs a [`BuildPlan`] from its first stage to its last
//! remote, in the contract's order:
//!
//! 1. **stages** (`stages.rs`): the source, then each provisioner on a fresh
//!    overlay upper above the layers so far, each reused from the stage
//!    cache when its key is there, else run and baked into its layer;
//! 2. **tests** (`tests.rs`), in the finished root, read-only;
//! 3. **store**: the image's documents and its version tag;
//! 4. **artifacts** (`artifacts.rs`): the post-processors, each reused when
//!    the same artifact of the same image is in place already;
//! 5. **local channels**, then 6. **remotes** (`publish.rs`).
//!
//! Each step runs only when every step before it succeeded, so a failed
//! test stores nothing and a failed artifact moves no channel. What a build
//! runs with (store, cache, work folder, reporting) is a [`BuildContext`];
//! the image it assembles is an [`image::ImageBuilder`], apart from it. The
//! work folder (uppers, mount points) is removed however the build ends;
//! with `--on-error abort` a failed stage's root is first copied out.

mod amis;
mod artifacts;
mod failed;
mod history;
pub mod image;
mod publish;
mod shared_cache;
mod stages;
mod tests;
mod vm_tests;
mod workdir;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::artifact::Artifact;
use crate::bake::BakeError;
use crate::cache::Cache;
use crate::file_index::IndexError;
use crate::io_error::IoError;
use crate::oci::Manifest;
use crate::plan::BuildPlan;
use crate::record::{StageRecord, TestRecord};
use crate::redact::Redactor;
use crate::reference::{ChannelName, Digest};
use crate::remote::{RemoteError, RemoteOptions};
use crate::report::{Event, Reporter};
use crate::sources::SourceError;
use crate::stage::{TaskError, TaskRunner};
use crate::store::channels::ChannelError;
use crate::store::{Store, StoreError, Tagged};
use crate::unpack::UnpackError;
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
    pub on_error: OnError,
    /// Run every stage and test, write every artifact, and refresh the cache.
    pub no_cache: bool,
    /// How to reach the plan's remotes.
    pub remote: RemoteOptions,
    /// `--cache-from` (or `KILN_CACHE_FROM`): instead of the template's
    /// `[cache] from`.
    pub cache_from: Option<Vec<crate::reference::RemoteRef>>,
    /// `--cache-to` (or `KILN_CACHE_TO`): instead of the template's `[cache] to`.
    pub cache_to: Option<crate::reference::RemoteRef>,
}

/// A finished build.
#[derive(Clone, Debug)]
pub struct Built {
    pub reference: String,
    pub digest: Digest,
    pub manifest: Manifest,
    /// The same version with the same digest was stored already.
    pub unchanged: bool,
    pub stages: Vec<StageRecord>,
    pub tests: Vec<TestRecord>,
    pub artifacts: Vec<Artifact>,
    /// The local channels that point at this version (moved by this build,
    /// or there already).
    pub channels: Vec<ChannelName>,
    /// Where it was pushed: `HOST/REPO:TAG` of the version and each channel.
    pub pushed: Vec<String>,
    /// The AMIs of `[[publish.ami]]`, one per region.
    pub amis: Vec<crate::aws::ami::AmiRecord>,
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageFailure {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Bake(#[from] BakeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to unpack layer {digest} of the base image")]
    BaseLayer {
        digest: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("failed to pull the base image {reference}")]
    BasePull {
        reference: String,
        #[source]
        source: Box<RemoteError>,
    },
    #[error("the base image has {layers} layers but {diff_ids} diff ids")]
    BaseLayerCount { layers: usize, diff_ids: usize },
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("stage {stage} ({kind}) failed")]
    Stage {
        stage: usize,
        kind: &'static str,
        #[source]
        failure: Box<StageFailure>,
        /// With `--on-error abort`: where the failed stage's root was
        /// kept, or why it could not be (nothing half-copied is left).
        kept: Option<Result<PathBuf, Box<StageFailure>>>,
    },
    #[error(
        "test `{name}` failed{}",
        command.as_ref().map(|command| format!(" at {command}")).unwrap_or_default()
    )]
    Test {
        name: String,
        /// The inline command that failed, when the test's output names it.
        command: Option<String>,
        #[source]
        failure: TaskError,
    },
    #[error("failed to make the image's file index")]
    FileIndex(#[from] IndexError),
    #[error("failed to run the tests in the machine")]
    Vm(#[source] Box<crate::vm::VmError>),
    #[error("failed to write the disk the tests in the machine boot")]
    TestDisk(#[source] Box<crate::post_processors::PostError>),
    #[error(
        "failed to find a disk to boot: a test in = \"vm\" needs a `disk` post-processor with `boot` set"
    )]
    NoBootableDisk,
    /// The store could not be opened, written or read; a version stored
    /// with another digest says so itself.
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error("post-processor {number} ({kind}) failed (the image stays in the store)")]
    Artifact {
        /// 1 for the first `[[post_processor]]`.
        number: usize,
        kind: &'static str,
        #[source]
        failure: Box<crate::post_processors::PostError>,
    },
    #[error("failed to move channel {channel}")]
    Channel {
        channel: ChannelName,
        #[source]
        failure: Box<ChannelError>,
    },
    #[error("failed to publish to {remote}")]
    Publish {
        remote: String,
        #[source]
        failure: Box<RemoteError>,
    },
    #[error("failed to sign the image")]
    Sign(#[source] Box<crate::signing::SigningError>),
    #[error("failed to publish AMI {name}")]
    Ami {
        name: String,
        #[source]
        failure: Box<crate::aws::ami::AmiError>,
    },
    #[error("failed to find the raw bootable disk an AMI is made of")]
    NoRawBootableDisk,
    #[error("failed to make the image's SBOM")]
    Sbom(#[from] crate::sbom::SbomError),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error("build cancelled")]
    Cancelled,
}

impl BuildError {
    fn store(error: StoreError) -> Self {
        BuildError::Store(Box::new(error))
    }

    /// The version is stored (or pushed) already with another digest.
    pub fn is_version_conflict(&self) -> bool {
        match self {
            BuildError::Store(error) => matches!(**error, StoreError::VersionConflict { .. }),
            BuildError::Publish { failure, .. } => failure.is_conflict(),
            BuildError::Ami { failure, .. } => failure.is_conflict(),
            _ => false,
        }
    }

    /// The last lines a failed command printed, if any.
    pub fn output(&self) -> &[String] {
        match self {
            BuildError::Stage { failure, .. } => match failure.as_ref() {
                StageFailure::Task(task) | StageFailure::Source(SourceError::Task(task)) => {
                    task.output()
                }
                _ => &[],
            },
            BuildError::Test { failure: task, .. } => task.output(),
            BuildError::Artifact { failure, .. } => match failure.as_ref() {
                crate::post_processors::PostError::Task(task) => task.output(),
                _ => &[],
            },
            _ => &[],
        }
    }

    /// Where `--on-error abort` kept the failed stage's root, or why it
    /// could not.
    pub fn kept_root(&self) -> Option<Result<&Path, &StageFailure>> {
        match self {
            BuildError::Stage {
                kept: Some(kept), ..
            } => Some(kept.as_ref().map(PathBuf::as_path).map_err(Box::as_ref)),
            _ => None,
        }
    }
}

/// What a running build needs, in one place: its plan and options, the
/// store, the stage cache, its work folder and how it reports.
pub struct BuildContext<'a> {
    pub plan: &'a BuildPlan,
    pub options: &'a BuildOptions,
    pub runner: &'a TaskRunner<'a>,
    pub store: Store,
    pub cache: Cache,
    work: WorkDir,
    started: Instant,
    /// When it started, in seconds since the epoch, for its provenance.
    started_at: u64,
}

impl<'a> BuildContext<'a> {
    fn open(
        plan: &'a BuildPlan,
        options: &'a BuildOptions,
        runner: &'a TaskRunner<'a>,
    ) -> Result<Self, BuildError> {
        let home = &options.home;
        let store = Store::open(&home.join("store")).map_err(BuildError::store)?;
        let work = WorkDir::create(home).map_err(IoError::at("create a work folder in", home))?;
        let cache = Cache::open(home).map_err(IoError::at("open the cache in", home))?;
        Ok(Self {
            plan,
            options,
            runner,
            store,
            cache,
            work,
            started: Instant::now(),
            started_at: crate::oci::unix_now(),
        })
    }

    fn reporter(&self) -> &dyn Reporter {
        self.runner.reporter
    }

    fn report(&self, event: Event) {
        self.runner.reporter.report(event);
    }

    fn redactor(&self) -> &Redactor {
        self.runner.redactor
    }

    fn check_cancelled(&self) -> Result<(), BuildError> {
        if self.runner.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        Ok(())
    }

    /// The creation time every stage and the image record: the epoch.
    fn created(&self) -> String {
        crate::oci::rfc3339(self.plan.epoch)
    }
}

/// Runs `plan` into the store under `options.home`, and on to its
/// artifacts, channels and remotes.
pub fn build(
    plan: &BuildPlan,
    options: &BuildOptions,
    reporter: &dyn Reporter,
    cancelled: &AtomicBool,
) -> Result<Built, BuildError> {
    let redactor = plan.template.redactor();
    let runner = TaskRunner {
        build: &plan.reference,
        reporter,
        redactor: &redactor,
        cancelled,
    };
    let result = BuildContext::open(plan, options, &runner).and_then(|cx| cx.run());
    if let Err(error) = &result {
        reporter.report(Event::BuildFailed {
            build: plan.reference.clone(),
            error: redactor.redact(&crate::error_chain(error)).into_owned(),
        });
    }
    result
}

impl BuildContext<'_> {
    fn run(&self) -> Result<Built, BuildError> {
        let template = &self.plan.template;
        self.report(Event::BuildStarted {
            build: self.plan.reference.clone(),
            template: template.path.display().to_string(),
            stages: self.plan.stages.len(),
            tests: self.plan.tests.len(),
        });
        // Read before anything runs: a build that cannot sign fails now.
        let signing_key = self
            .plan
            .sign
            .as_deref()
            .map(crate::signing::SigningKey::read)
            .transpose()
            .map_err(|error| BuildError::Sign(Box::new(error)))?;
        let (image, stages) = self.run_stages()?;
        let prepared = image.prepare(
            &self.store,
            &template.image,
            &template.digest,
            &self.created(),
            self.redactor(),
        )?;
        let mut tests = self.run_tests(&image, &prepared.digest, &prepared.container_config)?;
        tests.extend(self.run_vm_tests(&prepared)?);
        self.check_cancelled()?;
        let unchanged = self.store_image(&prepared, image.trees())?;
        crate::provenance::store_provenance(
            &self.store,
            &crate::provenance::Run {
                plan: self.plan,
                digest: &prepared.digest,
                stages: &stages,
                started: self.started_at,
                finished: crate::oci::unix_now(),
            },
        )
        .map_err(BuildError::store)?;
        if let Some(key) = &signing_key {
            self.sign_image(key)?;
        }
        let mut built = Built {
            reference: self.plan.reference.clone(),
            digest: prepared.digest,
            manifest: prepared.manifest,
            unchanged,
            stages,
            tests,
            artifacts: Vec::new(),
            channels: Vec::new(),
            pushed: Vec::new(),
            amis: Vec::new(),
        };
        self.check_cancelled()?;
        built.artifacts = self.write_artifacts(&built)?;
        self.check_cancelled()?;
        built.channels = self.move_channels(unchanged)?;
        self.check_cancelled()?;
        built.pushed = self.push_remotes(&built.channels)?;
        self.check_cancelled()?;
        built.amis = self.publish_amis(&built)?;
        Ok(built)
    }

    /// Signs the version just stored and attests its provenance and SBOMs
    /// (`[publish] sign`), before anything is pushed.
    fn sign_image(&self, key: &crate::signing::SigningKey) -> Result<(), BuildError> {
        let spec = &self.plan.template.image;
        let entry = self
            .store
            .resolve(&crate::reference::StoreRef {
                name: spec.name.clone(),
                target: crate::reference::StoreTarget::Version(spec.version.clone()),
            })
            .map_err(BuildError::store)?;
        let provenance = crate::provenance::provenance_of(&self.store, &entry.manifest.digest)
            .map_err(BuildError::store)?;
        crate::signing::sign_stored(&self.store, &entry, key, provenance)
            .map_err(|error| BuildError::Sign(Box::new(error)))?;
        Ok(())
    }

    /// Stores the tested image's documents and tags its version; says
    /// whether the same version with the same digest was there already.
    fn store_image(
        &self,
        image: &image::PreparedImage,
        trees: &[PathBuf],
    ) -> Result<bool, BuildError> {
        let store = &self.store;
        store
            .put_bytes(crate::file_index::MEDIA_TYPE_FILE_INDEX, &image.file_index)
            .map_err(BuildError::store)?;
        store
            .put_bytes(crate::oci::MEDIA_TYPE_CONFIG, &image.config)
            .map_err(BuildError::store)?;
        let descriptor = store
            .put_bytes(crate::oci::MEDIA_TYPE_MANIFEST, &image.manifest_bytes)
            .map_err(BuildError::store)?;
        let spec = &self.plan.template.image;
        // Before the tag: a stored version always has its SBOM. Its
        // package databases are read from the stage trees, checked
        // against the file index (the layers when they cannot be).
        let inventory = crate::sbom::inventory::from_trees(&image.index, trees);
        crate::sbom::store_sboms(
            store,
            &image.manifest,
            &crate::sbom::Subject {
                name: &spec.name,
                version: &spec.version,
                digest: &descriptor.digest,
                epoch: self.plan.epoch,
            },
            inventory,
        )?;
        let tagged = store
            .tag(&spec.name, &spec.version, &descriptor)
            .map_err(BuildError::store)?;
        let unchanged = tagged == Tagged::AlreadyStored;
        self.report(Event::ImageStored {
            build: self.plan.reference.clone(),
            reference: self.plan.reference.clone(),
            digest: descriptor.digest,
            unchanged,
            seconds: self.started.elapsed().as_secs_f64(),
        });
        Ok(unchanged)
    }
}
