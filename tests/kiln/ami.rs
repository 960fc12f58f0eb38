//! AMIs against moto, AWS's API emulator, run in server mode on 127.0.0.1
//! with request signatures checked: the snapshot holds exactly the disk's
//! non-zero blocks, RegisterImage gets the fields asked for (read through
//! moto's request recorder, as moto drops most of them), the copy, tags,
//! launch permissions and SSM parameter are there, a rerun makes nothing,
//! another digest under the name is refused, a wrong secret and a failure
//! forced mid-upload leave nothing behind, and a web identity is traded
//! for keys through STS.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::util::{Outcome, TestEnv, busybox_template, repo_root};

const BLOCK: u64 = 512 * 1024;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kiln-test/moto-venv"));
    let python = venv.join("bin/python");
    assert!(
        venv.join("bin/moto_server").is_file(),
        "this test needs moto in {}: sh .ci/install-deps installs it",
        venv.display()
    );
    python
}

/// A moto server on a free port; killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
    /// The IAM user's keys (with signatures checked).
    keys: Option<(String, String)>,
}

impl Moto {
    fn start(env: &TestEnv, checked: bool) -> Moto {
        let python = venv_python();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(python.with_file_name("moto_server"));
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env(
                "MOTO_RECORDER_FILEPATH",
                env.path(&format!("moto-{port}.recording")),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if checked {
            // The three calls that make the IAM user go unchecked.
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let child = command.spawn().expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Moto {
            child,
            endpoint,
            keys: None,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if checked {
            let keys = moto.helper(&["setup"], &[]);
            moto.keys = Some((
                keys["key"].as_str().unwrap().to_owned(),
                keys["secret"].as_str().unwrap().to_owned(),
            ));
        }
        moto
    }

    /// The environment kiln gets: the keys, and nothing of this machine's
    /// own AWS setup.
    fn aws_env(&self, env: &TestEnv) -> Vec<(String, String)> {
        let (key, secret) = self.keys.clone().unwrap_or(("x".into(), "x".into()));
        vec![
            ("AWS_ACCESS_KEY_ID".into(), key),
            ("AWS_SECRET_ACCESS_KEY".into(), secret),
            (
                "AWS_CONFIG_FILE".into(),
                env.path("no-aws-config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                env.path("no-aws-credentials").display().to_string(),
            ),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    fn helper(&self, args: &[&str], env: &[(String, String)]) -> Value {
        let mut command = Command::new(venv_python());
        command
            .arg(repo_root().join("tests/kiln/moto_helper.py"))
            .arg(args[0])
            .arg(&self.endpoint)
            .args(&args[1..]);
        if let Some((key, secret)) = &self.keys {
            command
                .env("AWS_ACCESS_KEY_ID", key)
                .env("AWS_SECRET_ACCESS_KEY", secret);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().expect("run moto_helper.py");
        assert!(
            output.status.success(),
            "moto_helper.py {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("moto_helper.py prints JSON")
        }
    }

    fn state(&self, regions: &[&str]) -> Value {
        let mut args = vec!["state"];
        args.extend_from_slice(regions);
        self.helper(&args, &[])
    }

    fn recording(&self) -> Vec<Value> {
        self.helper(&["recording"], &[]).as_array().unwrap().clone()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The AWS actions of recorded requests (EC2's from the form, the others'
/// from the URL or target header).
/// The first recorded request of a Query action (`Action=NAME` in its body).
#[track_caller]
fn recorded<'a>(recording: &'a [Value], action: &str) -> &'a Value {
    let wanted = format!("Action={action}");
    recording
        .iter()
        .find(|entry| {
            entry["body"]
                .as_str()
                .unwrap_or_default()
                .split('&')
                .any(|pair| pair == wanted)
        })
        .unwrap_or_else(|| panic!("no {action} request was recorded"))
}

fn actions(recording: &[Value]) -> Vec<String> {
    recording
        .iter()
        .map(|entry| {
            let body = entry["body"].as_str().unwrap_or_default();
            let url = entry["url"].as_str().unwrap_or_default();
            if let Some(action) = body
                .split('&')
                .find_map(|pair| pair.strip_prefix("Action="))
            {
                action.to_owned()
            } else if url.contains("/blocks/") {
                "PutSnapshotBlock".to_owned()
            } else if url.contains("/snapshots/completion/") {
                "CompleteSnapshot".to_owned()
            } else if url.ends_with("/snapshots") {
                "StartSnapshot".to_owned()
            } else {
                entry["headers"]["X-Amz-Target"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned()
            }
        })
        .collect()
}

fn form_field<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The indexes and sha256s of the disk's blocks that hold anything but zeros.
fn non_zero_blocks(disk: &Path) -> BTreeMap<String, String> {
    let file = std::fs::File::open(disk).unwrap();
    let size = file.metadata().unwrap().len();
    let mut blocks = BTreeMap::new();
    let mut buffer = vec![0u8; BLOCK as usize];
    for index in 0..size.div_ceil(BLOCK) {
        buffer.fill(0);
        let length = (size - index * BLOCK).min(BLOCK) as usize;
        file.read_exact_at(&mut buffer[..length], index * BLOCK)
            .unwrap();
        if buffer.iter().any(|byte| *byte != 0) {
            blocks.insert(
                index.to_string(),
                Sha256::digest(&buffer)
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>(),
            );
        }
    }
    blocks
}

fn template(endpoint: &str, version: &str, name: Option<&str>) -> String {
    format!(
        "{}\n\
         [[provisioner]]\n\
         type = \"shell\"\n\
         inline = [\n\
         \x20   \"mkdir -p /boot\",\n\
         \x20   \"yes kernel {version} | head -c 3000000 > /boot/vmlinuz-6.1.0-28-amd64\",\n\
         \x20   \"yes initrd | head -c 2000000 > /boot/initrd.img-6.1.0-28-amd64\",\n\
         ]\n\n\
         [[post_processor]]\n\
         type = \"disk\"\n\
         format = \"raw\"\n\
         boot = \"hybrid\"\n\n\
         [[post_processor]]\n\
         type = \"manifest\"\n\n\
         [[publish.ami]]\n\
         {}\
         regions = [\"eu-west-1\", \"us-east-1\"]\n\
         endpoint = \"{endpoint}\"\n\
         launch_permissions = [\"123456789012\"]\n\
         ssm_parameter = \"/kiln/vm/latest\"\n\
         tags = {{ team = \"platform\" }}\n\
         tpm = true\n",
        busybox_template("vm", version),
        name.map(|name| format!("name = \"{name}\"\n"))
            .unwrap_or_default()
    )
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// `kiln publish ami vm:1.1 --name NAME` in eu-west-1 at `endpoint`.
fn publish_vm_ami(
    env: &TestEnv,
    aws: &[(String, String)],
    name: &str,
    endpoint: &str,
    extra: &[&str],
) -> Outcome {
    let mut args = vec![
        "publish",
        "ami",
        "vm:1.1",
        "--region",
        "eu-west-1",
        "--name",
        name,
        "--endpoint",
        endpoint,
    ];
    args.extend_from_slice(extra);
    env.kiln_with_env(args, &env_refs(aws))
}

/// [`publish_vm_ami`] through a moto_helper.py proxy started with
/// `proxy_args`.
fn publish_through_proxy(
    env: &TestEnv,
    aws: &[(String, String)],
    proxy_args: &[&str],
    name: &str,
) -> Outcome {
    let mut proxy = Command::new(venv_python())
        .arg(repo_root().join("tests/kiln/moto_helper.py"))
        .args(proxy_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(proxy.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    let published = publish_vm_ami(
        env,
        aws,
        name,
        &format!("http://127.0.0.1:{}", port.trim()),
        &[],
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    published
}

fn snapshot_ids(state: &Value, region: &str) -> Vec<String> {
    state[region]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|snapshot| snapshot["id"].as_str().unwrap().to_owned())
        .collect()
}

fn images_named<'a>(state: &'a Value, region: &str, name: &str) -> Vec<&'a Value> {
    state[region]["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|image| image["name"] == name)
        .collect()
}

#[test]
fn amis_through_the_ebs_direct_api_in_two_regions_once_and_nothing_left_on_failure() {
    let env = TestEnv::new();
    let moto = Moto::start(&env, true);
    let aws = moto.aws_env(&env);
    let regions = ["eu-west-1", "us-east-1"];
    let before = moto.state(&regions);
    moto.helper(&["record"], &[]);

    let path = env.write("vm.toml", &template(&moto.endpoint, "1.0", None));
    let built = env.kiln_with_env(["build", path.to_str().unwrap()], &env_refs(&aws));
    built.expect_code(0);
    let digest = env.stored_digest("vm:1.0").unwrap();
    let state = moto.state(&regions);

    // One image per region, tagged with the digest, shared, and named by
    // the SSM parameter.
    let mut ids = Vec::new();
    for region in regions {
        let images = images_named(&state, region, "vm-1.0");
        assert_eq!(images.len(), 1, "{region}: {state}");
        let image = images[0];
        assert_eq!(image["tags"]["kiln:digest"], digest.as_str(), "{image}");
        assert_eq!(image["tags"]["team"], "platform", "{image}");
        assert_eq!(
            image["launch_permissions"],
            serde_json::json!(["123456789012"])
        );
        assert_eq!(
            state[region]["parameters"]["/kiln/vm/latest"], image["id"],
            "{region}: {state}"
        );
        ids.push(image["id"].as_str().unwrap().to_owned());
    }
    assert!(built.stderr.contains("AMI vm-1.0 is"), "{}", built.stderr);

    // The snapshot kiln made holds exactly the disk's non-zero blocks.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(env.path("output/vm-1.0/kiln-manifest.json")).unwrap(),
    )
    .unwrap();
    let amis = manifest["builds"][0]["amis"].as_array().unwrap();
    assert_eq!(amis.len(), 2, "{manifest}");
    assert_eq!(amis[0]["region"], "eu-west-1");
    assert_eq!(amis[0]["image_id"], ids[0].as_str());
    assert_eq!(amis[1]["image_id"], ids[1].as_str());
    let snapshot = amis[0]["snapshot_ids"][0].as_str().unwrap();
    let uploaded = moto.helper(&["blocks", "eu-west-1", snapshot], &[]);
    let expected = non_zero_blocks(&env.path("output/vm-1.0/vm-1.0.raw"));
    let uploaded: BTreeMap<String, String> = serde_json::from_value(uploaded).unwrap();
    assert!(expected.len() > 4, "the disk has data: {expected:?}");
    assert_eq!(
        uploaded, expected,
        "snapshot blocks against the disk's non-zero blocks"
    );

    // RegisterImage got what moto does not keep.
    let recording = moto.recording();
    let register = recorded(&recording, "RegisterImage");
    let body = register["body"].as_str().unwrap();
    for (field, value) in [
        ("Name", "vm-1.0"),
        ("Architecture", "x86_64"),
        ("VirtualizationType", "hvm"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BootMode", "uefi-preferred"),
        ("EnaSupport", "true"),
        ("ImdsSupport", "v2.0"),
        ("TpmSupport", "v2.0"),
    ] {
        assert_eq!(form_field(body, field), Some(value), "{field} in {body}");
    }
    let made = actions(&recording);
    assert_eq!(made.iter().filter(|a| *a == "StartSnapshot").count(), 1);
    assert_eq!(made.iter().filter(|a| *a == "CopyImage").count(), 1);
    // Only the non-zero blocks were sent (moto's recorder mangles the big
    // block entries that its threads write at once, so kiln's count).
    assert!(
        built
            .stderr
            .contains(&format!("in eu-west-1: {} blocks", expected.len())),
        "{}",
        built.stderr
    );

    let images = env.kiln(["images", "vm"]);
    assert!(
        images.stdout.contains(&format!("eu-west-1:{}", ids[0]))
            && images.stdout.contains(&format!("us-east-1:{}", ids[1])),
        "{}",
        images.stdout
    );

    // A second run makes nothing.
    moto.helper(&["record"], &[]);
    let recorded_before = moto.recording().len();
    let again = env.kiln_with_env(["build", path.to_str().unwrap()], &env_refs(&aws));
    again.expect_code(0);
    assert!(
        again.stderr.contains("already; nothing made"),
        "{}",
        again.stderr
    );
    let after_rerun = moto.recording();
    let rerun_actions = actions(&after_rerun[recorded_before..]);
    for creating in [
        "StartSnapshot",
        "RegisterImage",
        "CopyImage",
        "PutSnapshotBlock",
        "AmazonSSM.PutParameter",
    ] {
        assert!(
            !rerun_actions.iter().any(|action| action == creating),
            "a rerun sent {creating}: {rerun_actions:?}"
        );
    }
    assert_eq!(moto.state(&regions), state, "a rerun changed nothing");

    // The same name for another image is refused with exit 3, before
    // anything is made.
    let other = env.write(
        "other.toml",
        &template(&moto.endpoint, "1.1", Some("vm-1.0")),
    );
    let refused = env.kiln_with_env(["build", other.to_str().unwrap()], &env_refs(&aws));
    refused.expect_code(3);
    assert!(
        refused.stderr.contains("has that name and holds") && refused.stderr.contains(&digest),
        "{}",
        refused.stderr
    );
    assert_eq!(moto.state(&regions), state, "a refused AMI made nothing");

    // `kiln publish ami` of a stored image, one region.
    let published = publish_vm_ami(
        &env,
        &aws,
        "vm-cli-1.1",
        &moto.endpoint,
        &["--boot", "uefi"],
    );
    published.expect_code(0);
    let state = moto.state(&regions);
    let cli = images_named(&state, "eu-west-1", "vm-cli-1.1");
    assert_eq!(cli.len(), 1, "{state}");
    assert!(
        published.stdout.contains(cli[0]["id"].as_str().unwrap()),
        "{}",
        published.stdout
    );
    assert!(images_named(&state, "us-east-1", "vm-cli-1.1").is_empty());

    // A wrong secret: one clear error, no snapshot.
    let mut wrong = aws.clone();
    wrong[1].1 = "not-the-secret".to_owned();
    let snapshots_before = snapshot_ids(&state, "eu-west-1");
    let denied = env.kiln_with_env(
        [
            "publish",
            "ami",
            "vm:1.1",
            "--region",
            "eu-west-1",
            "--name",
            "vm-denied",
            "--endpoint",
            &moto.endpoint,
        ],
        &env_refs(&wrong),
    );
    denied.expect_code(1);
    let errors: Vec<&str> = denied
        .stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", denied.stderr);
    assert!(errors[0].contains("AuthFailure"), "{}", denied.stderr);
    assert!(
        !denied.stderr.contains("not-the-secret"),
        "{}",
        denied.stderr
    );
    assert_eq!(
        snapshot_ids(&moto.state(&regions), "eu-west-1"),
        snapshots_before
    );

    // A failure forced mid-upload (a proxy refuses the fourth block):
    // the snapshot it started is deleted, no image is left.
    let failed = publish_through_proxy(&env, &aws, &["proxy", &moto.endpoint, "3"], "vm-broken");
    failed.expect_code(1);
    assert!(
        failed.stderr.contains("PutSnapshotBlock") && failed.stderr.contains("forced by the test"),
        "{}",
        failed.stderr
    );
    let state = moto.state(&regions);
    assert_eq!(
        snapshot_ids(&state, "eu-west-1"),
        snapshots_before,
        "{state}"
    );
    assert!(images_named(&state, "eu-west-1", "vm-broken").is_empty());
    assert_ne!(before, state);

    // Throttling and server errors (a proxy answers every third request
    // with a 503, every seventh with a 400 ThrottlingException) are tried
    // again: the AMI is made, whole.
    let throttled = env.path("throttled.log");
    let retried = publish_through_proxy(
        &env,
        &aws,
        &["throttle", &moto.endpoint, throttled.to_str().unwrap()],
        "vm-throttled",
    );
    retried.expect_code(0);
    let refusals = std::fs::read_to_string(&throttled).unwrap_or_default();
    assert!(
        refusals
            .lines()
            .filter(|line| line.starts_with("503"))
            .count()
            >= 3
            && refusals.lines().any(|line| line.starts_with("400")),
        "the proxy refused some requests: {refusals}"
    );
    let state = moto.state(&regions);
    assert_eq!(
        images_named(&state, "eu-west-1", "vm-throttled").len(),
        1,
        "{state}"
    );
    env.assert_no_leftovers();
}

#[test]
fn a_web_identity_is_traded_for_keys_that_sign_the_calls() {
    let env = TestEnv::new();
    // STS's web identity call is unsigned, which moto only takes with
    // signature checks off; the keys STS gives back are then seen in the
    // recorded requests' signatures.
    let moto = Moto::start(&env, false);
    let token = env.write("token", "eyJhbGciOiJSUzI1NiJ9.ci-token.sig\n");
    let path = env.write("vm.toml", &template(&moto.endpoint, "1.0", None));
    let mut aws = moto.aws_env(&env);
    aws.retain(|(name, _)| {
        !name.starts_with("AWS_ACCESS_KEY_ID") && name != "AWS_SECRET_ACCESS_KEY"
    });
    aws.push((
        "AWS_ROLE_ARN".into(),
        "arn:aws:iam::123456789012:role/ci".into(),
    ));
    aws.push((
        "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
        token.display().to_string(),
    ));
    moto.helper(&["record"], &[]);
    let mut command = env.kiln_command(["build", "--no-publish", path.to_str().unwrap()]);
    command.stdout(Stdio::null()).stderr(Stdio::null());
    assert!(command.status().unwrap().success());
    let published = env.kiln_with_env(
        [
            "publish",
            "ami",
            "vm:1.0",
            "--region",
            "eu-west-1",
            "--endpoint",
            &moto.endpoint,
        ],
        &env_refs(&aws),
    );
    published.expect_code(0);
    let recording = moto.recording();
    let assume = recorded(&recording, "AssumeRoleWithWebIdentity");
    let body = assume["body"].as_str().unwrap();
    assert_eq!(
        form_field(body, "WebIdentityToken"),
        Some("eyJhbGciOiJSUzI1NiJ9.ci-token.sig")
    );
    assert_eq!(
        form_field(body, "RoleArn"),
        Some("arn:aws:iam::123456789012:role/ci")
    );
    assert!(assume["headers"].get("Authorization").is_none(), "{assume}");
    let register = recorded(&recording, "RegisterImage");
    let authorization = register["headers"]["Authorization"].as_str().unwrap();
    assert!(
        authorization.contains("Credential=ASIA"),
        "signed with the session's key: {authorization}"
    );
    assert!(
        register["headers"]["X-Amz-Security-Token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        !published.stderr.contains("ci-token"),
        "the token stays out of the output: {}",
        published.stderr
    );
}
