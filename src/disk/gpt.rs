//! A GUID partition table written into a disk file: the protective MBR,
//! the primary header and entries at the start, the backup entries and
//! header at the end (UEFI 2.10, section 5.3). kiln writes it itself so
//! every byte comes from the image digest, with no tool and no device.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const SECTOR: u64 = 512;
/// Entries in each table: 128 of 128 bytes, 32 sectors, as every tool writes.
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const TABLE_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// Sectors the backup table and header take at the end of the disk.
pub const BACKUP_SECTORS: u64 = TABLE_SECTORS + 1;

/// A GUID as text (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`) and as its
/// mixed-endian bytes on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// A GUID from its text form; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || text.len() != 36 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
        }
        Some(Guid(bytes))
    }

    /// The on-disk form: the first three fields little-endian.
    fn to_disk(self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

pub mod types {
    use crate::disk::gpt::Guid;

    pub const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
    pub const EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    /// The discoverable-partitions root type for x86-64.
    pub const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
    /// The discoverable-partitions root type for arm64.
    pub const ROOT_ARM64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";

    pub fn guid(text: &str) -> Guid {
        Guid::parse(text).expect("a constant GUID")
    }
}

/// One partition: its place in sectors, type, identity and name.
#[derive(Clone, Debug)]
pub struct Partition {
    pub first_lba: u64,
    /// Inclusive, as GPT records it.
    pub last_lba: u64,
    pub type_guid: Guid,
    pub guid: Guid,
    pub name: &'static str,
    /// Attribute bits (bit 2: legacy BIOS bootable).
    pub attributes: u64,
}

/// The first sector a partition may start on.
pub const FIRST_USABLE: u64 = 2 + TABLE_SECTORS;

/// Writes the GPT for `partitions` on a disk of `sectors` sectors.
pub fn write(
    file: &File,
    sectors: u64,
    disk_guid: Guid,
    partitions: &[Partition],
) -> io::Result<()> {
    let last_usable = sectors - BACKUP_SECTORS - 1;
    let mut table = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (index, partition) in partitions.iter().enumerate() {
        let entry = &mut table[index * ENTRY_SIZE as usize..][..ENTRY_SIZE as usize];
        entry[0..16].copy_from_slice(&partition.type_guid.to_disk());
        entry[16..32].copy_from_slice(&partition.guid.to_disk());
        entry[32..40].copy_from_slice(&partition.first_lba.to_le_bytes());
        entry[40..48].copy_from_slice(&partition.last_lba.to_le_bytes());
        entry[48..56].copy_from_slice(&partition.attributes.to_le_bytes());
        for (at, unit) in partition.name.encode_utf16().take(36).enumerate() {
            entry[56 + at * 2..58 + at * 2].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let table_crc = crc32(&table);
    let header = |current: u64, backup: u64, table_lba: u64| {
        let mut header = [0u8; SECTOR as usize];
        header[0..8].copy_from_slice(b"EFI PART");
        header[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        header[12..16].copy_from_slice(&92u32.to_le_bytes());
        header[24..32].copy_from_slice(&current.to_le_bytes());
        header[32..40].copy_from_slice(&backup.to_le_bytes());
        header[40..48].copy_from_slice(&FIRST_USABLE.to_le_bytes());
        header[48..56].copy_from_slice(&last_usable.to_le_bytes());
        header[56..72].copy_from_slice(&disk_guid.to_disk());
        header[72..80].copy_from_slice(&table_lba.to_le_bytes());
        header[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        header[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        header[88..92].copy_from_slice(&table_crc.to_le_bytes());
        let crc = crc32(&header[..92]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        header
    };
    let last = sectors - 1;
    file.write_all_at(&protective_mbr(sectors), 0)?;
    file.write_all_at(&header(1, last, 2), SECTOR)?;
    file.write_all_at(&table, 2 * SECTOR)?;
    file.write_all_at(&table, (last - TABLE_SECTORS) * SECTOR)?;
    file.write_all_at(&header(last, 1, last - TABLE_SECTORS), last * SECTOR)?;
    Ok(())
}

/// The protective MBR: one partition of type 0xEE over the whole disk
/// (capped at 2^32 - 1 sectors). Its first 440 bytes are left for boot code.
fn protective_mbr(sectors: u64) -> [u8; SECTOR as usize] {
    let mut mbr = [0u8; SECTOR as usize];
    let entry = &mut mbr[446..462];
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    entry[4] = 0xEE;
    entry[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    entry[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// CRC-32 (IEEE 802.3, reflected), as GPT's checksums use.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut index = 0;
        while index < 256 {
            let mut value = index as u32;
            let mut bit = 0;
            while bit < 8 {
                value = if value & 1 == 1 {
                    0xEDB8_8320 ^ (value >> 1)
                } else {
                    value >> 1
                };
                bit += 1;
            }
            table[index] = value;
            index += 1;
        }
        table
    };
    let mut crc = u32::MAX;
    for byte in bytes {
        crc = TABLE[((crc ^ u32::from(*byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn guids_are_mixed_endian_on_disk() {
        let esp = types::guid(types::EFI_SYSTEM);
        assert_eq!(
            esp.to_disk(),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        assert_eq!(esp.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(Guid::parse("nope"), None);
    }
}
