//! Finding AWS credentials as AWS's own tools do, from what is on this
//! machine: a named profile (the template's `profile`, or `AWS_PROFILE`)
//! from the shared config and credentials files, its `credential_process`;
//! else the `AWS_ACCESS_KEY_ID` environment; else a web identity
//! (`AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE`, or a profile's
//! `role_arn` and `web_identity_token_file`); else the `default` profile;
//! else the instance metadata service. The last two need a request to AWS
//! ([`super::sts`], [`super::imds`]); this module only says which.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::sigv4::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "find AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in {} or {}",
        credentials_file.display(),
        config_file.display()
    )]
    NotFound {
        credentials_file: PathBuf,
        config_file: PathBuf,
    },
    #[error("find AWS profile `{profile}` in {} or {}", credentials_file.display(), config_file.display())]
    NoProfile {
        profile: String,
        credentials_file: PathBuf,
        config_file: PathBuf,
    },
    #[error("read AWS profile `{profile}`: it has {found} but not {missing}")]
    Incomplete {
        profile: String,
        found: &'static str,
        missing: &'static str,
    },
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run the credential_process of AWS profile `{profile}`: {reason}")]
    Process { profile: String, reason: String },
}

/// What the credentials are looked up in: the environment and the home
/// folder (apart from the process's own, so tests can give their own).
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub home: PathBuf,
}

impl Environment<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.var)(name).filter(|value| !value.is_empty())
    }

    fn credentials_file(&self) -> PathBuf {
        self.var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.home.join(".aws/credentials"))
    }

    fn config_file(&self) -> PathBuf {
        self.var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.home.join(".aws/config"))
    }
}

/// Where the credentials come from.
#[derive(Debug)]
pub enum Source {
    /// Keys found on this machine.
    Static(Credentials),
    /// `AssumeRoleWithWebIdentity` with the token in `token_file`.
    WebIdentity {
        role_arn: String,
        token_file: PathBuf,
        session_name: String,
    },
    /// The EC2 instance metadata service (IMDSv2).
    InstanceMetadata { endpoint: String },
}

/// The default IMDS address (`AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it).
const IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Where the credentials for `profile` (or the usual order without one)
/// come from.
pub fn source(
    environment: &Environment<'_>,
    profile: Option<&str>,
) -> Result<Source, CredentialsError> {
    let named = profile
        .map(str::to_owned)
        .or_else(|| environment.var("AWS_PROFILE"));
    let session_name = environment
        .var("AWS_ROLE_SESSION_NAME")
        .unwrap_or_else(|| "kiln".to_owned());
    if let Some(name) = &named
        && let Some(settings) = profile_settings(environment, name)?
        && let (Some(role_arn), Some(token_file)) = (
            settings.get("role_arn"),
            settings.get("web_identity_token_file"),
        )
    {
        return Ok(Source::WebIdentity {
            role_arn: role_arn.clone(),
            token_file: PathBuf::from(token_file),
            session_name: settings
                .get("role_session_name")
                .cloned()
                .unwrap_or(session_name),
        });
    }
    if named.is_none()
        && environment.var("AWS_ACCESS_KEY_ID").is_none()
        && let (Some(role_arn), Some(token_file)) = (
            environment.var("AWS_ROLE_ARN"),
            environment.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
        )
    {
        return Ok(Source::WebIdentity {
            role_arn,
            token_file: PathBuf::from(token_file),
            session_name,
        });
    }
    match resolve(environment, profile) {
        Ok(credentials) => Ok(Source::Static(credentials)),
        Err(CredentialsError::NotFound { .. })
            if !environment
                .var("AWS_EC2_METADATA_DISABLED")
                .is_some_and(|value| value.eq_ignore_ascii_case("true")) =>
        {
            Ok(Source::InstanceMetadata {
                endpoint: environment
                    .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                    .unwrap_or_else(|| IMDS_ENDPOINT.to_owned())
                    .trim_end_matches('/')
                    .to_owned(),
            })
        }
        Err(error) => Err(error),
    }
}

/// The process's own environment and home.
pub fn process_environment(var: &dyn Fn(&str) -> Option<String>) -> Environment<'_> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    Environment { var, home }
}

/// The credentials on this machine for `profile` (or the usual order
/// without one).
pub fn resolve(
    environment: &Environment<'_>,
    profile: Option<&str>,
) -> Result<Credentials, CredentialsError> {
    let named = profile
        .map(str::to_owned)
        .or_else(|| environment.var("AWS_PROFILE"));
    if named.is_none()
        && let Some(access_key_id) = environment.var("AWS_ACCESS_KEY_ID")
    {
        let secret_access_key =
            environment
                .var("AWS_SECRET_ACCESS_KEY")
                .ok_or(CredentialsError::Incomplete {
                    profile: "environment".to_owned(),
                    found: "AWS_ACCESS_KEY_ID",
                    missing: "AWS_SECRET_ACCESS_KEY",
                })?;
        return Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: environment.var("AWS_SESSION_TOKEN"),
        });
    }
    let name = named.clone().unwrap_or_else(|| "default".to_owned());
    let settings = profile_settings(environment, &name)?;
    match settings {
        Some(settings) => from_profile(&name, &settings),
        None if named.is_some() => Err(CredentialsError::NoProfile {
            profile: name,
            credentials_file: environment.credentials_file(),
            config_file: environment.config_file(),
        }),
        None => Err(CredentialsError::NotFound {
            credentials_file: environment.credentials_file(),
            config_file: environment.config_file(),
        }),
    }
}

/// The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, or the profile's.
pub fn region(environment: &Environment<'_>, profile: Option<&str>) -> Option<String> {
    environment
        .var("AWS_REGION")
        .or_else(|| environment.var("AWS_DEFAULT_REGION"))
        .or_else(|| {
            let name = profile
                .map(str::to_owned)
                .or_else(|| environment.var("AWS_PROFILE"))
                .unwrap_or_else(|| "default".to_owned());
            profile_settings(environment, &name)
                .ok()
                .flatten()?
                .get("region")
                .cloned()
        })
}

/// A profile's settings: the credentials file's `[name]` over the config
/// file's `[profile name]` (`[default]` in both for the default).
fn profile_settings(
    environment: &Environment<'_>,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, CredentialsError> {
    let config_section = if name == "default" {
        "default".to_owned()
    } else {
        format!("profile {name}")
    };
    let mut settings = BTreeMap::new();
    let mut found = false;
    for (path, section) in [
        (environment.config_file(), config_section.as_str()),
        (environment.credentials_file(), name),
    ] {
        if let Some(values) = read_ini(&path)?.remove(section) {
            found = true;
            settings.extend(values);
        }
    }
    Ok(found.then_some(settings))
}

fn from_profile(
    name: &str,
    settings: &BTreeMap<String, String>,
) -> Result<Credentials, CredentialsError> {
    match (
        settings.get("aws_access_key_id"),
        settings.get("aws_secret_access_key"),
    ) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
            session_token: settings.get("aws_session_token").cloned(),
        }),
        (Some(_), None) => Err(CredentialsError::Incomplete {
            profile: name.to_owned(),
            found: "aws_access_key_id",
            missing: "aws_secret_access_key",
        }),
        _ => match settings.get("credential_process") {
            Some(command) => run_process(name, command),
            None => Err(CredentialsError::Incomplete {
                profile: name.to_owned(),
                found: "neither keys",
                missing: "credential_process",
            }),
        },
    }
}

/// Runs a `credential_process` (through `/bin/sh -c`, as the AWS CLI runs
/// it on Linux) and reads its JSON: `Version` 1, `AccessKeyId`,
/// `SecretAccessKey`, `SessionToken`.
fn run_process(profile: &str, command: &str) -> Result<Credentials, CredentialsError> {
    let fail = |reason: String| CredentialsError::Process {
        profile: profile.to_owned(),
        reason,
    };
    let output = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| fail(error.to_string()))?;
    if !output.status.success() {
        return Err(fail(format!("it exited with {}", output.status)));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        version: u32,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    }
    // The error says where the JSON is wrong, never what it holds.
    let answer: Answer = serde_json::from_slice(&output.stdout).map_err(|error| {
        fail(format!(
            "its output is not the JSON AWS specifies (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    if answer.version != 1 {
        return Err(fail(format!(
            "its output has Version {}, not 1",
            answer.version
        )));
    }
    Ok(Credentials {
        access_key_id: answer.access_key_id,
        secret_access_key: answer.secret_access_key,
        session_token: answer.session_token,
    })
}

/// An INI file's sections; a missing file has none.
fn read_ini(path: &Path) -> Result<BTreeMap<String, BTreeMap<String, String>>, CredentialsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(CredentialsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some((key, value))) = (&current, line.split_once('=')) {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment<'a>(home: &Path, vars: &'a dyn Fn(&str) -> Option<String>) -> Environment<'a> {
        Environment {
            var: vars,
            home: home.to_owned(),
        }
    }

    #[test]
    fn the_environment_then_profiles_then_credential_process() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = secret-default\n\n\
             # a comment\n[ci]\naws_access_key_id=AKIDCI\naws_secret_access_key=secret-ci\naws_session_token=token-ci\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n\n[profile tool]\nregion = us-east-1\n\
             credential_process = printf '{\"Version\": 1, \"AccessKeyId\": \"AKIDTOOL\", \"SecretAccessKey\": \"secret-tool\"}'\n\n\
             [profile broken]\ncredential_process = echo not json\n\n[profile half]\naws_access_key_id = AKIDHALF\n",
        )
        .unwrap();
        let none = |_: &str| None;
        let env = environment(home.path(), &none);
        assert_eq!(resolve(&env, None).unwrap().access_key_id, "AKIDDEFAULT");
        let ci = resolve(&env, Some("ci")).unwrap();
        assert_eq!(
            (ci.access_key_id.as_str(), ci.session_token.as_deref()),
            ("AKIDCI", Some("token-ci"))
        );
        let tool = resolve(&env, Some("tool")).unwrap();
        assert_eq!(tool.secret_access_key, "secret-tool");
        assert_eq!(region(&env, Some("tool")).as_deref(), Some("us-east-1"));
        assert_eq!(region(&env, None).as_deref(), Some("eu-west-1"));
        let broken = resolve(&env, Some("broken")).unwrap_err().to_string();
        assert!(broken.contains("not the JSON AWS specifies"), "{broken}");
        assert!(
            resolve(&env, Some("half"))
                .unwrap_err()
                .to_string()
                .contains("not aws_secret_access_key")
        );
        assert!(
            resolve(&env, Some("nosuch"))
                .unwrap_err()
                .to_string()
                .contains("find AWS profile `nosuch`")
        );

        // The environment's keys win over the default profile, and
        // AWS_PROFILE names one.
        let vars = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKIDENV".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret-env".to_owned()),
            "AWS_REGION" => Some("ap-south-1".to_owned()),
            _ => None,
        };
        let env = environment(home.path(), &vars);
        assert_eq!(resolve(&env, None).unwrap().access_key_id, "AKIDENV");
        assert_eq!(resolve(&env, Some("ci")).unwrap().access_key_id, "AKIDCI");
        assert_eq!(region(&env, None).as_deref(), Some("ap-south-1"));
        let vars = |name: &str| (name == "AWS_PROFILE").then(|| "ci".to_owned());
        let env = environment(home.path(), &vars);
        assert_eq!(resolve(&env, None).unwrap().access_key_id, "AKIDCI");
    }

    #[test]
    fn web_identity_comes_before_the_default_profile_and_the_metadata_service_last() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[profile ci]\nrole_arn = arn:aws:iam::123456789012:role/ci\nweb_identity_token_file = /run/token\n",
        )
        .unwrap();
        let vars = |name: &str| match name {
            "AWS_ROLE_ARN" => Some("arn:aws:iam::123456789012:role/env".to_owned()),
            "AWS_WEB_IDENTITY_TOKEN_FILE" => Some("/run/env-token".to_owned()),
            _ => None,
        };
        let env = environment(home.path(), &vars);
        match source(&env, None).unwrap() {
            Source::WebIdentity {
                role_arn,
                token_file,
                session_name,
            } => {
                assert!(role_arn.ends_with("role/env"));
                assert_eq!(token_file, Path::new("/run/env-token"));
                assert_eq!(session_name, "kiln");
            }
            other => panic!("{other:?}"),
        }
        match source(&env, Some("ci")).unwrap() {
            Source::WebIdentity { role_arn, .. } => assert!(role_arn.ends_with("role/ci")),
            other => panic!("{other:?}"),
        }
        let none = |name: &str| {
            (name == "AWS_EC2_METADATA_SERVICE_ENDPOINT").then(|| "http://127.0.0.1:9/".to_owned())
        };
        match source(&environment(home.path(), &none), None).unwrap() {
            Source::InstanceMetadata { endpoint } => assert_eq!(endpoint, "http://127.0.0.1:9"),
            other => panic!("{other:?}"),
        }
        let disabled =
            |name: &str| (name == "AWS_EC2_METADATA_DISABLED").then(|| "true".to_owned());
        assert!(source(&environment(home.path(), &disabled), None).is_err());
    }

    #[test]
    fn nothing_anywhere_says_where_it_looked() {
        let home = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        let error = resolve(&environment(home.path(), &none), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("AWS_ACCESS_KEY_ID") && error.contains(".aws/credentials"),
            "{error}"
        );
    }
}
