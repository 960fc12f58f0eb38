//! SBOMs of a real Debian image: both documents validate with the
//! reference tools, name exactly the packages `dpkg-query` finds in the
//! unpacked image (plus a distroless `status.d` entry), and their purls
//! survive packageurl-python.

use std::collections::BTreeSet;
use std::process::Command;

use crate::util::{TestEnv, repo_root, require_tool, sbom_venv_python};

const TEMPLATE: &str = r#"[image]
name = "inventory"
version = "1.0.0"

[source]
type = "debootstrap"
suite = "bookworm"
variant = "minbase"

[[provisioner]]
type = "shell"
inline = [
    "mkdir -p /var/lib/dpkg/status.d",
    "printf 'Package: app-static\nVersion: 1:2.0+git1\nArchitecture: all\n' > /var/lib/dpkg/status.d/app-static",
]

[[post_processor]]
type = "sbom"
format = "spdx"
"#;

#[test]
fn a_debian_images_sboms_validate_and_name_what_dpkg_has() {
    require_tool("mmdebstrap", "mmdebstrap");
    require_tool("dpkg-query", "dpkg");
    let python = sbom_venv_python("the SBOM validators");
    let env = TestEnv::new();
    let template = env.write("inventory.toml", TEMPLATE);
    let output = env.path("output");
    env.kiln([
        "build",
        template.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
    .expect_code(0);
    let cyclonedx = env.path("sbom.cdx.json");
    let spdx = env.path("sbom.spdx.json");
    for (format, path) in [("cyclonedx", &cyclonedx), ("spdx", &spdx)] {
        env.kiln([
            "sbom",
            "inventory:1.0.0",
            "--format",
            format,
            "-o",
            path.to_str().unwrap(),
        ])
        .expect_code(0);
    }
    assert_eq!(
        std::fs::read(output.join("inventory-1.0.0.spdx.json")).unwrap(),
        std::fs::read(&spdx).unwrap(),
        "the post-processor writes the stored document"
    );

    let checked = Command::new(&python)
        .arg(repo_root().join("tests/kiln/sbom_check.py"))
        .args([&cyclonedx, &spdx])
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "the SBOMs do not validate:\n{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(report["not_round_tripped"], serde_json::json!([]));
    let named = |document: &str| -> BTreeSet<(String, String, String)> {
        report[document]
            .as_array()
            .unwrap()
            .iter()
            .map(|package| {
                let field = |index: usize| package[index].as_str().unwrap().to_owned();
                (field(0), field(1), field(2))
            })
            .collect()
    };

    let rootfs = env.umoci_unpack("inventory:1.0.0");
    let listed = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            rootfs.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${db:Status-Abbrev}|${Package}|${Version}|${Architecture}\\n",
        ])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let mut expected: BTreeSet<(String, String, String)> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("ii"))
        .map(|line| {
            let fields: Vec<&str> = line.split('|').collect();
            (
                fields[1].to_owned(),
                fields[2].to_owned(),
                fields[3].to_owned(),
            )
        })
        .collect();
    assert!(
        expected.len() > 50,
        "a minbase has its packages: {expected:?}"
    );
    expected.insert((
        "app-static".to_owned(),
        "1:2.0+git1".to_owned(),
        "all".to_owned(),
    ));
    assert_eq!(named("cyclonedx"), expected);
    assert_eq!(named("spdx"), expected);

    // Reproducible: the same image gives the same bytes, its ids derived
    // from its digest and its time from SOURCE_DATE_EPOCH (0 here).
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cyclonedx).unwrap()).unwrap();
    assert_eq!(document["metadata"]["timestamp"], "1970-01-01T00:00:00Z");
    let again = env.kiln(["sbom", "inventory:1.0.0"]);
    again.expect_code(0);
    assert_eq!(again.stdout.as_bytes(), std::fs::read(&cyclonedx).unwrap());
    // The build read the databases from its stage trees; made again from
    // the layers (as for a pulled image), the document is the same.
    let notes = env.store().join(".kiln/sbom");
    std::fs::remove_dir_all(&notes).unwrap();
    let from_layers = env.kiln(["sbom", "inventory:1.0.0"]);
    from_layers.expect_code(0);
    assert_eq!(from_layers.stdout, again.stdout);
    env.assert_no_leftovers();
}
