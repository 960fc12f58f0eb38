//! `[[test]]` blocks: commands run in the finished root, mounted read-only,
//! before anything is stored or published. They add no layer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cache::key::{KeyError, KeyInputs};
use crate::provisioners::shell::{ShellBody, ShellSpec, check_body};
use crate::reference::Digest;
use crate::sandbox::Network;
use crate::template::check::Checker;
use crate::template::error::DiagnosticKind;
use crate::template::keypath::KeyPath;
use crate::template::units::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    name: String,
    inline: Option<Vec<String>>,
    script: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout: Option<String>,
    network: Option<Network>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageTest {
    pub name: String,
    pub body: ShellBody,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// `none` unless the test says otherwise: a test checks the image, not
    /// the world.
    pub network: Network,
}

impl ImageTest {
    /// Its settings, its script's content and the template's variables
    /// (which its commands see as `KILN_VAR_NAME`); with the digest of the
    /// image it tests, they make its key.
    pub fn key_inputs(&self, inputs: &mut KeyInputs, variables: &Digest) -> Result<(), KeyError> {
        let ImageTest {
            name,
            body,
            env,
            timeout,
            network,
        } = self;
        inputs.setting("name", name);
        body.key_inputs(inputs)?;
        inputs
            .setting("env", env)
            .setting("timeout", timeout)
            .setting("network", network)
            .setting_digest("variables", variables.clone());
        Ok(())
    }

    /// The test as a shell stage: `/bin/sh`, no retries, in `/`.
    pub fn as_shell(&self) -> ShellSpec {
        ShellSpec {
            body: self.body.clone(),
            env: self.env.clone(),
            shell: "/bin/sh".to_owned(),
            timeout: self.timeout,
            max_retries: 0,
            workdir: None,
            cache: true,
            network: self.network,
        }
    }
}

pub(crate) fn check_all(cx: &mut Checker<'_>) -> Option<Vec<ImageTest>> {
    let mut names = BTreeMap::new();
    let checked: Vec<Option<ImageTest>> = (0..cx.array_len("test")?)
        .map(|index| {
            let at = KeyPath::root().key("test").index(index);
            let raw: RawTest = cx.shape(&at, false)?;
            let name = cx.text(&at.key("name"), &raw.name).and_then(|name| {
                if name.trim().is_empty() {
                    cx.report(
                        &at.key("name"),
                        DiagnosticKind::Invalid("a test needs a name".to_owned()),
                    );
                    return None;
                }
                if let Some(first) = names.insert(name.clone(), index) {
                    cx.report(
                        &at.key("name"),
                        DiagnosticKind::Invalid(format!(
                            "test name `{name}` is already used by test[{first}]"
                        )),
                    );
                    return None;
                }
                Some(name)
            });
            let body = check_body(
                cx,
                &at,
                raw.inline.as_deref(),
                raw.script.as_deref(),
                None,
                &["inline", "script"],
            );
            let env = cx.environment(&at.key("env"), &raw.env);
            let timeout =
                cx.optional_parsed(&at.key("timeout"), raw.timeout.as_deref(), "duration");
            Some(ImageTest {
                name: name?,
                body: body?,
                env: env?,
                timeout: timeout?,
                network: raw.network.unwrap_or(Network::None),
            })
        })
        .collect();
    checked.into_iter().collect()
}
