//! A raw disk in the format a hypervisor or cloud imports. `qemu-img`
//! writes qcow2, vmdk and vhd; what it makes up (a vmdk's random CID, a
//! vhd footer's time, UUID and checksum) is set from the image afterwards,
//! and the vmdk is written under its final file name (its descriptor
//! names its extent), so every format repeats byte for byte. The `gce`
//! tarball is written here: `disk.raw` in a GNU tar, gzip'd.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use tempfile::NamedTempFile;

use crate::artifact::temp_beside;
use crate::disk::error::DiskError;
use crate::disk::settings::{DiskFormat, DiskImage};
use crate::disk::tool;
use crate::io_error::IoError;

/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01.
const VHD_EPOCH: u64 = 946_684_800;

/// Converts `raw` to `format`, returning the temp file that holds it.
pub(super) fn convert(
    raw: NamedTempFile,
    image: &DiskImage<'_>,
    format: DiskFormat,
    path: &Path,
) -> Result<NamedTempFile, DiskError> {
    let temp =
        |suffix: &str| temp_beside(path, suffix).map_err(IoError::at("create a file beside", path));
    Ok(match format {
        DiskFormat::Raw => raw,
        DiskFormat::Qcow2 => {
            let qcow2 = temp(".qcow2")?;
            qemu_img(&["-O", "qcow2"], raw.path(), qcow2.path())?;
            qcow2
        }
        DiskFormat::Vhd => {
            let vhd = temp(".vhd")?;
            qemu_img(
                &["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
                raw.path(),
                vhd.path(),
            )?;
            fix_vhd_footer(vhd.as_file(), image).map_err(IoError::at("write", vhd.path()))?;
            vhd
        }
        DiskFormat::Vmdk => {
            // Its descriptor names the file it is in: convert to the final
            // name, in a folder of its own beside it.
            let folder = tempfile::Builder::new()
                .prefix(".kiln-vmdk-")
                .tempdir_in(crate::artifact::folder_of(path))
                .map_err(IoError::at("create a folder beside", path))?;
            let name = path.file_name().unwrap_or("disk.vmdk".as_ref());
            let inside = folder.path().join(name);
            qemu_img(
                &["-O", "vmdk", "-o", "subformat=streamOptimized"],
                raw.path(),
                &inside,
            )?;
            fix_vmdk_cid(&inside, image).map_err(IoError::at("write", &inside))?;
            // The temp file's place gets the vmdk, and a handle to it (the
            // one it had is to the file the rename replaced).
            let place = temp(".vmdk")?.into_temp_path();
            std::fs::rename(&inside, &place).map_err(IoError::at("move", &inside))?;
            let file = File::options()
                .read(true)
                .write(true)
                .open(&place)
                .map_err(IoError::at("open", &place))?;
            NamedTempFile::from_parts(file, place)
        }
        DiskFormat::Gce => {
            let tarball = temp(".tar.gz")?;
            write_gce(raw.as_file(), tarball.as_file(), image.epoch)
                .map_err(IoError::at("write", tarball.path()))?;
            tarball
        }
    })
}

fn qemu_img(output: &[&str], raw: &Path, to: &Path) -> Result<(), DiskError> {
    tool::run(
        Command::new("qemu-img")
            // One coroutine: clusters are written in order, so the bytes repeat.
            .args(["convert", "-m", "1", "-f", "raw"])
            .args(output)
            .arg(raw)
            .arg(to),
        "qemu-utils",
    )?;
    Ok(())
}

/// The footer's time from the epoch, its UUID from the image, and its
/// checksum again (the one's complement of the sum of its other bytes).
fn fix_vhd_footer(file: &File, image: &DiskImage<'_>) -> io::Result<()> {
    let length = file.metadata()?.len();
    let at = length
        .checked_sub(512)
        .ok_or_else(|| io::Error::other("a vhd is shorter than its footer"))?;
    let mut footer = [0u8; 512];
    file.read_exact_at(&mut footer, at)?;
    if &footer[0..8] != b"conectix" {
        return Err(io::Error::other("qemu-img wrote no vhd footer"));
    }
    let time = u32::try_from(image.epoch.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
    footer[24..28].copy_from_slice(&time.to_be_bytes());
    footer[68..84].copy_from_slice(&image.guid("vhd").0);
    footer[64..68].fill(0);
    let sum = footer
        .iter()
        .fold(0u32, |sum, byte| sum.wrapping_add(u32::from(*byte)));
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
    file.write_all_at(&footer, at)?;
    file.sync_data()
}

/// The descriptor's `CID=` (qemu-img picks it at random, and writes it
/// without leading zeros) set from the image digest. The descriptor is the
/// text in the sectors the header names, padded with NULs.
fn fix_vmdk_cid(path: &Path, image: &DiskImage<'_>) -> io::Result<()> {
    let file = File::options().read(true).write(true).open(path)?;
    let mut header = [0u8; 512];
    file.read_exact_at(&mut header, 0)?;
    if &header[0..4] != b"KDMV" {
        return Err(io::Error::other("qemu-img wrote no vmdk header"));
    }
    let sectors = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let (offset, size) = (sectors(28) * 512, sectors(36) * 512);
    if offset == 0 || size == 0 || size > 1 << 20 {
        return Err(io::Error::other("a vmdk has no embedded descriptor"));
    }
    let mut area = vec![0u8; size as usize];
    file.read_exact_at(&mut area, offset)?;
    let end = area
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(area.len());
    let text = std::str::from_utf8(&area[..end])
        .map_err(|_| io::Error::other("a vmdk descriptor is not text"))?;
    let cid: String = image.derived("vmdk")[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut found = false;
    let fixed: String = text
        .split_inclusive('\n')
        .map(|line| {
            if line.starts_with("CID=") {
                found = true;
                format!("CID={cid}\n")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !found || fixed.len() >= area.len() {
        return Err(io::Error::other("a vmdk descriptor has no CID to set"));
    }
    area.fill(0);
    area[..fixed.len()].copy_from_slice(fixed.as_bytes());
    file.write_all_at(&area, offset)?;
    file.sync_data()
}

/// `disk.raw` in a GNU tar, gzip'd on every core, every header field fixed.
fn write_gce(raw: &File, out: &File, epoch: u64) -> io::Result<()> {
    let size = raw.metadata()?.len();
    let mut header = tar::Header::new_gnu();
    header.set_path("disk.raw")?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let gzip = crate::bake::gzip::ParallelGzip::new(
        io::BufWriter::with_capacity(1 << 20, out.try_clone()?),
        crate::bake::compression_threads(),
    )?;
    let mut builder = tar::Builder::new(gzip);
    let mut reader = io::BufReader::with_capacity(1 << 20, raw.try_clone()?);
    builder.append(&header, (&mut reader).take(size))?;
    let gzip = builder.into_inner()?;
    let mut buffered = gzip.finish()?;
    buffered.flush()?;
    drop(buffered);
    out.sync_data()
}
