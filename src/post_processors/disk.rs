//! `disk`: the flattened root as an ext4 filesystem in a raw or qcow2 VM disk.

use serde::{Deserialize, Serialize};

use crate::template::check::Checker;
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;
use crate::template::units::ByteSize;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    format: Option<DiskFormat>,
    size: Option<String>,
    fs: Option<Filesystem>,
    label: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskSettings {
    pub format: DiskFormat,
    /// `None`: the smallest size that fits, plus headroom.
    pub size: Option<ByteSize>,
    pub fs: Filesystem,
    pub label: Option<String>,
}

impl DiskSettings {
    pub fn summary(&self) -> String {
        let format = match self.format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        };
        match self.size {
            Some(size) => format!("{format} ext4, {size}"),
            None => format!("{format} ext4, fitted"),
        }
    }
}

/// ext4 labels are at most 16 bytes.
const MAX_LABEL_BYTES: usize = 16;

pub(crate) fn check(cx: &mut Checker<'_>, at: &KeyPath) -> Option<DiskSettings> {
    let raw: RawDisk = cx.shape(at, true)?;
    let size = cx.optional_parsed(&at.key("size"), raw.size.as_deref(), "size");
    let label = match cx.optional_text(&at.key("label"), raw.label.as_deref()) {
        Some(Some(label)) if label.len() > MAX_LABEL_BYTES || label.is_empty() => {
            cx.report(
                &at.key("label"),
                DiagnosticKind::InvalidValue {
                    what: "label",
                    value: label,
                    reason: format!("an ext4 label is 1 to {MAX_LABEL_BYTES} bytes"),
                },
            );
            None
        }
        other => other,
    };
    Some(DiskSettings {
        format: raw.format.unwrap_or(DiskFormat::Raw),
        size: size?,
        fs: raw.fs.unwrap_or(Filesystem::Ext4),
        label: label?,
    })
}

/// A UUID from the image digest (and a purpose), so the same image gets the
/// same filesystem identity every time.
fn uuid_from(digest: &crate::reference::Digest, purpose: &str) -> String {
    let hex = crate::reference::Digest::of(format!("{digest}/{purpose}").as_bytes())
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
fn fitted_size(root: &std::path::Path) -> std::io::Result<u64> {
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

fn run_tool(command: &mut std::process::Command) -> Result<String, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|error| {
        format!("cannot run {program}: {error} (apt-get install e2fsprogs qemu-utils)")
    })?;
    if !output.status.success() {
        return Err(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes `NAME-VERSION.raw` or `.qcow2`: an ext4 filesystem holding the
/// flattened root, with owners, modes, links, devices and xattrs. The same
/// image gives the same bytes: the UUID and hash seed come from the image
/// digest, and every inode time is set to the epoch after `mke2fs -d`
/// (which copies host ctimes and stamps creation times).
pub(crate) fn run(
    cx: &mut super::run::PostContext<'_>,
    settings: &DiskSettings,
) -> Result<(), String> {
    let root = cx.flattened_root()?;
    let extension = match settings.format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    };
    let path = cx.inputs.output.join(format!("{}.{extension}", cx.stem()));
    let artifact = write_disk(
        &root,
        &cx.inputs.entry.manifest.digest,
        cx.inputs.entry.name.as_str(),
        settings,
        cx.inputs.epoch,
        &path,
    )?;
    cx.add(artifact);
    Ok(())
}

/// Writes the disk of the flattened `root` of the image `digest` at
/// `path`, through temp files beside it. `kiln export` calls this too.
pub fn write_disk(
    root: &std::path::Path,
    digest: &crate::reference::Digest,
    image_name: &str,
    settings: &DiskSettings,
    epoch: u64,
    path: &std::path::Path,
) -> Result<super::run::Artifact, String> {
    use std::process::Command;

    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    let size = match settings.size {
        Some(size) => size.bytes(),
        None => fitted_size(root).map_err(|error| format!("cannot measure the root: {error}"))?,
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
    std::fs::create_dir_all(&dir)
        .map_err(|error| format!("cannot make {}: {error}", dir.display()))?;
    let temp = |suffix: &str| {
        tempfile::Builder::new()
            .prefix(".kiln-")
            .suffix(suffix)
            .tempfile_in(&dir)
            .map_err(|error| format!("cannot make a file in {}: {error}", dir.display()))
    };
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
    )?;
    // Every allocated inode's times to the epoch: inodes 2 (root) and 11
    // (lost+found) onwards, which `mke2fs -d` hands out in order.
    let header = run_tool(
        Command::new("dumpe2fs")
            .arg("-h")
            .arg(raw.path())
            .env("E2FSPROGS_FAKE_TIME", &fake_time),
    )?;
    let field = |name: &str| {
        header
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("dumpe2fs did not say `{name}`"))
    };
    let used = field("Inode count:")? - field("Free inodes:")?;
    let mut commands = String::new();
    for inode in std::iter::once(2).chain(11..=used + 1) {
        for time in ["atime", "ctime", "crtime"] {
            commands.push_str(&format!("sif <{inode}> {time} {epoch_text}\n"));
        }
    }
    let script = temp(".debugfs")?;
    std::fs::write(script.path(), commands)
        .map_err(|error| format!("cannot write the debugfs script: {error}"))?;
    run_tool(
        Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", &fake_time)
            .arg("-w")
            .arg("-f")
            .arg(script.path())
            .arg(raw.path()),
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
            )?;
            qcow2
        }
    };
    let (sha256, size) = crate::hashing::digest_file(file.path())
        .map_err(|error| format!("cannot hash the disk: {error}"))?;
    file.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|error| format!("cannot set the disk's mode: {error}"))?;
    file.persist(path)
        .map_err(|error| format!("cannot store {}: {}", path.display(), error.error))?;
    Ok(super::run::Artifact {
        path: path.to_owned(),
        size,
        sha256,
    })
}
