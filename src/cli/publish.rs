//! `kiln publish ami REF …`: an AMI of an image already in the store. The
//! bootable raw disk is written from the image into a scratch folder of
//! `$KILN_HOME` (the same bytes a `disk` post-processor writes), uploaded,
//! and removed.

use std::collections::BTreeMap;

use kiln::aws::ami::settings::{self, AmiBootMode, AmiSettings, Architecture, Imds, VolumeType};
use kiln::aws::ami::{AmiJob, publish};
use kiln::disk::{BootMode, DiskFormat, DiskSettings};
use kiln::reference::StoreRef;
use kiln::store::Store;

use super::{Exit, ExportBoot, diagnostics::error_chain};

/// `kiln publish ami`'s flags: the keys of `[[publish.ami]]`.
#[derive(Debug, clap::Args)]
pub struct AmiArgs {
    /// A stored image: NAME:VERSION or NAME@sha256:…
    #[arg(value_name = "REF")]
    pub reference: String,
    /// A region (repeat it; the first gets the snapshot, the others copies)
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
    /// The AMI name (default NAME-VERSION)
    #[arg(long)]
    pub name: Option<String>,
    /// How the disk boots
    #[arg(long, value_enum, default_value = "hybrid")]
    pub boot: ExportBoot,
    /// x86_64 or arm64 (default: the image's)
    #[arg(long)]
    pub architecture: Option<String>,
    /// uefi, legacy-bios or uefi-preferred (default: from --boot)
    #[arg(long)]
    pub boot_mode: Option<String>,
    /// The root volume in GiB (default: the disk's size)
    #[arg(long, value_name = "GIB")]
    pub volume_size: Option<u64>,
    /// gp3, gp2, io1, io2 or standard
    #[arg(long, default_value = "gp3")]
    pub volume_type: String,
    /// Register without ENA support
    #[arg(long)]
    pub no_ena: bool,
    /// v2-required or v2-optional
    #[arg(long, default_value = "v2-required")]
    pub imds: String,
    /// NitroTPM (needs UEFI)
    #[arg(long)]
    pub tpm: bool,
    /// An account id (or `all`) that may launch it (repeat it)
    #[arg(long = "launch-permission", value_name = "ACCOUNT")]
    pub launch_permissions: Vec<String>,
    /// An SSM parameter to point at the AMI id in each region
    #[arg(long, value_name = "NAME")]
    pub ssm_parameter: Option<String>,
    /// A tag KEY=VALUE for the AMI and snapshot (repeat it)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// One URL for every AWS service (an emulator, another partition)
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The AWS profile
    #[arg(long)]
    pub profile: Option<String>,
    /// One JSON event per line on stdout
    #[arg(long)]
    pub json: bool,
}

fn enum_value<T: serde::de::DeserializeOwned>(flag: &str, value: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| format!("invalid --{flag} `{value}`"))
}

fn settings(args: &AmiArgs, default_name: String) -> Result<AmiSettings, String> {
    let name = args.name.clone().unwrap_or(default_name);
    if let Some(reason) = settings::invalid_name(&name) {
        return Err(format!("invalid AMI name `{name}`: {reason}"));
    }
    if let Some(region) = args
        .regions
        .iter()
        .find(|region| !settings::valid_region(region))
    {
        return Err(format!(
            "invalid --region `{region}`: a region is like eu-west-1"
        ));
    }
    if let Some(account) = args
        .launch_permissions
        .iter()
        .find(|account| !settings::valid_account(account))
    {
        return Err(format!(
            "invalid --launch-permission `{account}`: an account id is 12 digits, or all"
        ));
    }
    let mut tags = BTreeMap::new();
    for tag in &args.tags {
        let (key, value) = tag
            .split_once('=')
            .filter(|(key, _)| !key.is_empty() && !key.starts_with("kiln:"))
            .ok_or_else(|| format!("invalid --tag `{tag}`: write KEY=VALUE (not kiln:…)"))?;
        tags.insert(key.to_owned(), value.to_owned());
    }
    let boot_mode: Option<AmiBootMode> = args
        .boot_mode
        .as_deref()
        .map(|mode| enum_value("boot-mode", mode))
        .transpose()?;
    if args.tpm && boot_mode == Some(AmiBootMode::LegacyBios) {
        return Err("--tpm needs a UEFI boot mode".to_owned());
    }
    Ok(AmiSettings {
        name,
        regions: args.regions.clone(),
        architecture: args
            .architecture
            .as_deref()
            .map(|architecture| enum_value::<Architecture>("architecture", architecture))
            .transpose()?,
        boot_mode,
        volume_size: args.volume_size,
        volume_type: enum_value::<VolumeType>("volume-type", &args.volume_type)?,
        ena: !args.no_ena,
        imds: enum_value::<Imds>("imds", &args.imds)?,
        tpm: args.tpm,
        launch_permissions: args.launch_permissions.clone(),
        ssm_parameter: args.ssm_parameter.clone(),
        tags,
        endpoint: args.endpoint.clone(),
        profile: args.profile.clone(),
    })
}

pub fn ami(args: &AmiArgs) -> Exit {
    let reporter = super::reporters::choose(args.json);
    let reference: StoreRef = match args.reference.parse() {
        Ok(reference) => reference,
        Err(reason) => {
            eprintln!(
                "error: invalid image reference `{}`: {reason}",
                args.reference
            );
            return Exit::Usage;
        }
    };
    let boot = match args.boot {
        ExportBoot::None => {
            eprintln!("error: an AMI boots: --boot is uefi, bios or hybrid");
            return Exit::Usage;
        }
        ExportBoot::Uefi => BootMode::Uefi,
        ExportBoot::Bios => BootMode::Bios,
        ExportBoot::Hybrid => BootMode::Hybrid,
    };
    let home = kiln::kiln_home();
    let store = match Store::open_to_read(&home.join("store"), &reference)
        .and_then(|store| Ok((store.resolve(&reference)?, store)))
    {
        Ok(found) => found,
        Err(error) => {
            eprintln!("error: failed to find {reference}: {}", error_chain(&error));
            return Exit::Failure;
        }
    };
    let (entry, store) = store;
    let settings = match settings(
        args,
        format!(
            "{}-{}",
            entry.name.as_str().replace('/', "-"),
            entry.version
        ),
    ) {
        Ok(settings) => settings,
        Err(reason) => {
            eprintln!("error: {reason}");
            return Exit::Usage;
        }
    };
    let image = format!("{}:{}", entry.name, entry.version);
    let result = (|| -> Result<_, Box<dyn std::error::Error>> {
        let architecture = store.config(&store.manifest(&entry)?)?.architecture;
        let scratch = home.join("tmp");
        std::fs::create_dir_all(&scratch)?;
        let folder = tempfile::Builder::new()
            .prefix("ami-")
            .tempdir_in(&scratch)?;
        let disk = folder.path().join("disk.raw");
        let epoch = super::build::source_date_epoch().unwrap_or(0);
        kiln::export::disk(
            &store,
            &entry,
            &DiskSettings::fitted(DiskFormat::Raw, boot),
            &disk,
            &scratch,
            epoch,
        )?;
        let var = |name: &str| std::env::var(name).ok();
        let environment = kiln::aws::credentials::process_environment(&var);
        let job = AmiJob {
            settings: &settings,
            disk: &disk,
            disk_sha256: &entry.manifest.digest,
            disk_boot: boot,
            digest: &entry.manifest.digest,
            image: &image,
            oci_architecture: &architecture,
            build: &image,
            cancelled: None,
        };
        let records = kiln::remote::block_on(publish(&job, &environment, reporter.as_ref()))?;
        store.record_amis(&entry.name, &entry.version, &records)?;
        Ok(records)
    })();
    match result {
        Ok(records) => {
            if !args.json {
                for record in records {
                    println!("{} {} {}", record.region, record.image_id, record.name);
                }
            }
            Exit::Success
        }
        Err(error) => {
            eprintln!(
                "error: failed to publish AMI {} of {image}: {}",
                settings.name,
                error_chain(error.as_ref())
            );
            let conflict = error
                .downcast_ref::<kiln::aws::ami::AmiError>()
                .is_some_and(kiln::aws::ami::AmiError::is_conflict);
            if conflict {
                Exit::VersionConflict
            } else {
                Exit::Failure
            }
        }
    }
}
