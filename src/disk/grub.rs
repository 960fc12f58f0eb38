//! BIOS boot through GRUB, installed without a device: `grub-mkimage`
//! makes a core image with its configuration built in (find the root
//! filesystem by UUID, load the kernel and initrd from its `/boot`, boot),
//! which goes into the BIOS boot partition; the first 440 bytes of
//! `boot.img` go into the MBR, patched with where the core image starts,
//! as `grub-bios-setup` would (offsets from GRUB's `boot.S` and
//! `diskboot.S`, as osbuild writes them).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::disk::boot_files::BootFiles;
use crate::disk::error::DiskError;
use crate::disk::settings::MIB;
use crate::disk::tool;
use crate::io_error::IoError;

pub(super) const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
/// In `boot.img`: the LBA of the core image's first sector.
const KERNEL_SECTOR_OFFSET: u64 = 0x5c;
/// In the core image's first sector (`diskboot.img`): the LBA of the rest,
/// in the last block-list entry (0x200 - 12).
const CORE_BLOCKLIST_OFFSET: u64 = 500;
const MODULES: &[&str] = &[
    "biosdisk", "part_gpt", "ext2", "search", "linux", "boot", "echo", "serial", "terminal",
];

pub(super) fn install(
    disk: &Path,
    partition_start: u64,
    files: &BootFiles,
    root_uuid: &str,
    cmdline: &str,
) -> Result<(), DiskError> {
    let boot_img = Path::new(GRUB_DIR).join("boot.img");
    if !boot_img.is_file() {
        return Err(DiskError::HostFile {
            path: boot_img,
            package: "grub-pc-bin",
        });
    }
    let work = tempfile::Builder::new()
        .prefix(".kiln-grub-")
        .tempdir_in(crate::artifact::folder_of(disk))
        .map_err(IoError::at("create a folder beside", disk))?;
    let config = work.path().join("grub.cfg");
    let words: Vec<String> = cmdline.split_whitespace().map(quote).collect();
    std::fs::write(
        &config,
        // GRUB speaks on the first serial port too, as cloud consoles read it.
        format!(
            "serial --unit=0 --speed=115200\n\
             terminal_output console serial\n\
             search --no-floppy --fs-uuid --set=root {root_uuid}\n\
             echo {loading}\n\
             linux {kernel} {cmdline}\n\
             initrd {initrd}\n\
             boot\n",
            loading = quote(&format!("kiln: loading {}", files.kernel.in_image)),
            kernel = quote(&files.kernel.in_image),
            initrd = quote(&files.initrd.in_image),
            cmdline = words.join(" "),
        ),
    )
    .map_err(IoError::at("write", &config))?;
    let core = work.path().join("core.img");
    tool::run(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-d", GRUB_DIR, "-p", "/boot/grub", "-c"])
            .arg(&config)
            .arg("-o")
            .arg(&core)
            .args(MODULES),
        "grub-pc-bin",
    )?;
    let core_bytes = std::fs::read(&core).map_err(IoError::at("read", &core))?;
    if core_bytes.len() as u64 > MIB {
        return Err(DiskError::ToolFailed {
            program: "grub-mkimage".to_owned(),
            stderr: format!(
                "its core image is {} bytes, more than the 1 MiB BIOS boot partition",
                core_bytes.len()
            ),
        });
    }
    let boot = std::fs::read(&boot_img).map_err(IoError::at("read", &boot_img))?;
    if boot.len() < 512 {
        return Err(DiskError::ToolFailed {
            program: "grub-mkimage".to_owned(),
            stderr: format!("{} is not a boot sector", boot_img.display()),
        });
    }
    let core_lba = partition_start / 512;
    let file = File::options()
        .write(true)
        .open(disk)
        .map_err(IoError::at("open", disk))?;
    let written = (|| {
        file.write_all_at(&core_bytes, partition_start)?;
        file.write_all_at(
            &(core_lba + 1).to_le_bytes(),
            partition_start + CORE_BLOCKLIST_OFFSET,
        )?;
        file.write_all_at(&boot[..440], 0)?;
        file.write_all_at(&core_lba.to_le_bytes(), KERNEL_SECTOR_OFFSET)
    })();
    written.map_err(IoError::at("write GRUB into", disk))?;
    Ok(())
}

/// One word for GRUB's script parser, in single quotes.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
