//! What confinement costs a shell stage: the start-up time of one stage
//! that runs `true` on a busybox root, for each network choice, against an
//! earlier kiln (unconfined) and `buildah run` (runc) side by side.
//!
//! A stage's cost is (a build of 20 `true` stages − a build of none) / 20,
//! every build with `--no-cache`, median of 3. `cargo bench --bench sandbox`
//! (as root, with busybox-static and slirp4netns; buildah and runc for the
//! side-by-side row). `KILN_BASELINE=PATH` names an earlier kiln binary to
//! compare with (a template without `network`, which it does not know).
//! Target: under 50 ms more per stage than before confinement.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{bench_dir, median, timed};

const STAGES: usize = 20;
const RUNS: usize = 3;

fn busybox_tarball(dir: &Path) -> PathBuf {
    let tarball = dir.join("busybox-rootfs.tar.gz");
    if !tarball.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/make-busybox-rootfs.sh");
        let status = Command::new(script)
            .arg(&tarball)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run fixtures/make-busybox-rootfs.sh (apt-get install busybox-static)");
        assert!(status.success());
    }
    tarball
}

fn template(dir: &Path, tarball: &Path, stages: usize, network: Option<&str>) -> PathBuf {
    let mut text = format!(
        "[image]\nname = \"bench-sandbox\"\nversion = \"{stages}-{}\"\n\n[source]\ntype = \"tarball\"\npath = \"{}\"\n",
        network.unwrap_or("unset"),
        tarball.display()
    );
    for _ in 0..stages {
        text.push_str("\n[[provisioner]]\ntype = \"shell\"\ninline = [\"true\"]\n");
        if let Some(network) = network {
            text.push_str(&format!("network = \"{network}\"\n"));
        }
    }
    let path = dir.join(format!(
        "stages-{stages}-{}.toml",
        network.unwrap_or("unset")
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Seconds one stage adds, with `kiln` and this `network` key.
fn per_stage(kiln: &Path, dir: &Path, tarball: &Path, network: Option<&str>) -> f64 {
    let home = tempfile::tempdir_in(dir).unwrap();
    let build = |stages: usize| {
        let template = template(dir, tarball, stages, network);
        let times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                timed(
                    Command::new(kiln)
                        .arg("build")
                        .arg("--no-cache")
                        .arg(&template)
                        .env("KILN_HOME", home.path()),
                )
            })
            .collect();
        median(times)
    };
    let none = build(0);
    let many = build(STAGES);
    (many - none) / STAGES as f64
}

/// Seconds one `buildah run --runtime runc CONTAINER true` takes.
fn buildah_run(tarball: &Path, network: Option<&str>) -> Option<f64> {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if !have("buildah") || !have("runc") {
        eprintln!("buildah or runc missing: the buildah row is left out");
        return None;
    }
    let output = Command::new("buildah")
        .args(["from", "scratch"])
        .output()
        .unwrap();
    let container = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let output = Command::new("buildah")
        .args(["mount", &container])
        .output()
        .unwrap();
    let root = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    timed(
        Command::new("tar")
            .arg("-xzf")
            .arg(tarball)
            .arg("-C")
            .arg(&root),
    );
    timed(Command::new("buildah").args(["umount", &container]));
    let times: Vec<Duration> = (0..STAGES)
        .map(|_| {
            let mut command = Command::new("buildah");
            command.args(["run", "--runtime", "runc"]);
            if let Some(network) = network {
                command.args(["--network", network]);
            }
            timed(command.args([&container, "true"]))
        })
        .collect();
    timed(Command::new("buildah").args(["rm", &container]));
    Some(median(times))
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let tarball = busybox_tarball(&bench_dir());
    let kiln = Path::new(env!("CARGO_BIN_EXE_kiln"));
    let baseline = std::env::var_os("KILN_BASELINE").map(PathBuf::from);

    let ms = |seconds: f64| seconds * 1000.0;
    println!(
        "one shell stage running `true` on a busybox root; (20 stages - none) / 20, median of {RUNS}"
    );
    println!("| what | per stage | more than before |");
    println!("|---|---|---|");
    let before = baseline.as_ref().map(|baseline| {
        let before = per_stage(baseline, dir.path(), &tarball, None);
        println!(
            "| earlier kiln ({}), unconfined | {:.1} ms | |",
            baseline.display(),
            ms(before)
        );
        before
    });
    let more = |seconds: f64| {
        before.map_or_else(String::new, |before| {
            format!("{:+.1} ms", ms(seconds - before))
        })
    };
    for network in ["none", "host", "isolated"] {
        let seconds = per_stage(kiln, dir.path(), &tarball, Some(network));
        println!(
            "| kiln, network = \"{network}\" | {:.1} ms | {} |",
            ms(seconds),
            more(seconds)
        );
    }
    for network in [None, Some("host")] {
        if let Some(seconds) = buildah_run(&tarball, network) {
            println!(
                "| buildah run (runc){} | {:.1} ms | {} |",
                network.map_or_else(String::new, |network| format!(", --network {network}")),
                ms(seconds),
                more(seconds)
            );
        }
    }
}
