//! What a disk is made of and how: its settings (format, size, boot) and
//! the image it holds, with the identities derived from its digest.

use serde::{Deserialize, Serialize};

use crate::disk::gpt::Guid;
use crate::reference::Digest;
use crate::template::units::ByteSize;

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
    pub(crate) fn derived(&self, purpose: &str) -> [u8; 16] {
        let digest = Digest::of(format!("{}/{purpose}", self.digest).as_bytes());
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digest.hex()[index * 2..index * 2 + 2], 16)
                .expect("a digest is hex");
        }
        bytes
    }

    /// A version-4-shaped UUID derived from the image digest.
    pub(crate) fn guid(&self, purpose: &str) -> Guid {
        let mut bytes = self.derived(purpose);
        bytes[6] = (bytes[6] & 0x0F) | 0x40;
        bytes[8] = (bytes[8] & 0x3F) | 0x80;
        Guid(bytes)
    }
}

pub(crate) const MIB: u64 = 1 << 20;
