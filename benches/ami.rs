//! Uploading a disk into an EBS snapshot: kiln's EBS direct client beside
//! `coldsnap upload` of the same file, a 2 GiB sparse disk holding 200 MiB
//! of data in 400 scattered 512 KiB extents, to moto in server mode on
//! loopback (signatures not checked: neither side pays for moto's).
//!
//! moto answers StartSnapshot with a BlockSize of 512 where AWS says
//! 524288; coldsnap sends blocks of the size it is told, so the bench's
//! moto is started with AWS's block size (kiln always sends 512 KiB).
//!
//! `cargo bench --bench ami` (after `sh .ci/install-deps bench`, which
//! brings moto's venv and builds coldsnap).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln::aws::client::{AwsClient, Endpoints};
use kiln::aws::ebs::{SnapshotUpload, upload};
use kiln::aws::sigv4::Credentials;

mod common;

const RUNS: usize = 3;
const DISK_SIZE: u64 = 2 << 30;
const EXTENTS: u64 = 400;
const EXTENT: u64 = 512 * 1024;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let venv = std::env::var_os("MOTO_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/kiln-test/moto-venv"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = format!(
            "import moto.ebs.models as m\n\
             start = m.EBSSnapshot.__init__\n\
             def init(self, *a, **k):\n    start(self, *a, **k)\n    self.block_size = 524288\n\
             m.EBSSnapshot.__init__ = init\n\
             from moto.server import main\n\
             main(['-H', '127.0.0.1', '-p', '{port}'])\n"
        );
        let child = Command::new(venv.join("bin/python"))
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto from its venv: sh .ci/install-deps bench");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file of `size` bytes with 400 extents of pseudo-random bytes, spread
/// out (sparse) or packed (dense, when `size` is just the extents).
fn make_disk(path: &Path, size: u64) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut extent = vec![0u8; EXTENT as usize];
    let stride = size / EXTENTS / EXTENT * EXTENT;
    for index in 0..EXTENTS {
        for chunk in extent.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all_at(&extent, index * stride).unwrap();
    }
    file.sync_all().unwrap();
}

fn kiln_upload(endpoint: &str, disk: &Path, volume_size_gib: u64) -> Duration {
    let client = AwsClient::new(
        kiln::aws::client::http_client().unwrap(),
        Endpoints {
            all: Some(endpoint.to_owned()),
            per_service: Vec::new(),
        },
        Some(Credentials {
            access_key_id: "AKIDBENCH".to_owned(),
            secret_access_key: "bench".to_owned(),
            session_token: None,
        }),
    );
    let started = Instant::now();
    let uploaded = kiln::remote::block_on(upload(
        &client,
        &SnapshotUpload {
            disk,
            region: "eu-west-1",
            volume_size_gib,
            description: "bench",
            tags: &[],
            client_token: &format!("bench-{:?}", Instant::now()),
            wait: Duration::from_secs(600),
            cancelled: None,
        },
        &mut |_| {},
        &|_| {},
    ))
    .expect("kiln's upload");
    let elapsed = started.elapsed();
    assert_eq!(uploaded.blocks, EXTENTS);
    elapsed
}

fn coldsnap_upload(coldsnap: &Path, endpoint: &str, disk: &Path) -> Duration {
    common::timed(
        Command::new(coldsnap)
            .args(["--region", "eu-west-1", "--endpoint", endpoint, "upload"])
            .arg(disk)
            .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::null()),
    )
}

fn main() {
    let coldsnap = std::env::var_os("COLDSNAP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kiln-bench/coldsnap/bin/coldsnap"));
    assert!(
        coldsnap.is_file(),
        "the bench needs coldsnap at {}: sh .ci/install-deps bench",
        coldsnap.display()
    );
    let dir = common::bench_dir().join("ami");
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.raw");
    for (what, size) in [
        ("2 GiB sparse disk", DISK_SIZE),
        ("200 MiB dense disk", EXTENTS * EXTENT),
    ] {
        make_disk(&disk, size);
        // A fresh moto per run: it keeps every block in memory.
        let mut kiln_times = Vec::new();
        let mut coldsnap_times = Vec::new();
        for _ in 0..RUNS {
            let moto = Moto::start();
            kiln_times.push(kiln_upload(&moto.endpoint, &disk, size.div_ceil(1 << 30)));
            drop(moto);
            let moto = Moto::start();
            coldsnap_times.push(coldsnap_upload(&coldsnap, &moto.endpoint, &disk));
        }
        let kiln = common::median(kiln_times);
        let coldsnap = common::median(coldsnap_times);
        println!(
            "upload a {what} holding 200 MiB ({EXTENTS} non-zero blocks) to moto: kiln {kiln:.2}s, coldsnap {coldsnap:.2}s, kiln/coldsnap {:.2}",
            kiln / coldsnap
        );
    }
    std::fs::remove_file(&disk).unwrap();
}
