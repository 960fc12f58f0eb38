//! The command line: clap structs in this file, one file per command.
//!
//! Each command returns an [`Exit`]; errors are printed here, at the edge,
//! with miette showing the template line they point at.

mod build;
mod cache;
mod channel;
mod completions;
mod diagnostics;
mod diff;
mod export;
mod fmt;
mod images;
mod inspect;
mod login;
mod publish;
mod pull;
mod push;
mod reporters;
mod sbom;
mod sign;
mod validate;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use kiln::template::variables::VarInputs;

/// The exit codes of the contract, and 130 for a build stopped by SIGINT
/// or SIGTERM, as shells expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    VersionConflict = 3,
    Interrupted = 130,
}

impl Exit {
    /// Of two outcomes (of builds run together), the one to exit with: an
    /// interrupt, then a failure, then a version conflict, then success.
    pub fn worst(self, other: Exit) -> Exit {
        let rank = |exit: Exit| match exit {
            Exit::Success => 0,
            Exit::VersionConflict => 1,
            Exit::Usage | Exit::Failure => 2,
            Exit::Interrupted => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Bake immutable, reproducible machine images as OCI images",
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Variable values from outside the template.
#[derive(Debug, Args)]
pub struct VarArgs {
    /// Set a variable (repeatable; later wins over defaults, KILN_VAR_*, var-files)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = VarInputs::parse_flag)]
    pub vars: Vec<(String, String)>,
    /// Read variable values from a TOML file of `name = value` lines (repeatable)
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

impl VarArgs {
    pub fn inputs(&self) -> VarInputs {
        VarInputs {
            files: self.var_files.clone(),
            flags: self.vars.clone(),
        }
    }
}

/// How to reach registries.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Plain HTTP to a registry that is not on loopback
    #[arg(long)]
    pub insecure: bool,
    /// Also trust this CA certificate (PEM) for HTTPS
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl RemoteArgs {
    pub fn options(&self) -> kiln::remote::RemoteOptions {
        kiln::remote::RemoteOptions {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            home: kiln::kiln_home(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum OnError {
    /// Remove everything the failed build made
    #[default]
    Cleanup,
    /// Keep the failed stage's root for inspection
    Abort,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    Oci,
    OciArchive,
    Rootfs,
    Raw,
    Qcow2,
    /// streamOptimized, as VMware and OVA import
    Vmdk,
    /// Fixed, as Azure imports
    Vhd,
    /// disk.raw in a gzip'd tar, as Google Compute Engine imports
    Gce,
}

/// How an exported disk boots.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum ExportBoot {
    /// A bare ext4 filesystem
    #[default]
    None,
    /// GPT, systemd-boot on an EFI system partition
    Uefi,
    /// GPT, GRUB in the MBR and a BIOS boot partition
    Bios,
    /// Both, on one disk
    Hybrid,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build images from templates and store them
    Build {
        /// Template files (TOML)
        #[arg(required = true, value_name = "TEMPLATE")]
        templates: Vec<PathBuf>,
        #[command(flatten)]
        vars: VarArgs,
        /// Run every stage, ignoring the stage cache
        #[arg(long)]
        no_cache: bool,
        /// What to do with a failed build's work
        #[arg(long, value_enum, default_value_t)]
        on_error: OnError,
        /// Folder for post-processor artifacts (default: output/NAME-VERSION beside the template)
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// Do not move channels or push to remotes
        #[arg(long)]
        no_publish: bool,
        /// Build this many templates at once
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        /// One JSON event per line on stdout (with --plan: one plan per line)
        #[arg(long)]
        json: bool,
        /// Print each template's plan (stages, keys, tests, artifacts, targets) and run nothing
        #[arg(long)]
        plan: bool,
        /// Look stages up in this registry repository (repeatable, in order;
        /// else KILN_CACHE_FROM, else the template's [cache] from)
        #[arg(long, value_name = "REPO", value_parser = parse_cache_repository)]
        cache_from: Vec<kiln::reference::RemoteRef>,
        /// Push the stages that ran to this registry repository (else
        /// KILN_CACHE_TO, else the template's [cache] to)
        #[arg(long, value_name = "REPO", value_parser = parse_cache_repository)]
        cache_to: Option<kiln::reference::RemoteRef>,
        #[command(flatten)]
        remote_args: RemoteArgs,
    },
    /// Check templates without building
    Validate {
        /// Template files (TOML)
        #[arg(required = true, value_name = "TEMPLATE")]
        templates: Vec<PathBuf>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Show a template after variables and references are resolved, and its plan
    Inspect {
        /// A template file (TOML)
        template: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
        /// Print one JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Rewrite templates in the canonical layout, keeping comments
    Fmt {
        /// Change nothing; exit 1 and name the files that would change
        #[arg(long)]
        check: bool,
        /// Template files (TOML)
        #[arg(required = true, value_name = "TEMPLATE")]
        templates: Vec<PathBuf>,
    },
    /// List stored images (versions, digests, sizes, channels), or a registry repository's tags
    Images {
        /// An image name, or HOST[:PORT]/REPOSITORY
        name: Option<String>,
        #[command(flatten)]
        remote_args: RemoteArgs,
    },
    /// Write a stored image in another form
    Export {
        /// A stored image: NAME:VERSION or NAME@sha256:…
        #[arg(value_name = "REF")]
        reference: String,
        /// What to write
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// For a disk: how it boots (the image's newest kernel and initrd)
        #[arg(long, value_enum, default_value_t)]
        boot: ExportBoot,
        /// Where to write it (it must not exist)
        #[arg(short, long = "output", value_name = "PATH")]
        output: PathBuf,
    },
    /// Push a stored image to a registry
    Push {
        /// A stored image: NAME:VERSION or NAME@sha256:…
        #[arg(value_name = "REF")]
        reference: String,
        /// HOST[:PORT]/REPOSITORY[:TAG]; the tag defaults to the image's version
        remote: String,
        /// One JSON event per line on stdout
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote_args: RemoteArgs,
    },
    /// Pull an image from a registry into the store
    Pull {
        /// HOST[:PORT]/REPOSITORY:TAG or HOST[:PORT]/REPOSITORY@sha256:…
        #[arg(value_name = "REMOTE_REF")]
        reference: String,
        /// Store it under this NAME:VERSION
        #[arg(long = "as", value_name = "NAME:VERSION")]
        store_as: Option<String>,
        /// Refuse it unless the registry holds its signature by this
        /// public key, and every attestation verifies
        #[arg(long, value_name = "PUB")]
        key: Option<PathBuf>,
        /// One JSON event per line on stdout
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote_args: RemoteArgs,
    },
    /// Publish a stored image to a cloud
    #[command(subcommand)]
    Publish(PublishCommand),
    /// Move, roll back and show channels
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Store credentials for a registry
    Login {
        /// HOST[:PORT] of the registry
        registry: String,
        /// The user name (else KILN_REGISTRY_USER, else asked)
        #[arg(long, short)]
        username: Option<String>,
        /// Read the password from stdin (else KILN_REGISTRY_PASSWORD, else asked)
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        remote_args: RemoteArgs,
    },
    /// List or prune the stage cache
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Check a stored image's blobs, or a deployed tree against the image
    ///
    /// Without --root, every blob of the image is read and hashed again.
    /// With --root, the tree is compared with the image's file index:
    /// added, removed and changed paths are listed, and the exit code is 1
    /// when anything drifted. Contents of pseudo and in-memory filesystems
    /// mounted in the tree (/proc, /sys, /dev, /run) are not compared.
    Verify {
        /// A stored image: NAME:VERSION or NAME@sha256:…
        #[arg(value_name = "REF")]
        reference: String,
        /// A deployed root to compare with the image
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Paths of the root not to compare (a shell glob; `**` spans folders)
        #[arg(long, value_name = "GLOB", requires = "root")]
        ignore: Vec<String>,
        /// Check the image's signature and attestations with this public
        /// key instead (REF may then be a registry ref)
        #[arg(long, value_name = "PUB", conflicts_with = "root")]
        key: Option<PathBuf>,
        /// Print one JSON document on stdout
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote_args: RemoteArgs,
    },
    /// Show what changed from image A to image B (A's parent to A without B)
    Diff {
        /// The first image (NAME:VERSION or NAME@sha256:…)
        a: String,
        /// The second image; without it, A's parent is compared with A
        b: Option<String>,
        /// Print one JSON document on stdout
        #[arg(long)]
        json: bool,
    },
    /// Print the software bill of materials of a stored image
    Sbom {
        /// A stored image: NAME:VERSION or NAME@sha256:…
        #[arg(value_name = "REF")]
        reference: String,
        /// The document's format
        #[arg(long, value_enum, default_value_t)]
        format: SbomFormatArg,
        /// Write it to this file instead of stdout
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the provenance of a stored image (in-toto Statement, SLSA v1)
    Provenance {
        /// A stored image: NAME:VERSION or NAME@sha256:…
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Make an ECDSA P-256 key pair for signing (KEY, and KEY with .pub)
    Keygen {
        /// Where to write the private key (PKCS#8 PEM, mode 0600)
        #[arg(short, long = "output", value_name = "KEY")]
        output: PathBuf,
    },
    /// Sign a stored image and attest its provenance and SBOMs
    Sign {
        /// A stored image: NAME:VERSION or NAME@sha256:…
        #[arg(value_name = "REF")]
        reference: String,
        /// The private key (PKCS#8 PEM, as `kiln keygen` writes it)
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
    /// Print a shell completion script
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum PublishCommand {
    /// Make an AMI of the image: its bootable disk into an EBS snapshot
    /// (EBS direct API, no instance), registered, copied to every region
    Ami(Box<publish::AmiArgs>),
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Point a channel at a version
    Set {
        /// The image name
        name: String,
        /// The channel (stable, dev, …)
        channel: String,
        /// A stored version of the image
        #[arg(value_name = "VERSION")]
        to_version: String,
        #[command(flatten)]
        remotes: ChannelRemotes,
    },
    /// Point a channel back at the version below the current one on its stack of moves
    Rollback {
        /// The image name
        name: String,
        /// The channel (stable, dev, …)
        channel: String,
        #[command(flatten)]
        remotes: ChannelRemotes,
    },
    /// Show the versions a channel pointed at
    History {
        /// The image name
        name: String,
        /// The channel (stable, dev, …)
        channel: String,
    },
}

/// Where a channel's tag moves too, beside the local channel.
#[derive(Debug, Args)]
pub struct ChannelRemotes {
    /// Move the channel tag in this registry repository too (repeatable;
    /// the repositories builds published the image to always move)
    #[arg(long = "remote", value_name = "REPO", value_parser = parse_cache_repository)]
    pub remotes: Vec<kiln::reference::RemoteRef>,
    #[command(flatten)]
    pub remote_args: RemoteArgs,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cache entries: key, stage, size, last used
    Ls,
    /// Check every cached tree against its layer's file index; drop those that differ (exit 1)
    Verify,
    /// Remove cache entries (one of --all, --keep-bytes, --older-than)
    Prune {
        /// Remove every entry
        #[arg(long, conflicts_with_all = ["keep_bytes", "older_than"])]
        all: bool,
        /// Remove the least recently used entries until the cache holds at most this much (e.g. 10G)
        #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "older_than")]
        keep_bytes: Option<u64>,
        /// Remove entries not used for this long (e.g. 7d, 12h); with
        /// --remote, entries pushed this long ago
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Prune this shared cache repository instead of the local cache
        /// (with --all or --older-than)
        #[arg(long, value_name = "REPO", value_parser = parse_cache_repository, conflicts_with = "keep_bytes")]
        remote: Option<kiln::reference::RemoteRef>,
        #[command(flatten)]
        remote_args: RemoteArgs,
    },
}

/// The SBOM formats.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum SbomFormatArg {
    /// CycloneDX 1.6 JSON
    #[default]
    Cyclonedx,
    /// SPDX 2.3 JSON
    Spdx,
}

impl From<SbomFormatArg> for kiln::sbom::SbomFormat {
    fn from(format: SbomFormatArg) -> Self {
        match format {
            SbomFormatArg::Cyclonedx => kiln::sbom::SbomFormat::Cyclonedx,
            SbomFormatArg::Spdx => kiln::sbom::SbomFormat::Spdx,
        }
    }
}

/// A size, where 0 means "keep nothing".
fn parse_size(text: &str) -> Result<u64, String> {
    if text == "0" {
        return Ok(0);
    }
    text.parse::<kiln::template::units::ByteSize>()
        .map(|size| size.bytes())
}

/// A registry repository (a shared cache's, a channel's): `HOST[:PORT]/REPOSITORY`, no tag.
pub fn parse_cache_repository(text: &str) -> Result<kiln::reference::RemoteRef, String> {
    let repository: kiln::reference::RemoteRef = text.parse()?;
    if repository.target.is_some() {
        return Err(
            "expected a repository, HOST[:PORT]/REPOSITORY, with no tag or digest".to_owned(),
        );
    }
    Ok(repository)
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<kiln::template::units::Duration>()
        .map(|duration| duration.as_std())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    run(cli.command).into()
}

fn run(command: Command) -> Exit {
    match command {
        Command::Validate { templates, vars } => validate::run(&templates, &vars.inputs()),
        Command::Inspect {
            template,
            vars,
            json,
        } => inspect::run(&template, &vars.inputs(), json),
        Command::Fmt { check, templates } => fmt::run(&templates, check),
        Command::Completions { shell } => completions::run(shell),
        Command::Build {
            templates,
            vars,
            no_cache,
            on_error,
            output,
            no_publish,
            jobs,
            json,
            plan,
            cache_from,
            cache_to,
            remote_args,
        } => build::run(build::BuildArgs {
            cache_from,
            cache_to,
            templates,
            inputs: vars.inputs(),
            on_error: match on_error {
                OnError::Cleanup => kiln::pipeline::OnError::Cleanup,
                OnError::Abort => kiln::pipeline::OnError::Abort,
            },
            jobs,
            json,
            no_publish,
            no_cache,
            remote: remote_args.options(),
            output,
            plan_only: plan,
        }),
        Command::Images { name, remote_args } => {
            images::run(name.as_deref(), &remote_args.options())
        }
        Command::Export {
            reference,
            format,
            boot,
            output,
        } => export::run(&reference, format, boot, &output),
        Command::Push {
            reference,
            remote,
            json,
            remote_args,
        } => push::run(&reference, &remote, &remote_args.options(), json),
        Command::Pull {
            reference,
            store_as,
            key,
            json,
            remote_args,
        } => pull::run(
            &reference,
            store_as.as_deref(),
            key.as_deref(),
            &remote_args.options(),
            json,
        ),
        Command::Channel(command) => channel::run(command),
        Command::Login {
            registry,
            username,
            password_stdin,
            remote_args,
        } => login::run(
            &registry,
            username.as_deref(),
            password_stdin,
            &remote_args.options(),
        ),
        Command::Cache(command) => cache::run(command),
        Command::Verify {
            reference,
            key: Some(key),
            json,
            remote_args,
            ..
        } => verify::signature(&reference, &key, &remote_args.options(), json),
        Command::Verify {
            reference,
            root,
            ignore,
            json,
            key: None,
            ..
        } => verify::run(&reference, root.as_deref(), &ignore, json),
        Command::Keygen { output } => sign::keygen(&output),
        Command::Sign { reference, key } => sign::sign(&reference, &key),
        Command::Diff { a, b, json } => diff::run(&a, b.as_deref(), json),
        Command::Sbom {
            reference,
            format,
            output,
        } => sbom::run(&reference, format.into(), output.as_deref()),
        Command::Provenance { reference } => sbom::provenance(&reference),
        Command::Publish(PublishCommand::Ami(args)) => publish::ami(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
