//! Post-processors on the busybox fixture: ext4 disks (raw, qcow2) checked
//! with e2fsck, debugfs and qemu-img, rootfs tarballs, SHA256SUMS checked
//! with sha256sum, the build manifest, and host commands; all of it byte for
//! byte the same from two fresh homes.

use std::process::Command;

use crate::util::{TestEnv, busybox_template, require_tool};

const POST: &str = r#"
[[provisioner]]
type = "file"
source = "files/motd"
destination = "/etc/motd"
mode = "0640"
owner = "7:8"

[[provisioner]]
type = "shell"
inline = ["rm /etc/hostname", "chmod 4755 /bin/busybox", "mkdir -p /srv && ln /etc/passwd /srv/passwd-link"]

[[post_processor]]
type = "disk"
format = "raw"

[[post_processor]]
type = "disk"
format = "qcow2"
size = "64M"
label = "posted"

[[post_processor]]
type = "rootfs"

[[post_processor]]
type = "shell-local"
inline = ["ls $KILN_ROOT/etc > $KILN_OUTPUT/etc.txt", "echo $KILN_IMAGE > $KILN_OUTPUT/image.txt", "! touch $KILN_ROOT/etc/written"]

[[post_processor]]
type = "checksum"

[[post_processor]]
type = "manifest"
"#;

fn tool(env: &TestEnv, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(env.path("output/posted-1"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn build(env: &TestEnv) -> Vec<(String, String)> {
    env.write("files/motd", "posted\n");
    let template = env.write(
        "posted.toml",
        &format!("{}{POST}", busybox_template("posted", "1")),
    );
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(0);
    ["posted-1.raw", "posted-1.qcow2", "posted-1.tar.gz"]
        .iter()
        .map(|name| {
            let sum = tool(env, "sha256sum", &[name]);
            (
                (*name).to_owned(),
                sum.split_whitespace().next().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn disks_rootfs_checksums_and_manifest_are_right_and_reproducible() {
    for (tool_name, package) in [
        ("mke2fs", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
    ] {
        require_tool(tool_name, package);
    }
    let env = TestEnv::new();
    let first = build(&env);

    tool(&env, "e2fsck", &["-fn", "posted-1.raw"]);
    let cat = tool(&env, "debugfs", &["-R", "cat /etc/motd", "posted-1.raw"]);
    assert_eq!(cat, "posted\n");
    let motd = tool(&env, "debugfs", &["-R", "stat /etc/motd", "posted-1.raw"]);
    assert!(
        motd.contains("Mode:  0640")
            && motd.contains("User:     7")
            && motd.contains("Group:     8"),
        "{motd}"
    );
    let busybox = tool(
        &env,
        "debugfs",
        &["-R", "stat /bin/busybox", "posted-1.raw"],
    );
    assert!(
        busybox.contains("Mode:  04755") && busybox.contains("crtime: 0x00000000"),
        "{busybox}"
    );
    let link = tool(
        &env,
        "debugfs",
        &["-R", "stat /srv/passwd-link", "posted-1.raw"],
    );
    assert!(link.contains("Links: 2"), "the hardlink survives: {link}");
    let etc = tool(&env, "debugfs", &["-R", "ls /etc", "posted-1.raw"]);
    assert!(
        etc.contains("motd") && !etc.contains("hostname"),
        "the whiteout removed it: {etc}"
    );

    // The disk, mounted as a machine would, holds exactly the image.
    let mount = env.path("mounted");
    std::fs::create_dir(&mount).unwrap();
    let mount_arg = mount.to_str().unwrap().to_owned();
    tool(
        &env,
        "mount",
        &["-o", "loop,ro", "posted-1.raw", &mount_arg],
    );
    let verified = env.kiln(["verify", "posted:1", "--root", &mount_arg]);
    tool(&env, "umount", &[&mount_arg]);
    verified.expect_code(0);

    tool(&env, "qemu-img", &["check", "posted-1.qcow2"]);
    let info = tool(
        &env,
        "qemu-img",
        &["info", "--output=json", "posted-1.qcow2"],
    );
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        (info["format"].as_str(), info["virtual-size"].as_u64()),
        (Some("qcow2"), Some(64 << 20))
    );
    let listing = tool(&env, "tar", &["-tzf", "posted-1.tar.gz"]);
    assert!(
        listing.lines().any(|line| line == "etc/motd")
            && !listing.lines().any(|line| line == "etc/hostname"),
        "{listing}"
    );

    assert!(tool(&env, "cat", &["etc.txt"]).contains("motd"));
    assert_eq!(tool(&env, "cat", &["image.txt"]), "posted:1\n");
    tool(&env, "sha256sum", &["-c", "SHA256SUMS"]);

    let manifest: serde_json::Value =
        serde_json::from_str(&tool(&env, "cat", &["kiln-manifest.json"])).unwrap();
    let recorded = &manifest["builds"][0];
    assert_eq!(
        recorded["digest"],
        env.stored_digest("posted:1").unwrap().as_str()
    );
    assert_eq!(recorded["stages"].as_array().unwrap().len(), 3);
    for artifact in recorded["artifacts"].as_array().unwrap() {
        let sum = tool(&env, "sha256sum", &[artifact["path"].as_str().unwrap()]);
        assert_eq!(
            format!("sha256:{}", sum.split_whitespace().next().unwrap()),
            artifact["sha256"].as_str().unwrap()
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(env.path("output/posted-1"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    env.assert_no_leftovers();

    // kiln export runs the same code on the stored image.
    let raw_sum = first
        .iter()
        .find(|(name, _)| name == "posted-1.raw")
        .unwrap()
        .1
        .clone();
    env.kiln([
        "export",
        "posted:1",
        "--format",
        "raw",
        "-o",
        "exported.raw",
    ])
    .expect_code(0);
    let exported = Command::new("sha256sum")
        .arg(env.path("exported.raw"))
        .output()
        .unwrap();
    let fitted_size = std::fs::metadata(env.path("output/posted-1/posted-1.raw"))
        .unwrap()
        .len();
    assert_eq!(
        std::fs::metadata(env.path("exported.raw")).unwrap().len(),
        fitted_size
    );
    assert!(
        String::from_utf8_lossy(&exported.stdout).starts_with(&raw_sum),
        "export gives the post-processor's bytes"
    );
    env.kiln([
        "export",
        "posted:1",
        "--format",
        "qcow2",
        "-o",
        "exported.qcow2",
    ])
    .expect_code(0);
    tool(&env, "qemu-img", &["check", "../../exported.qcow2"]);

    // A second build, from a fresh home, gives the same bytes.
    let again = TestEnv::new();
    assert_eq!(build(&again), first, "disks and rootfs are reproducible");
    // And the manifest appends builds.
    let rebuilt = env.kiln(["build", env.path("posted.toml").to_str().unwrap()]);
    rebuilt.expect_code(0);
    let manifest: serde_json::Value =
        serde_json::from_str(&tool(&env, "cat", &["kiln-manifest.json"])).unwrap();
    assert_eq!(manifest["builds"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["builds"][1]["stages"][2]["cache_hit"], true);
}

#[test]
fn a_failing_post_processor_fails_the_build_and_keeps_the_image() {
    let env = TestEnv::new();
    let template = env.write(
        "failing.toml",
        &format!(
            "{}\n[[post_processor]]\ntype = \"rootfs\"\n\n[[post_processor]]\ntype = \"shell-local\"\ninline = [\"echo broken\", \"exit 4\"]\n\n[[post_processor]]\ntype = \"checksum\"\n",
            busybox_template("failing", "1")
        ),
    );
    let outcome = env.kiln([
        "build",
        template.to_str().unwrap(),
        "--output",
        env.path("out").to_str().unwrap(),
    ]);
    outcome.expect_code(1);
    assert!(
        outcome
            .stderr
            .contains("post-processor 2 (shell-local) failed (the image stays in the store): exited with code 4"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("post-processor 2 | broken")
            && outcome.stderr.contains("last lines of output:\n  | broken"),
        "the command's output streams and ends the error: {}",
        outcome.stderr
    );
    assert!(env.stored_digest("failing:1").is_some());
    let names: Vec<String> = std::fs::read_dir(env.path("out"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["failing-1.tar.gz"],
        "what finished stays, nothing half-written, nothing after the failure"
    );
    env.assert_no_leftovers();
}

/// A rebuild that changes nothing finds every artifact in place and writes
/// none again; a changed or removed artifact is written again.
#[test]
fn artifacts_in_place_are_not_written_again() {
    let env = TestEnv::new();
    let template = env.write(
        "cached.toml",
        &format!(
            "{}\n[[post_processor]]\ntype = \"disk\"\nformat = \"qcow2\"\n\n[[post_processor]]\ntype = \"rootfs\"\n\n[[post_processor]]\ntype = \"checksum\"\n",
            busybox_template("cached", "1")
        ),
    );
    let output = env.path("out");
    let args = [
        "build",
        "--json",
        template.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    let written = |outcome: &crate::util::Outcome| -> Vec<(String, bool)> {
        outcome
            .stdout
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|event| event["event"] == "artifact_written")
            .map(|event| {
                let path = event["path"].as_str().unwrap();
                (
                    path.rsplit('/').next().unwrap().to_owned(),
                    event["cached"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    // The plan names the files the build writes.
    let plan = env.kiln([
        "build",
        "--plan",
        "--json",
        template.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    plan.expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(plan.stdout.trim()).unwrap();
    let planned: Vec<String> = plan["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|artifact| artifact["path"].as_str().unwrap().to_owned())
        .collect();
    let first = env.kiln(args);
    first.expect_code(0);
    let paths: Vec<String> = first
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == "artifact_written")
        .map(|event| event["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, planned);
    assert_eq!(
        written(&first),
        [
            ("cached-1.qcow2".to_owned(), false),
            ("cached-1.tar.gz".to_owned(), false),
            ("SHA256SUMS".to_owned(), false)
        ]
    );
    let disk = output.join("cached-1.qcow2");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&disk).unwrap());
    let again = env.kiln(args);
    again.expect_code(0);
    assert!(
        written(&again).iter().all(|(_, cached)| *cached),
        "{:?}",
        written(&again)
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&disk).unwrap()),
        inode,
        "the disk is the same file, not rewritten"
    );
    // A damaged disk (same size) and a removed tarball are written again;
    // the checksums follow.
    let mut bytes = std::fs::read(&disk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&disk, &bytes).unwrap();
    std::fs::remove_file(output.join("cached-1.tar.gz")).unwrap();
    let mended = env.kiln(args);
    mended.expect_code(0);
    assert_eq!(
        written(&mended),
        [
            ("cached-1.qcow2".to_owned(), false),
            ("cached-1.tar.gz".to_owned(), false),
            ("SHA256SUMS".to_owned(), true)
        ]
    );
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&output)
        .output()
        .unwrap();
    assert!(
        sums.status.success()
            && String::from_utf8_lossy(&sums.stdout).contains("cached-1.qcow2: OK"),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    env.assert_no_leftovers();
}
