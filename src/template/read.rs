//! Reading a template or var-file from disk, with the limits that keep a
//! hostile one from blocking kiln or costing it seconds and gigabytes.

use std::path::Path;

/// The largest template or var-file kiln reads. A real one is a few
/// kilobytes; past this it is a mistake (or an attack), and checking it
/// would cost seconds and hundreds of megabytes.
pub const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// Reads a template or var-file: a regular file (a FIFO or a device would
/// block or never end) of at most [`MAX_TEMPLATE_BYTES`], in UTF-8.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    // Without O_NONBLOCK, opening a FIFO waits for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let too_large = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_TEMPLATE_BYTES} bytes (1 MiB), the most kiln reads"),
        )
    };
    if metadata.len() > MAX_TEMPLATE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_TEMPLATE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TEMPLATE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidData, "not UTF-8 text"))
}
