//! A `directory` source of a Debian minbase tree (about 160 MiB): `kiln
//! build` end to end in a fresh home (plan, key, bake, store), beside
//! `buildah commit` of a working container holding the same tree, timed
//! alone (not the copy into the container): to containers-storage (what
//! `buildah commit` does by default: the layer's files written into its
//! storage), and to an OCI layout (`oci:`), uncompressed (buildah's default)
//! and gzip'd like kiln's layers (`--disable-compression=false`). Run side
//! by side, in turns.
//!
//! `cargo bench --bench directory` (as root, with buildah and mmdebstrap:
//! `sh .ci/install-deps bench`). Target: kiln at least 1.25x faster than
//! `buildah commit`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

const RUNS: usize = 5;

fn buildah(root: &Path) -> Command {
    let mut command = Command::new("buildah");
    command
        .arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "overlay"]);
    command
}

fn output(command: &mut Command) -> String {
    let output = command.output().expect("run buildah");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A fresh buildah storage under `root` with a container holding `tree`;
/// returns the container's id.
fn container(root: &Path, tree: &Path) -> String {
    let container = output(buildah(root).args(["from", "scratch"]));
    let mount = output(buildah(root).args(["mount", &container]));
    let copy = Command::new("cp")
        .arg("-a")
        .arg(tree.join("."))
        .arg(&mount)
        .status()
        .expect("run cp");
    assert!(copy.success());
    let sync = Command::new("sync").status().expect("run sync");
    assert!(sync.success());
    container
}

fn clean(root: &Path) {
    let _ = buildah(root).args(["rm", "--all"]).output();
    let _ = buildah(root).args(["rmi", "--all", "--force"]).output();
    let _ = Command::new("umount")
        .arg("-R")
        .arg(root.join("storage/overlay"))
        .output();
    let _ = std::fs::remove_dir_all(root);
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    assert!(
        Command::new("buildah").arg("--version").output().is_ok(),
        "the directory bench needs buildah: sh .ci/install-deps bench"
    );
    let tree = common::debian_tree();
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    let template = dir.path().join("directory.toml");
    std::fs::write(
        &template,
        format!(
            "[image]\nname = \"tree\"\nversion = \"1\"\n\n[source]\ntype = \"directory\"\npath = \"{}\"\n",
            tree.display()
        ),
    )
    .unwrap();
    let mut kiln = Vec::new();
    let mut storage = Vec::new();
    let mut oci = Vec::new();
    let mut oci_gzip = Vec::new();
    for run in 0..RUNS {
        let home = dir.path().join(format!("home{run}"));
        kiln.push(common::timed(
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .arg("build")
                .arg(&template)
                .env("KILN_HOME", &home),
        ));
        let _ = std::fs::remove_dir_all(&home);

        for (destination, times) in [
            ("storage", &mut storage),
            ("oci", &mut oci),
            ("oci-gzip", &mut oci_gzip),
        ] {
            let root = dir.path().join(format!("buildah-{destination}{run}"));
            let container = container(&root, &tree);
            let target = match destination {
                "storage" => "tree:1".to_owned(),
                _ => format!("oci:{}:tree:1", root.join("layout").display()),
            };
            let mut commit = buildah(&root);
            commit.args(["commit", "--quiet"]);
            if destination == "oci-gzip" {
                commit.arg("--disable-compression=false");
            }
            times.push(common::timed(commit.arg(&container).arg(&target)));
            clean(&root);
        }
    }
    let kiln = common::median(kiln);
    let ratio = |times: Vec<Duration>| {
        let time = common::median(times);
        format!("{time:.2} s | {:.2}x", time / kiln)
    };
    println!(
        "tree: {} ({RUNS} runs each, in turns, median wall time)",
        tree.display()
    );
    println!("| build of the tree | time | vs kiln |");
    println!("|---|---|---|");
    println!("| `kiln build` of a directory source, end to end | {kiln:.2} s | 1.00x |");
    println!(
        "| `buildah commit` to containers-storage (its default) | {} |",
        ratio(storage)
    );
    println!(
        "| `buildah commit` to an OCI layout, gzip'd (`--disable-compression=false oci:`) | {} |",
        ratio(oci_gzip)
    );
    println!(
        "| `buildah commit` to an OCI layout, uncompressed (`oci:`) | {} |",
        ratio(oci)
    );
}
