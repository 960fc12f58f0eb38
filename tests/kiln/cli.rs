//! The command line as a user meets it: help, version, completions, exit
//! codes, and commands that are not built yet saying so.

use crate::util::TestEnv;

#[test]
fn a_typo_in_a_key_names_the_key_the_place_and_the_allowed_keys() {
    let env = TestEnv::new();
    env.write("files/motd", "hi\n");
    let template = env.write(
        "web.toml",
        "[image]\nname = \"web\"\nversion = \"1.0\"\n\n[source]\ntype = \"scratch\"\n\n\
         [[provisioner]]\ntype = \"file\"\nsource = \"files/motd\"\ndestinaton = \"/etc/motd\"\n",
    );
    let outcome = env.kiln(["validate", template.to_str().unwrap()]);
    outcome.expect_code(2);
    let stderr = &outcome.stderr;
    assert!(
        stderr.contains("provisioner[0].destinaton: unknown key `destinaton`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("web.toml:11:1]"),
        "file, line and column: {stderr}"
    );
    assert!(
        stderr.contains("destinaton = \"/etc/motd\""),
        "the line itself: {stderr}"
    );
    assert!(stderr.contains("did you mean `destination`?"), "{stderr}");
    assert!(
        stderr.contains("allowed keys: source, destination, mode, owner, cache"),
        "{stderr}"
    );
}

#[test]
fn validate_reports_every_section_at_once() {
    let env = TestEnv::new();
    let template = env.write(
        "many.toml",
        "[image]\nname = \"Web\"\nversion = \"1.0\"\n\n[source]\ntype = \"tarbal\"\n\n\
         [[provisioner]]\ntype = \"shell\"\ninline = [\"true\"]\ntimeout = \"soon\"\n\n\
         [[post_processor]]\ntype = \"disk\"\nformat = \"vmdk\"\n",
    );
    let outcome = env.kiln(["validate", template.to_str().unwrap()]);
    outcome.expect_code(2);
    for expected in [
        "4 problems",
        "image.name",
        "source.type",
        "provisioner[0].timeout",
        "post_processor[0].format",
    ] {
        assert!(
            outcome.stderr.contains(expected),
            "{expected}: {}",
            outcome.stderr
        );
    }
}

#[test]
fn a_missing_template_is_a_clear_error() {
    let env = TestEnv::new();
    let outcome = env.kiln(["validate", "nope.toml"]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("failed to read nope.toml"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn version_help_and_usage_errors() {
    let env = TestEnv::new();
    let outcome = env.kiln(["--version"]);
    outcome.expect_code(0);
    assert_eq!(
        outcome.stdout.trim(),
        format!("kiln {}", env!("CARGO_PKG_VERSION"))
    );

    let outcome = env.kiln(["help"]);
    outcome.expect_code(0);
    for command in [
        "build",
        "validate",
        "inspect",
        "fmt",
        "images",
        "export",
        "push",
        "pull",
        "channel",
        "login",
        "cache",
        "verify",
        "diff",
        "completions",
    ] {
        assert!(
            outcome
                .stdout
                .lines()
                .any(|line| line.trim_start().starts_with(command)),
            "help lists {command}: {}",
            outcome.stdout
        );
    }
    env.kiln(["validate", "--no-such-flag", "x.toml"])
        .expect_code(2);
    env.kiln(["build"]).expect_code(2);
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish"] {
        let outcome = env.kiln(["completions", shell]);
        outcome.expect_code(0);
        assert!(
            outcome.stdout.contains("validate") && outcome.stdout.contains("var-file"),
            "{shell}"
        );
    }
    let bash = env.kiln(["completions", "bash"]).stdout;
    let script = env.write("kiln.bash", &bash);
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("run bash");
    assert!(status.success(), "the bash completion script parses");
    env.kiln(["completions", "powershell-9"]).expect_code(2);
}
