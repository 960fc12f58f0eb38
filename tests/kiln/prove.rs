//! Image tests, file indexes, `kiln verify` and `kiln diff`: what ships was
//! tested, and what runs is what shipped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{TestEnv, busybox_template, require_tool};

/// A busybox image with a few files a drift check can touch.
fn app_template(env: &TestEnv, name: &str, version: &str, extra: &str) -> PathBuf {
    env.write(
        &format!("{name}-{version}.toml"),
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\
             \"echo port=80 > /etc/app.conf\", \
             \"echo 0123456789 > /etc/data\", \
             \"ln -s app.conf /etc/current\", \
             \"mkdir -p /srv && echo doomed > /srv/doomed\"]\n{extra}",
            busybox_template(name, version)
        ),
    )
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

/// Builds with `--json` into `out/`; returns the `test_finished` events.
fn build_tests(env: &TestEnv, template: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "build",
        template.to_str().unwrap(),
        "--json",
        "--output",
        "out",
    ];
    args.extend(extra);
    let outcome = env.kiln(&args);
    outcome.expect_code(0);
    json_lines(&outcome.stdout)
        .into_iter()
        .filter(|event| event["event"] == "test_finished")
        .collect()
}

/// The blobs of the store, by what they are.
fn blob_media(env: &TestEnv) -> Vec<String> {
    let mut kinds = Vec::new();
    for blob in std::fs::read_dir(env.store().join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(blob.unwrap().path()).unwrap();
        let kind = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .map_or("layer".to_owned(), |json| {
                json["mediaType"]
                    .as_str()
                    .map_or("config".to_owned(), str::to_owned)
            });
        kinds.push(kind);
    }
    kinds.sort();
    kinds
}

#[test]
fn a_failing_test_fails_the_build_names_it_and_stores_nothing() {
    let env = TestEnv::new();
    let template = app_template(
        &env,
        "tested",
        "1",
        "\n[[test]]\nname = \"passes\"\ninline = [\"test -f /etc/app.conf\"]\n\n\
         [[test]]\nname = \"port is 8080\"\ninline = [\"echo found: $(cat /etc/app.conf)\", \"grep -q port=8080 /etc/app.conf\"]\n\n\
         [[post_processor]]\ntype = \"manifest\"\n",
    );
    let outcome = env.kiln(["build", template.to_str().unwrap(), "--output", "out"]);
    outcome.expect_code(1);
    assert!(
        outcome
            .stderr
            .contains("test `port is 8080` failed at command 2, `grep -q port=8080 /etc/app.conf`: exited with code 1"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("found: port=80"),
        "the test's output is shown: {}",
        outcome.stderr
    );
    assert_eq!(env.stored_digest("tested:1"), None);
    let kinds = blob_media(&env);
    assert!(
        kinds
            .iter()
            .all(|kind| kind == "layer" || kind == "application/vnd.kiln.layer-file-index.v1+json"),
        "only the stage cache's layers and their indexes are kept, no manifest, config or image index: {kinds:?}"
    );
    assert!(kinds.contains(&"layer".to_owned()), "{kinds:?}");
    assert!(!env.path("out").exists(), "nothing is post-processed");
    env.assert_no_leftovers();
}

#[test]
fn a_passing_test_keeps_the_digest_is_recorded_and_runs_once() {
    let plain_env = TestEnv::new();
    let plain = app_template(&plain_env, "tested", "1", "");
    plain_env
        .kiln(["build", plain.to_str().unwrap()])
        .expect_code(0);
    let untested = plain_env.stored_digest("tested:1").unwrap();

    let env = TestEnv::new();
    let tests = "\n[[test]]\nname = \"config is there\"\ninline = [\"grep -q port=80 /etc/app.conf\"]\n\n\
                 [[test]]\nname = \"writes are thrown away\"\ninline = [\"touch /etc/new\"]\n\n\
                 [[post_processor]]\ntype = \"manifest\"\n";
    let template = app_template(&env, "tested", "1", tests);
    let events = build_tests(&env, &template, &[]);
    assert_eq!(
        env.stored_digest("tested:1").unwrap(),
        untested,
        "tests add no layer and never change the digest, nor does the manifest post-processor"
    );
    assert_eq!(events.len(), 2, "{events:?}");
    for event in &events {
        assert_eq!(event["passed"], true);
        assert_eq!(event["cached"], false);
        assert!(event["seconds"].as_f64().unwrap() > 0.0);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("out/kiln-manifest.json")).unwrap())
            .unwrap();
    let recorded = &manifest["builds"][0]["tests"];
    assert_eq!(recorded[0]["name"], "config is there");
    assert_eq!(recorded[0]["outcome"], "passed");
    assert_eq!(recorded[1]["name"], "writes are thrown away");

    let events = build_tests(&env, &template, &[]);
    assert!(
        events.iter().all(|event| event["cached"] == true),
        "an unchanged test of an unchanged image is not run again: {events:?}"
    );
    let plain_again = env.kiln(["build", template.to_str().unwrap(), "--output", "out"]);
    let progress = format!("{}{}", plain_again.stdout, plain_again.stderr);
    assert!(
        progress.contains("test `config is there` passed (cached"),
        "{progress}"
    );

    let forced = build_tests(&env, &template, &["--no-cache"]);
    assert!(forced.iter().all(|event| event["cached"] == false));

    let edited = app_template(
        &env,
        "tested",
        "1",
        &tests.replace("grep -q port=80", "grep -q port="),
    );
    let events = build_tests(&env, &edited, &[]);
    assert_eq!(events[0]["cached"], false, "a changed test runs again");
    assert_eq!(events[1]["cached"], true, "the unchanged one does not");
    env.assert_no_leftovers();
}

#[test]
fn verify_finds_a_flipped_byte_in_a_stored_blob() {
    let env = TestEnv::new();
    let template = app_template(&env, "checked", "1", "");
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let intact = env.kiln(["verify", "checked:1"]);
    intact.expect_code(0);
    assert!(
        intact.stdout.contains("all 5 blobs intact"),
        "{}",
        intact.stdout
    );

    let manifest = env.stored_manifest("checked:1");
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let path = env.blob_path(layer);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let damaged = env.kiln(["verify", "checked:1"]);
    damaged.expect_code(1);
    let line = damaged
        .stdout
        .lines()
        .find(|line| line.starts_with("DAMAGED"))
        .unwrap_or_else(|| panic!("no damaged blob reported: {}", damaged.stdout));
    assert!(
        line.contains("layer 1") && line.contains(layer) && line.contains("hashes to"),
        "{line}"
    );
    assert_eq!(
        damaged
            .stdout
            .lines()
            .filter(|line| line.starts_with("ok"))
            .count(),
        4
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.kiln(["verify", "checked:1", "--json"]).stdout).unwrap();
    assert_eq!(json["damaged"], 1);
    env.kiln(["verify", "missing:1"]).expect_code(1);
    env.kiln(["verify", "Bad Ref"]).expect_code(2);
}

/// Runs a command, panicking with its output if it fails.
fn run(command: &mut Command) {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn drift_of_a_deployed_tree_is_reported_path_by_path() {
    let env = TestEnv::new();
    let template = app_template(&env, "deployed", "1", "");
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    // Deployed by a real client: umoci unpacks what kiln stored.
    let root = env.umoci_unpack("deployed:1");
    let root_arg = root.to_str().unwrap();
    let clean = env.kiln(["verify", "deployed:1", "--root", root_arg]);
    clean.expect_code(0);
    assert!(
        clean.stdout.contains("matches the image"),
        "{}",
        clean.stdout
    );

    // A proc mounted in the tree is runtime state, not drift.
    run(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(root.join("proc")));
    let mounted = env.kiln(["verify", "deployed:1", "--root", root_arg]);
    run(Command::new("umount").arg(root.join("proc")));
    mounted.expect_code(0);

    // Same size, other content: only a hash can tell.
    std::fs::write(root.join("etc/data"), "0123456780\n").unwrap();
    std::fs::set_permissions(
        root.join("etc/app.conf"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("etc/added"), "new\n").unwrap();
    std::fs::remove_file(root.join("srv/doomed")).unwrap();
    std::fs::remove_file(root.join("etc/current")).unwrap();
    std::os::unix::fs::symlink("/tmp/elsewhere", root.join("etc/current")).unwrap();
    std::os::unix::fs::chown(root.join("srv"), Some(1000), None).unwrap();

    let drifted = env.kiln(["verify", "deployed:1", "--root", root_arg]);
    drifted.expect_code(1);
    let lines: Vec<&str> = drifted.stdout.lines().collect();
    for expected in [
        "added    /etc/added (file)",
        "removed  /srv/doomed (file)",
        "changed  /etc/app.conf: mode 0644 → 0600",
        "changed  /etc/current: target app.conf → /tmp/elsewhere",
        "changed  /srv: owner 0:0 → 1000:0",
    ] {
        assert!(
            lines.contains(&expected),
            "missing `{expected}` in\n{}",
            drifted.stdout
        );
    }
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("changed  /etc/data: content sha256:")),
        "{}",
        drifted.stdout
    );

    let json: serde_json::Value = serde_json::from_str(
        &env.kiln(["verify", "deployed:1", "--root", root_arg, "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(json["drifted"], true);
    assert_eq!(json["added"][0]["path"], "/etc/added");
    assert_eq!(json["removed"][0]["path"], "/srv/doomed");
    let changed: Vec<(&str, &str)> = json["changed"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|path| {
            path["changes"].as_array().unwrap().iter().map(|change| {
                (
                    path["path"].as_str().unwrap(),
                    change["what"].as_str().unwrap(),
                )
            })
        })
        .collect();
    assert!(changed.contains(&("/etc/data", "content")), "{changed:?}");
    assert!(changed.contains(&("/etc/app.conf", "mode")), "{changed:?}");
    assert!(changed.contains(&("/etc/current", "target")), "{changed:?}");

    let ignoring = env.kiln([
        "verify",
        "deployed:1",
        "--root",
        root_arg,
        "--ignore",
        "/etc",
        "--ignore",
        "/srv",
    ]);
    ignoring.expect_code(0);
    env.kiln(["verify", "deployed:1", "--root", root_arg, "--ignore", "[x"])
        .expect_code(2);
    env.kiln(["verify", "deployed:1", "--root", "no/such/dir"])
        .expect_code(1);
}

#[test]
fn diff_names_changed_files_and_config_against_the_parent() {
    let env = TestEnv::new();
    let base = app_template(&env, "base", "1", "");
    env.kiln(["build", base.to_str().unwrap()]).expect_code(0);
    let app = env.write(
        "app.toml",
        "[image]\nname = \"app\"\nversion = \"1\"\nlabels = { tier = \"web\" }\n\n\
         [source]\ntype = \"image\"\nref = \"base:1\"\n\n\
         [[provisioner]]\ntype = \"shell\"\ninline = [\"echo port=8080 > /etc/app.conf\", \"rm /etc/data\", \"echo new > /etc/new\"]\n",
    );
    env.kiln(["build", app.to_str().unwrap()]).expect_code(0);

    let text = env.kiln(["diff", "app:1"]);
    text.expect_code(0);
    assert!(text.stdout.starts_with("base:1 "), "{}", text.stdout);
    let line = |prefix: &str| {
        text.stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in\n{}", text.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("~  /etc/app.conf"), "~ /etc/app.conf content +2 B");
    assert_eq!(line("-  /etc/data"), "- /etc/data file -11 B");
    assert_eq!(line("+  /etc/new"), "+ /etc/new file +4 B");
    assert!(
        text.stdout.contains("config label tier: (unset) → \"web\""),
        "{}",
        text.stdout
    );

    let json: serde_json::Value =
        serde_json::from_str(&env.kiln(["diff", "base:1", "app:1", "--json"]).stdout).unwrap();
    assert_eq!(json["changed"][0]["path"], "/etc/app.conf");
    assert_eq!(json["changed"][0]["size_before"], 8);
    assert_eq!(json["changed"][0]["size_after"], 10);
    assert_eq!(json["config"][0]["field"], "label tier");
    assert_eq!(json["size_delta"], 2 - 11 + 4);
    let reverse: serde_json::Value =
        serde_json::from_str(&env.kiln(["diff", "app:1", "base:1", "--json"]).stdout).unwrap();
    assert_eq!(reverse["added"][0]["path"], "/etc/data");

    let orphan = env.kiln(["diff", "base:1"]);
    orphan.expect_code(2);
    assert!(
        orphan.stderr.contains("not built on another image"),
        "{}",
        orphan.stderr
    );
}

#[test]
fn an_image_from_another_tool_gets_its_index_on_first_use() {
    require_tool("umoci", "umoci");
    require_tool("skopeo", "skopeo");
    let env = TestEnv::new();
    // kiln's store made first, then an image umoci builds is copied in by skopeo.
    let template = app_template(&env, "ours", "1", "");
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let layout = env.path("umoci-layout");
    let bundle = env.path("umoci-bundle");
    let layout_arg = layout.to_str().unwrap();
    run(Command::new("umoci").args(["init", "--layout", layout_arg]));
    run(Command::new("umoci").args(["new", "--image", &format!("{layout_arg}:t")]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{layout_arg}:t")])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/foreign"), "made by umoci\n").unwrap();
    std::os::unix::fs::symlink("foreign", rootfs.join("etc/link")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &format!("{layout_arg}:t")])
        .arg(&bundle));
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{layout_arg}:t"),
        &format!("oci:{}:foreign:1", env.store().display()),
    ]));

    let verified = env.kiln(["verify", "foreign:1", "--root", rootfs.to_str().unwrap()]);
    verified.expect_code(0);
    assert!(
        verified.stdout.contains("matches the image"),
        "{}",
        verified.stdout
    );
    std::fs::write(rootfs.join("etc/foreign"), "changed\n").unwrap();
    let drifted = env.kiln(["verify", "foreign:1", "--root", rootfs.to_str().unwrap()]);
    drifted.expect_code(1);
    assert!(
        drifted.stdout.contains("changed  /etc/foreign: content"),
        "{}",
        drifted.stdout
    );
    // An image built on it (it has no shell: a host command changes it)
    // merges the foreign layers' indexes with its own.
    let app = env.write(
        "on-foreign.toml",
        "[image]\nname = \"on-foreign\"\nversion = \"1\"\n\n[source]\ntype = \"image\"\nref = \"foreign:1\"\n\n\
         [[provisioner]]\ntype = \"shell-local\"\ninline = [\"rm $KILN_ROOT/etc/link\", \"echo more > $KILN_ROOT/etc/more\"]\n",
    );
    env.kiln(["build", app.to_str().unwrap()]).expect_code(0);
    let unpacked = env.umoci_unpack("on-foreign:1");
    env.kiln([
        "verify",
        "on-foreign:1",
        "--root",
        unpacked.to_str().unwrap(),
    ])
    .expect_code(0);
    let added = env.kiln(["diff", "on-foreign:1"]);
    added.expect_code(0);
    assert!(
        added.stdout.contains("+  /etc/more") && added.stdout.contains("-  /etc/link"),
        "{}",
        added.stdout
    );

    let diff: serde_json::Value =
        serde_json::from_str(&env.kiln(["diff", "foreign:1", "ours:1", "--json"]).stdout).unwrap();
    assert!(
        diff["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["path"] == "/etc/foreign"),
        "{diff}"
    );
}

/// A tree with paths that cannot be read (a disk after an unclean shutdown
/// says `Bad message`) is checked to the end: each unreadable path is
/// named, the rest compared, and the exit code says it is not known clean.
#[test]
fn unreadable_paths_are_named_and_the_check_goes_on() {
    crate::util::require_tool("setpriv", "util-linux");
    let env = TestEnv::new();
    let template = app_template(&env, "unreadable", "1", "");
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let root = env.umoci_unpack("unreadable:1");
    // Without the capabilities that let root read anything, modes decide.
    std::fs::set_permissions(root.join("srv"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(
        root.join("etc/data"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("etc/data"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(root.join("srv"), Some(1000), Some(1000)).unwrap();
    std::fs::write(root.join("etc/added"), "new\n").unwrap();
    let output = Command::new("setpriv")
        .args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["verify", "unreadable:1", "--root"])
        .arg(&root)
        .env("KILN_HOME", env.home())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "added    /etc/added (file)",
        "unreadable /etc/data: Permission denied",
        "unreadable /srv: Permission denied",
    ] {
        assert!(
            stdout.lines().any(|line| line.starts_with(expected)),
            "{expected}: {stdout}"
        );
    }
    assert!(
        !stdout.contains("removed  /srv/"),
        "what is below an unreadable folder is not called removed: {stdout}"
    );
    assert!(stdout.contains(", 2 unreadable)"), "{stdout}");
}
