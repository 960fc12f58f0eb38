//! The machine example, `templates/debian-vm.toml`: how long kiln takes to
//! assemble its bootable hybrid disk from the flattened tree (the GPT, the
//! ext4 root, its inode times, the ESP, GRUB), beside `mke2fs -d` alone on
//! the same tree at the same root size, in turns; and the time from
//! starting qemu (TCG) to a login prompt on the serial console, with
//! SeaBIOS and with OVMF.
//!
//! `cargo bench --bench machine` (as root, with mmdebstrap, network access
//! to a Debian mirror, e2fsprogs, dosfstools, mtools, grub-pc-bin,
//! systemd-boot-efi, qemu-system-x86 and ovmf).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::disk::{BootMode, DiskFormat, DiskImage, DiskSettings};
use kiln::reference::StoreRef;
use kiln::store::Store;

mod common;

const RUNS: usize = 3;

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let dir = tempfile::tempdir_in(common::bench_dir()).unwrap();
    let home = dir.path().join("home");
    let output = dir.path().join("out");
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/debian-vm.toml");
    eprintln!("building templates/debian-vm.toml (once)...");
    common::timed(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(&template)
            .arg("--output")
            .arg(&output)
            .env("KILN_HOME", &home),
    );

    let store = Store::open(&home.join("store")).unwrap();
    let reference: StoreRef = "debian-vm:1.0.0".parse().unwrap();
    let entry = store.resolve(&reference).unwrap();
    let manifest = store.manifest(&entry).unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    kiln::export::flatten(&store, &manifest, &tree).unwrap();
    let image = DiskImage {
        digest: &entry.manifest.digest,
        name: "debian-vm",
        architecture: "amd64",
        epoch: 0,
    };
    let settings = DiskSettings {
        size: Some("2G".parse().unwrap()),
        ..DiskSettings::fitted(DiskFormat::Raw, BootMode::Hybrid)
    };

    let mut kiln_times = Vec::new();
    let mut mke2fs_times = Vec::new();
    for run in 0..RUNS {
        let raw = dir.path().join(format!("kiln{run}.raw"));
        std::fs::write(&raw, b"").unwrap();
        let started = Instant::now();
        kiln::disk::write_raw(&tree, &image, &settings, &raw).unwrap();
        kiln_times.push(started.elapsed());
        std::fs::remove_file(&raw).unwrap();

        // The same root size as kiln's root partition (2 GiB less the
        // BIOS boot partition, the ESP and the alignment at both ends).
        let plain = dir.path().join(format!("mke2fs{run}.raw"));
        mke2fs_times.push(common::timed(
            Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-d"])
                .arg(&tree)
                .arg(&plain)
                .arg("1900M"),
        ));
        std::fs::remove_file(&plain).unwrap();
    }
    let (kiln_time, mke2fs_time) = (common::median(kiln_times), common::median(mke2fs_times));

    let qcow2 = output.join("debian-vm-1.0.0.qcow2");
    let bios = time_to_login(&qcow2, dir.path(), false);
    let uefi = time_to_login(&qcow2, dir.path(), true);

    let (files, bytes) = tree_size(&tree);
    println!(
        "tree: templates/debian-vm.toml flattened, {files} entries, {:.0} MiB; {RUNS} runs each, in turns, median",
        bytes as f64 / 1048576.0
    );
    println!("| 2 GiB hybrid disk | time | vs mke2fs -d |");
    println!("|---|---|---|");
    println!(
        "| kiln (GPT, mke2fs -d at the root's offset, inode times, ESP with kernel and initrd, GRUB) | {kiln_time:.2} s | {:.2}x |",
        kiln_time / mke2fs_time
    );
    println!("| `mke2fs -d` alone, same tree and root size | {mke2fs_time:.2} s | 1.00x |");
    println!();
    println!("| boot under TCG (-smp 2 -m 1024), qemu start to `login:` | time |");
    println!("|---|---|");
    println!("| SeaBIOS, GRUB | {:.1} s |", bios.as_secs_f64());
    println!("| OVMF, systemd-boot | {:.1} s |", uefi.as_secs_f64());
}

/// Boots `disk` (unchanged: `-snapshot`) until the console shows `login:`.
fn time_to_login(disk: &Path, dir: &Path, uefi: bool) -> Duration {
    let console = dir.join(if uefi { "uefi.log" } else { "bios.log" });
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args([
            "-accel", "tcg", "-machine", "q35", "-smp", "2", "-m", "1024",
        ])
        .args(["-nodefaults", "-display", "none", "-no-reboot", "-snapshot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", disk.display()));
    if uefi {
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
        command
            .arg("-drive")
            .arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd")
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    let started = Instant::now();
    let mut qemu = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run qemu-system-x86_64");
    loop {
        let text = std::fs::read(&console).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains("login:") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no login prompt in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    let _ = qemu.kill();
    let _ = qemu.wait();
    elapsed
}

/// Entries and bytes of regular files in a tree.
fn tree_size(root: &Path) -> (u64, u64) {
    let (mut entries, mut bytes) = (0, 0);
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let metadata = entry.metadata().unwrap();
            entries += 1;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                bytes += metadata.len();
            }
        }
    }
    (entries, bytes)
}
