//! Bootable disks, read back with the tools that import them: the GPT
//! through `sfdisk`, the root through `e2fsck`, the ESP through mtools, the
//! formats through `qemu-img` and `tar`; and the same bytes in every
//! format from two builds in two homes. A busybox image with a stand-in
//! kernel is enough for all of this; `debian_vm.rs` boots a real one.

use std::path::Path;
use std::process::Command;

use crate::util::{TestEnv, busybox_template, require_tool};

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run a tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A busybox image with a stand-in kernel and initrd (fixed bytes), and
/// one bootable disk post-processor per format.
fn template() -> String {
    format!(
        "{}\n\
         [[provisioner]]\n\
         type = \"shell\"\n\
         inline = [\n\
         \x20   \"mkdir -p /boot\",\n\
         \x20   \"yes kernel | head -c 3000000 > /boot/vmlinuz-6.1.0-9-amd64\",\n\
         \x20   \"yes newer | head -c 3000000 > /boot/vmlinuz-6.1.0-28-amd64\",\n\
         \x20   \"yes initrd | head -c 2000000 > /boot/initrd.img-6.1.0-28-amd64\",\n\
         ]\n\n\
         [[post_processor]]\n\
         type = \"disk\"\n\
         format = \"raw\"\n\
         boot = \"hybrid\"\n\
         cmdline = \"quiet kiln.marker=1\"\n\n\
         [[post_processor]]\n\
         type = \"disk\"\n\
         format = \"qcow2\"\n\
         boot = \"uefi\"\n\n\
         [[post_processor]]\n\
         type = \"disk\"\n\
         format = \"vmdk\"\n\
         boot = \"bios\"\n\n\
         [[post_processor]]\n\
         type = \"disk\"\n\
         format = \"vhd\"\n\
         boot = \"hybrid\"\n\
         size = \"200M\"\n\n\
         [[post_processor]]\n\
         type = \"disk\"\n\
         format = \"gce\"\n\
         boot = \"hybrid\"\n",
        busybox_template("vm", "1.0")
    )
}

const ARTIFACTS: &[&str] = &[
    "vm-1.0.raw",
    "vm-1.0.qcow2",
    "vm-1.0.vmdk",
    "vm-1.0.vhd",
    "vm-1.0.gce.tar.gz",
];

#[test]
fn bootable_disks_are_gpt_disks_with_bootloaders_and_repeat_in_every_format() {
    for (tool, package) in [
        ("sfdisk", "fdisk"),
        ("mdir", "mtools"),
        ("mkfs.fat", "dosfstools"),
        ("grub-mkimage", "grub-pc-bin"),
        ("qemu-img", "qemu-utils"),
        ("e2fsck", "e2fsprogs"),
    ] {
        require_tool(tool, package);
    }
    assert!(
        Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi").is_file(),
        "this test needs systemd-boot: apt-get install systemd-boot-efi (.ci/install-deps does)"
    );
    let first = TestEnv::new();
    let second = TestEnv::new();
    for env in [&first, &second] {
        let template = env.write("vm.toml", &template());
        let output = env.path("out");
        env.kiln([
            "build",
            template.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .expect_code(0);
    }
    // Every format, byte for byte, from two homes.
    for name in ARTIFACTS {
        assert_eq!(
            sha256(&first.path("out").join(name)),
            sha256(&second.path("out").join(name)),
            "{name} differs between two builds"
        );
    }
    let raw = first.path("out/vm-1.0.raw");

    // The GPT: BIOS boot, ESP, then the root, last, of the x86-64 root type.
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&raw))).unwrap();
    let table = &table["partitiontable"];
    assert_eq!(table["label"], "gpt");
    let partitions = table["partitions"].as_array().unwrap();
    let types: Vec<&str> = partitions
        .iter()
        .map(|partition| partition["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "21686148-6449-6E6F-744E-656564454649",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        ]
    );
    let root = &partitions[2];
    let root_start = root["start"].as_u64().unwrap() * 512;
    let root_end = (root["start"].as_u64().unwrap() + root["size"].as_u64().unwrap()) * 512;
    let disk_size = std::fs::metadata(&raw).unwrap().len();
    assert!(
        disk_size - root_end <= 1 << 20,
        "the root is the last partition, at the end"
    );
    let root_uuid = root["uuid"].as_str().unwrap().to_lowercase();

    // The root filesystem is clean and holds the image.
    run(Command::new("e2fsck")
        .args(["-fn"])
        .arg(format!("{}?offset={root_start}", raw.display())));
    let listing = run(Command::new("debugfs")
        .args(["-R", "ls -l /boot"])
        .arg(format!("{}?offset={root_start}", raw.display())));
    assert!(listing.contains("vmlinuz-6.1.0-28-amd64"), "{listing}");

    // The ESP: systemd-boot as the removable-media loader, one entry with
    // the newest kernel, kiln's root= and the template's cmdline.
    let esp = format!(
        "{}@@{}",
        raw.display(),
        partitions[1]["start"].as_u64().unwrap() * 512
    );
    let files = run(Command::new("mdir").args(["-i", &esp, "-/", "-b", "::"]));
    for file in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/loader/loader.conf",
        "::/loader/entries/kiln.conf",
        "::/kiln/vmlinuz",
        "::/kiln/initrd.img",
    ] {
        assert!(files.contains(file), "{file} is not on the ESP:\n{files}");
    }
    let entry = run(Command::new("mtype").args(["-i", &esp, "::/loader/entries/kiln.conf"]));
    assert!(
        entry.contains(&format!(
            "options root=PARTUUID={root_uuid} rw console=tty0 console=ttyS0,115200n8 quiet kiln.marker=1"
        )),
        "{entry}"
    );
    let kernel = run(Command::new("mtype").args(["-i", &esp, "::/kiln/vmlinuz"]));
    assert!(
        kernel.starts_with("newer\n"),
        "the newest kernel is on the ESP"
    );

    // GRUB: boot code in the MBR pointing at the core image in the BIOS
    // boot partition, which names the root by its filesystem UUID.
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
    assert!(bytes[..440].iter().any(|byte| *byte != 0), "no boot code");
    let core_lba = u64::from_le_bytes(bytes[0x5c..0x64].try_into().unwrap());
    assert_eq!(core_lba, partitions[0]["start"].as_u64().unwrap());
    let core = &bytes[(core_lba * 512) as usize..][..1 << 20];
    assert_eq!(
        u64::from_le_bytes(core[500..508].try_into().unwrap()),
        core_lba + 1
    );
    assert!(core.iter().any(|byte| *byte != 0), "no GRUB core image");

    // Each format as qemu-img reads it; the vhd is fixed, whole MiB, and
    // the gce tarball holds disk.raw.
    for (name, format) in [
        ("vm-1.0.qcow2", "qcow2"),
        ("vm-1.0.vmdk", "vmdk"),
        ("vm-1.0.vhd", "vpc"),
    ] {
        let path = first.path("out").join(name);
        // A fixed vhd has its footer only at the end, which qemu-img does
        // not probe for: it is named.
        let mut info = Command::new("qemu-img");
        info.args(["info", "--output=json"]);
        if format == "vpc" {
            info.args(["-f", "vpc"]);
        }
        let info: serde_json::Value = serde_json::from_str(&run(info.arg(&path))).unwrap();
        assert_eq!(info["format"], format, "{name}");
        if format != "vpc" {
            run(Command::new("qemu-img").arg("check").arg(&path));
        }
        if format == "vmdk" {
            assert_eq!(
                info["format-specific"]["data"]["create-type"],
                "streamOptimized"
            );
        }
        if format == "vpc" {
            let virtual_size = info["virtual-size"].as_u64().unwrap();
            assert_eq!(virtual_size, 200 << 20);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), virtual_size + 512);
        }
    }
    let listing = run(Command::new("tar")
        .arg("-tzvf")
        .arg(first.path("out/vm-1.0.gce.tar.gz")));
    assert!(listing.trim_end().ends_with(" disk.raw"), "{listing}");
    let unpacked = first.path("gce");
    std::fs::create_dir(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(first.path("out/vm-1.0.gce.tar.gz"))
        .arg("-C")
        .arg(&unpacked));
    // gce's disk.raw is a whole number of GiB (Compute Engine imports no
    // other), a GPT disk with the root grown to the end.
    let gce_raw = unpacked.join("disk.raw");
    assert_eq!(std::fs::metadata(&gce_raw).unwrap().len() % (1 << 30), 0);
    let gce_table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&gce_raw))).unwrap();
    assert_eq!(
        gce_table["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let exported_gce = first.path("exported.gce.tar.gz");
    first
        .kiln([
            "export",
            "vm:1.0",
            "--format",
            "gce",
            "--boot",
            "hybrid",
            "-o",
            exported_gce.to_str().unwrap(),
        ])
        .expect_code(0);
    assert_eq!(
        sha256(&exported_gce),
        sha256(&first.path("out/vm-1.0.gce.tar.gz"))
    );

    // `kiln export` writes the same disk as the post-processor with the
    // same settings (fitted, no cmdline), under the same name (a vmdk's
    // descriptor names its file).
    std::fs::create_dir(first.path("exported")).unwrap();
    let exported = first.path("exported/vm-1.0.vmdk");
    first
        .kiln([
            "export",
            "vm:1.0",
            "--format",
            "vmdk",
            "--boot",
            "bios",
            "-o",
            exported.to_str().unwrap(),
        ])
        .expect_code(0);
    assert_eq!(sha256(&exported), sha256(&first.path("out/vm-1.0.vmdk")));
    first.assert_no_leftovers();
}

#[test]
fn a_bootable_disk_of_an_image_without_a_kernel_says_what_to_install() {
    let env = TestEnv::new();
    let template = env.write(
        "bare.toml",
        &format!(
            "{}\n[[post_processor]]\ntype = \"disk\"\nboot = \"uefi\"\n",
            busybox_template("bare", "1.0")
        ),
    );
    let outcome = env.kiln([
        "build",
        template.to_str().unwrap(),
        "--output",
        env.path("out").to_str().unwrap(),
    ]);
    outcome.expect_code(1);
    assert!(
        outcome.stderr.contains("post-processor 1 (disk) failed")
            && outcome.stderr.contains("linux-image-amd64"),
        "{}",
        outcome.stderr
    );
    assert!(
        !env.path("out/bare-1.0.raw").exists(),
        "no half-written disk is left"
    );
    env.assert_no_leftovers();
}
