//! Copying a host file or folder into a mounted image root (the `file`
//! provisioner's work, done by the sandbox helper). Every path inside the
//! root resolves as if the root were `/`, so an image's own symlinks never
//! lead a write outside it; owner names are looked up in the image's own
//! `/etc/passwd` and `/etc/group`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::template::units::{FileMode, Owner};

/// What the sandbox helper needs to copy a file or folder into a mounted root.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CopyIn {
    pub source: PathBuf,
    pub destination: String,
    pub mode: Option<FileMode>,
    pub owner: Option<Owner>,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("failed to copy {}: {reason}", source_path.display())]
    Refused {
        source_path: PathBuf,
        reason: String,
    },
    #[error("failed to copy {} to {destination}", source_path.display())]
    Io {
        source_path: PathBuf,
        destination: String,
        #[source]
        source: std::io::Error,
    },
}

/// Copies `copy.source` into the image root at `root`. A file goes to the
/// destination path (or into it, when it ends in `/` or is a directory); a
/// folder's contents are merged into the destination directory. The
/// destination resolves inside the root, following the image's symlinks as
/// if the root were `/`; an existing symlink at a copied path is replaced,
/// never written through. Owners default to 0:0; modes to the source's.
pub fn copy_into(root: &std::path::Path, copy: &CopyIn) -> Result<(), CopyError> {
    use crate::confined::{self, Resolve};

    let io_error = |source| CopyError::Io {
        source_path: copy.source.clone(),
        destination: copy.destination.clone(),
        source,
    };
    let refused = |reason: String| CopyError::Refused {
        source_path: copy.source.clone(),
        reason,
    };
    let root_fd = confined::open_root(root).map_err(io_error)?;
    let owner = resolve_owner(&root_fd, copy.owner.as_ref()).map_err(refused)?;
    let metadata = std::fs::metadata(&copy.source).map_err(io_error)?;
    let path = copy.destination.trim_start_matches('/');
    let components: Vec<std::ffi::OsString> =
        match confined::split_entry_path(path.as_bytes()).map_err(refused)? {
            Some((mut parents, name)) => {
                parents.push(name);
                parents
            }
            None => Vec::new(),
        };
    if metadata.is_dir() {
        let target =
            confined::open_dir(&root_fd, &components, Resolve::InRoot, true).map_err(io_error)?;
        return copy_dir(&copy.source, &target, copy.mode, owner).map_err(io_error);
    }
    let source_name = copy
        .source
        .file_name()
        .map(|name| name.to_owned())
        .unwrap_or_default();
    let into_directory = copy.destination.ends_with('/')
        || confined::open_dir(&root_fd, &components, Resolve::InRoot, false).is_ok();
    let (parent, name) = if into_directory || components.is_empty() {
        (components.as_slice(), source_name)
    } else {
        let (name, parent) = components.split_last().expect("not empty");
        (parent, name.clone())
    };
    let parent = confined::open_dir(&root_fd, parent, Resolve::InRoot, true).map_err(io_error)?;
    copy_file(&copy.source, &metadata, &parent, &name, copy.mode, owner).map_err(io_error)
}

type Ids = (u32, u32);

fn copy_file(
    source: &std::path::Path,
    metadata: &std::fs::Metadata,
    dir: &std::os::fd::OwnedFd,
    name: &std::ffi::OsStr,
    mode: Option<FileMode>,
    (uid, gid): Ids,
) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;

    use rustix::fs::Mode;

    if let Some(existing) = crate::confined::stat_at(dir, name)? {
        if crate::confined::is_dir(&existing) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                format!(
                    "{} is a directory in the image",
                    std::path::Path::new(name).display()
                ),
            ));
        }
        rustix::fs::unlinkat(dir.as_fd(), name, rustix::fs::AtFlags::empty())?;
    }
    let bits = mode.map_or(metadata.permissions().mode() & 0o7777, FileMode::bits);
    crate::confined::create_file(
        dir,
        name,
        &mut std::fs::File::open(source)?,
        (uid, gid),
        Mode::from_raw_mode(bits),
    )?;
    Ok(())
}

fn copy_dir(
    source: &std::path::Path,
    target: &std::os::fd::OwnedFd,
    mode: Option<FileMode>,
    ids: Ids,
) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    use rustix::fs::{AtFlags, Mode, OFlags};

    let mut entries: Vec<_> = std::fs::read_dir(source)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    let owner = (
        Some(rustix::fs::Uid::from_raw(ids.0)),
        Some(rustix::fs::Gid::from_raw(ids.1)),
    );
    for entry in entries {
        let name = entry.file_name();
        let path = entry.path();
        let metadata = std::fs::symlink_metadata(&path)?;
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            crate::confined::remove_at(target, &name)?;
            rustix::fs::symlinkat(
                std::fs::read_link(&path)?.as_os_str(),
                target.as_fd(),
                name.as_os_str(),
            )?;
            rustix::fs::chownat(
                target.as_fd(),
                name.as_os_str(),
                owner.0,
                owner.1,
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        } else if file_type.is_dir() {
            match crate::confined::stat_at(target, &name)? {
                Some(existing) if crate::confined::is_dir(&existing) => {}
                Some(_) => {
                    crate::confined::remove_at(target, &name)?;
                    rustix::fs::mkdirat(
                        target.as_fd(),
                        name.as_os_str(),
                        Mode::from_raw_mode(0o700),
                    )?;
                }
                None => rustix::fs::mkdirat(
                    target.as_fd(),
                    name.as_os_str(),
                    Mode::from_raw_mode(0o700),
                )?,
            }
            let child = rustix::fs::openat(
                target.as_fd(),
                name.as_os_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fchown(child.as_fd(), owner.0, owner.1)?;
            let bits = mode.map_or(metadata.permissions().mode() & 0o7777, FileMode::bits);
            rustix::fs::fchmod(child.as_fd(), Mode::from_raw_mode(bits))?;
            copy_dir(&path, &child, mode, ids)?;
        } else if file_type.is_file() {
            copy_file(&path, &metadata, target, &name, mode, ids)?;
        } else if file_type.is_socket()
            || file_type.is_fifo()
            || file_type.is_char_device()
            || file_type.is_block_device()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!(
                    "{} is a special file; the file provisioner copies files, folders and symlinks",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Numeric ids for an owner, looking names up in the image's own
/// `/etc/passwd` and `/etc/group`. No owner means root.
fn resolve_owner(root: &std::os::fd::OwnedFd, owner: Option<&Owner>) -> Result<Ids, String> {
    use crate::template::units::Principal;

    let Some(owner) = owner else {
        return Ok((0, 0));
    };
    let (uid, primary_gid) = match &owner.user {
        Principal::Id(id) => (*id, *id),
        Principal::Name(name) => {
            let entry = lookup(root, "passwd", name)?;
            let field = |index: usize| entry.get(index).and_then(|field| field.parse::<u32>().ok());
            match (field(2), field(3)) {
                (Some(uid), Some(gid)) => (uid, gid),
                _ => {
                    return Err(format!(
                        "the image's /etc/passwd entry for `{name}` is malformed"
                    ));
                }
            }
        }
    };
    let gid = match &owner.group {
        None => primary_gid,
        Some(Principal::Id(id)) => *id,
        Some(Principal::Name(name)) => lookup(root, "group", name)?
            .get(2)
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| format!("the image's /etc/group entry for `{name}` is malformed"))?,
    };
    Ok((uid, gid))
}

fn lookup(root: &std::os::fd::OwnedFd, database: &str, name: &str) -> Result<Vec<String>, String> {
    use std::io::Read;
    use std::os::fd::AsFd;

    let path = format!("etc/{database}");
    let fd = rustix::fs::openat2(
        root.as_fd(),
        path.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|error| format!("cannot look up `{name}`: the image's /{path}: {error}"))?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read the image's /{path}: {error}"))?;
    text.lines()
        .map(|line| line.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|fields| fields.first().is_some_and(|first| first == name))
        .ok_or_else(|| format!("`{name}` is not in the image's /{path}"))
}
