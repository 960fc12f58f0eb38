//! Drift checking: `kiln verify --root` of the Debian-based image against
//! its tree, beside an mtree-style check of the same tree with GNU tools
//! (`find -printf` of every path's type, mode, owner, size and link target,
//! then `sha256sum -c` of every file), single-process and on both cores.
//! Both sides read every file: nothing drifted, so every size matches.
//!
//! `cargo bench --bench verify` (as root, with mmdebstrap; the Debian tree
//! is shared with the other benches). Page cache warm: the first run of
//! each is thrown away.

use std::process::Command;

mod common;

const RUNS: usize = 5;

/// The metadata listing both mtree-style runs compare.
const LIST_METADATA: &str = "find . -printf '%y %m %U:%G %s %p -> %l\\n' | LC_ALL=C sort";

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let tree = common::debian_tree();
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    let home = common::build_debian_image(dir.path());
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let metadata = dir.path().join("metadata");
    let sums = dir.path().join("SHA256SUMS");
    // The recorded side of the mtree-style check, made once, not timed.
    let dir_path = dir.path().display();
    common::timed(Command::new("sh").current_dir(&tree).arg("-c").arg(format!(
        "{LIST_METADATA} > {dir_path}/metadata && \
         find . -type f -print0 | xargs -0 sha256sum > {dir_path}/SHA256SUMS && \
         split -n l/2 {dir_path}/SHA256SUMS {dir_path}/half."
    )));
    let same_metadata = format!("{LIST_METADATA} | cmp -s - {}", metadata.display());
    let serial_check = format!("{same_metadata} && sha256sum -c --quiet {}", sums.display());
    let parallel_check = format!(
        "{same_metadata} && {{ sha256sum -c --quiet {dir_path}/half.aa & a=$!; \
         sha256sum -c --quiet {dir_path}/half.ab & b=$!; wait $a && wait $b; }}"
    );
    let (files, bytes) = census(&tree);

    let mut kiln_times = Vec::new();
    let mut serial_times = Vec::new();
    let mut parallel_times = Vec::new();
    for run in 0..=RUNS {
        let kiln_time = common::timed(
            Command::new(kiln)
                .args(["verify", "debian:1", "--root"])
                .arg(&tree)
                .env("KILN_HOME", &home),
        );
        let serial = common::timed(
            Command::new("sh")
                .current_dir(&tree)
                .arg("-c")
                .arg(&serial_check),
        );
        let parallel = common::timed(
            Command::new("sh")
                .current_dir(&tree)
                .arg("-c")
                .arg(&parallel_check),
        );
        if run > 0 {
            kiln_times.push(kiln_time);
            serial_times.push(serial);
            parallel_times.push(parallel);
        }
    }
    let kiln_time = common::median(kiln_times);
    let serial = common::median(serial_times);
    let parallel = common::median(parallel_times);
    println!(
        "tree: a Debian bookworm minbase, {files} files, {:.0} MiB; {RUNS} runs, median, warm cache",
        bytes as f64 / 1048576.0
    );
    println!("| drift check of an untouched tree | time | ratio |");
    println!("|---|---|---|");
    println!(
        "| kiln verify --root (metadata, then sha256 of every same-size file on 2 threads) | {kiln_time:.2} s | 1.00 |"
    );
    println!(
        "| find -printf \\| sort \\| cmp, then sha256sum -c of every file | {serial:.2} s | {:.2}x kiln |",
        serial / kiln_time
    );
    println!(
        "| the same, the sums split in two halves checked side by side | {parallel:.2} s | {:.2}x kiln |",
        parallel / kiln_time
    );
}

/// Regular files and their bytes, for the figures' caption.
fn census(tree: &std::path::Path) -> (u64, u64) {
    let output = Command::new("sh")
        .current_dir(tree)
        .arg("-c")
        .arg("find . -type f -printf '%s\\n'")
        .output()
        .unwrap();
    let sizes: Vec<u64> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.parse().ok())
        .collect();
    (sizes.len() as u64, sizes.iter().sum())
}
