//! What packages an image holds: its package databases (dpkg's `status`
//! and `status.d/`, apk's `installed`) and its `os-release`, read from
//! its layers, bottom to top, with whiteouts applied, as the flattened
//! root would have them; no root is unpacked.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::SbomError;
use super::purl;
use crate::file_index::{FileIndex, FileKind};
use crate::oci::Manifest;
use crate::store::Store;

/// A database file larger than this is refused: no package manager writes one.
const MAX_DATABASE_BYTES: u64 = 256 << 20;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    Deb,
    Apk,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub purl: String,
}

/// The distribution, from `os-release`: `ID` and `VERSION_ID`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Distro {
    pub id: String,
    pub version_id: String,
}

#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub distro: Option<Distro>,
    /// Sorted, no two with the same purl.
    pub packages: Vec<Package>,
}

/// Whether kiln reads this path (relative, no leading `/`) of an image.
fn wanted(path: &str) -> bool {
    matches!(
        path,
        "var/lib/dpkg/status" | "lib/apk/db/installed" | "etc/os-release" | "usr/lib/os-release"
    ) || path
        .strip_prefix("var/lib/dpkg/status.d/")
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// A wanted path's content in the flattened root, or the target of a link.
enum Found {
    File(Vec<u8>),
    Link(String),
}

/// The inventory of an image as a build has it: its file index (all
/// layers merged) says which package databases the flattened root holds
/// and their digests; their bytes are read from the stage trees (`trees`,
/// bottom first, as overlay lowers: the topmost that has a path holds it),
/// without following a link, and must hash to the index's digest. `None`
/// when one cannot be read so: [`inventory`] reads the layers instead.
pub fn from_trees(index: &FileIndex, trees: &[PathBuf]) -> Option<Inventory> {
    let mut found = BTreeMap::new();
    for entry in &index.entries {
        let path = entry.path.trim_start_matches('/');
        if !wanted(path) {
            continue;
        }
        match entry.kind {
            FileKind::File => {
                let expected = entry.sha256.as_deref()?;
                let bytes = trees
                    .iter()
                    .rev()
                    .find_map(|tree| read_beneath(tree, path))?;
                if crate::reference::Digest::of(&bytes).hex() != expected {
                    return None;
                }
                found.insert(path.to_owned(), Found::File(bytes));
            }
            FileKind::Symlink => {
                found.insert(
                    path.to_owned(),
                    Found::Link(entry.target.clone().unwrap_or_default()),
                );
            }
            _ => {}
        }
    }
    Some(from_found(&found))
}

/// A regular file at `path` below `tree`, no link followed on the way.
fn read_beneath(tree: &Path, path: &str) -> Option<Vec<u8>> {
    use std::os::fd::AsFd;

    let (parents, name) = crate::confined::split_entry_path(path.as_bytes()).ok()??;
    let root = crate::confined::open_root(tree).ok()?;
    let dir =
        crate::confined::open_dir(&root, &parents, crate::confined::Resolve::NoSymlinks, false)
            .ok()?;
    let fd = rustix::fs::openat(
        dir.as_fd(),
        name.as_os_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() || metadata.len() > MAX_DATABASE_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_DATABASE_BYTES).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The package inventory of the image `manifest` describes.
pub fn inventory(store: &Store, manifest: &Manifest) -> Result<Inventory, SbomError> {
    let config = store.config(manifest)?;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let reader = store.open_layer(layer, diff_id)?;
        let mut archive = tar::Archive::new(reader);
        let bad = |source: std::io::Error| SbomError::Layer {
            digest: layer.digest.clone(),
            source,
        };
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let path = raw.trim_start_matches("./").trim_start_matches('/');
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            if name == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                found.retain(|kept, _| !kept.starts_with(&prefix));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = if dir.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{dir}/{hidden}")
                };
                let below = format!("{gone}/");
                found.retain(|kept, _| *kept != gone && !kept.starts_with(&below));
                continue;
            }
            // A folder or file over a kept path's parent replaces it.
            if entry.header().entry_type() != tar::EntryType::Directory {
                let below = format!("{path}/");
                found.retain(|kept, _| !kept.starts_with(&below));
            }
            if !wanted(path) {
                continue;
            }
            let path = path.to_owned();
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if entry.size() > MAX_DATABASE_BYTES {
                        return Err(SbomError::TooLarge { path });
                    }
                    let mut bytes = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut bytes).map_err(bad)?;
                    found.insert(path, Found::File(bytes));
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(bad)?
                        .map(|target| target.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    found.insert(path, Found::Link(target));
                }
                _ => {
                    found.remove(&path);
                }
            }
        }
    }
    Ok(from_found(&found))
}

/// The inventory of the wanted files of a flattened root.
fn from_found(found: &BTreeMap<String, Found>) -> Inventory {
    let text = |path: &str| match found.get(path) {
        Some(Found::File(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    };
    // `/etc/os-release` is mostly a link to `../usr/lib/os-release`.
    let os_release = match found.get("etc/os-release") {
        Some(Found::File(_)) => text("etc/os-release"),
        Some(Found::Link(target)) => text(&resolve_in("etc", target)),
        None => text("usr/lib/os-release"),
    };
    let distro = os_release.as_deref().map(parse_os_release);
    let mut packages = Vec::new();
    let mut databases: Vec<String> = found
        .keys()
        .filter(|path| *path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/"))
        .cloned()
        .collect();
    databases.sort();
    for database in databases {
        if let Some(status) = text(&database) {
            packages.extend(dpkg_packages(&status, distro.as_ref()));
        }
    }
    if let Some(installed) = text("lib/apk/db/installed") {
        packages.extend(apk_packages(&installed, distro.as_ref()));
    }
    packages.sort();
    packages.dedup_by(|a, b| a.purl == b.purl);
    Inventory { distro, packages }
}

/// A link's target below the root, from the folder `dir` the link is in
/// (`..` never climbs above the root).
fn resolve_in(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|part| !part.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// `ID` and `VERSION_ID` of an os-release file.
fn parse_os_release(text: &str) -> Distro {
    let mut distro = Distro::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').trim_matches('\'').to_owned();
        match key.trim() {
            "ID" => distro.id = value,
            "VERSION_ID" => distro.version_id = value,
            _ => {}
        }
    }
    distro
}

/// The distribution as purls name it: `debian-12`.
fn release(distro: Option<&Distro>) -> Option<String> {
    let distro = distro.filter(|distro| !distro.id.is_empty())?;
    Some(if distro.version_id.is_empty() {
        distro.id.clone()
    } else {
        format!("{}-{}", distro.id, distro.version_id)
    })
}

/// The paragraphs of a deb822 file (dpkg's status): fields by name, with
/// continuation lines joined.
fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut all = Vec::new();
    let mut current: BTreeMap<String, String> = BTreeMap::new();
    let mut last_key: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                all.push(std::mem::take(&mut current));
            }
            last_key = None;
        } else if line.starts_with([' ', '\t']) {
            if let Some(value) = last_key.as_ref().and_then(|key| current.get_mut(key)) {
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            let key = key.trim().to_owned();
            current.insert(key.clone(), value.trim().to_owned());
            last_key = Some(key);
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// The installed packages of a dpkg status file.
fn dpkg_packages(status: &str, distro: Option<&Distro>) -> Vec<Package> {
    let namespace = distro
        .map(|distro| distro.id.as_str())
        .filter(|id| !id.is_empty())
        .unwrap_or("debian");
    paragraphs(status)
        .into_iter()
        .filter(|fields| {
            // `Status: want flag state`: only what is installed. Distroless
            // `status.d` paragraphs have no Status: they are installed.
            fields
                .get("Status")
                .is_none_or(|status| status.split_whitespace().nth(2) == Some("installed"))
        })
        .filter_map(|fields| {
            let name = fields.get("Package")?.clone();
            let version = fields.get("Version")?.clone();
            let arch = fields.get("Architecture").cloned().unwrap_or_default();
            let purl = purl::purl("deb", namespace, &name, &version, &arch, release(distro));
            Some(Package {
                ecosystem: Ecosystem::Deb,
                name,
                version,
                arch,
                purl,
            })
        })
        .collect()
}

/// The packages of apk's `installed` database: blank-line records of
/// `P:` name, `V:` version, `A:` arch lines.
fn apk_packages(installed: &str, distro: Option<&Distro>) -> Vec<Package> {
    let namespace = distro
        .map(|distro| distro.id.as_str())
        .filter(|id| !id.is_empty())
        .unwrap_or("alpine");
    let mut packages = Vec::new();
    for record in installed.split("\n\n") {
        let field = |key: &str| {
            record
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(str::to_owned)
        };
        let (Some(name), Some(version)) = (field("P:"), field("V:")) else {
            continue;
        };
        let arch = field("A:").unwrap_or_default();
        let purl = purl::purl("apk", namespace, &name, &version, &arch, release(distro));
        packages.push(Package {
            ecosystem: Ecosystem::Apk,
            name,
            version,
            arch,
            purl,
        });
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: g++\nStatus: install ok installed\nVersion: 4:12.2.0-3\nArchitecture: amd64\nDescription: the compiler\n a long\n .\n description\n\n\
Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\n\
Package: libc6\nStatus: install ok installed\nArchitecture: i386\nVersion: 2.36-9+deb12u4\n\n\
Package: removed\nStatus: deinstall ok config-files\nVersion: 1.0\nArchitecture: all\n";

    #[test]
    fn dpkg_status_gives_the_installed_packages_with_purls() {
        let distro = Distro {
            id: "debian".to_owned(),
            version_id: "12".to_owned(),
        };
        let packages = dpkg_packages(STATUS, Some(&distro));
        let purls: Vec<&str> = packages
            .iter()
            .map(|package| package.purl.as_str())
            .collect();
        assert_eq!(
            purls,
            [
                "pkg:deb/debian/g%2B%2B@4:12.2.0-3?arch=amd64&distro=debian-12",
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386&distro=debian-12",
            ]
        );
    }

    #[test]
    fn os_release_links_resolve_below_the_root() {
        assert_eq!(
            resolve_in("etc", "../usr/lib/os-release"),
            "usr/lib/os-release"
        );
        assert_eq!(
            resolve_in("etc", "/usr/lib/os-release"),
            "usr/lib/os-release"
        );
        assert_eq!(
            resolve_in("etc", "../../../../usr/lib/os-release"),
            "usr/lib/os-release"
        );
    }

    #[test]
    fn apk_and_os_release_records_read() {
        let distro = parse_os_release("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n");
        assert_eq!(distro.id, "alpine");
        assert_eq!(distro.version_id, "3.19.1");
        let packages = apk_packages(
            "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n\nP:curl\nV:8.5.0-r0\nA:x86_64\n",
            Some(&distro),
        );
        assert_eq!(packages.len(), 2);
        assert_eq!(
            packages[1].purl,
            "pkg:apk/alpine/curl@8.5.0-r0?arch=x86_64&distro=alpine-3.19.1"
        );
    }
}
