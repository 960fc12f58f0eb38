//! Running the post-processors of a stored image, in template order, into
//! the output folder.
//!
//! Every artifact is written to a temp file in the output folder, hashed
//! while written, and renamed into place: a failing post-processor leaves
//! no half-written file, and the image stays in the store. The flattened
//! root (all layers applied) is made once, for the kinds that need it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PostProcessor;
use crate::hashing::HashingWriter;
use crate::pipeline::Built;
use crate::pipeline::reporter::{Event, Reporter};
use crate::reference::Digest;
use crate::store::{ImageEntry, Store};
use crate::template::Template;

/// A file a post-processor wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Digest,
}

#[derive(Debug, thiserror::Error)]
#[error("post_processor[{index}] ({kind}) failed: {reason}")]
pub struct PostError {
    pub index: usize,
    pub kind: &'static str,
    pub reason: String,
}

/// What a post-processing run is given.
pub struct PostInputs<'a> {
    pub template: &'a Template,
    pub built: &'a Built,
    pub store: &'a Store,
    pub entry: &'a ImageEntry,
    pub home: &'a Path,
    pub output: PathBuf,
    pub epoch: u64,
    pub reporter: &'a dyn Reporter,
}

/// What the post-processors of one build share: their inputs, the
/// artifacts written so far and the flattened root, made once.
pub struct PostContext<'a> {
    pub inputs: PostInputs<'a>,
    pub artifacts: Vec<Artifact>,
    work: Option<tempfile::TempDir>,
}

impl<'a> PostContext<'a> {
    pub fn new(inputs: PostInputs<'a>) -> Self {
        Self {
            inputs,
            artifacts: Vec::new(),
            work: None,
        }
    }

    /// `NAME-VERSION`, with `/` in the name as `_`: the artifacts' stem.
    pub fn stem(&self) -> String {
        format!(
            "{}-{}",
            self.inputs.entry.name.as_str().replace('/', "_"),
            self.inputs.entry.version
        )
    }

    /// A private folder under `$KILN_HOME/tmp` for this run, and the
    /// flattened root inside it (made on first use).
    pub fn work_dir(&mut self) -> io::Result<PathBuf> {
        if self.work.is_none() {
            let tmp = self.inputs.home.join("tmp");
            std::fs::create_dir_all(&tmp)?;
            self.work = Some(tempfile::Builder::new().prefix("post-").tempdir_in(&tmp)?);
        }
        Ok(self.work.as_ref().expect("made above").path().to_owned())
    }

    pub fn flattened_root(&mut self) -> Result<PathBuf, String> {
        let work = self
            .work_dir()
            .map_err(|error| format!("cannot make a work folder: {error}"))?;
        let root = work.join("root");
        if !root.exists() {
            std::fs::create_dir(&root)
                .map_err(|error| format!("cannot make {}: {error}", root.display()))?;
            crate::export::flatten(self.inputs.store, self.inputs.entry, &root)
                .map_err(|error| crate::pipeline::error_chain(&error))?;
        }
        Ok(root)
    }

    /// Writes `name` in the output folder through `write`, atomically, and
    /// records it as an artifact.
    pub fn write_artifact(
        &mut self,
        name: &str,
        write: impl FnOnce(ArtifactWriter) -> io::Result<ArtifactWriter>,
    ) -> Result<Artifact, String> {
        let path = self.inputs.output.join(name);
        let artifact = write_atomically(&path, write)?;
        self.add(artifact.clone());
        Ok(artifact)
    }

    /// Records a file a post-processor made by other means.
    pub fn add(&mut self, artifact: Artifact) {
        self.inputs.reporter.report(Event::ArtifactWritten {
            build: format!("{}:{}", self.inputs.entry.name, self.inputs.entry.version),
            path: artifact.path.display().to_string(),
            size: artifact.size,
            sha256: artifact.sha256.clone(),
        });
        self.artifacts.retain(|known| known.path != artifact.path);
        self.artifacts.push(artifact);
    }
}

/// What an artifact is written through: hashed, buffered, into its file.
pub type ArtifactWriter = HashingWriter<io::BufWriter<std::fs::File>>;

/// Writes `path` through `write` into a temp file beside it, then renames
/// it into place (mode 0644).
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(ArtifactWriter) -> io::Result<ArtifactWriter>,
) -> Result<Artifact, String> {
    let describe = |error: io::Error| format!("cannot write {}: {error}", path.display());
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(describe)?;
    let temp = tempfile::Builder::new()
        .prefix(".kiln-")
        .tempfile_in(dir)
        .map_err(describe)?;
    let writer = HashingWriter::new(io::BufWriter::with_capacity(
        1 << 20,
        temp.reopen().map_err(describe)?,
    ));
    let mut writer = write(writer).map_err(describe)?;
    writer.flush().map_err(describe)?;
    let (sha256, size, buffered) = writer.finish();
    let file = buffered
        .into_inner()
        .map_err(|error| describe(error.into_error()))?;
    file.sync_all().map_err(describe)?;
    temp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(describe)?;
    temp.persist(path).map_err(|error| describe(error.error))?;
    Ok(Artifact {
        path: path.to_owned(),
        size,
        sha256,
    })
}

/// Runs every post-processor in order; stops at the first failure.
pub fn run_all(
    cx: &mut PostContext<'_>,
    post_processors: &[PostProcessor],
) -> Result<(), PostError> {
    for (index, post_processor) in post_processors.iter().enumerate() {
        let result = match post_processor {
            PostProcessor::Disk(settings) => super::disk::run(cx, settings),
            PostProcessor::Rootfs(settings) => super::rootfs::run(cx, settings),
            PostProcessor::Checksum => super::checksum::run(cx),
            PostProcessor::Manifest(settings) => super::manifest::run(cx, settings),
            PostProcessor::ShellLocal(spec) => super::shell_local::run(cx, spec),
        };
        result.map_err(|reason| PostError {
            index,
            kind: post_processor.kind(),
            reason,
        })?;
    }
    Ok(())
}
