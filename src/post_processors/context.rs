//! What the post-processors of one build share: the stored image, the
//! output folder, the artifacts written so far, and the image's flattened
//! root (all layers applied), made once for the kinds that need it.

use std::io;
use std::path::{Path, PathBuf};

use crate::artifact::{Artifact, ArtifactError, ArtifactWriter, write_atomically};
use crate::oci::Manifest;
use crate::record::{StageRecord, TestRecord};
use crate::reference::{Digest, ImageName, Version};
use crate::stage::TaskRunner;
use crate::store::Store;

/// The image the post-processors work on, and how it was built.
pub struct BuiltImage<'a> {
    pub name: &'a ImageName,
    pub version: &'a Version,
    pub digest: &'a Digest,
    pub manifest: &'a Manifest,
    pub stages: &'a [StageRecord],
    pub tests: &'a [TestRecord],
    /// The template file.
    pub template: &'a Path,
}

pub struct PostContext<'a> {
    pub image: BuiltImage<'a>,
    pub store: &'a Store,
    /// `$KILN_HOME`: the flattened root is made under its `tmp/`.
    pub home: &'a Path,
    pub output: &'a Path,
    pub epoch: u64,
    pub runner: &'a TaskRunner<'a>,
    /// The template's folder: where host commands run.
    pub template_dir: &'a Path,
    /// The template's variables as `KILN_VAR_NAME`, for host commands.
    pub variables: &'a [(String, String)],
    /// Every artifact written (or found in place) so far, in order.
    pub artifacts: Vec<Artifact>,
    work: Option<tempfile::TempDir>,
}

#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("failed to make a work folder in {}", path.display())]
    Work {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
}

impl<'a> PostContext<'a> {
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, in the build engine"
    )]
    pub fn new(
        image: BuiltImage<'a>,
        store: &'a Store,
        home: &'a Path,
        output: &'a Path,
        epoch: u64,
        runner: &'a TaskRunner<'a>,
        template_dir: &'a Path,
        variables: &'a [(String, String)],
    ) -> Self {
        Self {
            image,
            store,
            home,
            output,
            epoch,
            runner,
            template_dir,
            variables,
            artifacts: Vec::new(),
            work: None,
        }
    }

    /// `NAME-VERSION`, with `/` in the name as `_`: the artifacts' stem.
    pub fn stem(&self) -> String {
        stem(self.image.name, self.image.version)
    }

    /// A private folder under `$KILN_HOME/tmp` for this run, removed with it.
    pub fn work_dir(&mut self) -> Result<PathBuf, FlattenError> {
        if self.work.is_none() {
            let tmp = self.home.join("tmp");
            let made = std::fs::create_dir_all(&tmp)
                .and_then(|()| tempfile::Builder::new().prefix("post-").tempdir_in(&tmp));
            self.work = Some(made.map_err(|source| FlattenError::Work { path: tmp, source })?);
        }
        Ok(self.work.as_ref().expect("made above").path().to_owned())
    }

    /// The image's flattened root, made on first use.
    pub fn flattened_root(&mut self) -> Result<PathBuf, FlattenError> {
        let root = self.work_dir()?.join("root");
        if !root.exists() {
            std::fs::create_dir(&root).map_err(|source| FlattenError::Work {
                path: root.clone(),
                source,
            })?;
            crate::export::flatten(self.store, self.image.manifest, &root)?;
        }
        Ok(root)
    }

    /// The image's architecture, from its config.
    pub fn architecture(&self) -> Result<String, crate::store::StoreError> {
        Ok(self.store.config(self.image.manifest)?.architecture)
    }

    /// Writes `name` in the output folder through `write`, atomically.
    pub fn write_artifact(
        &mut self,
        name: &str,
        write: impl FnOnce(ArtifactWriter) -> io::Result<ArtifactWriter>,
    ) -> Result<Artifact, ArtifactError> {
        write_atomically(&self.output.join(name), write)
    }
}

/// `NAME-VERSION`, with `/` in the name as `_`: the stem of artifact names.
pub fn stem(name: &ImageName, version: &Version) -> String {
    format!("{}-{version}", name.as_str().replace('/', "_"))
}
