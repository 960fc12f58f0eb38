//! `[[test]]` in the chroot: a throwaway writable layer above the image,
//! the image's `env` and `workdir`, another `user`, and a failure that
//! names the command that failed.

use crate::util::{TestEnv, busybox_template};

#[test]
fn chroot_tests_write_on_a_throwaway_layer_with_the_images_env_workdir_and_user() {
    let env = TestEnv::new();
    let template = busybox_template("tested", "1.0").replacen(
        "version = \"1.0\"\n",
        "version = \"1.0\"\nenv = [\"GREETING=from the image\"]\nworkdir = \"/srv\"\n",
        1,
    );
    let template = env.write(
        "tested.toml",
        &format!(
            "{template}\n\
             [[provisioner]]\ntype = \"shell\"\ninline = [\"mkdir -p /srv && echo data > /srv/file\"]\n\n\
             [[test]]\nname = \"writes anywhere\"\ninline = [\n\
             \x20 \"echo x > /etc/written\",\n\
             \x20 \"mkdir -p /run/app && echo 1 > /run/app/pid\",\n\
             \x20 \"test \\\"$(pwd)\\\" = /srv\",\n\
             \x20 \"test \\\"$GREETING\\\" = 'from the image'\",\n\
             \x20 \"grep -qx data file\",\n\
             ]\n\n\
             [[test]]\nname = \"as nobody\"\nuser = \"nobody\"\ninline = [\n\
             \x20 \"test \\\"$(id -u):$(id -g)\\\" = 65534:65534\",\n\
             \x20 \"test \\\"$HOME\\\" = /nonexistent\",\n\
             \x20 \"! touch /etc/denied 2>/dev/null\",\n\
             ]\n"
        ),
    );
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(0);
    assert!(
        outcome.stderr.contains("test `as nobody` passed"),
        "{}",
        outcome.stderr
    );
    let rootfs = env.umoci_unpack("tested:1.0");
    assert!(
        !rootfs.join("etc/written").exists() && !rootfs.join("run/app").exists(),
        "a test's writes never reach the image"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/file")).unwrap(),
        "data\n"
    );
    env.assert_no_leftovers();
}

#[test]
fn a_failing_test_names_the_command_that_failed_and_stores_nothing() {
    let env = TestEnv::new();
    let template = env.write(
        "failing.toml",
        &format!(
            "{}\n[[test]]\nname = \"checks\"\ninline = [\"true\", \"echo before; false\", \"echo never\"]\n",
            busybox_template("failing", "1.0")
        ),
    );
    let outcome = env.kiln(["build", template.to_str().unwrap()]);
    outcome.expect_code(1);
    assert!(
        outcome
            .stderr
            .contains("test `checks` failed at command 2, `echo before; false`"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("before"), "{}", outcome.stderr);
    assert!(!outcome.stderr.contains("| never"), "{}", outcome.stderr);
    assert_eq!(env.stored_digest("failing:1.0"), None);
    env.assert_no_leftovers();
}
