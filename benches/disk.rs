//! A qcow2 disk of the Debian-based image: `kiln export --format qcow2`
//! (flatten the layers, `mke2fs -d`, fix every inode's times, convert)
//! beside the same tree through `mke2fs -d` and `qemu-img convert` by hand
//! (no flattening and no reproducibility work), side by side.
//!
//! `cargo bench --bench disk` (as root, with e2fsprogs, qemu-utils and
//! mmdebstrap; the Debian tree is shared with the other benches).

use std::process::Command;
use std::time::Instant;

mod common;

const RUNS: usize = 3;

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let tree = common::debian_tree();
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    let home = common::build_debian_image(dir.path());
    let kiln = env!("CARGO_BIN_EXE_kiln");

    let mut kiln_times = Vec::new();
    let mut manual_times = Vec::new();
    let mut sizes = (0, 0);
    for run in 0..RUNS {
        let qcow2 = dir.path().join(format!("kiln{run}.qcow2"));
        kiln_times.push(common::timed(
            Command::new(kiln)
                .args(["export", "debian:1", "--format", "qcow2", "-o"])
                .arg(&qcow2)
                .env("KILN_HOME", &home),
        ));
        sizes.0 = std::fs::metadata(&qcow2).unwrap().len();

        let raw = dir.path().join(format!("manual{run}.raw"));
        let manual_qcow2 = dir.path().join(format!("manual{run}.qcow2"));
        let started = Instant::now();
        common::timed(
            Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-d"])
                .arg(&tree)
                .arg(&raw)
                .arg("400M"),
        );
        common::timed(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&manual_qcow2),
        );
        manual_times.push(started.elapsed());
        sizes.1 = std::fs::metadata(&manual_qcow2).unwrap().len();
    }
    let (kiln_time, manual_time) = (common::median(kiln_times), common::median(manual_times));
    println!("tree: a Debian bookworm minbase (about 160 MiB); {RUNS} runs, median");
    println!("| qcow2 disk | time | size | reproducible |");
    println!("|---|---|---|---|");
    println!(
        "| kiln export (flatten layers, mke2fs -d, fix inode times, convert) | {kiln_time:.2} s | {:.1} MiB | yes |",
        sizes.0 as f64 / 1048576.0
    );
    println!(
        "| mke2fs -d + qemu-img convert by hand | {manual_time:.2} s ({:.2}x kiln) | {:.1} MiB | no |",
        manual_time / kiln_time,
        sizes.1 as f64 / 1048576.0
    );
}
