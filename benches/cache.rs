//! The stage cache on a Debian-based template of five stages: a cold
//! build, a rebuild after changing only the last stage, and a rebuild with
//! nothing changed, each timed end to end with the kiln binary; then the
//! same template with a qcow2 disk, rebuilt with nothing changed (the disk
//! found in place, not written again).
//!
//! `cargo bench --bench cache` (as root, with mmdebstrap and network access
//! to a Debian mirror). Targets: the last-stage rebuild under 5% of the
//! cold build, the unchanged rebuild under 2%, the unchanged rebuild with a
//! disk under 2 s.

use std::path::Path;

mod common;
use std::process::Command;
use std::time::{Duration, Instant};

const TEMPLATE: &str = r#"[image]
name = "bench-cache"
version = "${var.version}"

[variables.version]
default = "1"

[variables.stamp]
default = "first"

[source]
type = "debootstrap"
suite = "bookworm"
variant = "minbase"

[[provisioner]]
type = "file"
source = "motd"
destination = "/etc/motd"

[[provisioner]]
type = "shell"
inline = ["useradd --system --create-home app", "mkdir -p /srv/app"]

[[provisioner]]
type = "shell"
inline = ["head -c 20000000 /dev/urandom > /srv/app/data"]

[[provisioner]]
type = "shell"
inline = ["echo '${var.stamp}' > /etc/build-stamp"]
"#;

fn build(home: &Path, template: &Path, vars: &[&str]) -> Duration {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.arg("build").arg(template).env("KILN_HOME", home);
    for var in vars {
        command.arg("--var").arg(var);
    }
    let started = Instant::now();
    let output = command.output().expect("run kiln");
    assert!(
        output.status.success(),
        "kiln build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let target = common::bench_dir();
    let dir = tempfile::tempdir_in(&target).unwrap();
    let template = dir.path().join("bench.toml");
    std::fs::write(&template, TEMPLATE).unwrap();
    std::fs::write(dir.path().join("motd"), "benchmarked\n").unwrap();
    let home = dir.path().join("home");

    let cold = build(&home, &template, &[]);
    let last_changed = build(&home, &template, &["version=2", "stamp=second"]);
    let unchanged = build(&home, &template, &["version=2", "stamp=second"]);

    let with_disk = dir.path().join("disk.toml");
    std::fs::write(
        &with_disk,
        format!("{TEMPLATE}\n[[post_processor]]\ntype = \"disk\"\nformat = \"qcow2\"\n"),
    )
    .unwrap();
    let disk_written = build(&home, &with_disk, &["version=2", "stamp=second"]);
    let disk_unchanged = build(&home, &with_disk, &["version=2", "stamp=second"]);

    let ratio = |time: Duration| 100.0 * time.as_secs_f64() / cold.as_secs_f64();
    println!(
        "five stages: debootstrap bookworm minbase, file, shell (useradd), shell (20 MB), shell (stamp)"
    );
    println!("| build | time | share of the cold build | target |");
    println!("|---|---|---|---|");
    println!(
        "| cold (empty cache) | {:.2} s | 100% | |",
        cold.as_secs_f64()
    );
    println!(
        "| only the last stage changed | {:.2} s | {:.1}% | under 5% |",
        last_changed.as_secs_f64(),
        ratio(last_changed)
    );
    println!(
        "| nothing changed | {:.2} s | {:.1}% | under 2% |",
        unchanged.as_secs_f64(),
        ratio(unchanged)
    );
    println!(
        "| stages cached, a qcow2 disk written | {:.2} s | {:.1}% | |",
        disk_written.as_secs_f64(),
        ratio(disk_written)
    );
    println!(
        "| nothing changed, the qcow2 disk in place | {:.2} s | {:.1}% | under 2 s |",
        disk_unchanged.as_secs_f64(),
        ratio(disk_unchanged)
    );
}
