//! The machine example, `templates/debian-vm.toml`, built and booted: its
//! VM test runs inside the machine (UEFI, from the hybrid disk); the same
//! disk boots to a login prompt with SeaBIOS; the image carries none of
//! the build host's identity; a failing VM test moves nothing; and two
//! cold builds in two homes give one digest.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::{Outcome, TestEnv, repo_root, require_tool};

struct Built {
    env: TestEnv,
    outcome: Outcome,
    digest: String,
}

fn build_example(env: &TestEnv) -> Outcome {
    for (tool, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("grub-mkimage", "grub-pc-bin"),
        ("mdir", "mtools"),
    ] {
        require_tool(tool, package);
    }
    let template = repo_root().join("templates/debian-vm.toml");
    env.kiln([
        "build",
        template.to_str().unwrap(),
        "--output",
        env.path("out").to_str().unwrap(),
    ])
}

/// The example, built once for the tests that read it.
fn example() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let env = TestEnv::new();
        let outcome = build_example(&env);
        outcome.expect_code(0);
        let digest = env
            .stored_digest("debian-vm:1.0.0")
            .expect("debian-vm:1.0.0 is stored");
        Built {
            env,
            outcome,
            digest,
        }
    })
}

fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Boots `disk` with SeaBIOS (no changes reach it: `-snapshot`) until the
/// console shows a login prompt; returns the console.
fn boot_to_login_with_seabios(disk: &Path, console: &Path) -> String {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel", "tcg", "-machine", "q35", "-smp", "2", "-m", "1024",
        ])
        .args(["-nodefaults", "-display", "none", "-no-reboot", "-snapshot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run qemu-system-x86_64");
    let started = Instant::now();
    let text = loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).into_owned();
        if text.contains("login:") || started.elapsed() > Duration::from_secs(400) {
            break text;
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            panic!("qemu exited with {status} before a login prompt:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = qemu.kill();
    let _ = qemu.wait();
    text
}

#[test]
fn the_debian_vm_example_boots_with_uefi_and_bios_and_leaves_the_host_out() {
    let built = example();
    let env = &built.env;
    let stderr = &built.outcome.stderr;
    // The VM test ran in the machine, booted with UEFI from the hybrid disk.
    for expected in [
        "booting the machine (uefi, qemu",
        "| state: running",
        "root on /dev/vda3",
        "test `the machine boots to multi-user` passed",
    ] {
        assert!(stderr.contains(expected), "no `{expected}` in:\n{stderr}");
    }
    let disk = env.path("out/debian-vm-1.0.0.qcow2");
    let before = sha256(&disk);

    // The same disk, with SeaBIOS: GRUB in the MBR loads the same kernel.
    let console = boot_to_login_with_seabios(&disk, &env.path("bios-console.log"));
    assert!(console.contains("login:"), "no login prompt:\n{console}");
    assert!(
        console.contains("root=PARTUUID=") && console.contains("kiln: loading /boot/vmlinuz-"),
        "GRUB did not boot the image's kernel:\n{console}"
    );
    assert_eq!(sha256(&disk), before, "booting never changes the artifact");

    // Machine hygiene: nothing of the build host, no machine identity.
    let rootfs = env.umoci_unpack("debian-vm:1.0.0");
    let read = |path: &str| std::fs::read_to_string(rootfs.join(path));
    assert_eq!(
        read("etc/resolv.conf").unwrap(),
        "",
        "the host's resolv.conf"
    );
    assert!(!rootfs.join("etc/hostname").exists(), "the host's hostname");
    assert_eq!(read("etc/machine-id").unwrap(), "", "a machine id");
    let keys: Vec<String> = std::fs::read_dir(rootfs.join("etc/ssh"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("ssh_host_"))
        .collect();
    assert!(
        keys.is_empty(),
        "SSH host keys made during the build: {keys:?}"
    );
    assert!(!rootfs.join("var/cache/ldconfig/aux-cache").exists());
    let sources = read("etc/apt/sources.list").unwrap();
    for suite in [
        "bookworm main",
        "bookworm-updates main",
        "bookworm-security main",
    ] {
        assert!(sources.contains(suite), "no {suite} in:\n{sources}");
    }
    assert!(sources.contains("debian-security"), "{sources}");
}

#[test]
fn a_failing_vm_test_stores_and_moves_nothing_and_shows_its_output() {
    let built = example();
    let env = &built.env;
    let template = env.write(
        "failing.toml",
        "[image]\nname = \"failing\"\nversion = \"1.0\"\n\n\
         [source]\ntype = \"image\"\nref = \"debian-vm:1.0.0\"\n\n\
         [[test]]\nname = \"inside\"\nin = \"vm\"\n\
         inline = [\"echo marker-from-inside $(cat /etc/debian_version)\", \"test -e /nonexistent\"]\n\n\
         [[post_processor]]\ntype = \"disk\"\nboot = \"bios\"\n\n\
         [publish]\nchannels = [\"dev\"]\n",
    );
    let outcome = env.kiln([
        "build",
        template.to_str().unwrap(),
        "--output",
        env.path("failing-out").to_str().unwrap(),
    ]);
    outcome.expect_code(1);
    assert!(
        outcome.stderr.contains("booting the machine (bios, qemu"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("marker-from-inside 12."),
        "the test's output is shown: {}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains("test `inside` failed at command 2, `test -e /nonexistent`"),
        "{}",
        outcome.stderr
    );
    assert_eq!(env.stored_digest("failing:1.0"), None, "nothing is stored");
    let images = env.kiln(["images"]);
    assert!(!images.stdout.contains("failing"), "{}", images.stdout);
    assert!(
        !env.path("failing-out").join("failing-1.0.raw").exists(),
        "no artifact is written"
    );
    env.assert_no_leftovers();
}

#[test]
fn two_cold_builds_of_the_debian_vm_example_in_two_homes_give_one_digest() {
    let env = TestEnv::new();
    let outcome = build_example(&env);
    outcome.expect_code(0);
    let digest = env.stored_digest("debian-vm:1.0.0").unwrap();
    assert_eq!(digest, example().digest);
    let disk: PathBuf = env.path("out/debian-vm-1.0.0.qcow2");
    assert_eq!(
        sha256(&disk),
        sha256(&example().env.path("out/debian-vm-1.0.0.qcow2"))
    );
}
