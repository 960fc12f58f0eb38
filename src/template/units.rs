//! Values that templates write as short strings: durations (`10m`), sizes
//! (`2G`), file modes (`"0644"`) and owners (`"0:0"`, `"www-data"`).
//!
//! Each parses once into a checked type that prints back the way it was
//! meant, so `inspect` and the stage keys see one canonical form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A timeout such as `90s`, `10m` or `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration(std::time::Duration);

impl Duration {
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const HINT: &str = "expected a number and a unit (ms, s, m, h, d), like `90s` or `1h30m`";
        if text.is_empty() {
            return Err(HINT.to_owned());
        }
        let mut total_ms: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(HINT.to_owned());
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| "number is too large".to_owned())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let factor = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(HINT.to_owned()),
            };
            rest = &rest[unit_len..];
            total_ms = number
                .checked_mul(factor)
                .and_then(|ms| ms.checked_add(total_ms))
                .ok_or_else(|| "duration is too long".to_owned())?;
        }
        if total_ms == 0 {
            return Err("a duration must be longer than zero".to_owned());
        }
        Ok(Self(std::time::Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl TryFrom<String> for Duration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Duration> for String {
    fn from(duration: Duration) -> String {
        duration.to_string()
    }
}

/// A size in bytes written with a binary suffix: `512M`, `2G`, `2GiB`, `1T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn from_bytes(bytes: u64) -> Self {
        ByteSize(bytes)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const HINT: &str = "expected a whole number with an optional unit K, M, G or T (powers of 1024), like `2G`";
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if digits == 0 {
            return Err(HINT.to_owned());
        }
        let number: u64 = text[..digits]
            .parse()
            .map_err(|_| "size is too large".to_owned())?;
        let shift = match text[digits..].trim_start() {
            "" | "B" => 0,
            "K" | "KiB" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            _ => return Err(HINT.to_owned()),
        };
        let bytes = number
            .checked_mul(1 << shift)
            .ok_or_else(|| "size is too large".to_owned())?;
        if bytes == 0 {
            return Err("a size must be larger than zero".to_owned());
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl TryFrom<String> for ByteSize {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<ByteSize> for String {
    fn from(size: ByteSize) -> String {
        size.to_string()
    }
}

/// Permission bits written in octal, as a string: `"0644"`, `"4755"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileMode(u32);

impl FileMode {
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl FromStr for FileMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        if digits.is_empty()
            || digits.len() > 4
            || !digits.chars().all(|c| ('0'..='7').contains(&c))
        {
            return Err("expected up to four octal digits, like \"0644\" or \"4755\"".to_owned());
        }
        Ok(Self(
            u32::from_str_radix(digits, 8).expect("octal digits checked above"),
        ))
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl TryFrom<String> for FileMode {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<FileMode> for String {
    fn from(mode: FileMode) -> String {
        mode.to_string()
    }
}

/// A user or group: a numeric id, or a name looked up in the image's
/// `/etc/passwd` or `/etc/group` when the stage runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Principal {
    Id(u32),
    Name(String),
}

impl FromStr for Principal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(id) = text.parse::<u32>() {
            return Ok(Principal::Id(id));
        }
        let mut chars = text.chars();
        let valid_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        if !valid_start
            || text.len() > 32
            || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(format!(
                "`{text}` is neither a numeric id nor a user or group name"
            ));
        }
        Ok(Principal::Name(text.to_owned()))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Id(id) => write!(f, "{id}"),
            Principal::Name(name) => f.write_str(name),
        }
    }
}

/// `USER[:GROUP]`, as `chown` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner {
    pub user: Principal,
    pub group: Option<Principal>,
}

impl FromStr for Owner {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        Ok(Self {
            user: user.parse()?,
            group: group.map(str::parse).transpose()?,
        })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(group) => write!(f, "{}:{group}", self.user),
            None => write!(f, "{}", self.user),
        }
    }
}

impl TryFrom<String> for Owner {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> String {
        owner.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_canonically() {
        for (text, ms, canonical) in [
            ("90s", 90_000, "1m30s"),
            ("10m", 600_000, "10m"),
            ("1h30m", 5_400_000, "1h30m"),
            ("250ms", 250, "250ms"),
            ("2d", 172_800_000, "2d"),
        ] {
            let duration: Duration = text.parse().unwrap();
            assert_eq!(duration.as_std().as_millis(), ms, "{text}");
            assert_eq!(duration.to_string(), canonical);
        }
        for bad in ["", "10", "m", "10 m", "1.5h", "10min", "0s", "-1s"] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!("2G".parse::<ByteSize>().unwrap().bytes(), 2 << 30);
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().bytes(), 512 << 20);
        assert_eq!("4096".parse::<ByteSize>().unwrap().bytes(), 4096);
        assert_eq!("1536M".parse::<ByteSize>().unwrap().to_string(), "1536M");
        for bad in ["", "G", "2X", "1.5G", "0", "99999999999T"] {
            assert!(
                bad.parse::<ByteSize>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!("0644".parse::<FileMode>().unwrap().bits(), 0o644);
        assert_eq!("4755".parse::<FileMode>().unwrap().bits(), 0o4755);
        assert_eq!("755".parse::<FileMode>().unwrap().to_string(), "0755");
        for bad in ["", "0888", "12345", "rw-r--r--"] {
            assert!(
                bad.parse::<FileMode>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn owners_take_ids_or_names() {
        let owner: Owner = "0:www-data".parse().unwrap();
        assert_eq!(owner.user, Principal::Id(0));
        assert_eq!(owner.group, Some(Principal::Name("www-data".into())));
        assert!("Root".parse::<Owner>().is_err());
        assert!("a:b:c".parse::<Owner>().is_err());
    }
}
