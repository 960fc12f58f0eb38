//! `kiln fmt`: canonical layout, comments kept, idempotent, and `--check`
//! changing nothing.

use kiln::template::{self, variables::VarInputs};

use crate::util::{TestEnv, repo_root, toml_files};

const MESSY: &str = r#"# the web image
[[provisioner]]
destination="/etc/motd"   # where it goes
  type = 'file'
source = "motd"


[source]
type="scratch"
[ image ]
version = "1.0"
name="web"
labels = {a="b",  c = "d"}
cmd = [ "/bin/sh",
   "-c" ,"true" ]
"#;

const CANONICAL: &str = r#"[image]
version = "1.0"
name = "web"
labels = { a = "b", c = "d" }
cmd = ["/bin/sh", "-c", "true"]

[source]
type = "scratch"

# the web image
[[provisioner]]
type = 'file'
destination = "/etc/motd" # where it goes
source = "motd"
"#;

#[test]
fn fmt_rewrites_into_the_canonical_layout() {
    let env = TestEnv::new();
    env.write("motd", "hi\n");
    let path = env.write("web.toml", MESSY);
    let before = template::load(&path, &VarInputs::default()).unwrap();

    let outcome = env.kiln(["fmt", "--check", "web.toml"]);
    outcome.expect_code(1);
    assert!(
        outcome.stdout.contains("would reformat web.toml"),
        "{}",
        outcome.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        MESSY,
        "--check changes nothing"
    );

    env.kiln(["fmt", "web.toml"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CANONICAL);
    let after = template::load(&path, &VarInputs::default()).unwrap();
    assert_eq!(
        (before.image, before.source, before.provisioners),
        (after.image, after.source, after.provisioners),
        "formatting keeps the meaning"
    );

    let outcome = env.kiln(["fmt", "--check", "web.toml"]);
    outcome.expect_code(0);
    assert!(outcome.stdout.is_empty());
    assert!(
        std::fs::read_dir(env.root()).unwrap().all(|entry| !entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".kiln-fmt")),
        "no temp file is left behind"
    );
}

#[test]
fn shipped_templates_and_fixtures_are_canonical_and_stay_so() {
    let env = TestEnv::new();
    let mut files = toml_files(&repo_root().join("templates"));
    files.extend(toml_files(&repo_root().join("fixtures/valid")));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let formatted = kiln::fmt::format_template(&text).unwrap();
        assert_eq!(
            formatted,
            text,
            "{} is not in canonical layout; run kiln fmt",
            file.display()
        );
    }
    let mut invalid = toml_files(&repo_root().join("fixtures/invalid"));
    invalid.retain(|file| !file.ends_with("syntax.toml"));
    for file in invalid {
        let once = kiln::fmt::format_template(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(
            kiln::fmt::format_template(&once).unwrap(),
            once,
            "fmt is idempotent on {}",
            file.display()
        );
    }
    let outcome = env.kiln([
        "fmt",
        "--check",
        repo_root()
            .join("fixtures/invalid/syntax.toml")
            .to_str()
            .unwrap(),
    ]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("syntax.toml:5:18]"),
        "{}",
        outcome.stderr
    );
}
