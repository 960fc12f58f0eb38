//! The root filesystem: ext4 made by `mke2fs -d` straight into the disk
//! file at the partition's offset (no loop device, no mount, no copy),
//! then every inode time set to the epoch with `debugfs`, since `mke2fs
//! -d` copies host ctimes and stamps creation times.

use std::io;
use std::path::Path;
use std::process::Command;

use crate::disk::error::DiskError;
use crate::disk::tool;
use crate::io_error::IoError;

/// The filesystem features and sizes, pinned here rather than read from
/// the host's `/etc/mke2fs.conf`, so a newer e2fsprogs default (say,
/// `orphan_file`) does not change the bytes. These are bookworm's
/// defaults, which GRUB 2.06 reads.
const MKE2FS_CONF: &str = "\
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	small = {
		blocksize = 1024
		inode_ratio = 4096
	}
	floppy = {
		blocksize = 1024
		inode_ratio = 8192
	}
	big = {
		inode_ratio = 32768
	}
	huge = {
		inode_ratio = 65536
	}
";

pub(super) struct Ext4<'a> {
    pub label: &'a str,
    pub uuid: String,
    pub hash_seed: String,
    pub epoch: u64,
}

impl Ext4<'_> {
    /// Makes the filesystem of `root` in `disk` at byte `offset`, `size`
    /// bytes long (the explicit size keeps it off what follows).
    pub fn make(&self, root: &Path, disk: &Path, offset: u64, size: u64) -> Result<(), DiskError> {
        let conf = tempfile::NamedTempFile::new_in(crate::artifact::folder_of(disk))
            .and_then(|conf| {
                std::fs::write(conf.path(), MKE2FS_CONF)?;
                Ok(conf)
            })
            .map_err(IoError::at("write a mke2fs.conf beside", disk))?;
        // e2fsprogs reads a fake time of 0 as "unset" and stamps the real
        // clock into the superblock; 1970-01-01T00:00:01 stands in for 0.
        let fake_time = self.epoch.max(1).to_string();
        let device = if offset == 0 {
            disk.as_os_str().to_owned()
        } else {
            let mut device = disk.as_os_str().to_owned();
            device.push(format!("?offset={offset}"));
            device
        };
        let mut extended = format!(
            "hash_seed={},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
            self.hash_seed
        );
        if offset != 0 {
            extended.push_str(&format!(",offset={offset}"));
        }
        tool::run(
            Command::new("mke2fs")
                .env("MKE2FS_CONFIG", conf.path())
                .env("E2FSPROGS_FAKE_TIME", &fake_time)
                .args([
                    "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L", self.label,
                ])
                .args(["-U", &self.uuid, "-E", &extended])
                .arg("-d")
                .arg(root)
                .arg(disk)
                .arg(format!("{}k", size / 1024)),
            "e2fsprogs",
        )?;
        // Every allocated inode's times to the epoch: inodes 2 (root) and
        // 11 (lost+found) onwards, which `mke2fs -d` hands out in order.
        let header = tool::run(
            Command::new("dumpe2fs")
                .arg("-h")
                .arg(&device)
                .env("E2FSPROGS_FAKE_TIME", &fake_time),
            "e2fsprogs",
        )?;
        let field = |name: &'static str| {
            header
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse::<u64>().ok())
                .ok_or(DiskError::Dumpe2fs(name))
        };
        let used = field("Inode count:")?
            .checked_sub(field("Free inodes:")?)
            .ok_or(DiskError::Dumpe2fs("Free inodes:"))?;
        let epoch = self.epoch.to_string();
        let mut commands = String::new();
        for inode in std::iter::once(2).chain(11..=used + 1) {
            for time in ["atime", "ctime", "crtime"] {
                commands.push_str(&format!("sif <{inode}> {time} {epoch}\n"));
            }
        }
        let script = tempfile::NamedTempFile::new_in(crate::artifact::folder_of(disk))
            .and_then(|script| {
                std::fs::write(script.path(), commands)?;
                Ok(script)
            })
            .map_err(IoError::at("write a debugfs script beside", disk))?;
        tool::run(
            Command::new("debugfs")
                .env("E2FSPROGS_FAKE_TIME", &fake_time)
                .arg("-w")
                .arg("-f")
                .arg(script.path())
                .arg(&device),
            "e2fsprogs",
        )?;
        Ok(())
    }
}

/// The smallest size that fits the tree, with headroom for metadata and a
/// little room to spare, rounded up to a MiB.
pub(super) fn fitted_size(root: &Path) -> io::Result<u64> {
    let mut blocks: u64 = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            blocks += 1 + metadata.len().div_ceil(4096);
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    let bytes = blocks * 4096 * 5 / 4 + (64 << 20);
    Ok(bytes.div_ceil(1 << 20) << 20)
}
