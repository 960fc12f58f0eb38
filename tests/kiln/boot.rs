//! The disk boots: Debian's kernel, under qemu's software emulation, with a
//! small busybox initramfs that loads the virtio and ext4 modules, mounts
//! the raw disk kiln made as its root device, and prints a file from it on
//! the serial console.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{TestEnv, busybox_template, require_tool};

/// The newest kernel in /boot with its modules folder.
fn kernel() -> (PathBuf, PathBuf) {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    kernels.retain(|path| {
        path.file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
    });
    kernels.sort();
    let kernel = kernels.pop().expect("this test needs a Debian kernel in /boot: apt-get install linux-image-amd64 (.ci/install-deps does)");
    let version = kernel
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let modules = Path::new("/lib/modules").join(&version);
    assert!(
        modules.join("modules.dep").is_file(),
        "no modules for kernel {version}"
    );
    (kernel, modules)
}

/// The `.ko` files `wanted` needs, dependencies first, from modules.dep.
fn load_order(modules: &Path, wanted: &[&str]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(modules.join("modules.dep")).unwrap();
    let name_of = |path: &str| {
        Path::new(path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace(".ko", "")
    };
    let deps: BTreeMap<String, (String, Vec<String>)> = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(path, deps)| {
            (
                name_of(path),
                (
                    path.to_owned(),
                    deps.split_whitespace().map(name_of).collect(),
                ),
            )
        })
        .collect();
    fn visit(name: &str, deps: &BTreeMap<String, (String, Vec<String>)>, order: &mut Vec<String>) {
        if order.iter().any(|seen| seen == name) {
            return;
        }
        let (_, needs) = deps
            .get(name)
            .unwrap_or_else(|| panic!("module {name} is not in modules.dep (built in?)"));
        for need in needs {
            visit(need, deps, order);
        }
        order.push(name.to_owned());
    }
    let mut order = Vec::new();
    for name in wanted {
        visit(name, &deps, &mut order);
    }
    order
        .iter()
        .map(|name| modules.join(&deps[name].0))
        .collect()
}

fn initramfs(env: &TestEnv, modules: &[PathBuf]) -> PathBuf {
    let dir = env.path("initramfs");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("modules")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let mut names = Vec::new();
    for module in modules {
        let name = module.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(module, dir.join("modules").join(&name)).unwrap();
        names.push(name);
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mkdir -p /proc /dev /mnt\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox mount -t devtmpfs dev /dev\n\
         for m in {}; do /bin/busybox insmod /modules/$m; done\n\
         i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i+1)); done\n\
         /bin/busybox mount -t ext4 -o ro /dev/vda /mnt && echo \"KILN-BOOT: $(/bin/busybox cat /mnt/etc/motd)\"\n\
         /bin/busybox poweroff -f\n",
        names.join(" ")
    );
    std::fs::write(dir.join("init"), init).unwrap();
    std::fs::set_permissions(
        dir.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let archive = env.path("initramfs.cpio");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find . | cpio -o -H newc --quiet > '{}'",
            archive.display()
        ))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cpio: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    archive
}

#[test]
fn the_raw_disk_boots_under_qemu() {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    require_tool("cpio", "cpio");
    let (kernel, modules) = kernel();
    let env = TestEnv::new();
    env.write("files/motd", "booted from a kiln disk\n");
    let template = env.write(
        "bootable.toml",
        &format!(
            "{}\n[[provisioner]]\ntype = \"file\"\nsource = \"files/motd\"\ndestination = \"/etc/motd\"\n\n[[post_processor]]\ntype = \"disk\"\nformat = \"raw\"\n",
            busybox_template("bootable", "1")
        ),
    );
    env.kiln(["build", template.to_str().unwrap()])
        .expect_code(0);
    let disk = env.path("output/bootable-1/bootable-1.raw");
    let order = load_order(
        &modules,
        &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"],
    );
    let initrd = initramfs(&env, &order);
    let output = Command::new("timeout")
        .arg("300")
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=3"])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            disk.display()
        ))
        .stdin(Stdio::null())
        .output()
        .expect("run qemu-system-x86_64");
    let console = String::from_utf8_lossy(&output.stdout);
    assert!(
        console.contains("KILN-BOOT: booted from a kiln disk"),
        "the guest did not print the disk's /etc/motd; its console:\n{}",
        console
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
