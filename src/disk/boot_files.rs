//! The kernel and initrd a bootable disk boots: named in the settings, or
//! the newest `/boot/vmlinuz-*` with its `/boot/initrd.img-*`. Paths are
//! read inside the flattened root; a symlink is followed only within it.

use std::cmp::Ordering;
use std::path::{Component, Path, PathBuf};

use crate::disk::error::DiskError;
use crate::disk::settings::DiskSettings;

/// A file of the image: its path there (`/boot/vmlinuz-6.1.0-28-amd64`)
/// and where it is in the flattened root.
#[derive(Clone, Debug)]
pub struct ImageFile {
    pub in_image: String,
    pub on_host: PathBuf,
}

#[derive(Clone, Debug)]
pub struct BootFiles {
    pub kernel: ImageFile,
    pub initrd: ImageFile,
}

const KERNEL_HINT: &str = "install a kernel in the image (Debian: linux-image-amd64), \
     or name one with `kernel`";
const INITRD_HINT: &str = "install initramfs-tools in the image (it makes \
     /boot/initrd.img-VERSION for each kernel), or name one with `initrd`";

impl BootFiles {
    pub fn find(root: &Path, settings: &DiskSettings) -> Result<Self, DiskError> {
        let kernel = match settings.kernel.as_deref() {
            Some(path) => resolve(root, path).ok_or_else(|| DiskError::NoBootFile {
                what: "kernel",
                hint: format!("`{path}` is not a file in the image"),
            })?,
            None => newest(root, "vmlinuz-").ok_or_else(|| DiskError::NoBootFile {
                what: "kernel",
                hint: format!("there is no /boot/vmlinuz-*: {KERNEL_HINT}"),
            })?,
        };
        let initrd = match settings.initrd.as_deref() {
            Some(path) => resolve(root, path).ok_or_else(|| DiskError::NoBootFile {
                what: "initrd",
                hint: format!("`{path}` is not a file in the image"),
            })?,
            None => {
                let version = kernel
                    .in_image
                    .rsplit('/')
                    .next()
                    .and_then(|name| name.strip_prefix("vmlinuz-"));
                version
                    .and_then(|version| resolve(root, &format!("/boot/initrd.img-{version}")))
                    .ok_or_else(|| DiskError::NoBootFile {
                        what: "initrd",
                        hint: format!(
                            "there is no /boot/initrd.img-{} for {}: {INITRD_HINT}",
                            version.unwrap_or("VERSION"),
                            kernel.in_image
                        ),
                    })?
            }
        };
        Ok(BootFiles { kernel, initrd })
    }
}

/// The newest `/boot/{prefix}*` regular file, by version order.
fn newest(root: &Path, prefix: &str) -> Option<ImageFile> {
    // `/boot` as the image sees it: its symlink, if any, inside the root.
    let (_, boot) = resolve_entry(root, "/boot").filter(|(_, host)| {
        std::fs::symlink_metadata(host).is_ok_and(|metadata| metadata.is_dir())
    })?;
    let entries = std::fs::read_dir(boot).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix) && !name.ends_with(".old"))
        .collect();
    names.sort_by(|a, b| version_order(a, b));
    names
        .into_iter()
        .rev()
        .find_map(|name| resolve(root, &format!("/boot/{name}")))
}

/// Orders names as versions: runs of digits by value, the rest as text,
/// so `vmlinuz-6.1.0-28` comes after `vmlinuz-6.1.0-9`.
fn version_order(a: &str, b: &str) -> Ordering {
    fn runs(text: &str) -> Vec<(bool, &str)> {
        let mut runs = Vec::new();
        let mut start = 0;
        let bytes = text.as_bytes();
        for index in 1..=bytes.len() {
            if index == bytes.len()
                || bytes[index].is_ascii_digit() != bytes[index - 1].is_ascii_digit()
            {
                runs.push((bytes[start].is_ascii_digit(), &text[start..index]));
                start = index;
            }
        }
        runs
    }
    let (a_runs, b_runs) = (runs(a), runs(b));
    for (x, y) in a_runs.iter().zip(&b_runs) {
        let order = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a_runs.len().cmp(&b_runs.len())
}

/// `path` in the image, as a regular file in `root`, following symlinks
/// (at most 16) without leaving the root.
fn resolve(root: &Path, path: &str) -> Option<ImageFile> {
    let (in_image, on_host) = resolve_entry(root, path)?;
    let metadata = std::fs::symlink_metadata(&on_host).ok()?;
    if !metadata.is_file() {
        return None;
    }
    Some(ImageFile { in_image, on_host })
}

/// Where `path` in the image leads, with every symlink on the way (at most
/// 16) followed inside the root: its path in the image and in `root`.
fn resolve_entry(root: &Path, path: &str) -> Option<(String, PathBuf)> {
    let mut current = PathBuf::from("/");
    let mut pending: Vec<String> = components(path)?;
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&part);
        let on_host = root.join(candidate.strip_prefix("/").ok()?);
        let metadata = std::fs::symlink_metadata(&on_host).ok()?;
        if metadata.file_type().is_symlink() {
            links += 1;
            if links > 16 {
                return None;
            }
            let target = std::fs::read_link(&on_host).ok()?;
            let target = target.to_str()?;
            if target.starts_with('/') {
                current = PathBuf::from("/");
            }
            let mut parts = components(target)?;
            parts.reverse();
            pending.extend(parts);
        } else {
            current = candidate;
        }
    }
    let on_host = root.join(current.strip_prefix("/").ok()?);
    Some((current.to_str()?.to_owned(), on_host))
}

fn components(path: &str) -> Option<Vec<String>> {
    Path::new(path)
        .components()
        .filter_map(|component| match component {
            Component::Normal(part) => Some(part.to_str().map(str::to_owned)),
            Component::ParentDir => Some(Some("..".to_owned())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_number() {
        assert_eq!(
            version_order("vmlinuz-6.1.0-28-amd64", "vmlinuz-6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            version_order("vmlinuz-6.10.0", "vmlinuz-6.9.0"),
            Ordering::Greater
        );
        assert_eq!(version_order("vmlinuz-6.1", "vmlinuz-6.1"), Ordering::Equal);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let boot = root.path().join("boot");
        std::fs::create_dir(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz-6.1.0-9-amd64"), b"old").unwrap();
        std::fs::write(boot.join("vmlinuz-6.1.0-28-amd64"), b"new").unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-28-amd64", root.path().join("vmlinuz"))
            .unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", boot.join("escape")).unwrap();
        // A /boot that points at the host's finds nothing there.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("vmlinuz-9.9"), b"host").unwrap();
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), other.path().join("boot")).unwrap();
        assert!(newest(other.path(), "vmlinuz-").is_none());
        let found = resolve(root.path(), "/vmlinuz").unwrap();
        assert_eq!(found.in_image, "/boot/vmlinuz-6.1.0-28-amd64");
        assert_eq!(
            newest(root.path(), "vmlinuz-").unwrap().in_image,
            "/boot/vmlinuz-6.1.0-28-amd64"
        );
        // `..` stops at the image's root: the host's /etc/passwd is not reached.
        assert!(resolve(root.path(), "/boot/escape").is_none());
    }
}
