//! The build's last step: the AMIs of `[[publish.ami]]`, made of the raw
//! bootable disk the build just wrote, recorded in the store and in every
//! `kiln-manifest.json` the build wrote.

use super::{BuildContext, BuildError, Built};
use crate::aws::ami::{self, AmiJob, AmiRecord};
use crate::post_processors::{PostProcessor, raw_bootable_disk};
use crate::remote::block_on;

impl BuildContext<'_> {
    pub(super) fn publish_amis(&self, built: &Built) -> Result<Vec<AmiRecord>, BuildError> {
        let plan = self.plan;
        if plan.amis.is_empty() {
            return Ok(Vec::new());
        }
        let template = &plan.template;
        let (index, disk) =
            raw_bootable_disk(&template.post_processors).ok_or(BuildError::NoRawBootableDisk)?;
        let path = plan
            .artifacts
            .iter()
            .find(|artifact| artifact.index == index)
            .and_then(|artifact| artifact.path.as_ref());
        let artifact = built
            .artifacts
            .iter()
            .find(|artifact| Some(&artifact.path) == path)
            .ok_or(BuildError::NoRawBootableDisk)?;
        let config = self
            .store
            .config(&built.manifest)
            .map_err(BuildError::store)?;
        let var = |name: &str| std::env::var(name).ok();
        let environment = crate::aws::credentials::process_environment(&var);
        let mut all = Vec::new();
        for settings in &plan.amis {
            self.check_cancelled()?;
            let job = AmiJob {
                settings,
                disk: &artifact.path,
                disk_sha256: &artifact.sha256,
                disk_boot: disk.boot,
                digest: &built.digest,
                image: &plan.reference,
                oci_architecture: &config.architecture,
                build: &plan.reference,
                cancelled: Some(self.runner.cancelled),
            };
            let records =
                block_on(ami::publish(&job, &environment, self.reporter())).map_err(|failure| {
                    // A cancelled publish has removed what it made already.
                    if self.runner.is_cancelled() {
                        BuildError::Cancelled
                    } else {
                        BuildError::Ami {
                            name: settings.name.clone(),
                            failure: Box::new(failure),
                        }
                    }
                })?;
            self.store
                .record_amis(&template.image.name, &template.image.version, &records)
                .map_err(BuildError::store)?;
            all.extend(records);
        }
        for (index, post_processor) in template.post_processors.iter().enumerate() {
            if let PostProcessor::Manifest(_) = post_processor
                && let Some(path) = plan
                    .artifacts
                    .iter()
                    .find(|artifact| artifact.index == index)
                    .and_then(|artifact| artifact.path.as_ref())
            {
                crate::post_processors::manifest::record_amis(path, &built.digest, &all).map_err(
                    |failure| BuildError::Artifact {
                        number: index + 1,
                        kind: "manifest",
                        failure: Box::new(failure),
                    },
                )?;
            }
        }
        Ok(all)
    }
}
