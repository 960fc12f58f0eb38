//! The stage cache: what runs again, what is reused, and why, read from
//! `kiln build --json` events.

use crate::util::{Outcome, TestEnv, busybox_template};

/// `(stage, "hit" | miss reason)` of each stage, from `--json` output.
fn stages(outcome: &Outcome) -> Vec<(u64, String)> {
    outcome
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == "stage_finished")
        .map(|event| {
            let status = match event["cache"]["status"].as_str().unwrap() {
                "hit" => "hit".to_owned(),
                _ => event["cache"]["reason"].as_str().unwrap().to_owned(),
            };
            (event["stage"].as_u64().unwrap(), status)
        })
        .collect()
}

fn stored_digest_event(outcome: &Outcome) -> String {
    outcome
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["event"] == "image_stored")
        .map(|event| event["digest"].as_str().unwrap().to_owned())
        .expect("an image_stored event")
}

fn template(env: &TestEnv, version: &str, last_command: &str) -> String {
    env.write(
        "cached.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"file\"\nsource = \"files/motd\"\ndestination = \"/etc/motd\"\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"cat /etc/motd > /etc/copy\"]\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"{last_command}\"]\n",
            busybox_template("cached", version)
        ),
    )
    .display()
    .to_string()
}

fn build(env: &TestEnv, args: &[&str]) -> Outcome {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let outcome = env.kiln(&all);
    outcome.expect_code(0);
    outcome
}

#[test]
fn only_what_changed_runs_again() {
    let env = TestEnv::new();
    env.write("files/motd", "one\n");
    let path = template(&env, "1", "echo last > /etc/last");
    let first = build(&env, &[&path]);
    assert_eq!(
        stages(&first),
        (0..4)
            .map(|stage| (stage, "first build".to_owned()))
            .collect::<Vec<_>>()
    );

    // Nothing changed: no stage runs, nothing new is stored.
    let again = build(&env, &[&path]);
    assert!(
        stages(&again).iter().all(|(_, status)| status == "hit"),
        "{:?}",
        stages(&again)
    );
    assert!(again.stdout.contains(r#""unchanged":true"#));
    assert_eq!(stored_digest_event(&again), stored_digest_event(&first));

    // Only the last stage changed: only it runs.
    let path = template(&env, "2", "echo changed > /etc/last");
    let last_changed = build(&env, &[&path]);
    assert_eq!(
        stages(&last_changed),
        vec![
            (0, "hit".to_owned()),
            (1, "hit".to_owned()),
            (2, "hit".to_owned()),
            (3, "settings changed: inline".to_owned())
        ]
    );

    // A file the file provisioner copies changed: it and what follows run.
    env.write("files/motd", "two\n");
    let path = template(&env, "3", "echo changed > /etc/last");
    let file_changed = build(&env, &[&path]);
    assert_eq!(
        stages(&file_changed),
        vec![
            (0, "hit".to_owned()),
            (1, "file changed: files/motd".to_owned()),
            (2, "parent changed".to_owned()),
            (3, "parent changed".to_owned())
        ]
    );
    let rootfs = env.umoci_unpack("cached:3");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/copy")).unwrap(),
        "two\n"
    );
    env.assert_no_leftovers();
}

#[test]
fn a_cached_build_gives_the_same_digest_as_no_cache() {
    let env = TestEnv::new();
    env.write("files/motd", "one\n");
    let path = template(&env, "1", "echo last > /etc/last");
    let cold = build(&env, &[&path]);
    let cached = build(&env, &[&path]);
    let uncached = build(&env, &["--no-cache", &path]);
    assert!(
        stages(&uncached)
            .iter()
            .all(|(_, status)| status == "--no-cache"),
        "{:?}",
        stages(&uncached)
    );
    assert_eq!(stored_digest_event(&cold), stored_digest_event(&cached));
    assert_eq!(stored_digest_event(&cold), stored_digest_event(&uncached));
    // --no-cache refreshed the entries: the next build hits again.
    assert!(
        stages(&build(&env, &[&path]))
            .iter()
            .all(|(_, status)| status == "hit")
    );
}

#[test]
fn cache_false_runs_the_stage_and_everything_after_it() {
    let env = TestEnv::new();
    let path = env.write(
        "uncached.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo a > /a\"]\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"echo b > /b\"]\ncache = false\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"echo c > /c\"]\n",
            busybox_template("uncached", "1")
        ),
    );
    let path = path.to_str().unwrap();
    build(&env, &[path]);
    let again = build(&env, &[path]);
    assert_eq!(
        stages(&again),
        vec![
            (0, "hit".to_owned()),
            (1, "hit".to_owned()),
            (2, "cache = false".to_owned()),
            (
                3,
                "parent changed: stage 2 has cache = false and always runs".to_owned()
            )
        ]
    );
}

#[test]
fn damaged_entries_are_detected_and_rebuilt() {
    let env = TestEnv::new();
    env.write("files/motd", "one\n");
    let path = template(&env, "1", "echo last > /etc/last");
    let first = build(&env, &[&path]);
    let cache = env.home().join("cache");

    // A file deleted from a cached tree.
    let tree = std::fs::read_dir(cache.join("trees"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|tree| tree.join("etc/last").exists())
        .expect("the last stage's tree");
    std::fs::remove_file(tree.join("etc/last")).unwrap();
    let after_delete = build(&env, &[&path]);
    let damaged = &stages(&after_delete)[3].1;
    assert!(
        damaged.starts_with("cache entry damaged: its tree has"),
        "{damaged}"
    );
    assert_eq!(
        stored_digest_event(&after_delete),
        stored_digest_event(&first)
    );

    // A flipped bit in a cached layer's blob.
    let layer_digest = first
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["event"] == "stage_finished" && event["stage"] == 2)
        .map(|event| {
            event["result"]["layer"]["digest"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap();
    let blob = env
        .store()
        .join("blobs/sha256")
        .join(layer_digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[20] ^= 0x01;
    std::fs::set_permissions(&blob, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&blob, &bytes).unwrap();
    let after_flip = build(&env, &[&path]);
    let reasons = stages(&after_flip);
    assert!(
        reasons[2].1.starts_with("cache entry damaged: its layer"),
        "{reasons:?}"
    );
    let healed = std::process::Command::new("sha256sum")
        .arg(&blob)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&healed.stdout)
            .starts_with(layer_digest.trim_start_matches("sha256:")),
        "the store healed the blob"
    );

    // An entry that does not match its checksum.
    let entry = std::fs::read_dir(cache.join("stages"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .contains("\"stage\": 0,")
        })
        .unwrap();
    let text = std::fs::read_to_string(&entry)
        .unwrap()
        .replace("\"image\": \"cached:1\"", "\"image\": \"tampered\"");
    std::fs::write(&entry, text).unwrap();
    let after_tamper = build(&env, &[&path]);
    assert_eq!(
        stages(&after_tamper)[0].1,
        "cache entry damaged: its entry does not match its checksum"
    );
    env.assert_no_leftovers();
}

#[test]
fn inspect_shows_keys_and_cache_ls_and_prune_manage_entries() {
    let env = TestEnv::new();
    env.write("files/motd", "one\n");
    let path = template(&env, "1", "echo last > /etc/last");
    let first = build(&env, &[&path]);
    let inspect = env.kiln(["inspect", path.as_str()]);
    inspect.expect_code(0);
    assert_eq!(
        inspect.stdout.matches("       key sha256:").count(),
        4,
        "{}",
        inspect.stdout
    );
    let json = env.kiln(["inspect", "--json", path.as_str()]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["stage_keys"].as_array().unwrap().len(), 4);

    let listing = env.kiln(["cache", "ls"]);
    listing.expect_code(0);
    assert_eq!(
        listing.stdout.lines().count(),
        5,
        "a header and four entries: {}",
        listing.stdout
    );
    assert!(
        listing.stdout.contains("  2 (shell)") && listing.stdout.contains("  0 (tarball)"),
        "stages are numbered as progress numbers them: {}",
        listing.stdout
    );

    env.kiln(["cache", "prune"]).expect_code(2);
    let kept = env.kiln(["cache", "prune", "--older-than", "1h"]);
    kept.expect_code(0);
    assert!(
        kept.stdout.contains("removed 0 cache entries"),
        "{}",
        kept.stdout
    );
    let pruned = env.kiln(["cache", "prune", "--keep-bytes", "0"]);
    pruned.expect_code(0);
    assert!(
        pruned.stdout.contains("removed 4 cache entries"),
        "{}",
        pruned.stdout
    );
    assert_eq!(
        std::fs::read_dir(env.home().join("cache/trees"))
            .unwrap()
            .count(),
        0
    );
    let rebuilt = build(&env, &[&path]);
    assert!(
        stages(&rebuilt)
            .iter()
            .all(|(_, status)| status == "no cache entry"),
        "{:?}",
        stages(&rebuilt)
    );
    assert_eq!(stored_digest_event(&rebuilt), stored_digest_event(&first));
}

#[test]
fn concurrent_builds_share_the_cache() {
    let env = TestEnv::new();
    env.write("files/motd", "one\n");
    let path = template(&env, "1", "echo last > /etc/last");
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["build", &path])
                .env("KILN_HOME", env.home())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert!(
        stages(&build(&env, &[&path]))
            .iter()
            .all(|(_, status)| status == "hit")
    );
    env.assert_no_leftovers();
}

/// Settings enter keys as written: only typed host paths are made relative
/// to the template. An inline command that names the template's folder is
/// another command than one without it, and a test that names it another
/// test.
#[test]
fn a_command_naming_the_template_folder_has_a_key_of_its_own() {
    let env = TestEnv::new();
    let dir = env.root().display().to_string();
    let write = |version: &str, command: &str, test: &str| {
        env.write(
            "folder.toml",
            &format!(
                "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"{command}\"]\n\n[[test]]\nname = \"the file is there\"\ninline = [\"{test}\"]\n",
                busybox_template("folder", version)
            ),
        )
        .display()
        .to_string()
    };
    // The template's folder is under /tmp, a fresh tmpfs in stages: the
    // file goes below /srv. Without the folder's text, `/srv{dir}/x` reads
    // `/srvx`.
    let absolute = format!("mkdir -p /srv{dir} && echo hi > /srv{dir}/x");
    let relative = format!("mkdir -p /srv{dir} && echo hi > /srvx");
    let path = write("1", &absolute, &format!("test -f /srv{dir}/x"));
    build(&env, &[&path]);
    let rootfs = env.umoci_unpack("folder:1");
    assert!(rootfs.join(format!("srv{dir}/x")).is_file());

    // The same template but for the test, which now looks for /srvx: it
    // runs again, on the same image, and fails.
    let path = write("1", &absolute, "test -f /srvx");
    let retested = env.kiln(["build", &path]);
    retested.expect_code(1);
    assert!(
        retested.stderr.contains("test `the file is there` failed")
            && !retested.stderr.contains("passed (cached"),
        "{}",
        retested.stderr
    );

    // The other command is another stage: it runs, and writes /srvx.
    let path = write("2", &relative, "test -f /srvx");
    let second = build(&env, &[&path]);
    assert_eq!(
        stages(&second),
        [
            (0, "hit".to_owned()),
            (1, "settings changed: inline".to_owned())
        ]
    );
    let rootfs = env.umoci_unpack("folder:2");
    assert!(rootfs.join("srvx").is_file());
    env.assert_no_leftovers();
}

/// `kiln build --plan` runs nothing and gives the keys the build uses,
/// the same as `kiln inspect --json`.
#[test]
fn the_plan_inspect_and_the_build_agree_on_every_key() {
    let env = TestEnv::new();
    env.write("files/motd", "one\n");
    let path = template(&env, "1", "echo last > /etc/last");
    let planned = env.kiln(["build", "--plan", "--json", &path]);
    planned.expect_code(0);
    assert!(!env.home().exists(), "planning creates nothing in the home");
    let plan: serde_json::Value = serde_json::from_str(planned.stdout.trim()).unwrap();
    let plan_keys: Vec<String> = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| stage["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(plan_keys.len(), 4);
    let inspected = env.kiln(["inspect", "--json", &path]);
    let inspected: serde_json::Value = serde_json::from_str(&inspected.stdout).unwrap();
    let inspect_keys: Vec<String> = inspected["stage_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(plan_keys, inspect_keys);
    assert_eq!(inspected["plan"]["stages"], plan["stages"]);

    build(&env, &[&path]);
    let entries: Vec<String> = std::fs::read_dir(env.home().join("cache/stages"))
        .unwrap()
        .map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let entry: serde_json::Value = serde_json::from_str(&text).unwrap();
            entry["key"]["key"].as_str().unwrap().to_owned()
        })
        .collect();
    for key in &plan_keys {
        assert!(entries.contains(key), "the build cached stage key {key}");
    }
    let text = env.kiln(["build", "--plan", &path]);
    text.expect_code(0);
    for key in &plan_keys {
        assert!(
            text.stdout.contains(&format!("key {key}")),
            "{}",
            text.stdout
        );
    }
    assert!(
        text.stdout
            .lines()
            .any(|line| line.trim_start().starts_with("3/3") && line.contains("shell"))
            && text.stdout.contains("files/motd"),
        "{}",
        text.stdout
    );
}

/// Shell stages and tests see the template's variables as KILN_VAR_NAME,
/// so a value with quotes is safe to use; changing a variable runs the
/// shell stages again.
#[test]
fn variables_reach_commands_as_environment_variables() {
    let env = TestEnv::new();
    let path = env
        .write(
            "vars.toml",
            &format!(
                "{}\n[variables.greeting]\ndefault = \"hello\"\n\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo \\\"$KILN_VAR_greeting\\\" > /etc/greeting\"]\n\n\
                 [[test]]\nname = \"greeting\"\ninline = [\"grep -qxF \\\"$KILN_VAR_greeting\\\" /etc/greeting\"]\n",
                busybox_template("vars", "1")
            ),
        )
        .display()
        .to_string();
    let quoted = build(&env, &["--var", "greeting=it's \"me\"", &path]);
    assert_eq!(stages(&quoted)[1].1, "first build");
    let rootfs = env.umoci_unpack("vars:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/greeting")).unwrap(),
        "it's \"me\"\n"
    );
    let changed = env.kiln(["build", "--json", "--var", "greeting=bye", &path]);
    changed.expect_code(3);
    assert_eq!(stages(&changed)[1].1, "settings changed: variables");
}
