//! Writing a VM disk of a flattened image root, without loop devices or
//! mounts, with every byte derived from the image. With `boot = "none"` it
//! is a bare ext4 filesystem; otherwise a GPT disk (a BIOS boot partition,
//! an EFI system partition, the root last) with GRUB in the MBR for BIOS
//! and systemd-boot on the ESP for UEFI, booting the image's own kernel.
//! The `disk` post-processor, `kiln export` and VM tests all write disks
//! here.

mod boot_files;
mod esp;
mod ext4;
mod format;
pub mod gpt;
mod grub;
mod tool;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, ArtifactError, temp_beside};
use crate::io_error::IoError;
use crate::reference::Digest;
use crate::template::units::ByteSize;

pub use boot_files::BootFiles;
use gpt::{Guid, Partition, SECTOR, types};

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
    #[error("find a {what} in the image: {hint}")]
    NoBootFile { what: &'static str, hint: String },
    #[error("boot a {architecture} image: bootable disks are made for amd64 only")]
    Architecture { architecture: String },
    #[error("find {path} on the host (apt-get install {package})")]
    HostFile {
        path: PathBuf,
        package: &'static str,
    },
    #[error(
        "fit the image in a disk of {size}: the root needs about {needed} MiB more \
         (raise `size`, or leave it out to fit)"
    )]
    TooSmall { size: ByteSize, needed: u64 },
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
    /// streamOptimized, as VMware and OVA import.
    Vmdk,
    /// Fixed, its size a whole number of MiB, as Azure imports.
    Vhd,
    /// `disk.raw` in a gzip'd tar, as Google Compute Engine imports.
    Gce,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
}

/// How the disk boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// A bare filesystem, no partition table.
    #[default]
    None,
    Uefi,
    Bios,
    /// Both: BIOS through GRUB, UEFI through systemd-boot, on one disk.
    Hybrid,
}

impl BootMode {
    pub fn bios(self) -> bool {
        matches!(self, BootMode::Bios | BootMode::Hybrid)
    }

    pub fn uefi(self) -> bool {
        matches!(self, BootMode::Uefi | BootMode::Hybrid)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::None => "none",
            BootMode::Uefi => "uefi",
            BootMode::Bios => "bios",
            BootMode::Hybrid => "hybrid",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskSettings {
    pub format: DiskFormat,
    /// The whole disk. `None`: the smallest size that fits, plus headroom.
    pub size: Option<ByteSize>,
    pub fs: Filesystem,
    pub label: Option<String>,
    pub boot: BootMode,
    /// Appended to kiln's `root=` and console settings.
    pub cmdline: Option<String>,
    /// Paths in the image; `None`: the newest `/boot/vmlinuz-*` and its
    /// `/boot/initrd.img-*`.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
}

impl DiskSettings {
    /// A disk of `format` that fits, booting as `boot`, with defaults for
    /// the rest: what `kiln export` writes.
    pub fn fitted(format: DiskFormat, boot: BootMode) -> Self {
        DiskSettings {
            format,
            size: None,
            fs: Filesystem::Ext4,
            label: None,
            boot,
            cmdline: None,
            kernel: None,
            initrd: None,
        }
    }

    pub fn summary(&self) -> String {
        let format = self.format.extension();
        let size = match self.size {
            Some(size) => size.to_string(),
            None => "fitted".to_owned(),
        };
        match self.boot {
            BootMode::None => format!("{format} ext4, {size}"),
            boot => format!("{format}, {} boot, ext4 root, {size}", boot.as_str()),
        }
    }
}

impl DiskFormat {
    /// The file name extension of a disk in this format.
    pub fn extension(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Gce => "gce.tar.gz",
        }
    }
}

/// The image a disk is made of.
pub struct DiskImage<'a> {
    pub digest: &'a Digest,
    pub name: &'a str,
    pub architecture: &'a str,
    /// Every time in the disk: `SOURCE_DATE_EPOCH`, or 0.
    pub epoch: u64,
}

impl DiskImage<'_> {
    /// 16 bytes from the image digest (and a purpose), so the same image
    /// gets the same identities every time.
    fn derived(&self, purpose: &str) -> [u8; 16] {
        let digest = Digest::of(format!("{}/{purpose}", self.digest).as_bytes());
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digest.hex()[index * 2..index * 2 + 2], 16)
                .expect("a digest is hex");
        }
        bytes
    }

    /// A version-4-shaped UUID derived from the image digest.
    fn guid(&self, purpose: &str) -> Guid {
        let mut bytes = self.derived(purpose);
        bytes[6] = (bytes[6] & 0x0F) | 0x40;
        bytes[8] = (bytes[8] & 0x3F) | 0x80;
        Guid(bytes)
    }
}

const MIB: u64 = 1 << 20;

/// Where each partition of a bootable disk goes, in bytes.
#[derive(Clone, Debug)]
struct Layout {
    disk_size: u64,
    bios_boot: Option<(u64, u64)>,
    esp: Option<(u64, u64)>,
    root: (u64, u64),
}

impl Layout {
    fn plan(boot: BootMode, esp_size: u64, root_size: Option<u64>, disk_size: Option<u64>) -> Self {
        let mut next = MIB;
        let mut take = |size: u64| {
            let at = next;
            next += size;
            (at, size)
        };
        let bios_boot = boot.bios().then(|| take(MIB));
        let esp = boot.uefi().then(|| take(esp_size));
        let root_start = next;
        // One MiB at the end: the backup table, and alignment.
        let disk_size = match (disk_size, root_size) {
            (Some(size), _) => size,
            (None, Some(root)) => root_start + root + MIB,
            (None, None) => root_start + MIB,
        };
        let root_size = disk_size.saturating_sub(root_start + MIB) / 4096 * 4096;
        Layout {
            disk_size,
            bios_boot,
            esp,
            root: (root_start, root_size),
        }
    }
}

/// What a bootable disk takes from the host, beside the image: the sha256
/// of systemd-boot and of GRUB's boot sector and kernel, so a changed
/// bootloader writes the disk again.
pub fn bootloader_versions() -> Vec<String> {
    [
        esp::SYSTEMD_BOOT.to_owned(),
        format!("{}/boot.img", grub::GRUB_DIR),
        format!("{}/kernel.img", grub::GRUB_DIR),
    ]
    .into_iter()
    .map(|path| match crate::hashing::digest_file(Path::new(&path)) {
        Ok((digest, _)) => format!("{path} {digest}"),
        Err(_) => format!("{path} absent"),
    })
    .collect()
}

/// Writes the disk of the flattened `root` of `image` at `path`, through
/// temp files beside it. The same image gives the same bytes in every
/// format.
pub fn write_disk(
    root: &Path,
    image: &DiskImage<'_>,
    settings: &DiskSettings,
    path: &Path,
) -> Result<Artifact, DiskError> {
    let raw = temp_beside(path, ".raw").map_err(IoError::at("create a file beside", path))?;
    write_raw(root, image, settings, raw.path())?;
    let file = format::convert(raw, image, settings.format, path)?;
    Ok(crate::artifact::persist(file, path)?)
}

/// Writes the raw disk at `raw` (an existing, empty file).
pub fn write_raw(
    root: &Path,
    image: &DiskImage<'_>,
    settings: &DiskSettings,
    raw: &Path,
) -> Result<(), DiskError> {
    let label = settings.label.clone().unwrap_or_else(|| {
        image
            .name
            .rsplit('/')
            .next()
            .unwrap_or("kiln")
            .chars()
            .take(16)
            .collect()
    });
    let filesystem = ext4::Ext4 {
        label: &label,
        uuid: image.guid("filesystem").to_string(),
        hash_seed: image.guid("hash").to_string(),
        epoch: image.epoch,
    };
    let requested = settings.size.map(|size| size.bytes());
    // Compute Engine imports whole GiB only: a fitted gce disk grows to one.
    let whole_gib = |size: u64| match settings.format {
        DiskFormat::Gce => size.div_ceil(1 << 30) << 30,
        _ => size,
    };
    if settings.boot == BootMode::None {
        let size = match requested {
            Some(size) => size,
            None => whole_gib(ext4::fitted_size(root).map_err(IoError::at("measure", root))?),
        };
        return filesystem.make(root, raw, 0, size);
    }
    let root_partition_type = match image.architecture {
        "amd64" => types::ROOT_X86_64,
        architecture => {
            return Err(DiskError::Architecture {
                architecture: architecture.to_owned(),
            });
        }
    };
    let boot_files = BootFiles::find(root, settings)?;
    let root_guid = image.guid("partition/root");
    let mut cmdline = format!("root=PARTUUID={root_guid} rw console=tty0 console=ttyS0,115200n8");
    if let Some(extra) = settings
        .cmdline
        .as_deref()
        .filter(|extra| !extra.is_empty())
    {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let esp_size = esp::size_for(&boot_files).map_err(IoError::at("measure", root))?;
    let fitted_root = ext4::fitted_size(root).map_err(IoError::at("measure", root))?;
    let fitted = Layout::plan(settings.boot, esp_size, Some(fitted_root), None).disk_size;
    let layout = Layout::plan(
        settings.boot,
        esp_size,
        Some(fitted_root),
        Some(requested.map_or_else(|| whole_gib(fitted), |size| size.div_ceil(MIB) * MIB)),
    );
    if layout.root.1 < fitted_root * 3 / 4 {
        return Err(DiskError::TooSmall {
            size: settings
                .size
                .unwrap_or(ByteSize::from_bytes(layout.disk_size)),
            needed: (fitted_root * 3 / 4 - layout.root.1).div_ceil(MIB),
        });
    }
    let file = File::options()
        .write(true)
        .open(raw)
        .map_err(IoError::at("open", raw))?;
    file.set_len(layout.disk_size)
        .map_err(IoError::at("size", raw))?;
    let sectors = layout.disk_size / SECTOR;
    let mut partitions = Vec::new();
    let mut partition =
        |(start, size): (u64, u64), type_guid: &str, purpose: &str, name, attributes| {
            partitions.push(Partition {
                first_lba: start / SECTOR,
                last_lba: (start + size) / SECTOR - 1,
                type_guid: types::guid(type_guid),
                guid: image.guid(purpose),
                name,
                attributes,
            })
        };
    if let Some(place) = layout.bios_boot {
        partition(place, types::BIOS_BOOT, "partition/bios", "BIOS boot", 0);
    }
    if let Some(place) = layout.esp {
        partition(place, types::EFI_SYSTEM, "partition/esp", "ESP", 0);
    }
    // Bit 2, legacy BIOS bootable: some BIOSes look for it.
    let bootable = if settings.boot.bios() { 1 << 2 } else { 0 };
    partition(
        layout.root,
        root_partition_type,
        "partition/root",
        "root",
        bootable,
    );
    gpt::write(&file, sectors, image.guid("disk"), &partitions)
        .map_err(IoError::at("write the partition table of", raw))?;
    drop(file);
    filesystem.make(root, raw, layout.root.0, layout.root.1)?;
    if let Some((start, size)) = layout.esp {
        esp::write(
            raw,
            start,
            size,
            &boot_files,
            &cmdline,
            &image.derived("esp")[..4],
            image.epoch,
        )?;
    }
    if let Some((start, _)) = layout.bios_boot {
        grub::install(raw, start, &boot_files, &filesystem.uuid, &cmdline)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_layout_puts_the_root_last_and_leaves_the_backup_room() {
        let layout = Layout::plan(BootMode::Hybrid, 64 * MIB, None, Some(1024 * MIB));
        assert_eq!(layout.bios_boot, Some((MIB, MIB)));
        assert_eq!(layout.esp, Some((2 * MIB, 64 * MIB)));
        assert_eq!(layout.root, (66 * MIB, 1024 * MIB - 67 * MIB));
        let uefi = Layout::plan(BootMode::Uefi, 64 * MIB, Some(100 * MIB), None);
        assert_eq!(uefi.bios_boot, None);
        assert_eq!(uefi.root, (65 * MIB, 100 * MIB));
        assert_eq!(uefi.disk_size, 166 * MIB);
    }
}
