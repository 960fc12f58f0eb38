//! What a finished build did, stage by stage and test by test: returned to
//! callers and written into `kiln-manifest.json`.

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// One stage of a finished build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    /// 0 for the source, N for the Nth provisioner.
    pub stage: usize,
    pub kind: String,
    pub seconds: f64,
    pub cache_hit: bool,
    /// The shared cache repository the stage was restored from by this
    /// build, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_from: Option<String>,
    /// The stage's layer, if it made one.
    pub layer: Option<Digest>,
}

/// A passed `[[test]]` of a finished build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestRecord {
    pub name: String,
    pub seconds: f64,
    /// `passed`: a failed test fails the build, so none is recorded.
    pub outcome: String,
    /// It passed before with the same image and settings and was not run.
    pub cached: bool,
}
