//! Writing the plan's artifacts: each post-processor in template order,
//! into the output folder.
//!
//! An artifact is keyed by the image's digest and its post-processor's
//! settings (for `checksum`, the artifacts before it). When the artifact of
//! that key is still in place, as it was written, it is not written again:
//! a rebuild that changed nothing rewrites no disk.

use super::{BuildContext, BuildError, Built};
use crate::artifact::Artifact;
use crate::cache::key::KeyInputs;
use crate::io_error::IoError;
use crate::post_processors::PostError;
use crate::post_processors::context::{BuiltImage, PostContext};
use crate::report::Event;
use crate::stage::TaskError;

impl BuildContext<'_> {
    pub(super) fn write_artifacts(&self, built: &Built) -> Result<Vec<Artifact>, BuildError> {
        let plan = self.plan;
        let template = &plan.template;
        if plan.artifacts.is_empty() {
            return Ok(Vec::new());
        }
        let image = BuiltImage {
            name: &template.image.name,
            version: &template.image.version,
            digest: &built.digest,
            manifest: &built.manifest,
            stages: &built.stages,
            tests: &built.tests,
            template: &template.path,
        };
        let mut cx = PostContext::new(
            image,
            &self.store,
            &self.options.home,
            &plan.output,
            plan.epoch,
            self.runner,
            plan.template_dir(),
            &plan.variables,
        );
        for planned in &plan.artifacts {
            self.check_cancelled()?;
            let post_processor = &template.post_processors[planned.index];
            let mut inputs = KeyInputs::new(
                &format!("artifact {}", post_processor.kind()),
                plan.epoch,
                plan.template_dir(),
            );
            let key = post_processor
                .artifact_inputs(&mut inputs, &cx.artifacts)
                .map(|()| inputs.key(Some(&built.digest)).key);
            let in_place = match (&key, &planned.path) {
                (Some(key), Some(path)) if !self.options.no_cache => {
                    self.cache.artifact_in_place(key, path)
                }
                _ => None,
            };
            let (artifact, cached) = match in_place {
                Some(artifact) => (artifact, true),
                None => match post_processor.run(&mut cx, planned.index) {
                    Ok(Some(artifact)) => {
                        if let Some(key) = &key {
                            self.cache
                                .record_artifact(key, &artifact)
                                .map_err(IoError::at(
                                    "record in the cache the artifact",
                                    &artifact.path,
                                ))?;
                        }
                        (artifact, false)
                    }
                    Ok(None) => continue,
                    Err(PostError::Task(TaskError::Cancelled)) => {
                        return Err(BuildError::Cancelled);
                    }
                    Err(failure) => {
                        return Err(BuildError::Artifact {
                            number: planned.index + 1,
                            kind: planned.kind,
                            failure: Box::new(failure),
                        });
                    }
                },
            };
            self.report(Event::ArtifactWritten {
                build: plan.reference.clone(),
                path: artifact.path.display().to_string(),
                size: artifact.size,
                sha256: artifact.sha256.clone(),
                cached,
            });
            cx.artifacts.retain(|known| known.path != artifact.path);
            cx.artifacts.push(artifact);
        }
        Ok(cx.artifacts)
    }
}
