//! The EFI system partition: FAT32 made by `mkfs.fat` at the partition's
//! offset in the disk file, filled by mtools, holding systemd-boot as the
//! removable-media loader (`\EFI\BOOT\BOOTX64.EFI`), one loader entry, and
//! the image's kernel and initrd. `--invariant`, a volume id from the image
//! digest and `SOURCE_DATE_EPOCH` for every time make its bytes repeat.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::disk::boot_files::BootFiles;
use crate::disk::error::DiskError;
use crate::disk::settings::MIB;
use crate::disk::tool;
use crate::io_error::IoError;

/// systemd-boot, from the host's `systemd-boot-efi`.
pub(super) const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// FAT cannot say a time before 1980.
const FAT_EPOCH_MIN: u64 = 315_532_800;
/// Nor after 2107.
const FAT_EPOCH_MAX: u64 = 4_354_819_199;

/// Room for the loader, the kernel and initrd, and as much again (a
/// second kernel), at least 64 MiB (FAT32's smallest comfortable size).
pub(super) fn size_for(files: &BootFiles) -> std::io::Result<u64> {
    let kernel = std::fs::metadata(&files.kernel.on_host)?.len();
    let initrd = std::fs::metadata(&files.initrd.on_host)?.len();
    let wanted = (kernel + initrd) * 2 + 16 * MIB;
    Ok(wanted.max(64 * MIB).div_ceil(MIB) * MIB)
}

pub(super) fn write(
    disk: &Path,
    start: u64,
    size: u64,
    files: &BootFiles,
    cmdline: &str,
    volume_id: &[u8],
    epoch: u64,
) -> Result<(), DiskError> {
    let loader = Path::new(SYSTEMD_BOOT);
    if !loader.is_file() {
        return Err(DiskError::HostFile {
            path: loader.to_owned(),
            package: "systemd-boot-efi",
        });
    }
    let volume_id: String = volume_id.iter().map(|byte| format!("{byte:02x}")).collect();
    // One sector per cluster: FAT32 wants 65,525 clusters at least, which
    // an ESP of this size only has with clusters that small.
    tool::run(
        Command::new("mkfs.fat")
            .args([
                "--invariant",
                "-F",
                "32",
                "-s",
                "1",
                "-n",
                "ESP",
                "-i",
                &volume_id,
            ])
            .arg(format!("--offset={}", start / 512))
            .arg(disk)
            .arg((size / 1024).to_string()),
        "dosfstools",
    )?;
    let staging = tempfile::Builder::new()
        .prefix(".kiln-esp-")
        .tempdir_in(crate::artifact::folder_of(disk))
        .map_err(IoError::at("create a folder beside", disk))?;
    let write = |name: &str, text: String| -> Result<PathBuf, DiskError> {
        let path = staging.path().join(name);
        std::fs::write(&path, text).map_err(IoError::at("write", &path))?;
        Ok(path)
    };
    let loader_conf = write("loader.conf", "timeout 0\ndefault kiln.conf\n".to_owned())?;
    let entry = write(
        "kiln.conf",
        format!(
            "title kiln image\nlinux /kiln/vmlinuz\ninitrd /kiln/initrd.img\noptions {cmdline}\n"
        ),
    )?;
    let image = format!("{}@@{start}", disk.display());
    let fat_epoch = epoch.clamp(FAT_EPOCH_MIN, FAT_EPOCH_MAX).to_string();
    let mtools = |program: &str| {
        let mut command = Command::new(program);
        command
            .env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", &fat_epoch)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&image);
        command
    };
    tool::run(
        mtools("mmd").args([
            "::EFI",
            "::EFI/BOOT",
            "::loader",
            "::loader/entries",
            "::kiln",
        ]),
        "mtools",
    )?;
    let copies: [(&Path, &str); 5] = [
        (loader, "::EFI/BOOT/BOOTX64.EFI"),
        (&loader_conf, "::loader/loader.conf"),
        (&entry, "::loader/entries/kiln.conf"),
        (&files.kernel.on_host, "::kiln/vmlinuz"),
        (&files.initrd.on_host, "::kiln/initrd.img"),
    ];
    for (from, to) in copies {
        tool::run(mtools("mcopy").arg(from).arg(to), "mtools")?;
    }
    Ok(())
}
