//! The history entry of each stage: what the image's config says a stage
//! did. Stages that run write it; entries restored from a shared cache
//! must hold exactly it.

use super::BuildContext;
use crate::oci::History;
use crate::plan::{PlannedStage, Step};

impl BuildContext<'_> {
    /// The history entry this build gives `stage`.
    pub(super) fn stage_history(&self, stage: &PlannedStage, has_layer: bool) -> History {
        let plan = self.plan;
        let dir = plan.template_dir();
        let created_by = match stage.step {
            Step::Source => {
                let source = &plan.template.source;
                format!("kiln source {}: {}", source.kind(), source.summary(dir))
            }
            Step::Provisioner(index) => format!(
                "kiln {}: {}",
                stage.kind,
                plan.template.provisioners[index].history_text(dir)
            ),
        };
        History {
            created: Some(self.created()),
            created_by: Some(self.redactor().redact(&created_by).into_owned()),
            comment: Some(history_comment(stage)),
            empty_layer: !has_layer,
        }
    }
}

/// The history comment of a stage: its place in the template. Images
/// record it, so it keeps the form their digests were made with.
fn history_comment(stage: &PlannedStage) -> String {
    match stage.step {
        Step::Source => "source".to_owned(),
        Step::Provisioner(index) => format!("provisioner[{index}]"),
    }
}
