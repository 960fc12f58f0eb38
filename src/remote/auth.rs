//! Registry credentials and authentication challenges.
//!
//! Credentials come from, in order: `KILN_REGISTRY_USER` and
//! `KILN_REGISTRY_PASSWORD`; `kiln login` (`$KILN_HOME/auth.json`); Docker's
//! `~/.docker/config.json`. Both files use Docker's format: `auths`, a map
//! from registry host to a base64 `user:password` in `auth`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <sensitive>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

#[derive(Default, Serialize, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
}

/// `$KILN_HOME/auth.json`, written by `kiln login`.
pub fn kiln_auth_file(home: &Path) -> PathBuf {
    home.join("auth.json")
}

fn docker_config_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker/config.json"))
}

fn from_file(path: &Path, host: &str) -> Option<Credentials> {
    let text = std::fs::read_to_string(path).ok()?;
    let config: DockerConfig = serde_json::from_str(&text).ok()?;
    let entry = config.auths.iter().find(|(key, _)| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        key == host || key.strip_suffix("/v2/").or(key.strip_suffix("/v1/")) == Some(host)
    })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.1.auth.as_ref()?)
        .ok()?;
    let (username, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some(Credentials { username, password })
}

/// The credentials kiln would use for `host`, if any.
pub fn credentials_for(home: &Path, host: &str) -> Option<Credentials> {
    if let (Ok(username), Ok(password)) = (
        std::env::var("KILN_REGISTRY_USER"),
        std::env::var("KILN_REGISTRY_PASSWORD"),
    ) {
        return Some(Credentials { username, password });
    }
    from_file(&kiln_auth_file(home), host)
        .or_else(|| docker_config_file().and_then(|path| from_file(&path, host)))
}

/// Records credentials for `host` in `$KILN_HOME/auth.json` (mode 0600).
pub fn save(home: &Path, host: &str, credentials: &Credentials) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    let path = kiln_auth_file(home);
    let mut config: DockerConfig = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let pair = format!("{}:{}", credentials.username, credentials.password);
    config.auths.insert(
        host.to_owned(),
        AuthEntry {
            auth: Some(base64::engine::general_purpose::STANDARD.encode(pair)),
        },
    );
    std::fs::create_dir_all(home)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".auth-")
        .tempfile_in(home)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    temp.write_all(&serde_json::to_vec_pretty(&config).expect("auth files serialize"))?;
    temp.as_file().sync_all()?;
    temp.persist(&path).map_err(|error| error.error)?;
    Ok(())
}

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after
                .split_once(',')
                .map_or((after, ""), |(value, after)| (value, after))
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_owned());
        rest = after.trim_start_matches(',').trim();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge("Basic realm=\"kiln\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = Credentials {
            username: "me".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
        assert_eq!(credentials.basic_header(), "Basic bWU6aHVudGVyMg==");
    }
}
