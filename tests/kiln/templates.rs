//! The template loader, table-driven over `fixtures/`: every invalid
//! template gives exactly the errors its `# expect:` lines name, and every
//! valid one round-trips through `kiln inspect --json`.

use kiln::template::error::Origin;
use kiln::template::variables::VarInputs;
use kiln::template::{self, Template};

use crate::util::{TestEnv, repo_root, toml_files};

/// `LINE:COL KEY: MESSAGE`, or `- MESSAGE` for a problem with no place.
fn describe(diagnostic: &kiln::template::error::Diagnostic) -> String {
    let what = if diagnostic.key.is_root() {
        diagnostic.kind.to_string()
    } else {
        format!("{}: {}", diagnostic.key, diagnostic.kind)
    };
    match (&diagnostic.origin, diagnostic.line_column()) {
        (Origin::File { .. }, Some((line, column))) => format!("{line}:{column} {what}"),
        _ => format!("- {what}"),
    }
}

#[test]
fn invalid_fixtures_give_exactly_their_expected_errors() {
    let dir = repo_root().join("fixtures/invalid");
    let fixtures = toml_files(&dir);
    assert!(
        fixtures.len() >= 20,
        "expected the invalid fixture set, found {}",
        fixtures.len()
    );
    for fixture in fixtures {
        let text = std::fs::read_to_string(&fixture).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect: "))
            .map(|line| line.replace("{dir}", &dir.display().to_string()))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` lines",
            fixture.display()
        );
        let error = template::load(&fixture, &VarInputs::default())
            .expect_err(&format!("{} should be invalid", fixture.display()));
        let actual: Vec<String> = error.diagnostics().iter().map(describe).collect();
        assert_eq!(actual, expected, "diagnostics of {}", fixture.display());
    }
}

#[test]
fn invalid_fixtures_exit_2_and_show_the_line() {
    let env = TestEnv::new();
    let fixture = repo_root().join("fixtures/invalid/bad-units.toml");
    let outcome = env.kiln(["validate".as_ref(), fixture.as_os_str()]);
    outcome.expect_code(2);
    assert!(outcome.stderr.contains("5 problems"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("bad-units.toml:17:8]"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains(r#"mode = "0888""#),
        "the offending line is shown: {}",
        outcome.stderr
    );
}

#[test]
fn valid_fixtures_round_trip_through_inspect_json() {
    let env = TestEnv::new();
    let fixtures = toml_files(&repo_root().join("fixtures/valid"));
    assert!(fixtures.len() >= 6);
    for fixture in fixtures {
        let mut args = vec![
            "inspect".into(),
            "--json".into(),
            fixture.clone().into_os_string(),
        ];
        let mut inputs = VarInputs::default();
        if fixture.ends_with("sensitive.toml") {
            args.extend(["--var".into(), "api_token=s3cr3t-value".into()]);
            inputs
                .flags
                .push(("api_token".into(), "s3cr3t-value".into()));
        }
        let outcome = env.kiln(&args);
        outcome.expect_code(0);
        let from_json: Template = serde_json::from_str(&outcome.stdout)
            .unwrap_or_else(|error| panic!("{}: {error}\n{}", fixture.display(), outcome.stdout));
        let loaded = template::load(&fixture, &inputs).unwrap();
        let expected: Template = serde_json::from_value(loaded.to_redacted_json()).unwrap();
        assert_eq!(from_json, expected, "{}", fixture.display());
        if loaded.redactor().is_empty() {
            assert_eq!(
                from_json,
                loaded,
                "{}: nothing to redact, so JSON is the template",
                fixture.display()
            );
        }
    }
}

/// The example templates, copied with what they read beside them (the
/// busybox fixture the main job makes) into the test's folder.
fn example_templates(env: &TestEnv) -> Vec<std::path::PathBuf> {
    let copy = env.path("templates");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(repo_root().join("templates"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir_all(env.path("fixtures")).unwrap();
    std::fs::copy(
        crate::util::busybox_tarball(),
        env.path("fixtures/busybox-rootfs.tar.gz"),
    )
    .unwrap();
    toml_files(&copy)
}

#[test]
fn example_templates_are_valid() {
    let env = TestEnv::new();
    let templates = example_templates(&env);
    let names: Vec<_> = templates
        .iter()
        .map(|path| path.file_name().unwrap().to_owned())
        .collect();
    assert!(
        names.iter().any(|name| name == "hello.toml")
            && names.iter().any(|name| name == "busybox.toml")
            && names.iter().any(|name| name == "debian-vm.toml")
    );
    let mut args = vec!["validate".into()];
    args.extend(templates.iter().map(|path| path.clone().into_os_string()));
    let outcome = env.kiln(&args);
    outcome.expect_code(0);
    assert!(outcome.stdout.contains("hello.toml: valid"));
    assert!(outcome.stdout.contains("busybox.toml: valid"));
    assert!(outcome.stdout.contains("debian-vm.toml: valid"));
    // The examples are in kiln fmt's canonical layout.
    let mut args = vec!["fmt".into(), "--check".into()];
    args.extend(templates.into_iter().map(|path| path.into_os_string()));
    env.kiln(&args).expect_code(0);
}

const LAYERED: &str = r#"
[image]
name = "layered"
version = "1"

[variables.v]
default = "from-default"

[variables.home_default]
default = "${env.KILN_TEST_HOME_VALUE}"

[source]
type = "scratch"

[[provisioner]]
type = "shell"
inline = ["echo ${var.v} ${var.home_default}"]
"#;

fn value_of(outcome: &crate::util::Outcome, name: &str) -> (String, String) {
    let json: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    let variable = json["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|variable| variable["name"] == name)
        .unwrap();
    (
        variable["value"].as_str().unwrap().to_owned(),
        variable["origin"]["from"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn variable_values_layer_default_env_var_file_then_flag() {
    let env = TestEnv::new();
    let template = env.write("layered.toml", LAYERED);
    let var_file = env.write("values.toml", "v = \"from-var-file\"\n");
    let template = template.to_str().unwrap();
    let var_file = var_file.to_str().unwrap();
    let base_env = [("KILN_TEST_HOME_VALUE", "from-env-default")];

    let outcome = env.kiln_with_env(["inspect", "--json", template], &base_env);
    assert_eq!(
        value_of(outcome.expect_code(0), "v"),
        ("from-default".into(), "default".into())
    );
    assert_eq!(value_of(&outcome, "home_default").0, "from-env-default");

    let with_env = [base_env[0], ("KILN_VAR_v", "from-env")];
    let outcome = env.kiln_with_env(["inspect", "--json", template], &with_env);
    assert_eq!(
        value_of(outcome.expect_code(0), "v"),
        ("from-env".into(), "environment".into())
    );

    let outcome = env.kiln_with_env(
        ["inspect", "--json", template, "--var-file", var_file],
        &with_env,
    );
    assert_eq!(
        value_of(outcome.expect_code(0), "v"),
        ("from-var-file".into(), "var-file".into())
    );

    let outcome = env.kiln_with_env(
        [
            "inspect",
            "--json",
            template,
            "--var-file",
            var_file,
            "--var",
            "v=from-flag=with-equals",
        ],
        &with_env,
    );
    assert_eq!(
        value_of(outcome.expect_code(0), "v"),
        ("from-flag=with-equals".into(), "flag".into())
    );
    assert!(
        outcome
            .stdout
            .contains("echo from-flag=with-equals from-env-default")
    );
}

#[test]
fn undeclared_and_missing_variables_are_errors() {
    let env = TestEnv::new();
    let template = env.write(
        "t.toml",
        "[image]\nname = \"t\"\nversion = \"1\"\n\n[variables.needed]\ntype = \"number\"\n\n[source]\ntype = \"scratch\"\n",
    );
    let template = template.to_str().unwrap();

    let outcome = env.kiln(["validate", template]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("variables.needed: variable `needed` has no value"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("t.toml:5:12]"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("--var needed=VALUE"),
        "{}",
        outcome.stderr
    );

    let outcome = env.kiln([
        "validate", template, "--var", "needed=3", "--var", "neded=4",
    ]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("--var neded=…: undeclared variable `neded`"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("did you mean `needed`?"),
        "{}",
        outcome.stderr
    );

    let outcome = env.kiln(["validate", template, "--var", "needed=three"]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("variable `needed` expects a number"),
        "{}",
        outcome.stderr
    );

    let var_file = env.write("values.toml", "needed = 3\nother = 1\n");
    let outcome = env.kiln([
        "validate",
        template,
        "--var-file",
        var_file.to_str().unwrap(),
    ]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("values.toml:2:1]"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains("other: undeclared variable `other`"),
        "{}",
        outcome.stderr
    );

    env.kiln(["validate", template, "--var", "needed=3"])
        .expect_code(0);
}

#[test]
fn sensitive_values_never_reach_output_or_errors() {
    let env = TestEnv::new();
    let secret = "s3cr3t-value";
    let template = repo_root().join("fixtures/valid/sensitive.toml");
    let template = template.to_str().unwrap();
    for args in [
        vec!["inspect", template, "--var", "api_token=s3cr3t-value"],
        vec![
            "inspect",
            "--json",
            template,
            "--var",
            "api_token=s3cr3t-value",
        ],
    ] {
        let outcome = env.kiln(&args);
        outcome.expect_code(0);
        assert!(
            !outcome.stdout.contains(secret) && !outcome.stderr.contains(secret),
            "{outcome:?}"
        );
        assert!(
            outcome.stderr.contains("warning: --var api_token=… shows the sensitive value in the host's process list; pass it as KILN_VAR_api_token"),
            "{}",
            outcome.stderr
        );
        assert!(outcome.stdout.contains("<sensitive>"), "{}", outcome.stdout);
    }

    // A secret that makes a value invalid is still not shown in the error.
    let bad = env.write(
        "bad.toml",
        "[image]\nname = \"t\"\nversion = \"1\"\n\n[variables.token]\nsensitive = true\n\n[source]\ntype = \"scratch\"\n\n\
         [[provisioner]]\ntype = \"file\"\nsource = \"bad.toml\"\ndestination = \"${var.token}\"\nmode = \"${var.token}\"\n",
    );
    let outcome = env.kiln([
        "validate",
        bad.to_str().unwrap(),
        "--var",
        "token=relative-secret",
    ]);
    outcome.expect_code(2);
    assert!(
        !outcome.stderr.contains("relative-secret"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("invalid path `<sensitive>`"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("invalid mode `<sensitive>`"),
        "{}",
        outcome.stderr
    );

    let typed = env.write(
        "typed.toml",
        "[image]\nname = \"t\"\nversion = \"1\"\n\n[variables.pin]\ntype = \"number\"\nsensitive = true\n\n[source]\ntype = \"scratch\"\n",
    );
    let var_file = env.write("secret-values.toml", "pin = \"hunter2-pin\"\n");
    let outcome = env.kiln([
        "validate",
        typed.to_str().unwrap(),
        "--var-file",
        var_file.to_str().unwrap(),
    ]);
    outcome.expect_code(2);
    assert!(
        !outcome.stderr.contains("hunter2-pin"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("variable `pin` expects a number"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn list_variables_join_into_strings() {
    let env = TestEnv::new();
    let template = env.write(
        "list.toml",
        "[image]\nname = \"t\"\nversion = \"1\"\n\n[variables.packages]\ntype = \"list\"\n\n[source]\ntype = \"scratch\"\n\n\
         [[provisioner]]\ntype = \"shell\"\ninline = [\"apt-get install -y ${var.packages}\"]\n",
    );
    let outcome = env.kiln([
        "inspect",
        "--json",
        template.to_str().unwrap(),
        "--var",
        r#"packages=["nginx", "curl"]"#,
    ]);
    outcome.expect_code(0);
    assert!(
        outcome.stdout.contains("apt-get install -y nginx curl"),
        "{}",
        outcome.stdout
    );
    let outcome = env.kiln([
        "inspect",
        template.to_str().unwrap(),
        "--var",
        "packages=nginx,curl",
    ]);
    outcome.expect_code(2);
    assert!(outcome.stderr.contains("not a list"), "{}", outcome.stderr);
}

/// The image config ships with the image: a sensitive variable there is a
/// template error naming the key, not a value silently stored as
/// `<sensitive>`.
#[test]
fn a_sensitive_variable_in_the_image_config_is_an_error() {
    let env = TestEnv::new();
    for (key, line) in [
        (
            "image.labels.token",
            "labels = { token = \"${var.token}\" }",
        ),
        ("image.env[0]", "env = [\"TOKEN=${var.token}\"]"),
        ("image.cmd[1]", "cmd = [\"--token\", \"${var.token}\"]"),
        (
            "image.description",
            "description = \"made with ${var.token}\"",
        ),
    ] {
        let template = env.write(
            "secret.toml",
            &format!(
                "[image]\nname = \"t\"\nversion = \"1\"\n{line}\n\n[variables.token]\nsensitive = true\ndefault = \"hunter2-in-image\"\n\n[source]\ntype = \"scratch\"\n"
            ),
        );
        let outcome = env.kiln(["validate", template.to_str().unwrap()]);
        outcome.expect_code(2);
        assert!(
            outcome.stderr.contains(&format!(
                "{key}: sensitive variable `token` cannot be used in [image]"
            )),
            "{key}: {}",
            outcome.stderr
        );
        assert!(
            outcome.stderr.contains("secret.toml:4:"),
            "{}",
            outcome.stderr
        );
        assert!(
            !outcome.stderr.contains("hunter2-in-image"),
            "{}",
            outcome.stderr
        );
    }
    // `$${var.token}` is literal text, not a use.
    let template = env.write(
        "literal.toml",
        "[image]\nname = \"t\"\nversion = \"1\"\nlabels = { doc = \"set $${var.token}\" }\n\n[variables.token]\nsensitive = true\ndefault = \"x\"\n\n[source]\ntype = \"scratch\"\n",
    );
    env.kiln(["validate", template.to_str().unwrap()])
        .expect_code(0);
}
