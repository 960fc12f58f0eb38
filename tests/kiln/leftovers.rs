//! What a crash leaves behind is cleaned up by the next build: work folders
//! whose removal was cut short, half-written blobs, and (with `--on-error
//! abort` on a full disk) half-copied failed roots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::util::{TestEnv, busybox_template};

/// Runs `flock FILE sleep 600`: a process that holds `FILE` locked, as a
/// live kiln holds its temp files and work folders.
struct LockHolder(Child);

impl LockHolder {
    fn hold(path: &Path) -> Self {
        // --close: `sleep` does not inherit the lock, so it dies with flock.
        let child = Command::new("flock")
            .arg("--close")
            .arg(path)
            .args(["sleep", "600"])
            .spawn()
            .expect("run flock (util-linux)");
        // Wait until the lock is taken.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Command::new("flock")
            .args(["--nonblock", "--conflict-exit-code", "75"])
            .arg(path)
            .arg("true")
            .status()
            .unwrap()
            .code()
            != Some(75)
        {
            assert!(std::time::Instant::now() < deadline, "flock never locked");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fill(dir: &Path, files: usize) {
    std::fs::create_dir_all(dir.join("upper/usr/share")).unwrap();
    for index in 0..files {
        std::fs::write(dir.join(format!("upper/usr/share/file-{index}")), b"x").unwrap();
    }
}

/// A build killed while it removed an abandoned work folder left it
/// without its lock (or half renamed): the next build removes it, and
/// leaves a live build's folder alone.
#[test]
fn work_folders_whose_removal_was_cut_short_are_removed() {
    let env = TestEnv::new();
    let first = env.write("first.toml", &busybox_template("first", "1"));
    env.kiln(["build", first.to_str().unwrap()]).expect_code(0);

    let tmp = env.home().join("tmp");
    // Removal cut short after the lock file went (an older kiln removed
    // the folder in place).
    let unlocked = tmp.join("build-cutshort");
    fill(&unlocked, 3_000);
    // Removal cut short after the rename.
    let removing = tmp.join(".removing-build-renamed");
    fill(&removing, 3_000);
    // Abandoned outright: its lock file is there, unlocked.
    let abandoned = tmp.join("build-abandoned");
    fill(&abandoned, 10);
    std::fs::write(abandoned.join(".lock"), b"").unwrap();
    // Live: another build holds its lock.
    let live = tmp.join("build-live");
    fill(&live, 10);
    std::fs::write(live.join(".lock"), b"").unwrap();
    let holder = LockHolder::hold(&live.join(".lock"));

    let next = env.write("next.toml", &busybox_template("next", "1"));
    env.kiln(["build", next.to_str().unwrap()]).expect_code(0);
    for gone in [&unlocked, &removing, &abandoned] {
        assert!(!gone.exists(), "{} is left", gone.display());
    }
    assert!(
        live.join("upper/usr/share/file-9").exists(),
        "a live folder is kept"
    );

    drop(holder);
    env.kiln(["build", next.to_str().unwrap()]).expect_code(0);
    env.assert_no_leftovers();
}

/// The real thing: a build killed while it removes an abandoned work
/// folder of 43,000 files, caught mid-removal; the next build finishes it.
#[test]
fn a_build_killed_while_it_removes_an_abandoned_folder_leaves_it_to_the_next() {
    let env = TestEnv::new();
    let first = env.write("first.toml", &busybox_template("first", "1"));
    env.kiln(["build", first.to_str().unwrap()]).expect_code(0);
    let tmp = env.home().join("tmp");
    let abandoned = tmp.join("build-abandoned");
    for dir in 0..43 {
        let dir = abandoned.join(format!("upper/usr/share/d{dir}"));
        std::fs::create_dir_all(&dir).unwrap();
        for index in 0..1_000 {
            std::fs::write(dir.join(index.to_string()), b"").unwrap();
        }
    }
    std::fs::write(abandoned.join(".lock"), b"").unwrap();

    let next = env.write("next.toml", &busybox_template("next", "1"));
    let mut child = env
        .kiln_command(["build", next.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Kill it the moment the folder is renamed for removal.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while abandoned.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never removed it"
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().any(|name| name == ".removing-build-abandoned"),
        "killed mid-removal, the folder is left as {left:?}"
    );

    env.kiln(["build", next.to_str().unwrap()]).expect_code(0);
    env.assert_no_leftovers();
}

/// Half-written blobs of a killed build are removed by the next command
/// that opens the store; a blob another kiln is writing is not.
#[test]
fn half_written_blobs_are_removed_by_the_next_build() {
    let env = TestEnv::new();
    let first = env.write("first.toml", &busybox_template("first", "1"));
    env.kiln(["build", first.to_str().unwrap()]).expect_code(0);

    let tmp = env.store().join(".kiln/tmp");
    let partial = tmp.join("blob-killed");
    let file = std::fs::File::create(&partial).unwrap();
    file.set_len(16 << 20).unwrap();
    drop(file);
    let written_by_old_kiln = tmp.join(".tmpAbCdEf");
    std::fs::write(&written_by_old_kiln, b"recent, unlocked").unwrap();
    let live = tmp.join("blob-live");
    std::fs::write(&live, b"being written").unwrap();
    let holder = LockHolder::hold(&live);

    let next = env.write("next.toml", &busybox_template("next", "1"));
    env.kiln(["build", next.to_str().unwrap()]).expect_code(0);
    assert!(!partial.exists(), "the killed build's blob is left");
    assert!(live.exists(), "a blob being written was removed");
    assert!(
        written_by_old_kiln.exists(),
        "a recent unlocked temp file of an older kiln is given a day"
    );

    drop(holder);
    std::fs::remove_file(&written_by_old_kiln).unwrap();
    env.kiln(["images"]).expect_code(0);
    assert!(
        !live.exists(),
        "an unlocked blob is left once its writer died"
    );
    env.assert_no_leftovers();
}

/// Unmounts a tmpfs when the test ends, however it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", path.display());
        Self(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `--on-error abort` on a full disk: the stage's own failure (no space
/// left) is what the build reports, keeping its root fails with a reason,
/// and no half-copied root is left.
#[test]
fn on_error_abort_on_a_full_disk_reports_the_cause_and_keeps_no_half_root() {
    let env = TestEnv::new();
    let home = Tmpfs::mount(env.home(), "48m");
    let template = env.write(
        "full.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"shell\"\ninline = [\"dd if=/dev/zero of=/fill bs=1M\"]\n",
            busybox_template("full", "1")
        ),
    );
    let outcome = env.kiln(["build", "--on-error", "abort", template.to_str().unwrap()]);
    outcome.expect_code(1);
    assert!(
        outcome
            .stderr
            .contains("error: failed to build full:1: stage 1 (shell) failed"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("No space left on device"),
        "the cause is shown: {}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains("error: failed to keep the failed stage's root:"),
        "{}",
        outcome.stderr
    );
    assert!(!outcome.stderr.contains("is kept at"), "{}", outcome.stderr);
    let failed = env.home().join("failed");
    let left: Vec<_> = std::fs::read_dir(&failed)
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "half-copied roots left: {left:?}");
    let work: Vec<_> = std::fs::read_dir(env.home().join("tmp"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(work.is_empty(), "work folders left: {work:?}");
    let below_home = format!("{}/", env.home().display());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&below_home), "{mounts}");
    drop(home);
}
