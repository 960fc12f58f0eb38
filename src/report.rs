//! How the library tells the world what it does: events through a
//! [`Reporter`].
//!
//! The library never prints. Builds, pushes, pulls and post-processors
//! report here; the binary turns events into progress bars on a terminal,
//! plain timestamped lines elsewhere, or one JSON object a line with
//! `--json`. Every text in an event is already redacted.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::reference::Digest;

/// Whether a stage's layer came from a run or from the cache.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageResult {
    /// The stage ran and changed files: one layer.
    Layer { digest: Digest, size: u64 },
    /// The stage ran and changed nothing: no layer.
    Empty,
    /// The stage's layers come from the base image.
    Base { layers: usize },
}

/// Whether a stage was reused from the cache, or ran and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CacheStatus {
    Hit,
    /// Restored from a shared cache repository by this build.
    Shared {
        repository: String,
    },
    Miss {
        reason: MissReason,
    },
}

/// Why a stage ran instead of coming from the cache. In events it reads
/// as its text: `first build`, `settings changed: inline`, ….
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MissReason {
    /// No earlier build of this template is known.
    FirstBuild,
    /// `--no-cache`.
    NoCache,
    /// The stage says `cache = false`.
    CacheDisabled,
    /// An earlier stage (this number) has `cache = false`, so it always runs.
    AfterUncached {
        stage: usize,
    },
    ParentChanged,
    /// Host files the stage reads changed, by path relative to the template.
    FilesChanged(Vec<String>),
    /// Settings changed, by key.
    SettingsChanged(Vec<String>),
    /// The same stage was built before, with the same inputs, but its
    /// entry is gone (pruned).
    NoEntry,
    /// The entry was there but failed its checks.
    Damaged(String),
    /// An `image` source whose layers were not unpacked before.
    BaseFirstUse {
        unpacked: usize,
    },
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissReason::FirstBuild => f.write_str("first build"),
            MissReason::NoCache => f.write_str("--no-cache"),
            MissReason::CacheDisabled => f.write_str("cache = false"),
            MissReason::AfterUncached { stage } => write!(
                f,
                "parent changed: stage {stage} has cache = false and always runs"
            ),
            MissReason::ParentChanged => f.write_str("parent changed"),
            MissReason::FilesChanged(files) => write!(f, "file changed: {}", files.join(", ")),
            MissReason::SettingsChanged(settings) => {
                write!(f, "settings changed: {}", settings.join(", "))
            }
            MissReason::NoEntry => f.write_str("no cache entry"),
            MissReason::Damaged(reason) => write!(f, "cache entry damaged: {reason}"),
            MissReason::BaseFirstUse { unpacked } => write!(
                f,
                "first use of the base image: unpacked {unpacked} of its layers"
            ),
        }
    }
}

impl Serialize for MissReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BuildStarted {
        build: String,
        template: String,
        stages: usize,
        tests: usize,
    },
    StageStarted {
        build: String,
        stage: usize,
        name: String,
        kind: String,
        summary: String,
    },
    StageOutput {
        build: String,
        stage: usize,
        line: String,
    },
    StageRetry {
        build: String,
        stage: usize,
        attempt: u32,
        reason: String,
    },
    BakeStarted {
        build: String,
        stage: usize,
    },
    BakeProgress {
        build: String,
        stage: usize,
        bytes: u64,
    },
    StageFinished {
        build: String,
        stage: usize,
        seconds: f64,
        result: StageResult,
        cache: CacheStatus,
    },
    TestStarted {
        build: String,
        name: String,
    },
    TestOutput {
        build: String,
        name: String,
        line: String,
    },
    TestFinished {
        build: String,
        name: String,
        seconds: f64,
        passed: bool,
        /// It passed before with the same image and settings and did not run.
        cached: bool,
    },
    ImageStored {
        build: String,
        reference: String,
        digest: Digest,
        /// The same version with the same digest was stored already.
        unchanged: bool,
        seconds: f64,
    },
    BuildFailed {
        build: String,
        error: String,
    },
    /// A blob starts going to (push) or coming from (pull) a registry.
    TransferStarted {
        build: String,
        digest: Digest,
        size: u64,
        direction: Direction,
    },
    TransferProgress {
        build: String,
        digest: Digest,
        bytes: u64,
    },
    TransferFinished {
        build: String,
        digest: Digest,
        size: u64,
        outcome: TransferOutcome,
        seconds: f64,
    },
    /// A post-processor wrote a file into the output folder, or found it
    /// there already from an earlier build of the same image (`cached`).
    ArtifactWritten {
        build: String,
        path: String,
        size: u64,
        sha256: Digest,
        cached: bool,
    },
    /// A line of output of a post-processor's command (`shell-local`).
    PostProcessorOutput {
        build: String,
        index: usize,
        line: String,
    },
    /// A shared cache repository could not be used, or one of its entries
    /// failed a check (`stage`: the stage it is of): the stages run here.
    SharedCacheWarning {
        build: String,
        repository: String,
        stage: Option<usize>,
        message: String,
    },
    /// Stages pushed to the shared cache repository (`present`: how many
    /// more were there already).
    SharedCachePushed {
        build: String,
        repository: String,
        stages: Vec<usize>,
        present: usize,
    },
    /// A stage uses a sensitive variable and does not say `share = true`:
    /// it and the stages above it are not pushed to the shared cache.
    SharedCacheSkipped {
        build: String,
        stage: usize,
        variable: String,
    },
    /// A channel was not moved to the version just built (`version`: where
    /// it stays).
    ChannelKept {
        build: String,
        channel: String,
        version: Option<String>,
        reason: String,
    },
    /// A local channel was moved to the version just built.
    ChannelMoved {
        build: String,
        channel: String,
        version: String,
    },
    ImagePushed {
        build: String,
        reference: String,
        digest: Digest,
        sent_bytes: u64,
        unchanged: bool,
        seconds: f64,
    },
    /// A bootable disk's non-zero blocks are in an EBS snapshot.
    SnapshotUploaded {
        build: String,
        region: String,
        snapshot_id: String,
        blocks: u64,
        bytes: u64,
        seconds: f64,
    },
    /// An AMI is ready in a region (`unchanged`: it was there already,
    /// with the same name and digest).
    AmiPublished {
        build: String,
        region: String,
        name: String,
        image_id: String,
        unchanged: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Push,
    Pull,
}

/// What became of one blob of a push or pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferOutcome {
    Sent,
    Mounted,
    /// The registry (push) or the store (pull) had it already.
    Present,
    Fetched,
}

impl TransferOutcome {
    pub fn word(self) -> &'static str {
        match self {
            TransferOutcome::Sent => "sent",
            TransferOutcome::Mounted => "mounted",
            TransferOutcome::Present => "present",
            TransferOutcome::Fetched => "fetched",
        }
    }
}

impl Event {
    /// The build (`name:version`) the event belongs to.
    pub fn build(&self) -> &str {
        match self {
            Event::BuildStarted { build, .. }
            | Event::StageStarted { build, .. }
            | Event::StageOutput { build, .. }
            | Event::StageRetry { build, .. }
            | Event::BakeStarted { build, .. }
            | Event::BakeProgress { build, .. }
            | Event::StageFinished { build, .. }
            | Event::TestStarted { build, .. }
            | Event::TestOutput { build, .. }
            | Event::TestFinished { build, .. }
            | Event::ImageStored { build, .. }
            | Event::BuildFailed { build, .. }
            | Event::TransferStarted { build, .. }
            | Event::TransferProgress { build, .. }
            | Event::TransferFinished { build, .. }
            | Event::ImagePushed { build, .. }
            | Event::SnapshotUploaded { build, .. }
            | Event::AmiPublished { build, .. }
            | Event::ArtifactWritten { build, .. }
            | Event::PostProcessorOutput { build, .. }
            | Event::SharedCacheWarning { build, .. }
            | Event::SharedCachePushed { build, .. }
            | Event::SharedCacheSkipped { build, .. }
            | Event::ChannelKept { build, .. }
            | Event::ChannelMoved { build, .. } => build,
        }
    }
}

/// Receives a build's events; shared by builds running at once.
pub trait Reporter: Sync {
    fn report(&self, event: Event);
}

/// A reporter that drops everything (library callers that do not care).
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event) {}
}
