//! `[[test]]` blocks: commands run on the finished image before anything
//! is stored or published (`in = "chroot"`, on a throwaway writable layer
//! above it) or in the machine booted from its bootable disk (`in =
//! "vm"`, before channels and remotes move). They add no layer.

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
    user: Option<String>,
    #[serde(rename = "in")]
    place: Option<TestPlace>,
}

/// Where a test runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestPlace {
    /// In the finished root, confined like a shell stage, writes discarded.
    #[default]
    Chroot,
    /// In the machine booted from the template's bootable disk.
    Vm,
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
    /// A user of the image (name or uid, optionally `:group`); `None`: root.
    pub user: Option<String>,
    pub place: TestPlace,
}

/// The marker a test's script prints when one of its inline commands
/// fails, followed by the command's number (from 1).
pub const FAILED_COMMAND_MARKER: &str = "kiln-test: failed command ";

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
            user,
            place,
        } = self;
        inputs.setting("name", name);
        body.key_inputs(inputs)?;
        inputs
            .setting("env", env)
            .setting("timeout", timeout)
            .setting("network", network)
            .setting_digest("variables", variables.clone());
        // Left out when unset, so the keys of existing tests stay.
        if user.is_some() || *place != TestPlace::Chroot {
            inputs.setting("user", user).setting("in", place);
        }
        Ok(())
    }

    /// The script a test runs: its inline commands, each announced by its
    /// number, so that when one fails (the shell runs with `-e`) the trap
    /// names it; a script file as it is.
    pub fn body_with_markers(&self) -> ShellBody {
        match &self.body {
            ShellBody::Inline(commands) => {
                let mut lines = vec![
                    "kiln_command=0".to_owned(),
                    format!(
                        "trap 'kiln_status=$?; [ \"$kiln_status\" -eq 0 ] || \
                         echo \"{FAILED_COMMAND_MARKER}$kiln_command\" >&2' EXIT"
                    ),
                ];
                for (index, command) in commands.iter().enumerate() {
                    lines.push(format!("kiln_command={}", index + 1));
                    lines.push(command.clone());
                }
                ShellBody::Inline(lines)
            }
            body => body.clone(),
        }
    }

    /// The inline command a failed run's output names, if it names one.
    pub fn failed_command(&self, output: &[String]) -> Option<(usize, &str)> {
        let ShellBody::Inline(commands) = &self.body else {
            return None;
        };
        let number: usize = output
            .iter()
            .rev()
            .find_map(|line| line.trim().strip_prefix(FAILED_COMMAND_MARKER))?
            .trim()
            .parse()
            .ok()?;
        let command = commands.get(number.checked_sub(1)?)?;
        Some((number, command))
    }

    /// The test as a shell stage: `/bin/sh`, no retries, in `workdir`
    /// (the image's), each inline command announced (see
    /// [`Self::body_with_markers`]).
    pub fn as_shell(&self, workdir: Option<String>) -> ShellSpec {
        ShellSpec {
            body: self.body_with_markers(),
            env: self.env.clone(),
            shell: "/bin/sh".to_owned(),
            timeout: self.timeout,
            max_retries: 0,
            workdir,
            cache: true,
            share: false,
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
            let user = match cx.optional_text(&at.key("user"), raw.user.as_deref()) {
                Some(Some(user)) if !valid_user(&user) => {
                    cx.report(
                        &at.key("user"),
                        DiagnosticKind::InvalidValue {
                            what: "user",
                            value: user,
                            reason: "expected a user name or uid, optionally with :group"
                                .to_owned(),
                        },
                    );
                    None
                }
                other => other,
            };
            let place = raw.place.unwrap_or_default();
            if place == TestPlace::Vm && raw.network.is_some() {
                cx.report_help(
                    &at.key("network"),
                    DiagnosticKind::Invalid(
                        "a test in the VM has the machine's own network".to_owned(),
                    ),
                    "leave `network` out, or run the test in = \"chroot\"".to_owned(),
                );
            }
            Some(ImageTest {
                name: name?,
                body: body?,
                env: env?,
                timeout: timeout?,
                network: raw.network.unwrap_or(Network::None),
                user: user?,
                place,
            })
        })
        .collect();
    checked.into_iter().collect()
}

/// A test `in = "vm"` boots the template's bootable disk: there must be
/// one, a `disk` post-processor with `boot` set.
pub(crate) fn check_vm_tests_have_a_disk(
    cx: &mut Checker<'_>,
    tests: &[ImageTest],
    post_processors: &[crate::post_processors::PostProcessor],
) {
    let bootable = post_processors.iter().any(|post| {
        matches!(post, crate::post_processors::PostProcessor::Disk(disk)
            if disk.boot != crate::disk::BootMode::None)
    });
    if bootable {
        return;
    }
    for (index, test) in tests.iter().enumerate() {
        if test.place == TestPlace::Vm {
            cx.report_help(
                &KeyPath::root().key("test").index(index).key("in"),
                DiagnosticKind::Invalid(
                    "a test in = \"vm\" boots the template's bootable disk, and it has none"
                        .to_owned(),
                ),
                "add a [[post_processor]] of type \"disk\" with boot = \"hybrid\" (or \"uefi\", \"bios\")"
                    .to_owned(),
            );
        }
    }
}

/// A user as `[image] user` takes it: `name`, `uid`, `name:group`, `uid:gid`.
fn valid_user(user: &str) -> bool {
    let word = |word: &str| {
        !word.is_empty()
            && word.len() <= 32
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !word.starts_with('-')
    };
    match user.split_once(':') {
        Some((user, group)) => word(user) && word(group),
        None => word(user),
    }
}
