//! Writing a VM disk of a flattened image root, without loop devices or
//! mounts, with every byte derived from the image. With `boot = "none"` it
//! is a bare ext4 filesystem; otherwise a GPT disk (a BIOS boot partition,
//! an EFI system partition, the root last) with GRUB in the MBR for BIOS
//! and systemd-boot on the ESP for UEFI, booting the image's own kernel.
//! The `disk` post-processor, `kiln export` and VM tests all write disks
//! here.

mod boot_files;
mod error;
mod esp;
mod ext4;
mod format;
pub mod gpt;
mod grub;
mod settings;
mod tool;

use std::fs::File;

use std::path::Path;

use crate::artifact::{Artifact, temp_beside};
use crate::io_error::IoError;
use crate::template::units::ByteSize;

pub use boot_files::BootFiles;
pub use error::DiskError;
use gpt::{Partition, SECTOR, types};
use settings::MIB;
pub use settings::{BootMode, DiskFormat, DiskImage, DiskSettings, Filesystem};

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
