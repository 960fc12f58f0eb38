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
         [[post_processor]]\ntype = \"disk\"\nformat = \"vdi\"\n",
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

/// On a terminal, progress is drawn on stderr; `2>build.log` gets every
/// line of it, as plain text.
#[test]
fn redirected_progress_is_plain_lines() {
    crate::util::require_tool("script", "bsdutils");
    let env = TestEnv::new();
    let template = env.write("t.toml", &crate::util::busybox_template("redirected", "1"));
    let log = env.path("build.log");
    // `script` gives the build a terminal for stdin and stdout.
    let command = format!(
        "{} build {} 2>{}",
        env!("CARGO_BIN_EXE_kiln"),
        template.display(),
        log.display()
    );
    let status = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KILN_HOME", env.home())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("redirected:1 [0/0] tarball") && log.contains("redirected:1: stored sha256:"),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no terminal escapes in a log: {log}"
    );
}

/// Commands that only read create nothing in an empty home, and a name
/// that is not there is an error that names it.
#[test]
fn reading_commands_name_what_is_missing_and_create_nothing() {
    let env = TestEnv::new();
    let images = env.kiln(["images"]);
    images.expect_code(0);
    assert!(images.stdout.starts_with("NAME"), "{}", images.stdout);
    env.kiln(["cache", "ls"]).expect_code(0);
    let missing = env.kiln(["images", "nosuch"]);
    missing.expect_code(1);
    assert!(
        missing.stderr.contains("no image nosuch in the store"),
        "{}",
        missing.stderr
    );
    env.kiln(["verify", "nosuch:1"]).expect_code(1);
    env.kiln(["diff", "nosuch:1"]).expect_code(1);
    env.kiln(["channel", "history", "nosuch", "stable"])
        .expect_code(1);
    assert!(
        !env.home().exists(),
        "reading commands made {}",
        env.home().display()
    );

    let template = env.write("a.toml", &crate::util::busybox_template("a", "1"));
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let diff = env.kiln(["diff", "a:1", "b:1"]);
    diff.expect_code(1);
    assert!(
        diff.stderr.contains("no image b:1 in the store") && !diff.stderr.contains("no image a:1"),
        "the missing image is the one named: {}",
        diff.stderr
    );
    let listed = env.kiln(["images", "a"]);
    listed.expect_code(0);
    let header = listed.stdout.lines().next().unwrap();
    let row = listed.stdout.lines().nth(1).unwrap();
    let column = |name: &str| -> &str {
        let at = header.find(name).unwrap();
        row[at..].split_whitespace().next().unwrap()
    };
    assert_eq!(
        column("CREATED"),
        "1970-01-01T00:00:00Z",
        "the reproducible epoch"
    );
    let year: u32 = column("STORED")[..4].parse().unwrap();
    assert!(year >= 2025, "when it was stored: {}", listed.stdout);
}

/// Every positional argument of every command says what it is in `--help`.
#[test]
fn help_describes_every_argument() {
    let env = TestEnv::new();
    for command in [
        vec!["build"],
        vec!["validate"],
        vec!["inspect"],
        vec!["fmt"],
        vec!["images"],
        vec!["export"],
        vec!["push"],
        vec!["pull"],
        vec!["channel", "set"],
        vec!["channel", "rollback"],
        vec!["channel", "history"],
        vec!["login"],
        vec!["verify"],
        vec!["diff"],
        vec!["completions"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        let help = env.kiln(&args);
        help.expect_code(0);
        let arguments: Vec<&str> = help
            .stdout
            .lines()
            .skip_while(|line| *line != "Arguments:")
            .skip(1)
            .take_while(|line| !line.is_empty())
            .collect();
        assert!(
            !arguments.is_empty(),
            "{command:?} has arguments: {}",
            help.stdout
        );
        // `  <NAME>  what it is`, or the name alone with its description on
        // the lines below it.
        let mut described = true;
        for line in &arguments {
            let trimmed = line.trim_start();
            if trimmed.starts_with('<') || trimmed.starts_with('[') {
                assert!(
                    described,
                    "{command:?}: an argument says nothing of itself: {}",
                    help.stdout
                );
                described = trimmed.split_whitespace().count() >= 2;
            } else {
                described = true;
            }
        }
        assert!(
            described,
            "{command:?}: an argument says nothing of itself: {}",
            help.stdout
        );
    }
}

/// `KILN_HOME` may be relative: it means the same folder to kiln and to
/// the sandbox helpers it starts in other folders.
#[test]
fn a_relative_home_works() {
    let env = TestEnv::new();
    let template = env.write(
        "relative.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo ok > /ok\"]\n",
            crate::util::busybox_template("relative", "1")
        ),
    );
    env.kiln_with_env(
        ["build", template.to_str().unwrap()],
        &[("KILN_HOME", "kiln-home")],
    )
    .expect_code(0);
    assert!(env.stored_digest("relative:1").is_some());
    env.assert_no_leftovers();
}
