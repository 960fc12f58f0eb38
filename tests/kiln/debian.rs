//! The example users run first: `templates/hello.toml`, a real Debian root
//! from mmdebstrap, provisioned and tested, end to end.

use std::os::unix::fs::PermissionsExt;

use crate::util::{TestEnv, repo_root, require_tool};

#[test]
fn hello_template_builds_from_a_real_debian_base() {
    require_tool("mmdebstrap", "mmdebstrap");
    let env = TestEnv::new();
    let template = repo_root().join("templates/hello.toml");
    // Artifacts go to the test's folder: no test writes into the repository.
    let output = env.path("output");
    let outcome = env.kiln([
        "build",
        template.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    outcome.expect_code(0);
    assert!(
        outcome
            .stderr
            .contains("test `motd carries the greeting` passed"),
        "{}",
        outcome.stderr
    );
    assert!(output.join("hello-1.0.0.qcow2").is_file());
    let digest = env
        .stored_digest("hello:1.0.0")
        .expect("hello:1.0.0 is stored");
    assert_eq!(env.skopeo_inspect("hello:1.0.0")["Digest"], digest.as_str());
    let rootfs = env.umoci_unpack("hello:1.0.0");
    assert!(
        std::fs::read_to_string(rootfs.join("etc/debian_version"))
            .unwrap()
            .starts_with("12")
    );
    let motd = std::fs::read_to_string(rootfs.join("etc/motd")).unwrap();
    assert!(
        motd.starts_with("This machine was baked by kiln.") && motd.ends_with("hello from kiln\n"),
        "{motd}"
    );
    let passwd = std::fs::metadata(rootfs.join("usr/bin/passwd")).unwrap();
    assert_eq!(
        passwd.permissions().mode() & 0o4000,
        0o4000,
        "setuid survives"
    );
    assert!(
        !rootfs.join("var/lib/apt/lists/lock").exists(),
        "the shell stage's deletions apply"
    );
    // Three layers with whiteouts, merged into one file index that matches
    // what umoci unpacked, path for path.
    let verified = env.kiln(["verify", "hello:1.0.0", "--root", rootfs.to_str().unwrap()]);
    verified.expect_code(0);
    assert!(
        verified.stdout.contains("matches the image"),
        "{}",
        verified.stdout
    );
    env.kiln(["verify", "hello:1.0.0"]).expect_code(0);
    env.assert_no_leftovers();
}
