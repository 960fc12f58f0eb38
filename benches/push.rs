//! Pushing the Debian-based image to a registry: kiln beside `skopeo copy`
//! of the same OCI layout, to an empty registry and to one that has every
//! blob already. Each side gets its own fresh docker-registry on loopback.
//!
//! `cargo bench --bench push` (as root, with docker-registry, skopeo and
//! mmdebstrap; the Debian tree is shared with the bake bench).

use std::process::Command;

mod common;
use common::Registry;

const RUNS: usize = 3;

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let target = common::bench_dir();
    let dir = tempfile::tempdir_in(&target).unwrap();
    let home = common::build_debian_image(dir.path());
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let store = home.join("store");

    let mut kiln_empty = Vec::new();
    let mut kiln_present = Vec::new();
    let mut skopeo_empty = Vec::new();
    let mut skopeo_present = Vec::new();
    for _ in 0..RUNS {
        let registry = Registry::start(dir.path());
        let remote = format!("127.0.0.1:{}/bench/debian", registry.port);
        let push = || {
            let mut command = Command::new(kiln);
            command
                .args(["push", "debian:1", &remote])
                .env("KILN_HOME", &home);
            common::timed(&mut command)
        };
        kiln_empty.push(push());
        kiln_present.push(push());
        drop(registry);

        let registry = Registry::start(dir.path());
        let destination = format!("docker://127.0.0.1:{}/bench/debian:1", registry.port);
        let source = format!("oci:{}:debian:1", store.display());
        let copy = || {
            common::timed(Command::new("skopeo").args([
                "copy",
                "--dest-tls-verify=false",
                &source,
                &destination,
            ]))
        };
        skopeo_empty.push(copy());
        skopeo_present.push(copy());
    }
    let (kiln_empty, kiln_present) = (common::median(kiln_empty), common::median(kiln_present));
    let (skopeo_empty, skopeo_present) =
        (common::median(skopeo_empty), common::median(skopeo_present));
    println!(
        "image: a Debian bookworm minbase as one layer (about 59 MiB gzip'd); {RUNS} runs, median"
    );
    println!("| push | kiln | skopeo copy | skopeo / kiln |");
    println!("|---|---|---|---|");
    println!(
        "| to an empty registry | {kiln_empty:.2} s | {skopeo_empty:.2} s | {:.2}x |",
        skopeo_empty / kiln_empty
    );
    println!(
        "| everything there already | {kiln_present:.2} s | {skopeo_present:.2} s | {:.2}x |",
        skopeo_present / kiln_present
    );
}
