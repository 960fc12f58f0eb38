//! The blocks of a raw disk that an EBS snapshot needs: the EBS direct API
//! takes 512 KiB blocks, each with its sha256 (base64), and a snapshot
//! starts as zeros, so holes and all-zero blocks are never sent.
//! `CompleteSnapshot` checks the whole upload by the sha256 of every sent
//! block's sha256, in block order (the `LINEAR` algorithm).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The EBS direct API's block size.
pub const BLOCK_SIZE: u64 = 512 * 1024;

/// One block to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub index: u64,
    /// base64 of the sha256 of its 512 KiB (the last block padded with zeros).
    pub sha256: String,
}

/// The blocks of `file` holding anything but zeros, in order, found by
/// skipping the file's holes and reading the rest.
pub fn data_blocks(file: &File) -> io::Result<Vec<Block>> {
    let mut blocks = Vec::new();
    scan(file, |index, data| {
        blocks.push(Block {
            index,
            sha256: base64_sha256(data),
        });
        Ok(true)
    })?;
    Ok(blocks)
}

/// Calls `each` with every block of `file` holding anything but zeros, in
/// order, with its 512 KiB (the last padded); it returns `false` to stop.
pub fn scan(file: &File, mut each: impl FnMut(u64, &[u8]) -> io::Result<bool>) -> io::Result<()> {
    let size = file.metadata()?.len();
    let mut buffer = vec![0u8; BLOCK_SIZE as usize];
    let mut index = 0;
    while index * BLOCK_SIZE < size {
        let start = index * BLOCK_SIZE;
        // The next data at or after this block; none: only holes are left.
        let Some(data) = next_data(file, start)? else {
            break;
        };
        if data >= start + BLOCK_SIZE {
            index = data / BLOCK_SIZE;
            continue;
        }
        read_block(file, index, size, &mut buffer)?;
        if buffer.iter().any(|byte| *byte != 0) && !each(index, &buffer)? {
            break;
        }
        index += 1;
    }
    Ok(())
}

/// Block `index` of a file of `size` bytes, padded with zeros at the end.
pub fn read_block(file: &File, index: u64, size: u64, buffer: &mut [u8]) -> io::Result<()> {
    let start = index * BLOCK_SIZE;
    let length = (size.saturating_sub(start)).min(BLOCK_SIZE) as usize;
    buffer.fill(0);
    file.read_exact_at(&mut buffer[..length], start)
}

/// `CompleteSnapshot`'s checksum: base64 of the sha256 of the blocks'
/// sha256s (raw bytes), in index order.
pub fn aggregate_sha256(blocks: &[Block]) -> io::Result<String> {
    let mut hasher = Sha256::new();
    for block in blocks {
        let digest = base64::engine::general_purpose::STANDARD
            .decode(&block.sha256)
            .map_err(io::Error::other)?;
        hasher.update(digest);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

/// base64 of the sha256 of `bytes`, as the EBS direct API takes it.
pub fn base64_sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// Where data starts at or after `offset` (`SEEK_DATA`); `None` past the
/// last data. A filesystem without `SEEK_DATA` reports all of it as data.
fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(offset)) {
        Ok(at) => Ok(Some(at)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(rustix::io::Errno::INVAL) => Ok(Some(offset)),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_and_zero_blocks_are_skipped_and_the_last_block_is_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        // 64 MiB and a bit: data in blocks 0, 3 and 127, block 5 written
        // as zeros (not a hole), block 128 a short tail.
        let size = 128 * BLOCK_SIZE + 1000;
        file.set_len(size).unwrap();
        file.write_all_at(b"boot", 10).unwrap();
        file.write_all_at(&[7u8; 100], 3 * BLOCK_SIZE + BLOCK_SIZE - 100)
            .unwrap();
        file.write_all_at(&vec![0u8; BLOCK_SIZE as usize], 5 * BLOCK_SIZE)
            .unwrap();
        file.write_all_at(b"end", 127 * BLOCK_SIZE).unwrap();
        file.write_all_at(b"tail", 128 * BLOCK_SIZE + 996).unwrap();
        let blocks = data_blocks(&file).unwrap();
        let indexes: Vec<u64> = blocks.iter().map(|block| block.index).collect();
        assert_eq!(indexes, [0, 3, 127, 128]);
        // Each checksum is of the whole padded block.
        let mut expected = vec![0u8; BLOCK_SIZE as usize];
        expected[996..1000].copy_from_slice(b"tail");
        assert_eq!(blocks[3].sha256, base64_sha256(&expected));
        // The aggregate is over the raw digests, in order.
        let mut hasher = Sha256::new();
        for block in &blocks {
            let mut buffer = vec![0u8; BLOCK_SIZE as usize];
            read_block(&file, block.index, size, &mut buffer).unwrap();
            hasher.update(Sha256::digest(&buffer));
        }
        assert_eq!(
            aggregate_sha256(&blocks).unwrap(),
            base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
        );
    }
}
