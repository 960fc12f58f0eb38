//! Provenance: how an image was made, as an in-toto Statement v1 with a
//! SLSA v1 provenance predicate, kept in the store beside the image.
//!
//! What it says: the image (name and manifest digest) is the subject; the
//! template (path and sha256) and the variables (sensitive ones as
//! `<sensitive>`) are the external parameters; every host file a stage
//! read (by the digest its stage key holds), the base image by digest, and
//! each stage layer a shared cache gave (repository and layer digest) are
//! the resolved dependencies; the builder is the CI run when the
//! environment names one (GitHub Actions, GitLab CI), else this host; and
//! the run has kiln's version, its start and its end. Unlike the SBOM it
//! differs from run to run: it is about the run.

use serde_json::{Value, json};

use crate::plan::BuildPlan;
use crate::record::StageRecord;
use crate::redact::MASK;
use crate::reference::Digest;
use crate::store::{Store, StoreError};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The build type kiln documents (README, "Provenance").
pub const BUILD_TYPE: &str = "https://kiln.dev/buildtypes/template/v1";
pub const MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// A finished build, as provenance tells it.
pub struct Run<'a> {
    pub plan: &'a BuildPlan,
    pub digest: &'a Digest,
    pub stages: &'a [StageRecord],
    /// Seconds since the epoch.
    pub started: u64,
    pub finished: u64,
}

fn sha256(digest: &Digest) -> Value {
    json!({ "sha256": digest.hex() })
}

/// The builder and the run's id: the CI system's, when the environment
/// says which, else this host's.
fn builder() -> (String, String) {
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if let (Some(server), Some(repository), Some(run)) = (
        env("GITHUB_SERVER_URL"),
        env("GITHUB_REPOSITORY"),
        env("GITHUB_RUN_ID"),
    ) {
        let id = match env("GITHUB_WORKFLOW_REF") {
            Some(workflow) => format!("{server}/{workflow}"),
            None => format!("{server}/{repository}"),
        };
        let attempt = env("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".to_owned());
        return (
            id,
            format!("{server}/{repository}/actions/runs/{run}/attempts/{attempt}"),
        );
    }
    if let (Some(project), Some(job)) = (env("CI_PROJECT_URL"), env("CI_JOB_URL")) {
        return (project, job);
    }
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    (
        format!("kiln://{host}"),
        format!("kiln://{host}/{}", std::process::id()),
    )
}

/// The statement of `run`, as JSON.
pub fn statement(run: &Run<'_>) -> Value {
    let plan = run.plan;
    let template = &plan.template;
    let redactor = template.redactor();
    let variables: serde_json::Map<String, Value> = template
        .variables
        .iter()
        .map(|variable| {
            let value = if variable.sensitive {
                Value::String(MASK.to_owned())
            } else {
                serde_json::to_value(&variable.value).unwrap_or(Value::Null)
            };
            (variable.name.clone(), value)
        })
        .collect();
    let template_digest = std::fs::read(&template.path)
        .map(|bytes| Digest::of(&bytes))
        .ok();
    let mut dependencies = Vec::new();
    if let Some(base) = &plan.base {
        dependencies.push(json!({
            "uri": format!("oci:{}", base.reference),
            "digest": sha256(&base.digest),
            "annotations": { "role": "base image" },
        }));
    }
    for stage in &plan.stages {
        for (file, key_digest) in &stage.key.files {
            if file == "base image" {
                continue;
            }
            // A file by the sha256 of its bytes; a folder (or an archive
            // kiln keys by what it unpacks to) by the digest its stage key
            // holds, which covers its whole tree.
            let path = plan.template_dir().join(file);
            let dependency = match std::fs::metadata(&path) {
                Ok(metadata) if metadata.is_file() => match crate::hashing::digest_file(&path) {
                    Ok((content, _)) => json!({
                        "uri": format!("file:{file}"),
                        "digest": sha256(&content),
                        "annotations": { "stage": stage.number },
                    }),
                    Err(_) => continue,
                },
                _ => json!({
                    "uri": format!("file:{file}"),
                    "digest": sha256(key_digest),
                    "annotations": {
                        "stage": stage.number,
                        "digest": "kiln's digest of the tree (every path, mode, owner and byte)",
                    },
                }),
            };
            dependencies.push(dependency);
        }
    }
    for record in run.stages {
        if let (Some(repository), Some(layer)) = (&record.cache_from, &record.layer) {
            dependencies.push(json!({
                "uri": format!("oci://{repository}"),
                "digest": sha256(layer),
                "annotations": { "stage": record.stage, "role": "layer from the shared cache" },
            }));
        }
    }
    let (builder_id, invocation) = builder();
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": plan.reference, "digest": sha256(run.digest) }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "template": {
                        "path": template.path,
                        "digest": template_digest.as_ref().map(sha256),
                    },
                    "variables": variables,
                    "platform": format!("linux/{}", crate::oci::host_architecture()),
                },
                "internalParameters": {
                    "kiln": env!("CARGO_PKG_VERSION"),
                    "sourceDateEpoch": plan.epoch,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": builder_id,
                    "version": { "kiln": env!("CARGO_PKG_VERSION") },
                },
                "metadata": {
                    "invocationId": invocation,
                    "startedOn": crate::oci::rfc3339(run.started),
                    "finishedOn": crate::oci::rfc3339(run.finished),
                },
                "byproducts": run.stages.iter().map(|record| json!({
                    "name": format!("stage {}", record.stage),
                    "annotations": {
                        "kind": record.kind,
                        "cache": match (&record.cache_from, record.cache_hit) {
                            (Some(_), _) => "shared",
                            (None, true) => "local",
                            (None, false) => "built",
                        },
                    },
                    "digest": record.layer.as_ref().map(sha256),
                })).collect::<Vec<_>>(),
            },
        },
    });
    redactor.redact_json(statement)
}

fn note_path(store: &Store, image: &Digest) -> std::path::PathBuf {
    store
        .private_dir()
        .join("provenance")
        .join(format!("{}.json", image.hex()))
}

/// Keeps the statement of `run` in the store (the last build's, for an
/// image built again).
pub fn store_provenance(store: &Store, run: &Run<'_>) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(&statement(run)).expect("JSON values serialize");
    bytes.push(b'\n');
    let descriptor = store.put_bytes(MEDIA_TYPE, &bytes)?;
    store.write_private(
        &note_path(store, run.digest),
        descriptor.digest.as_str().as_bytes(),
    )
}

/// The statement the store keeps for an image, if any.
pub fn provenance_of(store: &Store, image: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
    let Ok(note) = std::fs::read_to_string(note_path(store, image)) else {
        return Ok(None);
    };
    let Ok(digest) = note.trim().parse::<Digest>() else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut store.open_blob(&digest, None)?, &mut bytes).map_err(
        |error| StoreError::Damaged {
            digest: digest.clone(),
            reason: error.to_string(),
        },
    )?;
    Ok(Some(bytes))
}
