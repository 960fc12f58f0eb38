//! The build plan: everything a build will do, worked out once from a
//! checked [`Template`] before anything runs.
//!
//! A plan holds the resolved base, every stage with its key and the inputs
//! that made it, the tests, the artifacts to write (and where), and the
//! channels and registries to publish to. `kiln build` runs a plan,
//! `kiln build --plan` and `kiln inspect` print one ([`show`]), so they never
//! disagree on a key. Keys of tests and artifacts also cover the digest of
//! the image they are about, which only the build knows: the plan holds
//! their other inputs.

pub mod show;

use std::path::{Path, PathBuf};

use crate::cache::key::{KeyError, KeyInputs, StageKey};
use crate::reference::{ChannelName, Digest, ImageRef, RemoteRef, StoreRef};
use crate::sources::Source;
use crate::store::{Store, StoreError};
use crate::template::Template;

/// What a plan is made with, beside the template.
#[derive(Clone, Debug)]
pub struct PlanOptions<'a> {
    /// `$KILN_HOME`: an `image` source is looked up in its store.
    pub home: &'a Path,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    /// `--output`: the artifacts' folder instead of `output/NAME-VERSION`
    /// beside the template.
    pub output: Option<&'a Path>,
    /// `false` with `--no-publish`: no channels move, nothing is pushed.
    pub publish: bool,
    /// How to reach the registry of an `image` source's base that is not
    /// stored yet (its digest is looked up there; the build pulls it).
    pub remote: &'a crate::remote::RemoteOptions,
}

#[derive(Clone, Debug)]
pub struct BuildPlan {
    pub template: Template,
    /// `name:version`.
    pub reference: String,
    pub epoch: u64,
    /// The base image of an `image` source, as found in the store.
    pub base: Option<Base>,
    pub stages: Vec<PlannedStage>,
    pub tests: Vec<PlannedTest>,
    /// The folder the artifacts are written into.
    pub output: PathBuf,
    pub artifacts: Vec<PlannedArtifact>,
    pub channels: Vec<ChannelName>,
    pub remotes: Vec<RemoteRef>,
    /// `[publish] sign`'s private key, unless `--no-publish`.
    pub sign: Option<PathBuf>,
    /// `[[publish.ami]]`, unless `--no-publish`.
    pub amis: Vec<crate::aws::ami::settings::AmiSettings>,
    /// The template's variables as `KILN_VAR_NAME`, which the commands of
    /// shell stages, tests and host commands see.
    pub variables: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// Where it is (or, once pulled, will be) in the store.
    pub reference: StoreRef,
    pub digest: Digest,
    /// A base on a registry that is not stored yet: pinned to `digest`,
    /// the build pulls it from here.
    pub pull_from: Option<RemoteRef>,
    /// Its signatures, checked on the registry against `verify_key`: the
    /// build keeps them in the store with the base.
    pub signatures: Option<crate::signing::Signatures>,
}

/// What a stage is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Source,
    /// The template's provisioner at this index.
    Provisioner(usize),
}

#[derive(Clone, Debug)]
pub struct PlannedStage {
    /// 0 for the source, N for the Nth provisioner: the one numbering of
    /// progress, errors, the cache and the plan.
    pub number: usize,
    pub step: Step,
    pub kind: &'static str,
    /// One line, host paths relative to the template, not yet redacted.
    pub summary: String,
    /// `false` for a stage with `cache = false`: it always runs.
    pub cache: bool,
    /// The sensitive variable the stage uses, if any: such a stage is not
    /// pushed to a shared cache unless it says `share = true`.
    pub sensitive: Option<String>,
    /// `share = true`.
    pub share: bool,
    pub key: StageKey,
}

impl PlannedStage {
    /// Whether the stage may go to a shared cache.
    pub fn shareable(&self) -> bool {
        self.cache && (self.sensitive.is_none() || self.share)
    }
}

#[derive(Clone, Debug)]
pub struct PlannedTest {
    /// The template's test at this index.
    pub index: usize,
    /// Its name, redacted: it is shown and stored.
    pub name: String,
    /// Its inputs; with the image's digest, its key.
    pub inputs: KeyInputs,
}

#[derive(Clone, Debug)]
pub struct PlannedArtifact {
    /// The template's post-processor at this index.
    pub index: usize,
    pub kind: &'static str,
    pub summary: String,
    /// The file it writes (`None` for a host command).
    pub path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("failed to find the base image {reference}")]
    BaseNotStored {
        reference: StoreRef,
        #[source]
        source: Box<StoreError>,
    },
    #[error("failed to look up the base image {reference}")]
    BaseOnRegistry {
        reference: RemoteRef,
        #[source]
        source: Box<crate::remote::RemoteError>,
    },
    #[error("failed to verify the signature of the base image {reference}")]
    BaseSignature {
        reference: String,
        #[source]
        source: Box<crate::remote::RemoteError>,
    },
    #[error(transparent)]
    BaseConflict(Box<BaseConflict>),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A registry base whose tag names another image than the one stored
/// under that version here.
#[derive(Debug, thiserror::Error)]
#[error(
    "the base image {reference} is {remote} on its registry, but {stored} is stored as {local}: versions never change; pin the digest you want"
)]
pub struct BaseConflict {
    pub reference: RemoteRef,
    pub stored: StoreRef,
    pub remote: Digest,
    pub local: Digest,
}

impl BuildPlan {
    /// The template's folder: relative host paths start there.
    pub fn template_dir(&self) -> &Path {
        self.template.path.parent().unwrap_or(Path::new("/"))
    }

    /// The key of the last stage: what the image is made of.
    pub fn last_key(&self) -> &StageKey {
        &self.stages.last().expect("a plan has a source stage").key
    }
}

/// The variables as `KILN_VAR_NAME` pairs, and a digest of them all.
fn variables_env(template: &Template) -> (Vec<(String, String)>, Digest) {
    let env: Vec<(String, String)> = template
        .variables
        .iter()
        .map(|variable| {
            (
                format!("KILN_VAR_{}", variable.name),
                variable.value.to_interpolated(),
            )
        })
        .collect();
    let json = serde_json::to_vec(&env).expect("pairs of strings serialize");
    (env, Digest::of(&json))
}

/// Plans the build of `template`.
pub fn plan(template: Template, options: &PlanOptions<'_>) -> Result<BuildPlan, PlanError> {
    let dir = template.path.parent().unwrap_or(Path::new("/")).to_owned();
    let epoch = options.epoch;
    let base = match &template.source {
        Source::Image(image) => Some(resolve_base(
            &image.reference,
            image.verify_key.as_deref(),
            options,
        )?),
        _ => None,
    };
    let (variables, variables_digest) = variables_env(&template);
    let redactor = template.redactor();

    let mut stages = Vec::with_capacity(1 + template.provisioners.len());
    let source = &template.source;
    let mut inputs = KeyInputs::new(source.kind(), epoch, &dir);
    source.key_inputs(&mut inputs, base.as_ref().map(|base| &base.digest))?;
    stages.push(PlannedStage {
        number: 0,
        step: Step::Source,
        kind: source.kind(),
        summary: source.summary(&dir),
        cache: true,
        sensitive: redactor.sensitive_in_json(
            &serde_json::to_value(source).expect("sources serialize"),
            false,
        ),
        share: false,
        key: inputs.key(None),
    });
    for (index, provisioner) in template.provisioners.iter().enumerate() {
        let mut inputs = KeyInputs::new(provisioner.kind(), epoch, &dir);
        provisioner.key_inputs(&mut inputs, &variables_digest)?;
        let parent = stages
            .last()
            .map(|stage: &PlannedStage| stage.key.key.clone());
        stages.push(PlannedStage {
            number: index + 1,
            step: Step::Provisioner(index),
            kind: provisioner.kind(),
            summary: provisioner.summary(&dir),
            cache: provisioner.cache(),
            sensitive: provisioner.sensitive_use(&redactor),
            share: provisioner.share(),
            key: inputs.key(parent.as_ref()),
        });
    }

    let mut tests = Vec::with_capacity(template.tests.len());
    for (index, test) in template.tests.iter().enumerate() {
        let mut inputs = KeyInputs::new("test", 0, &dir);
        test.key_inputs(&mut inputs, &variables_digest)?;
        if test.place == crate::image_test::TestPlace::Vm {
            // The machine it runs in: the disk's boot settings and the
            // host's bootloaders.
            let disk = template.post_processors.iter().find_map(|post| match post {
                crate::post_processors::PostProcessor::Disk(disk)
                    if disk.boot != crate::disk::BootMode::None =>
                {
                    Some(disk)
                }
                _ => None,
            });
            inputs
                .setting("disk", &disk)
                .setting("bootloaders", &crate::disk::bootloader_versions());
        }
        tests.push(PlannedTest {
            index,
            name: redactor.redact(&test.name).into_owned(),
            inputs,
        });
    }

    let image = &template.image;
    let stem = crate::post_processors::context::stem(&image.name, &image.version);
    let output = match options.output {
        Some(output) => std::path::absolute(output).unwrap_or_else(|_| output.to_owned()),
        None => dir.join("output").join(&stem),
    };
    let artifacts = template
        .post_processors
        .iter()
        .enumerate()
        .map(|(index, post_processor)| PlannedArtifact {
            index,
            kind: post_processor.kind(),
            summary: post_processor.summary(&dir),
            path: post_processor.artifact_path(&output, &stem),
        })
        .collect();
    let (channels, remotes, amis) = if options.publish {
        (
            template.publish.channels.clone(),
            template.publish.remote.clone(),
            template.publish.ami.clone(),
        )
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let sign = template
        .publish
        .sign
        .as_ref()
        .filter(|_| options.publish)
        .map(|sign| sign.key.clone());
    Ok(BuildPlan {
        sign,
        reference: format!("{}:{}", image.name, image.version),
        epoch,
        base,
        stages,
        tests,
        output,
        artifacts,
        channels,
        remotes,
        amis,
        variables,
        template,
    })
}

/// Finds an `image` source's base: in the store, or for a registry ref not
/// stored yet (or stored under another digest than it pins), on its
/// registry, by the digest of this platform's manifest.
fn resolve_base(
    reference: &ImageRef,
    verify_key: Option<&Path>,
    options: &PlanOptions<'_>,
) -> Result<Base, PlanError> {
    let base = find_base(reference, options)?;
    match verify_key {
        Some(key) => verify_base(reference, base, key, options),
        None => Ok(base),
    }
}

fn find_base(reference: &ImageRef, options: &PlanOptions<'_>) -> Result<Base, PlanError> {
    let store = Store::open_existing(&options.home.join("store"));
    let remote = match reference {
        ImageRef::Store(reference) => {
            let not_stored = |source| PlanError::BaseNotStored {
                reference: reference.clone(),
                source: Box::new(source),
            };
            let store = store
                .map_err(not_stored)?
                .ok_or_else(|| not_stored(StoreError::NotFound(reference.to_string())))?;
            let entry = store.resolve(reference).map_err(not_stored)?;
            return Ok(Base {
                reference: reference.clone(),
                digest: entry.manifest.digest,
                pull_from: None,
                signatures: None,
            });
        }
        ImageRef::Remote(remote) => remote,
    };
    let stored_as = remote
        .store_ref()
        .expect("a remote base has a tag or a digest");
    let stored = store
        .ok()
        .flatten()
        .and_then(|store| store.resolve(&stored_as).ok())
        .map(|entry| entry.manifest.digest);
    if let Some(stored) = &stored
        && remote.digest().is_none_or(|pin| pin == stored)
    {
        return Ok(Base {
            reference: stored_as,
            digest: stored.clone(),
            pull_from: None,
            signatures: None,
        });
    }
    let failed = |source| PlanError::BaseOnRegistry {
        reference: remote.clone(),
        source: Box::new(source),
    };
    let registry = crate::remote::Registry::new(&remote.host, options.remote).map_err(failed)?;
    let resolved =
        crate::remote::block_on(crate::remote::pull::resolve(&registry, remote)).map_err(failed)?;
    if let Some(stored) = stored {
        if stored != resolved.digest {
            return Err(PlanError::BaseConflict(Box::new(BaseConflict {
                reference: remote.clone(),
                stored: stored_as,
                remote: resolved.digest,
                local: stored,
            })));
        }
        return Ok(Base {
            reference: stored_as,
            digest: stored,
            pull_from: None,
            signatures: None,
        });
    }
    let mut pull_from = remote.clone();
    pull_from.target = Some(crate::reference::StoreTarget::Digest(
        resolved.digest.clone(),
    ));
    Ok(Base {
        reference: stored_as,
        digest: resolved.digest,
        pull_from: Some(pull_from),
        signatures: None,
    })
}

/// `verify_key`: the base must carry a signature by the key, and every
/// attestation must verify. A stored base's own signatures are checked;
/// one stored unsigned, or not stored yet, is checked on its registry
/// (by the digest found), and the signatures are kept once it is stored.
fn verify_base(
    reference: &ImageRef,
    mut base: Base,
    key_path: &Path,
    options: &PlanOptions<'_>,
) -> Result<Base, PlanError> {
    let refused = |source: crate::remote::RemoteError| PlanError::BaseSignature {
        reference: reference.to_string(),
        source: Box::new(source),
    };
    let key = crate::signing::PublicKey::read(key_path).map_err(|error| refused(error.into()))?;
    let store = Store::open_existing(&options.home.join("store"))
        .ok()
        .flatten();
    let local = match (&store, &base.pull_from) {
        (Some(store), None) => crate::signing::verify_stored(store, &base.digest, &key),
        _ => Err(crate::signing::SigningError::Unsigned {
            image: base.digest.clone(),
        }),
    };
    let remote = match (local, reference) {
        (Ok(_), _) => return Ok(base),
        (Err(crate::signing::SigningError::Unsigned { .. }), ImageRef::Remote(remote)) => remote,
        (Err(error), _) => return Err(refused(error.into())),
    };
    let mut pinned = remote.clone();
    pinned.target = Some(crate::reference::StoreTarget::Digest(base.digest.clone()));
    let registry = crate::remote::Registry::new(&remote.host, options.remote).map_err(refused)?;
    let verified = crate::remote::block_on(crate::remote::signatures::verify_remote(
        &registry, &pinned, &key,
    ))
    .map_err(refused)?;
    base.signatures = Some(verified.signatures);
    Ok(base)
}
