//! Writing a VM disk of a flattened image root: an ext4 filesystem made
//! without loop devices or mounts (`mke2fs -d`), with every byte derived
//! from the image, in a raw or qcow2 file. The `disk` post-processor and
//! `kiln export` both write disks here.

use std::io;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, ArtifactError, temp_beside};
use crate::io_error::IoError;
use crate::reference::Digest;
use crate::template::units::ByteSize;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("failed to run {program} (apt-get install {package})")]
    ToolMissing {
        program: String,
        package: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed: {stderr}")]
    ToolFailed { program: String, stderr: String },
    #[error("dumpe2fs did not say `{0}`")]
    Dumpe2fs(&'static str),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskSettings {
    pub format: DiskFormat,
    /// `None`: the smallest size that fits, plus headroom.
    pub size: Option<ByteSize>,
    pub fs: Filesystem,
    pub label: Option<String>,
}

impl DiskFormat {
    /// The file name extension of a disk in this format.
    pub fn extension(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

impl DiskSettings {
    pub fn summary(&self) -> String {
        let format = self.format.extension();
        match self.size {
            Some(size) => format!("{format} ext4, {size}"),
            None => format!("{format} ext4, fitted"),
        }
    }
}

/// A UUID from the image digest (and a purpose), so the same image gets the
/// same filesystem identity every time.
fn uuid_from(digest: &Digest, purpose: &str) -> String {
    let hex = Digest::of(format!("{digest}/{purpose}").as_bytes())
        .hex()
        .to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The smallest size that fits the tree, with headroom for metadata and a
/// little room to spare, rounded up to a MiB.
fn fitted_size(root: &Path) -> io::Result<u64> {
    let mut blocks: u64 = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            blocks += 1 + metadata.len().div_ceil(4096);
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    let bytes = blocks * 4096 * 5 / 4 + (64 << 20);
    Ok(bytes.div_ceil(1 << 20) << 20)
}

fn run_tool(command: &mut Command, package: &'static str) -> Result<String, DiskError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|source| DiskError::ToolMissing {
        program: program.clone(),
        package,
        source,
    })?;
    if !output.status.success() {
        return Err(DiskError::ToolFailed {
            program,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes the disk of the flattened `root` of the image `digest` at
/// `path`, through temp files beside it. The same image gives the same
/// bytes: the UUID and hash seed come from the image digest, and every
/// inode time is set to the epoch after `mke2fs -d` (which copies host
/// ctimes and stamps creation times).
pub fn write_disk(
    root: &Path,
    digest: &Digest,
    image_name: &str,
    settings: &DiskSettings,
    epoch: u64,
    path: &Path,
) -> Result<Artifact, DiskError> {
    let size = match settings.size {
        Some(size) => size.bytes(),
        None => fitted_size(root).map_err(IoError::at("measure", root))?,
    };
    let label = settings.label.clone().unwrap_or_else(|| {
        image_name
            .rsplit('/')
            .next()
            .unwrap_or("kiln")
            .chars()
            .take(16)
            .collect()
    });
    let temp =
        |suffix: &str| temp_beside(path, suffix).map_err(IoError::at("create a file beside", path));
    let raw = temp(".raw")?;
    let epoch_text = epoch.to_string();
    // e2fsprogs reads a fake time of 0 as "unset" and stamps the real clock
    // into the superblock; 1970-01-01T00:00:01 stands in for the epoch 0.
    let fake_time = epoch.max(1).to_string();
    run_tool(
        Command::new("mke2fs")
            .env("E2FSPROGS_FAKE_TIME", &fake_time)
            .args([
                "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L", &label,
            ])
            .args(["-U", &uuid_from(digest, "filesystem")])
            .arg("-E")
            .arg(format!(
                "hash_seed={},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
                uuid_from(digest, "hash")
            ))
            .arg("-d")
            .arg(root)
            .arg(raw.path())
            .arg(format!("{}k", size / 1024)),
        "e2fsprogs",
    )?;
    // Every allocated inode's times to the epoch: inodes 2 (root) and 11
    // (lost+found) onwards, which `mke2fs -d` hands out in order.
    let header = run_tool(
        Command::new("dumpe2fs")
            .arg("-h")
            .arg(raw.path())
            .env("E2FSPROGS_FAKE_TIME", &fake_time),
        "e2fsprogs",
    )?;
    let field = |name: &'static str| {
        header
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or(DiskError::Dumpe2fs(name))
    };
    let used = field("Inode count:")? - field("Free inodes:")?;
    let mut commands = String::new();
    for inode in std::iter::once(2).chain(11..=used + 1) {
        for time in ["atime", "ctime", "crtime"] {
            commands.push_str(&format!("sif <{inode}> {time} {epoch_text}\n"));
        }
    }
    let script = temp(".debugfs")?;
    std::fs::write(script.path(), commands).map_err(IoError::at("write", script.path()))?;
    run_tool(
        Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", &fake_time)
            .arg("-w")
            .arg("-f")
            .arg(script.path())
            .arg(raw.path()),
        "e2fsprogs",
    )?;
    let file = match settings.format {
        DiskFormat::Raw => raw,
        DiskFormat::Qcow2 => {
            let qcow2 = temp(".qcow2")?;
            run_tool(
                Command::new("qemu-img")
                    // One coroutine: clusters are written in order, so the bytes repeat.
                    .args(["convert", "-m", "1", "-f", "raw", "-O", "qcow2"])
                    .arg(raw.path())
                    .arg(qcow2.path()),
                "qemu-utils",
            )?;
            qcow2
        }
    };
    Ok(crate::artifact::persist(file, path)?)
}
