//! Baking a Debian minbase root into a layer: kiln beside GNU
//! `tar --sort=name | gzip -6 | sha256sum`, the same with `pigz -6`, and
//! `umoci repack`, run side by side on the same tree.
//!
//! `cargo bench --bench bake` (as root). The tree is made once with
//! mmdebstrap under target/bench/ (or set KILN_BENCH_TREE to a folder).
//! Each tool runs RUNS times; the median wall time is printed with the
//! output size and the ratio to kiln. Then what a build adds after that
//! bake for the same tree: its SBOMs (the package databases read through
//! the file index, both documents stored) and its provenance, as a share
//! of kiln's bake.

use std::process::Command;
use std::time::{Duration, Instant};

use kiln::bake::{TreeOptions, bake_layer};
use kiln::store::Store;

mod common;

const RUNS: usize = 3;

fn run_shell(script: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .expect("run sh");
    assert!(status.success(), "failed: {script}");
    started.elapsed()
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    for tool in ["tar", "gzip", "pigz", "sha256sum", "umoci"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "the bake bench needs {tool}: apt-get install {tool}"
        );
    }
    let target = common::bench_dir();
    let tree = common::debian_tree();
    let scratch = tempfile::tempdir_in(&target).unwrap();
    let tree_size: u64 = String::from_utf8(
        Command::new("du")
            .arg("-sb")
            .arg(&tree)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .next()
    .unwrap()
    .parse()
    .unwrap();

    let mut results: Vec<(&str, f64, u64)> = Vec::new();

    let mut kiln_times = Vec::new();
    let mut kiln_size = 0;
    let mut baked = None;
    for run in 0..RUNS {
        let store = Store::open(&scratch.path().join(format!("store{run}"))).unwrap();
        let started = Instant::now();
        let options = TreeOptions {
            epoch: 0,
            overlay_upper: false,
        };
        let layer = bake_layer(&store, &tree, options, &mut |_| {}).unwrap();
        kiln_times.push(started.elapsed());
        kiln_size = layer.descriptor.size;
        baked = Some((store, layer));
    }
    results.push((
        "kiln bake (tar + gzip -6 on all cores + sha256 of tar, blob and each file)",
        common::median(kiln_times),
        kiln_size,
    ));

    let tree_arg = tree.display().to_string();
    let out = scratch.path().join("out.tar.gz");
    let out_arg = out.display().to_string();
    let tar =
        format!("tar --sort=name --numeric-owner --mtime=@0 --xattrs -C '{tree_arg}' -cf - .");
    for (name, compressor) in [
        ("tar --sort=name | gzip -6 | sha256sum", "gzip -6 -n"),
        ("tar --sort=name | pigz -6 | sha256sum", "pigz -6 -n"),
    ] {
        let script = format!("{tar} | {compressor} | tee '{out_arg}' | sha256sum >/dev/null");
        let times = (0..RUNS).map(|_| run_shell(&script)).collect();
        results.push((
            name,
            common::median(times),
            std::fs::metadata(&out).unwrap().len(),
        ));
    }

    // umoci repack: a bundle from an empty image, the tree copied into its
    // rootfs, then the timed repack (diff walk, tar, gzip, hashing).
    let layout = scratch.path().join("umoci-layout");
    let layout_arg = layout.display().to_string();
    run_shell(&format!(
        "umoci init --layout '{layout_arg}' && umoci new --image '{layout_arg}:base'"
    ));
    let mut umoci_times = Vec::new();
    let mut umoci_size = 0;
    for run in 0..RUNS {
        let bundle = scratch.path().join(format!("bundle{run}"));
        let bundle_arg = bundle.display().to_string();
        run_shell(&format!(
            "umoci unpack --image '{layout_arg}:base' '{bundle_arg}' >/dev/null && cp -a '{tree_arg}/.' '{bundle_arg}/rootfs/'"
        ));
        umoci_times.push(run_shell(&format!(
            "umoci repack --image '{layout_arg}:run{run}' '{bundle_arg}' >/dev/null"
        )));
        let blobs = layout.join("blobs/sha256");
        umoci_size = std::fs::read_dir(&blobs)
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .max()
            .unwrap();
    }
    results.push(("umoci repack", common::median(umoci_times), umoci_size));

    let kiln = results[0].1;
    println!(
        "tree: {} ({:.0} MiB), {RUNS} runs each, median wall time",
        tree.display(),
        tree_size as f64 / 1048576.0
    );
    println!("| tool | time | output | time vs kiln |");
    println!("|---|---|---|---|");
    for (name, time, size) in &results {
        println!(
            "| {name} | {:.2} s | {:.1} MiB | {:.2}x |",
            time,
            *size as f64 / 1048576.0,
            time / kiln
        );
    }

    let (store, layer) = baked.expect("kiln baked the tree");
    let plan = debian_vm_plan();
    let index = kiln::file_index::FileIndex::merge([layer.files]);
    let added = common::median(
        (0..RUNS)
            .map(|_| supply_chain_documents(&store, &tree, &plan, &index, &layer.descriptor.digest))
            .collect(),
    );
    println!(
        "SBOMs and provenance of that tree: {:.0} ms, {:.1}% of kiln's bake",
        added * 1000.0,
        100.0 * added / kiln
    );
}

/// The plan of `templates/debian-vm.toml`, which the provenance describes.
fn debian_vm_plan() -> kiln::plan::BuildPlan {
    let template_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/debian-vm.toml");
    let template = kiln::template::load(
        &template_path,
        &kiln::template::variables::VarInputs::default(),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let remote = kiln::remote::RemoteOptions::default();
    let options = kiln::plan::PlanOptions {
        home: home.path(),
        epoch: 0,
        output: None,
        publish: false,
        remote: &remote,
    };
    kiln::plan::plan(template, &options).unwrap()
}

/// The SBOMs and provenance a build makes after the bake, stored: timed.
fn supply_chain_documents(
    store: &Store,
    tree: &std::path::Path,
    plan: &kiln::plan::BuildPlan,
    index: &kiln::file_index::FileIndex,
    digest: &kiln::reference::Digest,
) -> Duration {
    let started = Instant::now();
    let inventory = kiln::sbom::inventory::from_trees(index, &[tree.to_owned()])
        .expect("the tree's package databases match its file index");
    let image = &plan.template.image;
    let subject = kiln::sbom::Subject {
        name: &image.name,
        version: &image.version,
        digest,
        epoch: 0,
    };
    for format in [
        kiln::sbom::SbomFormat::Cyclonedx,
        kiln::sbom::SbomFormat::Spdx,
    ] {
        let bytes = kiln::sbom::document(&inventory, &subject, format);
        store.put_bytes(format.media_type(), &bytes).unwrap();
    }
    let statement = kiln::provenance::statement(&kiln::provenance::Run {
        plan,
        digest,
        stages: &[],
        started: 0,
        finished: 0,
    });
    store
        .put_bytes(
            kiln::provenance::MEDIA_TYPE,
            &serde_json::to_vec(&statement).unwrap(),
        )
        .unwrap();
    started.elapsed()
}
