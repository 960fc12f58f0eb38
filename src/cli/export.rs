//! `kiln export REF --format … -o PATH`: a stored image as an OCI layout,
//! an OCI archive or a rootfs tarball.

use std::path::Path;

use kiln::reference::StoreRef;
use kiln::store::Store;

use super::{Exit, ExportFormat, diagnostics::error_chain};

pub fn run(reference: &str, format: ExportFormat, output: &Path) -> Exit {
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
        .and_then(|(entry, store)| match format {
            ExportFormat::Oci => kiln::export::oci_layout(&store, &entry, output),
            ExportFormat::OciArchive => kiln::export::oci_archive(&store, &entry, output),
            ExportFormat::Rootfs => {
                let epoch = super::build::source_date_epoch().unwrap_or(0);
                kiln::export::rootfs(&store, &entry, output, &home.join("tmp"), epoch)
            }
            ExportFormat::Raw | ExportFormat::Qcow2 => {
                use kiln::disk::DiskFormat;
                let epoch = super::build::source_date_epoch().unwrap_or(0);
                let disk_format = if matches!(format, ExportFormat::Raw) {
                    DiskFormat::Raw
                } else {
                    DiskFormat::Qcow2
                };
                kiln::export::disk(
                    &store,
                    &entry,
                    disk_format,
                    output,
                    &home.join("tmp"),
                    epoch,
                )
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
