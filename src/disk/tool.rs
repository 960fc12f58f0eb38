//! Running the host tools a disk is made with, with errors that say which
//! package to install.

use std::process::Command;

use crate::disk::error::DiskError;

/// Runs `command`, returning its standard output.
pub(super) fn run(command: &mut Command, package: &'static str) -> Result<String, DiskError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|source| DiskError::ToolMissing {
        program: program.clone(),
        package,
        source,
    })?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        return Err(DiskError::ToolFailed { program, stderr });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
