//! `kiln build` end to end: real overlay mounts, real chroots, the busybox
//! fixture as the base, and skopeo and umoci reading what kiln stored.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::util::{TestEnv, busybox_template, repo_root};

/// The entries (path, kind) of a stored layer, read back with the tar crate.
fn layer_entries(env: &TestEnv, reference: &str, layer: usize) -> Vec<(String, char)> {
    let digest = env.stored_digest(reference).expect("stored");
    let blob = |digest: &str| {
        std::fs::read(
            env.store()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&digest)).unwrap();
    let layer_digest = manifest["layers"][layer]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let gz = blob(&layer_digest);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    tar::Archive::new(tar.as_slice())
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let kind = entry.header().entry_type().as_byte() as char;
            (
                String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                kind,
            )
        })
        .collect()
}

#[test]
fn file_and_shell_provisioners_bake_layers_that_skopeo_and_umoci_read() {
    let env = TestEnv::new();
    env.write("files/motd", "baked by a test\n");
    env.write("files/tree/a.txt", "a\n");
    env.write("files/tree/sub/b.txt", "b\n");
    let template = env.write(
        "web.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"file\"\nsource = \"files/motd\"\ndestination = \"/etc/motd\"\nmode = \"0640\"\nowner = \"1:2\"\n\n\
             [[provisioner]]\ntype = \"file\"\nsource = \"files/tree\"\ndestination = \"/opt/tree\"\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"echo built > /etc/built\", \"chmod 4755 /etc/built\", \"mkdir -p /srv && ln -s /etc/motd /srv/motd-link\"]\n",
            busybox_template("web", "1.0")
        ),
    );
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(0);
    assert!(
        outcome.stderr.contains("web:1.0: stored sha256:"),
        "{}",
        outcome.stderr
    );
    let digest = env.stored_digest("web:1.0").unwrap();
    assert_eq!(env.skopeo_inspect("web:1.0")["Digest"], digest.as_str());

    let rootfs = env.umoci_unpack("web:1.0");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
        "baked by a test\n"
    );
    let motd = std::fs::metadata(rootfs.join("etc/motd")).unwrap();
    assert_eq!(motd.permissions().mode() & 0o7777, 0o640);
    assert_eq!((motd.uid(), motd.gid()), (1, 2));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/tree/sub/b.txt")).unwrap(),
        "b\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/built")).unwrap(),
        "built\n"
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("etc/built"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("srv/motd-link")).unwrap(),
        Path::new("/etc/motd")
    );
    assert!(rootfs.join("bin/busybox").is_file());

    let manifest = env.stored_manifest("web:1.0");
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        4,
        "source + three provisioners"
    );
    assert!(
        manifest["annotations"]["dev.kiln.template.digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    let shell_layer = layer_entries(&env, "web:1.0", 3);
    let paths: Vec<&str> = shell_layer.iter().map(|(path, _)| path.as_str()).collect();
    assert!(
        paths.contains(&"etc/built") && paths.contains(&"srv/motd-link"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|path| path.starts_with("proc/")
            || path.starts_with("tmp/")
            || path.starts_with("dev/")),
        "{paths:?}"
    );
    env.assert_no_leftovers();
}

#[test]
fn deletions_become_whiteouts_and_opaque_directories() {
    let env = TestEnv::new();
    let template = env.write(
        "del.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"mkdir -p /srv/old && touch /srv/old/a /srv/keep\"]\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"rm /etc/hostname\", \"rm -rf /srv/old && mkdir /srv/old && touch /srv/old/new\"]\n",
            busybox_template("del", "1")
        ),
    );
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let entries = layer_entries(&env, "del:1", 2);
    let paths: Vec<&str> = entries.iter().map(|(path, _)| path.as_str()).collect();
    assert!(
        paths.contains(&"etc/.wh.hostname"),
        "a deleted file is a whiteout: {paths:?}"
    );
    assert!(
        paths.contains(&"srv/old/.wh..wh..opq"),
        "a replaced folder is opaque: {paths:?}"
    );
    let rootfs = env.umoci_unpack("del:1");
    assert!(!rootfs.join("etc/hostname").exists());
    assert!(rootfs.join("srv/old/new").exists() && !rootfs.join("srv/old/a").exists());
    assert!(rootfs.join("srv/keep").exists());
    env.assert_no_leftovers();
}

#[test]
fn a_stage_that_changes_nothing_adds_no_layer() {
    let env = TestEnv::new();
    let template = env.write(
        "noop.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"test -x /bin/busybox\"]\n",
            busybox_template("noop", "1")
        ),
    );
    let outcome = env.kiln(["build", "--json", template.to_str().unwrap()]);
    outcome.expect_code(0);
    assert!(
        outcome.stdout.contains(r#""result":"empty""#),
        "{}",
        outcome.stdout
    );
    let manifest = env.stored_manifest("noop:1");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.store().join("blobs/sha256").join(config_digest)).unwrap(),
    )
    .unwrap();
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["empty_layer"], true);
    assert!(
        history[1]["created_by"]
            .as_str()
            .unwrap()
            .contains("test -x /bin/busybox")
    );
}

#[test]
fn a_failing_command_names_the_stage_the_code_and_the_output_and_stores_nothing() {
    let env = TestEnv::new();
    let template = env.write(
        "fail.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo about to fail\", \"exit 3\", \"echo never\"]\n",
            busybox_template("fail", "1")
        ),
    );
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(1);
    assert!(
        outcome
            .stderr
            .contains("stage 1 (shell) failed: exited with code 3"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("| about to fail"),
        "{}",
        outcome.stderr
    );
    assert!(!outcome.stderr.contains("never") && !outcome.stdout.contains("| never"));
    assert_eq!(env.stored_digest("fail:1"), None);
    env.assert_no_leftovers();
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let env = TestEnv::new();
    let marker = format!("kiln-timeout-{}", std::process::id());
    let template = env.write(
        "slow.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"(sleep 300; echo {marker}) &\", \"sleep 301\"]\ntimeout = \"2s\"\n",
            busybox_template("slow", "1")
        ),
    );
    let started = std::time::Instant::now();
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(1);
    assert!(
        outcome.stderr.contains("timed out after 2s"),
        "{}",
        outcome.stderr
    );
    assert!(started.elapsed().as_secs() < 60);
    // The kernel reaps a killed pid namespace on its own time; on a loaded
    // machine that takes a moment. A leak would live for 300 seconds.
    let survivors = || {
        let found = std::process::Command::new("pgrep")
            .args(["-f", "sleep 30[01]"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&found.stdout).trim().to_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !survivors().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left = survivors();
    if !left.is_empty() {
        let ps = std::process::Command::new("ps")
            .args([
                "-o",
                "pid,ppid,stat,etime,args",
                "-p",
                &left.replace('\n', ","),
            ])
            .output()
            .unwrap();
        panic!(
            "processes survived the timeout:\n{}",
            String::from_utf8_lossy(&ps.stdout)
        );
    }
    env.assert_no_leftovers();
}

#[test]
fn max_retries_runs_a_failed_stage_again_from_a_clean_upper() {
    let env = TestEnv::new();
    let counter = env.path("attempts");
    let template = env.write(
        "retry.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell-local\"\ninline = [\"echo x >> {counter}\", \"touch $KILN_ROOT/attempt-$(wc -l < {counter})\", \"test $(wc -l < {counter}) -ge 2\"]\nmax_retries = 2\n",
            busybox_template("retry", "1"),
            counter = counter.display()
        ),
    );
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(0);
    assert!(outcome.stderr.contains("retry 1"), "{}", outcome.stderr);
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        2
    );
    let rootfs = env.umoci_unpack("retry:1");
    assert!(rootfs.join("attempt-2").exists());
    assert!(
        !rootfs.join("attempt-1").exists(),
        "the failed attempt's changes are gone"
    );
}

/// Writes a tar with raw header names, as a hostile archive would.
fn hostile_tarball(
    env: &TestEnv,
    name: &str,
    entries: &[(&str, tar::EntryType, &str)],
) -> std::path::PathBuf {
    let path = env.path(name);
    let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (entry_path, kind, link) in entries {
        let mut header = tar::Header::new_gnu();
        let bytes = entry_path.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let data = b"pwned\n";
        header.set_size(if *kind == tar::EntryType::Regular {
            data.len() as u64
        } else {
            0
        });
        if !link.is_empty() {
            header.set_link_name_literal(link).unwrap();
        }
        header.set_cksum();
        builder
            .append(&header, &data[..header.size().unwrap() as usize])
            .unwrap();
    }
    builder.finish().unwrap();
    path
}

#[test]
fn hostile_tarballs_fail_without_writing_outside_the_root() {
    let env = TestEnv::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let outside_text = outside.display().to_string();
    let cases = [
        (
            "dotdot.tar",
            vec![("../../../../../escape", tar::EntryType::Regular, "")],
            "contains `..`",
        ),
        (
            "absolute.tar",
            vec![(outside_text.as_str(), tar::EntryType::Directory, "")],
            "absolute path",
        ),
        (
            "symlink.tar",
            vec![
                ("link", tar::EntryType::Symlink, outside_text.as_str()),
                ("link/pwned", tar::EntryType::Regular, ""),
            ],
            "symlink",
        ),
        (
            "hardlink.tar",
            vec![("passwd", tar::EntryType::Link, "/etc/passwd")],
            "absolute path",
        ),
        (
            "hardlink-up.tar",
            vec![("passwd", tar::EntryType::Link, "../../../../etc/passwd")],
            "contains `..`",
        ),
    ];
    for (file, entries, expected) in cases {
        let tarball = hostile_tarball(&env, file, &entries);
        let template = env.write(
            &format!("{file}.toml"),
            &format!(
                "[image]\nname = \"hostile\"\nversion = \"1\"\n\n[source]\ntype = \"tarball\"\npath = \"{}\"\n",
                tarball.display()
            ),
        );
        let outcome = env.kiln(["build", template.to_str().unwrap()]);
        outcome.expect_code(1);
        assert!(
            outcome.stderr.contains("refused entry"),
            "{file}: {}",
            outcome.stderr
        );
        assert!(
            outcome.stderr.contains(expected),
            "{file}: {}",
            outcome.stderr
        );
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{file} wrote outside the root"
        );
        assert!(!Path::new("/escape").exists());
    }
    assert_eq!(env.stored_digest("hostile:1"), None);
    env.assert_no_leftovers();
}

#[test]
fn on_error_abort_keeps_the_failed_root() {
    let env = TestEnv::new();
    let template = env.write(
        "abort.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo evidence > /root/evidence\", \"false\"]\n",
            busybox_template("abort", "1")
        ),
    );
    let outcome = env.kiln(["build", "--on-error", "abort", template.to_str().unwrap()]);
    outcome.expect_code(1);
    let kept_line = outcome
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("the failed stage's root is kept at "))
        .unwrap_or_else(|| panic!("no kept root in: {}", outcome.stderr));
    let kept = Path::new(kept_line.trim());
    assert!(kept.starts_with(env.home().join("failed")));
    assert_eq!(
        std::fs::read_to_string(kept.join("root/evidence")).unwrap(),
        "evidence\n"
    );
    assert!(
        kept.join("bin/busybox").is_file(),
        "the whole root, lowers included"
    );
    assert!(outcome.stderr.contains("chroot"), "{}", outcome.stderr);
    env.assert_no_leftovers();
}

#[test]
fn sigint_mid_build_cleans_up() {
    let env = TestEnv::new();
    let template = env.write(
        "interrupted.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo started\", \"sleep 302\"]\n",
            busybox_template("interrupted", "1")
        ),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", template.to_str().unwrap()])
        .env("KILN_HOME", env.home())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(
        lines.any(|line| line.unwrap().contains("| started")),
        "the stage started"
    );
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    // Read on, so kiln never blocks on a full pipe while it cleans up.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "SIGINT exits 130, as shells expect: {rest:?}"
    );
    let survivors = std::process::Command::new("pgrep")
        .args(["-f", "sleep 302"])
        .output()
        .unwrap();
    assert!(
        survivors.stdout.is_empty(),
        "the stage's processes survived SIGINT"
    );
    assert_eq!(env.stored_digest("interrupted:1"), None);
    env.assert_no_leftovers();
}

#[test]
fn the_same_template_gives_the_same_digest_in_a_fresh_home() {
    let first = TestEnv::new();
    let second = TestEnv::new();
    let mut digests = Vec::new();
    for env in [&first, &second] {
        env.write("files/motd", "same\n");
        let template = env.write(
            "same.toml",
            &format!(
                "{}\n[[provisioner]]\ntype = \"file\"\nsource = \"files/motd\"\ndestination = \"/etc/motd\"\n\n\
                 [[provisioner]]\ntype = \"shell\"\ninline = [\"hostname > /etc/built-on\", \"echo $$ > /etc/pid\"]\n",
                busybox_template("same", "1")
            ),
        );
        env.kiln(["build", template.to_str().unwrap()])
            .expect_code(0);
        digests.push(env.stored_digest("same:1").unwrap());
    }
    assert_eq!(digests[0], digests[1], "two builds, one digest");
}

#[test]
fn a_version_is_immutable() {
    let env = TestEnv::new();
    let write = |command: &str| {
        env.write(
            "v.toml",
            &format!(
                "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"{command}\"]\n",
                busybox_template("v", "1")
            ),
        )
    };
    let template = write("echo one > /one");
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let digest = env.stored_digest("v:1").unwrap();
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(0);
    assert!(
        outcome.stderr.contains("already stored"),
        "{}",
        outcome.stderr
    );
    let template = write("echo two > /two");
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(3);
    assert!(
        outcome.stderr.contains("v:1 is already stored as"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("bump the version"),
        "{}",
        outcome.stderr
    );
    assert_eq!(
        env.stored_digest("v:1").unwrap(),
        digest,
        "the stored version did not change"
    );
}

#[test]
fn an_image_source_builds_on_a_stored_image_and_records_its_parent() {
    let env = TestEnv::new();
    let base = env.write(
        "base.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo golden > /etc/golden\", \"echo doomed > /etc/doomed\"]\n",
            busybox_template("golden/base", "1.0")
        ),
    );
    env.kiln(["build", base.to_str().unwrap()]).expect_code(0);
    let app = env.write(
        "app.toml",
        "[image]\nname = \"app\"\nversion = \"2.0\"\n\n[source]\ntype = \"image\"\nref = \"golden/base:1.0\"\n\n\
         [[provisioner]]\ntype = \"shell\"\ninline = [\"echo app > /etc/app\", \"rm /etc/doomed\", \"cat /etc/golden >> /etc/app\"]\n",
    );
    env.kiln(["build", app.to_str().unwrap()]).expect_code(0);
    let base_manifest = env.stored_manifest("golden/base:1.0");
    let app_manifest = env.stored_manifest("app:2.0");
    let base_layers = base_manifest["layers"].as_array().unwrap();
    let app_layers = app_manifest["layers"].as_array().unwrap();
    assert_eq!(app_layers.len(), base_layers.len() + 1);
    assert_eq!(
        &app_layers[..base_layers.len()],
        base_layers.as_slice(),
        "the base's layers are reused as they are"
    );
    assert_eq!(
        app_manifest["annotations"]["dev.kiln.parent.digest"],
        env.stored_digest("golden/base:1.0").unwrap().as_str()
    );
    let rootfs = env.umoci_unpack("app:2.0");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/app")).unwrap(),
        "app\ngolden\n"
    );
    assert!(!rootfs.join("etc/doomed").exists());
    let images = env.kiln(["images"]);
    images.expect_code(0);
    assert!(
        images
            .stdout
            .lines()
            .any(|line| line.starts_with("app ") && line.contains("golden/base:1.0")),
        "{}",
        images.stdout
    );
    env.assert_no_leftovers();
}

#[test]
fn concurrent_builds_share_one_store() {
    let env = TestEnv::new();
    let write_template = |index: usize| {
        env.write(
            &format!("c{index}.toml"),
            &format!(
                "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo {index} > /etc/n\"]\n",
                busybox_template(&format!("c{index}"), "1")
            ),
        )
        .display()
        .to_string()
    };
    let mut args = vec!["build".to_owned(), "--jobs".to_owned(), "3".to_owned()];
    args.extend((0..3).map(write_template));
    env.kiln(&args).expect_code(0);
    // And two separate kiln processes at once.
    let spawn = |template: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", template])
            .env("KILN_HOME", env.home())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let extra: Vec<String> = (3..5).map(write_template).collect();
    let mut children: Vec<_> = extra.iter().map(|template| spawn(template)).collect();
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    for index in 0..5 {
        assert!(
            env.stored_digest(&format!("c{index}:1")).is_some(),
            "c{index}:1 is stored"
        );
    }
    env.assert_no_leftovers();
}

#[test]
fn exports_are_readable_by_skopeo_and_tar() {
    let env = TestEnv::new();
    let template = env.write(
        "exp.toml",
        &format!("{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"rm /etc/hostname\", \"echo x > /etc/x\"]\n", busybox_template("exp", "1")),
    );
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let digest = env.stored_digest("exp:1").unwrap();
    env.kiln(["export", "exp:1", "--format", "oci", "-o", "layout"])
        .expect_code(0);
    env.kiln([
        "export",
        "exp:1",
        "--format",
        "oci-archive",
        "-o",
        "image.tar",
    ])
    .expect_code(0);
    env.kiln([
        "export",
        "exp:1",
        "--format",
        "rootfs",
        "-o",
        "rootfs.tar.gz",
    ])
    .expect_code(0);
    for reference in [
        format!("oci:{}:exp:1", env.path("layout").display()),
        format!("oci-archive:{}", env.path("image.tar").display()),
    ] {
        let output = std::process::Command::new("skopeo")
            .args(["inspect", &reference])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{reference}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let inspected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(inspected["Digest"], digest.as_str());
    }
    let listing = std::process::Command::new("tar")
        .args(["-tzf", "rootfs.tar.gz"])
        .current_dir(env.root())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|line| line == "etc/x")
            && listing.lines().any(|line| line == "bin/busybox"),
        "{listing}"
    );
    assert!(
        !listing
            .lines()
            .any(|line| line == "etc/hostname" || line.contains(".wh.")),
        "whiteouts applied: {listing}"
    );
    let outcome = env.kiln(["export", "exp:1", "--format", "oci", "-o", "layout"]);
    outcome.expect_code(1);
    assert!(
        outcome.stderr.contains("exists already"),
        "{}",
        outcome.stderr
    );
    env.kiln(["export", "missing:1", "--format", "oci", "-o", "other"])
        .expect_code(1);
}

/// The bytes of a layer and image from fixed inputs must never change: a
/// changed digest here means a changed tar writer or compressor, and so
/// every user's images would change too.
#[test]
fn golden_digest_of_a_fixed_image() {
    let env = TestEnv::new();
    let fixtures = repo_root().join("fixtures/golden");
    let template = fixtures.join("golden.toml");
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(0);
    let digest = env.stored_digest("golden:1").unwrap();
    let manifest = env.stored_manifest("golden:1");
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        [
            "sha256:bbc074376a32fdf58c5cec40bf79f56a5fdcd809e6f349b7acc414a5df31eb9f",
            "sha256:6dd986d6c0018f02a018e6926f865c069b514556d5cfa6f6efd3639d5132919d",
        ],
        "the golden layers' bytes changed"
    );
    assert_eq!(
        manifest["annotations"]["dev.kiln.files"],
        "sha256:af2a5849d23def6f137d43b0c681abdd20b8135b68473b0bb2080455365439f5",
        "the golden image's file index changed"
    );
    assert_eq!(
        digest, "sha256:51e8fa39139e6e0965d04ab3658b197cd19d1ba27dbe10c725a16d663b4d5fb6",
        "the golden image's digest changed"
    );
}

/// A pax header carrying one xattr for the entry that follows it.
fn append_xattr_header(builder: &mut tar::Builder<std::fs::File>, name: &str, value: &str) {
    let body_len = "SCHILY.xattr.".len() + name.len() + value.len() + 3;
    let mut length = body_len + body_len.to_string().len();
    if length.to_string().len() != body_len.to_string().len() {
        length = body_len + length.to_string().len();
    }
    let record = format!("{length} SCHILY.xattr.{name}={value}\n");
    let mut header = tar::Header::new_ustar();
    header.set_path("PaxHeaders/x").unwrap();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(record.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    builder.append(&header, record.as_bytes()).unwrap();
}

#[test]
fn hardlinks_devices_setuid_xattrs_and_long_names_survive() {
    use std::os::unix::fs::FileTypeExt;

    let env = TestEnv::new();
    let tarball = env.path("rich.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_000);
        header.set_size(size);
        header
    };
    for dir in ["usr", "usr/bin", "dev", "etc", "bin"] {
        let mut dir_header = header(tar::EntryType::Directory, 0o755, 0);
        builder
            .append_data(&mut dir_header, dir, std::io::empty())
            .unwrap();
    }
    let mut tool = header(tar::EntryType::Regular, 0o4755, 5);
    builder
        .append_data(&mut tool, "usr/bin/tool", &b"tool\n"[..])
        .unwrap();
    let mut link = header(tar::EntryType::Link, 0o4755, 0);
    builder
        .append_link(&mut link, "usr/bin/tool-again", "usr/bin/tool")
        .unwrap();
    let mut null = header(tar::EntryType::Char, 0o666, 0);
    null.set_device_major(1).unwrap();
    null.set_device_minor(3).unwrap();
    builder
        .append_data(&mut null, "dev/null", std::io::empty())
        .unwrap();
    let mut fifo = header(tar::EntryType::Fifo, 0o600, 0);
    builder
        .append_data(&mut fifo, "dev/fifo", std::io::empty())
        .unwrap();
    append_xattr_header(&mut builder, "user.kiln", "kept");
    let mut tagged = header(tar::EntryType::Regular, 0o644, 3);
    builder
        .append_data(&mut tagged, "etc/tagged", &b"tag"[..])
        .unwrap();
    let long_name = format!("etc/{}/{}.conf", "d".repeat(120), "n".repeat(110));
    let mut long = header(tar::EntryType::Regular, 0o644, 5);
    builder
        .append_data(&mut long, &long_name, &b"long\n"[..])
        .unwrap();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut shell = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    builder
        .append_data(&mut shell, "bin/busybox", busybox.as_slice())
        .unwrap();
    let mut sh = header(tar::EntryType::Symlink, 0o777, 0);
    builder.append_link(&mut sh, "bin/sh", "busybox").unwrap();
    builder.finish().unwrap();

    let template = env.write(
        "rich.toml",
        &format!(
            "[image]\nname = \"rich\"\nversion = \"1\"\n\n[source]\ntype = \"tarball\"\npath = \"{}\"\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"/bin/busybox touch /etc/later\"]\n",
            tarball.display()
        ),
    );
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(0);
    let rootfs = env.umoci_unpack("rich:1");
    let tool = std::fs::metadata(rootfs.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    let again = std::fs::metadata(rootfs.join("usr/bin/tool-again")).unwrap();
    assert_eq!(
        (tool.ino(), tool.nlink()),
        (again.ino(), 2),
        "the hardlink is one file"
    );
    let null = std::fs::metadata(rootfs.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    assert!(
        std::fs::metadata(rootfs.join("dev/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        xattr::get(rootfs.join("etc/tagged"), "user.kiln")
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join(&long_name)).unwrap(),
        "long\n"
    );
    assert!(rootfs.join("etc/later").exists());
    env.assert_no_leftovers();
}

#[test]
fn scripts_workdir_env_and_shell_of_the_shell_provisioner() {
    let env = TestEnv::new();
    env.write(
        "scripts/one.sh",
        "echo \"one in $(pwd) as $GREETING\" > /srv/one\n",
    );
    env.write("scripts/two.sh", "echo two >> /srv/one\n");
    let template = env.write(
        "scripts.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"mkdir -p /srv\"]\n\n\
             [[provisioner]]\ntype = \"shell\"\nscripts = [\"scripts/one.sh\", \"scripts/two.sh\"]\nworkdir = \"/etc\"\nshell = \"/bin/ash\"\nenv = {{ GREETING = \"hi\" }}\n\n\
             [[provisioner]]\ntype = \"shell\"\nscript = \"scripts/two.sh\"\n",
            busybox_template("scripts", "1")
        ),
    );
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let rootfs = env.umoci_unpack("scripts:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/one")).unwrap(),
        "one in /etc as hi\ntwo\ntwo\n"
    );
    assert!(
        !rootfs.join("tmp/kiln-script-0").exists(),
        "scripts are copied into a /tmp that is not in the image"
    );
}

#[test]
fn a_killed_build_leaves_the_store_as_it_was() {
    let env = TestEnv::new();
    let template = env.write(
        "killed.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo started\", \"sleep 303\"]\n",
            busybox_template("killed", "1")
        ),
    );
    let first = env.write("first.toml", &busybox_template("first", "1"));
    env.kiln(["build", first.to_str().unwrap()]).expect_code(0);
    let index_before = std::fs::read(env.store().join("index.json")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", template.to_str().unwrap()])
        .env("KILN_HOME", env.home())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(lines.any(|line| line.unwrap().contains("| started")));
    child.kill().unwrap();
    child.wait().unwrap();
    // The stage's processes die with kiln; their mounts with them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::process::Command::new("pgrep")
        .args(["-f", "sleep 303"])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stage outlived kiln"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read(env.store().join("index.json")).unwrap(),
        index_before
    );
    // The next build removes the abandoned work folder.
    let next = env.write("next.toml", &busybox_template("next", "1"));
    env.kiln(["build", next.to_str().unwrap()]).expect_code(0);
    env.assert_no_leftovers();
}

#[test]
fn a_debootstrap_source_without_its_tools_names_the_package() {
    let env = TestEnv::new();
    let empty_path = env.path("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();
    let template = env.write(
        "deb.toml",
        "[image]\nname = \"deb\"\nversion = \"1\"\n\n[source]\ntype = \"debootstrap\"\nsuite = \"bookworm\"\n",
    );
    let outcome = env.kiln_with_env(
        ["build", template.to_str().unwrap()],
        &[("PATH", empty_path.to_str().unwrap())],
    );
    outcome.expect_code(1);
    assert!(
        outcome.stderr.contains("apt-get install mmdebstrap"),
        "{}",
        outcome.stderr
    );
    env.assert_no_leftovers();
}

/// A sensitive value reaches the commands that use it and nothing else:
/// not the progress, the `--json` events, the manifest, the stored
/// documents, nor the host's process list while the stage runs.
#[test]
fn sensitive_values_stay_out_of_output_process_list_and_store() {
    let env = TestEnv::new();
    let secret = "sup3r-s3cret-t0ken";
    let template = env.write(
        "secret.toml",
        &format!(
            "[image]\nname = \"secret\"\nversion = \"1\"\nlabels = {{ purpose = \"secrets\" }}\n\n\
             [variables.token]\nsensitive = true\n\n[source]\ntype = \"tarball\"\npath = \"{}\"\n\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"echo using ${{var.token}}\", \"echo \\\"$TOKEN\\\" | wc -c > /etc/token-length\", \"sleep 2 # ${{var.token}}\"]\nenv = {{ TOKEN = \"${{var.token}}\" }}\n\n\
             [[test]]\nname = \"token ${{var.token}} is not in the image\"\ninline = [\"printf '%s\\\\n' \\\"$TOKEN\\\" > /tmp/pattern\", \"! grep -r -F -f /tmp/pattern /etc\"]\nenv = {{ TOKEN = \"${{var.token}}\" }}\n\n\
             [[post_processor]]\ntype = \"manifest\"\n",
            crate::util::busybox_tarball().display()
        ),
    );
    // A command given the secret as an argument shows it to every host
    // user (the test's grep would); it goes through a file instead, and
    // printf is the shell's own.
    let output = env.path("out");
    let mut child = env
        .kiln_command([
            "build",
            "--json",
            template.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .env("KILN_VAR_token", secret)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Every process's command line, read as any host user may, while the
    // stage runs its `sleep`.
    let mut seen_sleep = false;
    while child.try_wait().unwrap().is_none() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                !cmdline.contains(secret),
                "a process list shows the secret: {cmdline}"
            );
            seen_sleep |= cmdline.starts_with("sleep 2");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(seen_sleep, "the stage's sleep was never seen running");
    let result = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    assert!(
        stdout.contains("\"line\":\"using <sensitive>\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"name\":\"token <sensitive> is not in the image\""),
        "{stdout}"
    );
    // The command did get the real value.
    let rootfs = env.umoci_unpack("secret:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/token-length"))
            .unwrap()
            .trim(),
        (secret.len() + 1).to_string()
    );
    let manifest = std::fs::read_to_string(output.join("kiln-manifest.json")).unwrap();
    assert!(!manifest.contains(secret), "{manifest}");
    assert!(
        manifest.contains("token <sensitive> is not in the image"),
        "{manifest}"
    );
    // No JSON document of the store or the cache holds it.
    for dir in [
        env.store().join("blobs/sha256"),
        env.home().join("cache/stages"),
        env.home().join("cache/tests"),
    ] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if bytes.first() == Some(&b'{') {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret),
                    "a stored document holds the secret"
                );
            }
        }
    }
}

/// A directory source is baked where it is, not copied: its layer is the
/// one the same tree gives as a tarball, the folder serves as the lower of
/// the stages above it, and a changed file in it runs it again.
#[test]
fn a_directory_source_is_baked_where_it_is() {
    let env = TestEnv::new();
    let tarball = crate::util::busybox_tarball();
    let tree = env.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xpzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(tree.join("etc/motd"), "from the folder\n").unwrap();
    let write = |version: &str| {
        env.write(
            "dir.toml",
            &format!(
                "[image]\nname = \"dir\"\nversion = \"{version}\"\n\n[source]\ntype = \"directory\"\npath = \"tree\"\n\n\
                 [[provisioner]]\ntype = \"shell\"\ninline = [\"cat /etc/motd > /etc/copy\"]\n"
            ),
        )
    };
    let layer_of = |outcome: &crate::util::Outcome, stage: u64| -> String {
        outcome
            .stdout
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .find(|event| event["event"] == "stage_finished" && event["stage"] == stage)
            .map(|event| {
                event["result"]["layer"]["digest"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .unwrap()
    };
    let reasons = |outcome: &crate::util::Outcome| -> Vec<String> {
        outcome
            .stdout
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|event| event["event"] == "stage_finished")
            .map(|event| match event["cache"]["status"].as_str().unwrap() {
                "hit" => "hit".to_owned(),
                _ => event["cache"]["reason"].as_str().unwrap().to_owned(),
            })
            .collect()
    };
    let template = write("1");
    let first = env.kiln(["build", "--json", template.to_str().unwrap()]);
    first.expect_code(0);
    assert_eq!(reasons(&first), ["first build", "first build"]);
    let trees = std::fs::read_dir(env.home().join("cache/trees"))
        .unwrap()
        .count();
    assert_eq!(
        trees, 1,
        "only the shell stage's tree is kept; the folder is its own"
    );
    let rootfs = env.umoci_unpack("dir:1");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/copy")).unwrap(),
        "from the folder\n",
        "the stage above ran on the folder"
    );

    // The same tree as a tarball gives the same layer, byte for byte.
    std::fs::remove_file(tree.join("etc/motd")).unwrap();
    let plain = env.write(
        "plain.toml",
        "[image]\nname = \"plain-dir\"\nversion = \"1\"\n\n[source]\ntype = \"directory\"\npath = \"tree\"\n",
    );
    let from_folder = env.kiln(["build", "--json", plain.to_str().unwrap()]);
    from_folder.expect_code(0);
    let from_tarball = env.write("tarball.toml", &busybox_template("plain-tarball", "1"));
    let from_tarball = env.kiln(["build", "--json", from_tarball.to_str().unwrap()]);
    from_tarball.expect_code(0);
    assert_eq!(layer_of(&from_folder, 0), layer_of(&from_tarball, 0));

    std::fs::write(tree.join("etc/motd"), "from the folder\n").unwrap();
    let again = env.kiln(["build", "--json", template.to_str().unwrap()]);
    again.expect_code(0);
    assert_eq!(reasons(&again), ["hit", "hit"]);
    std::fs::write(tree.join("etc/motd"), "changed\n").unwrap();
    let template = write("2");
    let changed = env.kiln(["build", "--json", template.to_str().unwrap()]);
    changed.expect_code(0);
    assert_eq!(reasons(&changed), ["file changed: tree", "parent changed"]);
    env.assert_no_leftovers();
}
