//! `--on-error abort`: a failed stage's root (the layers below it and what
//! it had changed) copied out of the work folder before the work folder is
//! removed, for a person to look into with `chroot`. A copy that fails
//! (the disk is full, as it may well be when the stage failed) is removed:
//! the stage's own failure is what the build reports.

use std::path::PathBuf;

use super::image::ImageBuilder;
use super::{BuildContext, StageFailure};
use crate::io_error::IoError;
use crate::plan::PlannedStage;
use crate::sandbox::{Overlay, Spec, Task};
use crate::stage::OutputOf;

impl BuildContext<'_> {
    /// Copies the failed stage's root to `$KILN_HOME/failed/NAME-VERSION-TIME/`.
    pub(super) fn keep_failed_root(
        &self,
        stage: &PlannedStage,
        image: &ImageBuilder,
    ) -> Result<PathBuf, StageFailure> {
        let failed = self.options.home.join("failed");
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let spec = &self.plan.template.image;
        let destination = failed.join(format!(
            "{}-{}-{stamp}",
            spec.name.as_str().replace('/', "_"),
            spec.version
        ));
        std::fs::create_dir_all(&destination).map_err(IoError::at("create", &destination))?;
        let mut lowers = vec![format!("stage{}/upper", stage.number)];
        lowers.extend(self.lower_names(image));
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
        match self.runner.run(&spec, None, OutputOf::Stage(stage.number)) {
            Ok(()) => Ok(destination),
            Err(error) => {
                // Half a root would pass for the one that failed.
                let _ = std::fs::remove_dir_all(&destination);
                Err(error.into())
            }
        }
    }
}
