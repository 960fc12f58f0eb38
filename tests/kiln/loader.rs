//! The template loader under hostile input: it answers every template with
//! a template or a list of problems (exit 2), never a panic, a stall or a
//! read that never ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln::template::{self, variables::VarInputs};

use crate::util::{Outcome, TestEnv, repo_root, toml_files};

/// Runs `kiln` with `args`, killing it (and failing) if it has not ended
/// within `limit`: the loader must never block.
fn kiln_within(env: &TestEnv, args: &[&str], limit: Duration) -> Outcome {
    let mut child = env
        .kiln_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("kiln {args:?} still ran after {limit:?}: it blocks");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

const HEADER: &str = "[image]\nname = \"t\"\nversion = \"1\"\n";

#[test]
fn a_problem_past_column_65535_is_reported_without_a_snippet() {
    let env = TestEnv::new();
    let long = "a".repeat(70_000);
    let template = env.write(
        "long.toml",
        &format!("{HEADER}description = \"{long}${{var.nope}}\"\n\n[source]\ntype = \"scratch\"\n"),
    );
    let outcome = env.kiln(["validate", template.to_str().unwrap()]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("long.toml:4:15: image.description: undeclared variable `nope`"),
        "{}",
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains(&long),
        "the long line is not printed"
    );

    // A long line elsewhere in the file does not hide the snippet of a
    // problem on a short one.
    let template = env.write(
        "long-elsewhere.toml",
        &format!(
            "{HEADER}description = \"{long}\"\n\n\n\n[source]\ntype = \"scratch\"\n\n[[provisioner]]\ntype = \"shell\"\ninline = [\"echo ${{var.nope}}\"]\n"
        ),
    );
    let outcome = env.kiln(["validate", template.to_str().unwrap()]);
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("long-elsewhere.toml:13:11]"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("inline = [\"echo ${var.nope}\"]"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn thousands_of_problems_are_counted_and_the_first_shown() {
    let env = TestEnv::new();
    let mut text = format!("{HEADER}\n[source]\ntype = \"scratch\"\n");
    for index in 0..8_000 {
        text.push_str(&format!(
            "\n[variables.v{index}]\ndefault = \"${{var.v{}}}\"\n",
            (index + 1) % 8_000
        ));
    }
    let template = env.write("chain.toml", &text);
    let outcome = kiln_within(
        &env,
        &["validate", template.to_str().unwrap()],
        Duration::from_secs(30),
    );
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("8000 problems"),
        "{}",
        head(&outcome.stderr)
    );
    assert!(
        outcome
            .stderr
            .contains("variables.v0.default: a default cannot refer to `${var.v1}`"),
        "a declared variable is not called undeclared"
    );
    assert!(!outcome.stderr.contains("undeclared"));
    assert!(
        outcome
            .stderr
            .contains("7900 more problems not shown: fix these first"),
        "{}",
        tail(&outcome.stderr)
    );
    assert_eq!(outcome.stderr.matches("  × ").count(), 100);
}

#[test]
fn templates_and_var_files_over_a_mebibyte_are_refused() {
    let env = TestEnv::new();
    let huge = "a".repeat(4 << 20);
    let template = env.write(
        "big.toml",
        &format!("{HEADER}description = \"{huge}\"\n\n[source]\ntype = \"scratch\"\n"),
    );
    let outcome = env.kiln(["validate", template.to_str().unwrap()]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("big.toml: larger than 1048576 bytes (1 MiB), the most kiln reads"),
        "{}",
        outcome.stderr
    );

    let small = env.write(
        "small.toml",
        &format!("{HEADER}\n[variables.note]\ndefault = \"x\"\n\n[source]\ntype = \"scratch\"\n"),
    );
    let values = env.write("values.toml", &format!("note = \"{huge}\"\n"));
    let outcome = env.kiln([
        "validate",
        small.to_str().unwrap(),
        "--var-file",
        values.to_str().unwrap(),
    ]);
    outcome.expect_code(2);
    assert!(
        outcome
            .stderr
            .contains("cannot read the var-file: larger than"),
        "{}",
        outcome.stderr
    );
}

fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A FIFO or a device as a file to copy in, or as the template itself,
/// is refused at once: reading one would block, or never end.
#[test]
fn fifos_and_devices_are_not_files() {
    let env = TestEnv::new();
    let fifo = env.path("pipe");
    make_fifo(&fifo);
    for source in [fifo.to_str().unwrap(), "/dev/zero"] {
        let template = env.write(
            "special.toml",
            &format!(
                "{HEADER}\n[source]\ntype = \"scratch\"\n\n[[provisioner]]\ntype = \"file\"\nsource = \"{source}\"\ndestination = \"/x\"\n"
            ),
        );
        for command in ["validate", "inspect"] {
            let outcome = kiln_within(
                &env,
                &[command, template.to_str().unwrap()],
                Duration::from_secs(20),
            );
            outcome.expect_code(2);
            assert!(
                outcome.stderr.contains(&format!(
                    "provisioner[0].source: `{source}` is not a regular file or a directory"
                )),
                "{command} {source}: {}",
                outcome.stderr
            );
        }
        for script in ["script", "scripts"] {
            let value = if script == "script" {
                format!("\"{source}\"")
            } else {
                format!("[\"{source}\"]")
            };
            let template = env.write(
                "special-script.toml",
                &format!(
                    "{HEADER}\n[source]\ntype = \"scratch\"\n\n[[provisioner]]\ntype = \"shell\"\n{script} = {value}\n"
                ),
            );
            let outcome = kiln_within(
                &env,
                &["inspect", template.to_str().unwrap()],
                Duration::from_secs(20),
            );
            outcome.expect_code(2);
            assert!(
                outcome.stderr.contains("is not a regular file"),
                "{script} {source}: {}",
                outcome.stderr
            );
        }
    }
    let outcome = kiln_within(
        &env,
        &["validate", fifo.to_str().unwrap()],
        Duration::from_secs(20),
    );
    outcome.expect_code(2);
    assert!(
        outcome.stderr.contains("pipe: not a regular file"),
        "{}",
        outcome.stderr
    );
}

/// xorshift64*: a fixed seed gives the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

/// Pieces of TOML and of kiln's own syntax, to insert where they hurt.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "\"",
    "'''",
    "\"\"\"",
    "=",
    "\n",
    ",",
    "{",
    "}",
    "${",
    "${var.",
    "${var.x}",
    "$${",
    "${image.name}",
    "${env.HOME}",
    "\\u0000",
    "\\",
    "#",
    "é",
    "\u{1f525}",
    "-1",
    "99999999999999999999",
    "1e400",
    "nan",
    "true",
    "[[provisioner]]\ntype = \"shell\"\ninline = [\"true\"]\n",
    "[[test]]\nname = \"t\"\ninline = [\"true\"]\n",
    "[variables.a]\ndefault = \"${var.b}\"\n[variables.b]\ndefault = \"${var.a}\"\n",
    "type = \"file\"\n",
    "timeout = \"9999999999999h\"\n",
    "mode = \"07777777\"\n",
    "disk_size = \"99999999T\"\n",
    "../../../../etc/shadow",
    "/dev/zero",
];

/// The first and last few thousand bytes of a long output.
fn head(text: &str) -> &str {
    &text[..char_floor(text, 3_000)]
}

fn tail(text: &str) -> &str {
    &text[char_floor(text, text.len().saturating_sub(3_000))..]
}

fn char_floor(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut text = text.to_owned();
    for _ in 0..1 + rng.below(4) {
        let at = char_floor(&text, rng.below(text.len() + 1));
        match rng.below(7) {
            0 => {
                let end = char_floor(&text, at + 1 + rng.below(40));
                text.replace_range(at..end, "");
            }
            1 => {
                let end = char_floor(&text, at + 1 + rng.below(200));
                let piece = text[at..end].to_owned();
                let into = char_floor(&text, rng.below(text.len() + 1));
                text.insert_str(into, &piece);
            }
            2 | 3 => text.insert_str(at, TOKENS[rng.below(TOKENS.len())]),
            4 => {
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let a = rng.below(lines.len());
                    let b = rng.below(lines.len());
                    lines.swap(a, b);
                }
                text = lines.join("\n");
            }
            5 => {
                // A value longer than miette's columns go.
                if let Some(quote) = text[at..].find('"') {
                    text.insert_str(at + quote + 1, &"x".repeat(66_000));
                }
            }
            _ => text.truncate(at),
        }
    }
    text
}

/// Mutates every shipped template and fixture thousands of times (fixed
/// seed): each case loads in the library in under a second without a
/// panic, and `kiln validate` answers all of them with 0 or 2.
#[test]
fn mutated_templates_never_panic_or_stall() {
    const CASES: usize = 3_000;
    let root = repo_root();
    let mut seeds: Vec<(PathBuf, String)> = Vec::new();
    for dir in ["templates", "fixtures/valid", "fixtures/invalid"] {
        for path in toml_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&path).unwrap();
            seeds.push((path, text));
        }
    }
    assert!(seeds.len() >= 30, "found only {} templates", seeds.len());

    let env = TestEnv::new();
    let cases_dir = env.path("cases");
    std::fs::create_dir(&cases_dir).unwrap();
    let mut rng = Rng(0x6b69_6c6e_2d6d_7574);
    let mut slowest = (Duration::ZERO, String::new());
    let mut loaded = 0;
    let mut cases = Vec::with_capacity(CASES);
    for case in 0..CASES {
        let (path, text) = &seeds[case % seeds.len()];
        let mutated = mutate(text, &mut rng);
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| {
            template::load_str(path, mutated.clone(), &VarInputs::default()).is_ok()
        });
        let took = started.elapsed();
        let written = cases_dir.join(format!("case-{case:04}.toml"));
        std::fs::write(&written, &mutated).unwrap();
        match result {
            Ok(valid) => loaded += usize::from(valid),
            Err(_) => panic!(
                "the loader panicked on a mutation of {}: kept as {}",
                path.display(),
                written.display()
            ),
        }
        assert!(
            took < Duration::from_secs(1),
            "case {case} (a mutation of {}) took {took:?} to load: it stalls",
            path.display()
        );
        if took > slowest.0 {
            slowest = (took, path.display().to_string());
        }
        cases.push(written);
    }
    // Most mutations break a template; some must still load, or the
    // mutations never reach the checks behind the parser.
    assert!(
        loaded > 0 && loaded < CASES,
        "{loaded} of {CASES} cases loaded"
    );
    eprintln!(
        "{CASES} cases, {loaded} valid; slowest {:?} ({})",
        slowest.0, slowest.1
    );

    // The binary renders each problem (miette): the same cases through it.
    for batch in cases.chunks(500) {
        let mut args = vec!["validate".to_owned()];
        args.extend(batch.iter().map(|path| path.display().to_string()));
        let outcome = env.kiln(&args);
        assert!(
            outcome.code == 0 || outcome.code == 2,
            "kiln validate exited {}: {}",
            outcome.code,
            tail(&outcome.stderr)
        );
        assert!(
            !outcome.stderr.contains("panicked"),
            "{}",
            tail(&outcome.stderr)
        );
    }
}
