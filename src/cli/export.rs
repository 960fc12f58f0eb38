//! `kiln export REF --format … -o PATH`: a stored image as an OCI layout,
//! an OCI archive, a rootfs tarball or a VM disk.

use std::path::Path;

use kiln::reference::StoreRef;
use kiln::store::Store;

use super::{Exit, ExportBoot, ExportFormat, diagnostics::error_chain};

pub fn run(reference: &str, format: ExportFormat, boot: ExportBoot, output: &Path) -> Exit {
    use kiln::disk::{BootMode, DiskFormat, DiskSettings};
    let disk_format = match format {
        ExportFormat::Raw => Some(DiskFormat::Raw),
        ExportFormat::Qcow2 => Some(DiskFormat::Qcow2),
        ExportFormat::Vmdk => Some(DiskFormat::Vmdk),
        ExportFormat::Vhd => Some(DiskFormat::Vhd),
        ExportFormat::Gce => Some(DiskFormat::Gce),
        ExportFormat::Oci | ExportFormat::OciArchive | ExportFormat::Rootfs => None,
    };
    let boot = match boot {
        ExportBoot::None => BootMode::None,
        ExportBoot::Uefi => BootMode::Uefi,
        ExportBoot::Bios => BootMode::Bios,
        ExportBoot::Hybrid => BootMode::Hybrid,
    };
    if disk_format.is_none() && boot != BootMode::None {
        eprintln!("error: --boot is for a disk format (raw, qcow2, vmdk, vhd, gce)");
        return Exit::Usage;
    }
    let reference: StoreRef = match reference.parse() {
        Ok(reference) => reference,
        Err(reason) => {
            eprintln!("error: invalid image reference `{reference}`: {reason}");
            return Exit::Usage;
        }
    };
    let home = kiln::kiln_home();
    let result = Store::open_to_read(&home.join("store"), &reference)
        .and_then(|store| Ok((store.resolve(&reference)?, store)))
        .map_err(kiln::export::ExportError::from)
        .and_then(|(entry, store)| {
            let epoch = super::build::source_date_epoch().unwrap_or(0);
            match (format, disk_format) {
                (_, Some(disk_format)) => kiln::export::disk(
                    &store,
                    &entry,
                    &DiskSettings::fitted(disk_format, boot),
                    output,
                    &home.join("tmp"),
                    epoch,
                ),
                (ExportFormat::Oci, None) => kiln::export::oci_layout(&store, &entry, output),
                (ExportFormat::OciArchive, None) => {
                    kiln::export::oci_archive(&store, &entry, output)
                }
                (_, None) => kiln::export::rootfs(&store, &entry, output, &home.join("tmp"), epoch),
            }
        });
    match result {
        Ok(()) => {
            println!("exported {reference} to {}", output.display());
            Exit::Success
        }
        Err(error) => {
            eprintln!(
                "error: failed to export {reference}: {}",
                error_chain(&error)
            );
            Exit::Failure
        }
    }
}
