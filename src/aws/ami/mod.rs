//! An AMI of a bootable raw disk, with no builder instance (as
//! Bottlerocket's tooling does it): the disk into an EBS snapshot through
//! the EBS direct API, `RegisterImage`, copies into the other regions,
//! launch permissions and an SSM parameter. An AMI with the same name and
//! kiln digest is reused; one with another digest is refused; a failure
//! deletes what this run made.

pub mod settings;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::client::{AwsClient, AwsError, Endpoints};
use super::credentials::{self, CredentialsError, Environment, Source};
use super::ebs::{self, SnapshotUpload};
use super::ec2::{Ec2, FoundImage, Registration};
use crate::reference::Digest;
use crate::report::{Direction, Event, Reporter, TransferOutcome};
use settings::{AmiBootMode, AmiSettings, Architecture, DIGEST_TAG, IMAGE_TAG, Imds};

/// How long a copy or a snapshot may take to become available.
const WAIT_LIMIT: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(
        "publish AMI {name} in {region}: {image_id} has that name and holds {}, not {digest}",
        other.as_deref().unwrap_or("no kiln image")
    )]
    Conflict {
        name: String,
        region: String,
        image_id: String,
        digest: Digest,
        other: Option<String>,
    },
    #[error("publish AMI {name}: no region; set `regions`, AWS_REGION or a profile's region")]
    NoRegion { name: String },
    #[error("publish AMI {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("publish AMI {name}: cancelled")]
    Cancelled { name: String },
    #[error("{failure}; and cleaning up failed: {cleanup}")]
    CleanupFailed {
        #[source]
        failure: Box<AmiError>,
        cleanup: String,
    },
}

impl AmiError {
    /// The name is taken by another image: exit 3, like a version.
    pub fn is_conflict(&self) -> bool {
        match self {
            AmiError::Conflict { .. } => true,
            AmiError::CleanupFailed { failure, .. } => failure.is_conflict(),
            _ => false,
        }
    }
}

/// One AMI in one region, as the store and `kiln-manifest.json` keep it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmiRecord {
    pub region: String,
    pub name: String,
    pub image_id: String,
    pub snapshot_ids: Vec<String>,
    /// `false`: it was there already (same name, same digest).
    pub created: bool,
}

/// What to publish.
pub struct AmiJob<'a> {
    pub settings: &'a AmiSettings,
    /// The raw bootable disk.
    pub disk: &'a Path,
    /// Its sha256, for progress.
    pub disk_sha256: &'a Digest,
    /// The disk's boot mode, the default for the AMI's.
    pub disk_boot: crate::disk::BootMode,
    /// The kiln image's digest and `name:version`.
    pub digest: &'a Digest,
    pub image: &'a str,
    /// The image config's architecture (`amd64`).
    pub oci_architecture: &'a str,
    /// The build the progress belongs to.
    pub build: &'a str,
    /// Set by SIGINT or SIGTERM: stop, and remove what was made.
    pub cancelled: Option<&'a std::sync::atomic::AtomicBool>,
}

/// What a creation left to delete if a later step fails.
enum Made {
    Snapshot { region: String, id: String },
    Image { region: String, id: String },
}

/// Publishes the AMI in every region; returns one record per region.
pub async fn publish(
    job: &AmiJob<'_>,
    environment: &Environment<'_>,
    reporter: &dyn Reporter,
) -> Result<Vec<AmiRecord>, AmiError> {
    let settings = job.settings;
    let name = settings.name.as_str();
    let invalid = |reason: String| AmiError::Invalid {
        name: name.to_owned(),
        reason,
    };
    if let Some(reason) = settings::invalid_name(name) {
        return Err(invalid(reason));
    }
    let architecture = match settings.architecture {
        Some(architecture) => architecture,
        None => Architecture::of_oci(job.oci_architecture).ok_or_else(|| {
            invalid(format!(
                "the image's architecture `{}` has no AMI architecture; set `architecture`",
                job.oci_architecture
            ))
        })?,
    };
    let boot_mode = match settings.boot_mode {
        Some(mode) => mode,
        None => AmiBootMode::of_disk(job.disk_boot)
            .ok_or_else(|| invalid("the disk is not bootable".to_owned()))?,
    };
    if settings.tpm && boot_mode == AmiBootMode::LegacyBios {
        return Err(invalid("NitroTPM needs a UEFI boot mode".to_owned()));
    }
    let disk_bytes = std::fs::metadata(job.disk)
        .map_err(|error| invalid(format!("cannot read {}: {error}", job.disk.display())))?
        .len();
    let disk_gib = disk_bytes.div_ceil(1 << 30).max(1);
    let volume_size = settings.volume_size.unwrap_or(disk_gib);
    if volume_size < disk_gib {
        return Err(invalid(format!(
            "volume_size {volume_size} GiB is smaller than the disk ({disk_gib} GiB)"
        )));
    }
    let regions: Vec<String> = if settings.regions.is_empty() {
        vec![
            credentials::region(environment, settings.profile.as_deref()).ok_or_else(|| {
                AmiError::NoRegion {
                    name: name.to_owned(),
                }
            })?,
        ]
    } else {
        settings.regions.clone()
    };
    let home_region = regions[0].as_str();

    let http = super::client::http_client().map_err(|error| AwsError::Failed {
        action: "start an HTTP client".to_owned(),
        region: home_region.to_owned(),
        reason: error.to_string(),
    })?;
    let endpoints = Endpoints::from_environment(settings.endpoint.as_deref(), environment.var);
    let credentials = match credentials::source(environment, settings.profile.as_deref())? {
        Source::Static(credentials) => credentials,
        Source::WebIdentity {
            role_arn,
            token_file,
            session_name,
        } => {
            super::sts::assume_role_with_web_identity(
                &http,
                &endpoints,
                home_region,
                &role_arn,
                &token_file,
                &session_name,
            )
            .await?
        }
        Source::InstanceMetadata { endpoint } => {
            super::imds::instance_credentials(&http, &endpoint).await?
        }
    };
    let client = AwsClient::new(http, endpoints, Some(credentials));

    // Every region first: a name taken by another image stops the run
    // before anything is made.
    let mut existing: Vec<Option<FoundImage>> = Vec::new();
    for region in &regions {
        let ec2 = Ec2 {
            client: &client,
            region,
        };
        let found = ec2.images_named(name).await?;
        let mut same = None;
        for image in found {
            match image.tag(DIGEST_TAG) {
                Some(digest) if digest == job.digest.as_str() => same = Some(image),
                other => {
                    return Err(AmiError::Conflict {
                        name: name.to_owned(),
                        region: region.clone(),
                        image_id: image.image_id.clone(),
                        digest: job.digest.clone(),
                        other: other.map(str::to_owned),
                    });
                }
            }
        }
        existing.push(same);
    }

    let mut made = Vec::new();
    let context = Context {
        client: &client,
        job,
        settings,
        regions: &regions,
        architecture,
        boot_mode,
        volume_size,
        reporter,
    };
    match context.run(existing, &mut made).await {
        Ok(records) => Ok(records),
        Err(failure) => match clean_up(&client, made).await {
            Ok(()) => Err(failure),
            Err(cleanup) => Err(AmiError::CleanupFailed {
                failure: Box::new(failure),
                cleanup: crate::error_chain(&cleanup),
            }),
        },
    }
}

struct Context<'a> {
    client: &'a AwsClient,
    job: &'a AmiJob<'a>,
    settings: &'a AmiSettings,
    regions: &'a [String],
    architecture: Architecture,
    boot_mode: AmiBootMode,
    volume_size: u64,
    reporter: &'a dyn Reporter,
}

impl Context<'_> {
    fn check_cancelled(&self) -> Result<(), AmiError> {
        if self
            .job
            .cancelled
            .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(AmiError::Cancelled {
                name: self.settings.name.clone(),
            });
        }
        Ok(())
    }

    fn tags(&self) -> Vec<(String, String)> {
        let mut tags: Vec<(String, String)> = self
            .settings
            .tags
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        tags.push((DIGEST_TAG.to_owned(), self.job.digest.to_string()));
        tags.push((IMAGE_TAG.to_owned(), self.job.image.to_owned()));
        if !self.settings.tags.contains_key("Name") {
            tags.push(("Name".to_owned(), self.settings.name.clone()));
        }
        tags
    }

    fn ec2<'r>(&'r self, region: &'r str) -> Ec2<'r> {
        Ec2 {
            client: self.client,
            region,
        }
    }

    async fn run(
        &self,
        existing: Vec<Option<FoundImage>>,
        made: &mut Vec<Made>,
    ) -> Result<Vec<AmiRecord>, AmiError> {
        let tags = self.tags();
        let name = self.settings.name.as_str();
        let description = format!("{} ({}), made by kiln", self.job.image, self.job.digest);
        let home = self.regions[0].as_str();
        let mut records: Vec<AmiRecord> = Vec::new();
        let (home_id, home_snapshots, home_created) = match &existing[0] {
            Some(image) => (image.image_id.clone(), image.snapshot_ids.clone(), false),
            None => {
                let snapshot = self.upload(home, &tags, &description, made).await?;
                let ec2 = self.ec2(home);
                let image_id = ec2
                    .register_image(&Registration {
                        name,
                        description: &description,
                        architecture: self.architecture.as_str(),
                        snapshot_id: &snapshot,
                        volume_size_gib: self.volume_size,
                        volume_type: self.settings.volume_type.as_str(),
                        boot_mode: self.boot_mode.as_str(),
                        ena: self.settings.ena,
                        imds_v2_required: self.settings.imds == Imds::V2Required,
                        tpm: self.settings.tpm,
                    })
                    .await?;
                made.push(Made::Image {
                    region: home.to_owned(),
                    id: image_id.clone(),
                });
                ec2.create_tags(&[&image_id, &snapshot], &tags).await?;
                wait_available(&ec2, &image_id).await?;
                (image_id, vec![snapshot], true)
            }
        };
        records.push(AmiRecord {
            region: home.to_owned(),
            name: name.to_owned(),
            image_id: home_id.clone(),
            snapshot_ids: home_snapshots,
            created: home_created,
        });

        self.check_cancelled()?;
        // Copies start together and are waited for together.
        let mut copies = Vec::new();
        for (region, found) in self.regions.iter().zip(&existing).skip(1) {
            match found {
                Some(image) => records.push(AmiRecord {
                    region: region.clone(),
                    name: name.to_owned(),
                    image_id: image.image_id.clone(),
                    snapshot_ids: image.snapshot_ids.clone(),
                    created: false,
                }),
                None => {
                    // Per run: a copy retried within AWS's idempotency
                    // window after a failed run deregistered it must not
                    // get that image's id back.
                    let token = run_token(self.job.digest, region);
                    let ec2 = self.ec2(region);
                    let copy = ec2
                        .copy_image(home, &home_id, name, &description, &token)
                        .await?;
                    made.push(Made::Image {
                        region: region.clone(),
                        id: copy.clone(),
                    });
                    copies.push((region.clone(), copy));
                }
            }
        }
        for (region, copy) in copies {
            self.check_cancelled()?;
            let ec2 = self.ec2(&region);
            let image = wait_available(&ec2, &copy).await?;
            for snapshot in &image.snapshot_ids {
                made.push(Made::Snapshot {
                    region: region.clone(),
                    id: snapshot.clone(),
                });
            }
            let mut resources: Vec<&str> = vec![copy.as_str()];
            resources.extend(image.snapshot_ids.iter().map(String::as_str));
            ec2.create_tags(&resources, &tags).await?;
            records.push(AmiRecord {
                region,
                name: name.to_owned(),
                image_id: copy,
                snapshot_ids: image.snapshot_ids,
                created: true,
            });
        }
        // Keep the regions' order.
        records.sort_by_key(|record| {
            self.regions
                .iter()
                .position(|region| *region == record.region)
        });

        for record in &records {
            let ec2 = self.ec2(&record.region);
            if !self.settings.launch_permissions.is_empty() {
                ec2.share_image(&record.image_id, &self.settings.launch_permissions)
                    .await?;
                for snapshot in &record.snapshot_ids {
                    ec2.share_snapshot(snapshot, &self.settings.launch_permissions)
                        .await?;
                }
            }
            if let Some(parameter) = &self.settings.ssm_parameter
                && super::ssm::parameter(self.client, &record.region, parameter)
                    .await?
                    .as_deref()
                    != Some(record.image_id.as_str())
            {
                super::ssm::put_image_parameter(
                    self.client,
                    &record.region,
                    parameter,
                    &record.image_id,
                )
                .await?;
            }
            self.reporter.report(Event::AmiPublished {
                build: self.job.build.to_owned(),
                region: record.region.clone(),
                name: record.name.clone(),
                image_id: record.image_id.clone(),
                unchanged: !record.created,
            });
        }
        Ok(records)
    }

    /// The disk into a snapshot in `region`, reported like a push's blob.
    async fn upload(
        &self,
        region: &str,
        tags: &[(String, String)],
        description: &str,
        made: &mut Vec<Made>,
    ) -> Result<String, AmiError> {
        let started = Instant::now();
        let digest = self.job.disk_sha256;
        let build = self.job.build;
        let size = std::fs::metadata(self.job.disk).map_or(0, |meta| meta.len());
        self.reporter.report(Event::TransferStarted {
            build: build.to_owned(),
            digest: digest.clone(),
            size,
            direction: Direction::Push,
        });
        let token = run_token(self.job.digest, "snapshot");
        let mut snapshot_id = None;
        let uploaded = ebs::upload(
            self.client,
            &SnapshotUpload {
                disk: self.job.disk,
                region,
                volume_size_gib: self.volume_size,
                description,
                tags,
                client_token: &token,
                wait: WAIT_LIMIT,
                cancelled: self.job.cancelled,
            },
            &mut |id: &str| snapshot_id = Some(id.to_owned()),
            &|bytes| {
                self.reporter.report(Event::TransferProgress {
                    build: build.to_owned(),
                    digest: digest.clone(),
                    bytes,
                })
            },
        )
        .await;
        if let Some(id) = snapshot_id {
            made.push(Made::Snapshot {
                region: region.to_owned(),
                id,
            });
        }
        let uploaded = uploaded?;
        self.reporter.report(Event::TransferFinished {
            build: build.to_owned(),
            digest: digest.clone(),
            size: uploaded.bytes,
            outcome: TransferOutcome::Sent,
            seconds: started.elapsed().as_secs_f64(),
        });
        self.reporter.report(Event::SnapshotUploaded {
            build: build.to_owned(),
            region: region.to_owned(),
            snapshot_id: uploaded.snapshot_id.clone(),
            blocks: uploaded.blocks,
            bytes: uploaded.bytes,
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(uploaded.snapshot_id)
    }
}

/// Polls until the image is `available`; returns it as it is then.
async fn wait_available(ec2: &Ec2<'_>, image_id: &str) -> Result<FoundImage, AmiError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let image = ec2.image(image_id).await?;
        let state = image.as_ref().map(|image| image.state.clone());
        match (state.as_deref(), image) {
            (Some("available"), Some(image)) => return Ok(image),
            (Some("pending") | None, _) if started.elapsed() < WAIT_LIMIT => {}
            (state, _) => {
                return Err(AwsError::Failed {
                    action: "wait for the AMI".to_owned(),
                    region: ec2.region.to_owned(),
                    reason: format!("{image_id} is {}", state.unwrap_or("missing")),
                }
                .into());
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(15));
    }
}

/// Deletes what a failed run made: images first (a snapshot an image
/// uses cannot be deleted), newest first, then snapshots.
async fn clean_up(client: &AwsClient, made: Vec<Made>) -> Result<(), AwsError> {
    let mut first_error = None;
    let (images, snapshots): (Vec<&Made>, Vec<&Made>) = made
        .iter()
        .rev()
        .partition(|made| matches!(made, Made::Image { .. }));
    for made in images.into_iter().chain(snapshots) {
        let result = match made {
            Made::Image { region, id } => Ec2 { client, region }.deregister_image(id).await,
            Made::Snapshot { region, id } => Ec2 { client, region }.delete_snapshot(id).await,
        };
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// An idempotency token for one call of this run: the image's digest,
/// what it is for, and the time, so a retry within the run gets the same
/// answer and a later run (after a failed one cleaned up) a fresh one.
fn run_token(digest: &crate::reference::Digest, what: &str) -> String {
    format!(
        "kiln-{}-{what}-{}",
        &digest.hex()[..24],
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos())
    )
}
