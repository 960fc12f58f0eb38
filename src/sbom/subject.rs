//! The image an SBOM is about, and the ids derived from it.

use sha2::{Digest as _, Sha256};

use crate::reference::{Digest, ImageName, Version};

/// The image a document is about.
pub struct Subject<'a> {
    pub name: &'a ImageName,
    pub version: &'a Version,
    pub digest: &'a Digest,
    /// `SOURCE_DATE_EPOCH`: the documents' time.
    pub epoch: u64,
}

impl Subject<'_> {
    /// A UUID derived from the image's digest (RFC 9562 version 8, its
    /// bits from sha256), the same for the same image.
    pub(super) fn uuid(&self, what: &str) -> String {
        let hash = Sha256::digest(format!("kiln-sbom {what} {}", self.digest).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}
