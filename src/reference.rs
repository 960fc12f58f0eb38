//! Names of images: repository names, versions, digests, store references
//! (`web:1.4.0`, `web@sha256:…`) and remote references
//! (`HOST[:PORT]/REPO[:TAG|@DIGEST]`).
//!
//! Parsed once at the edge into newtypes, so the store and the registry
//! client never see an unchecked name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! string_newtype {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                text.parse()
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A sha256 content digest, `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);
string_newtype!(Digest);

impl Digest {
    /// The digest of bytes already in memory (small things: JSON, templates).
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self::from_sha256(&sha2::Sha256::digest(bytes))
    }

    pub fn from_sha256(hash: &[u8]) -> Self {
        let mut text = String::with_capacity(71);
        text.push_str("sha256:");
        for byte in hash {
            text.push_str(&format!("{byte:02x}"));
        }
        Self(text)
    }

    /// The 64 hex digits without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl FromStr for Digest {
    type Err = String;

    /// Accepts `sha256:HEX` or bare `HEX` (as `sha256sum` prints it).
    fn from_str(text: &str) -> Result<Self, String> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() != 64
            || !hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Err("expected `sha256:` and 64 lowercase hex digits".to_owned());
        }
        Ok(Self(format!("sha256:{hex}")))
    }
}

/// A repository name: `[a-z0-9][a-z0-9._/-]*`, components not empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageName(String);
string_newtype!(ImageName);

impl FromStr for ImageName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let valid_chars = text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._/-".contains(c));
        if !valid_chars {
            return Err("expected lowercase letters, digits, `.`, `_`, `-` and `/`, starting with a letter or digit".to_owned());
        }
        if text.len() > 255 {
            return Err("a name is at most 255 characters".to_owned());
        }
        let bad_component = text.split('/').any(|component| {
            component.is_empty()
                || component == "."
                || component == ".."
                || !component.starts_with(|c: char| c.is_ascii_alphanumeric())
        });
        if bad_component {
            return Err(
                "each `/`-separated component must start with a letter or digit".to_owned(),
            );
        }
        Ok(Self(text.to_owned()))
    }
}

/// A version, which is an OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);
string_newtype!(Version);

impl FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let valid = (1..=128).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            return Err(
                "expected 1 to 128 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`"
                    .to_owned(),
            );
        }
        Ok(Self(text.to_owned()))
    }
}

/// A channel name such as `stable` or `dev`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelName(String);
string_newtype!(ChannelName);

impl FromStr for ChannelName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let valid = (1..=64).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !valid {
            return Err(
                "expected lowercase letters, digits, `.`, `_` or `-`, starting with a letter"
                    .to_owned(),
            );
        }
        Ok(Self(text.to_owned()))
    }
}

/// An image in the local store: by version or by manifest digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StoreRef {
    pub name: ImageName,
    pub target: StoreTarget,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreTarget {
    Version(Version),
    Digest(Digest),
}

impl FromStr for StoreRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some((name, digest)) = text.split_once('@') {
            return Ok(Self {
                name: name.parse()?,
                target: StoreTarget::Digest(digest.parse()?),
            });
        }
        let Some((name, version)) = text.rsplit_once(':') else {
            return Err("expected `NAME:VERSION` or `NAME@sha256:DIGEST`".to_owned());
        };
        Ok(Self {
            name: name.parse()?,
            target: StoreTarget::Version(version.parse()?),
        })
    }
}

impl fmt::Display for StoreRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            StoreTarget::Version(version) => write!(f, "{}:{version}", self.name),
            StoreTarget::Digest(digest) => write!(f, "{}@{digest}", self.name),
        }
    }
}

impl TryFrom<String> for StoreRef {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<StoreRef> for String {
    fn from(reference: StoreRef) -> String {
        reference.to_string()
    }
}

/// A repository on a registry, `HOST[:PORT]/REPO`, optionally with a tag
/// or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RemoteRef {
    pub host: String,
    pub repository: ImageName,
    pub target: Option<StoreTarget>,
    /// The tag written before a digest (`REPO:TAG@DIGEST`): the digest is
    /// what is pulled, the tag the version it is stored as.
    pub pinned_tag: Option<Version>,
}

impl RemoteRef {
    /// Whether `text` names a registry host in its first component, as
    /// Docker decides it: a `.` or `:` in it, or `localhost`.
    pub fn looks_remote(text: &str) -> bool {
        text.split_once('/').is_some_and(|(host, _)| {
            host.contains('.') || host.contains(':') || host == "localhost"
        })
    }

    /// The last path component.
    pub fn short_name(&self) -> &str {
        self.repository
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or(self.repository.as_str())
    }

    /// The tag, or the tag written before the digest.
    pub fn tag(&self) -> Option<&Version> {
        match &self.target {
            Some(StoreTarget::Version(tag)) => Some(tag),
            _ => self.pinned_tag.as_ref(),
        }
    }

    /// The digest it is pinned to, if any.
    pub fn digest(&self) -> Option<&Digest> {
        match &self.target {
            Some(StoreTarget::Digest(digest)) => Some(digest),
            _ => None,
        }
    }

    /// How the image is named in the store: the repository path without
    /// the host, with the tag as the version; an image pinned by digest
    /// alone is stored as version `sha256-HEX`.
    pub fn store_ref(&self) -> Option<StoreRef> {
        let version = match (self.tag(), self.digest()) {
            (Some(tag), _) => tag.clone(),
            (None, Some(digest)) => format!("sha256-{}", digest.hex()).parse().ok()?,
            (None, None) => return None,
        };
        Some(StoreRef {
            name: self.repository.clone(),
            target: StoreTarget::Version(version),
        })
    }
}

impl FromStr for RemoteRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const HINT: &str = "expected `HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]`";
        let Some((host, rest)) = text.split_once('/') else {
            return Err(HINT.to_owned());
        };
        let host_valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !host_valid || !Self::looks_remote(text) {
            return Err(format!("`{host}` is not a registry host; {HINT}"));
        }
        let mut pinned_tag = None;
        let (repository, target) = if let Some((repository, digest)) = rest.split_once('@') {
            let repository = match repository.rsplit_once(':') {
                Some((repository, tag)) => {
                    pinned_tag = Some(tag.parse()?);
                    repository
                }
                None => repository,
            };
            (repository, Some(StoreTarget::Digest(digest.parse()?)))
        } else if let Some((repository, tag)) = rest.rsplit_once(':') {
            (repository, Some(StoreTarget::Version(tag.parse()?)))
        } else {
            (rest, None)
        };
        Ok(Self {
            host: host.to_owned(),
            repository: repository.parse()?,
            target,
            pinned_tag,
        })
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(tag) = &self.pinned_tag {
            write!(f, ":{tag}")?;
        }
        match &self.target {
            Some(StoreTarget::Version(tag)) => write!(f, ":{tag}"),
            Some(StoreTarget::Digest(digest)) => write!(f, "@{digest}"),
            None => Ok(()),
        }
    }
}

impl TryFrom<String> for RemoteRef {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<RemoteRef> for String {
    fn from(reference: RemoteRef) -> String {
        reference.to_string()
    }
}

/// What an `image` source starts from: an image in the store or on a registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ImageRef {
    Store(StoreRef),
    Remote(RemoteRef),
}

impl FromStr for ImageRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if RemoteRef::looks_remote(text) {
            let remote: RemoteRef = text.parse()?;
            if remote.target.is_none() {
                return Err("a remote base needs a tag or a digest".to_owned());
            }
            Ok(ImageRef::Remote(remote))
        } else {
            Ok(ImageRef::Store(text.parse()?))
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Store(reference) => reference.fmt(f),
            ImageRef::Remote(reference) => reference.fmt(f),
        }
    }
}

impl TryFrom<String> for ImageRef {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<ImageRef> for String {
    fn from(reference: ImageRef) -> String {
        reference.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_follow_the_contract() {
        for good in ["web", "golden/web", "a.b_c-d", "0base"] {
            assert!(good.parse::<ImageName>().is_ok(), "{good}");
        }
        for bad in ["", "Web", "-web", "web/", "a//b", "a/../b", "a/.b", "web:1"] {
            assert!(bad.parse::<ImageName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_are_oci_tags() {
        assert!("1.4.0".parse::<Version>().is_ok());
        assert!("v1_rc-2".parse::<Version>().is_ok());
        for bad in ["", ".1", "-rc", "1/2", "1:2", &"x".repeat(129)] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn references_split_local_from_remote() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(
            "web:1.4.0".parse::<ImageRef>(),
            Ok(ImageRef::Store(_))
        ));
        assert!(matches!(
            format!("golden/web@{digest}").parse::<ImageRef>(),
            Ok(ImageRef::Store(_))
        ));
        let remote = "127.0.0.1:5000/golden/web:1.4.0"
            .parse::<ImageRef>()
            .unwrap();
        let ImageRef::Remote(remote) = remote else {
            panic!("expected a remote ref")
        };
        assert_eq!(remote.host, "127.0.0.1:5000");
        assert_eq!(remote.short_name(), "web");
        assert_eq!(remote.to_string(), "127.0.0.1:5000/golden/web:1.4.0");
        assert!("registry.example.com/web".parse::<ImageRef>().is_err());
        assert_eq!(
            remote.store_ref().unwrap().to_string(),
            "golden/web:1.4.0",
            "stored under the repository path, without the host"
        );
        let pinned: RemoteRef = format!("127.0.0.1:5000/golden/web:1.4.0@{digest}")
            .parse()
            .unwrap();
        assert_eq!(pinned.digest().map(Digest::as_str), Some(digest.as_str()));
        assert_eq!(pinned.store_ref().unwrap().to_string(), "golden/web:1.4.0");
        assert_eq!(
            pinned.to_string(),
            format!("127.0.0.1:5000/golden/web:1.4.0@{digest}")
        );
        let bare: RemoteRef = format!("127.0.0.1:5000/golden/web@{digest}")
            .parse()
            .unwrap();
        assert_eq!(
            bare.store_ref().unwrap().to_string(),
            format!("golden/web:sha256-{}", "a".repeat(64))
        );
        assert!("web".parse::<ImageRef>().is_err());
    }

    #[test]
    fn digests_accept_sha256sum_output() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            hex.parse::<Digest>().unwrap().to_string(),
            format!("sha256:{hex}")
        );
        assert!("sha256:XYZ".parse::<Digest>().is_err());
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
