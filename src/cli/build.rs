//! `kiln build`: loads and plans every template first (any error stops
//! everything before a stage runs), then runs the plans, `--jobs` at a
//! time; or with `--plan`, prints them and runs nothing.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use kiln::pipeline::{self, BuildError, BuildOptions, Built, OnError};
use kiln::plan::{self, BuildPlan, PlanOptions};
use kiln::template::variables::VarInputs;

use super::{Exit, diagnostics, reporters};

pub struct BuildArgs {
    pub templates: Vec<PathBuf>,
    pub inputs: VarInputs,
    pub on_error: OnError,
    pub jobs: Option<usize>,
    pub json: bool,
    pub no_publish: bool,
    pub no_cache: bool,
    pub remote: kiln::remote::RemoteOptions,
    pub output: Option<PathBuf>,
    /// Print the plans; run nothing.
    pub plan_only: bool,
    /// `--cache-from`: empty means KILN_CACHE_FROM, else the template's.
    pub cache_from: Vec<kiln::reference::RemoteRef>,
    pub cache_to: Option<kiln::reference::RemoteRef>,
}

/// The shared cache repositories of the command line, else of the
/// environment (`KILN_CACHE_FROM`, comma- or space-separated, and
/// `KILN_CACHE_TO`); `None` leaves the template's.
fn shared_cache(
    args: &BuildArgs,
) -> Result<
    (
        Option<Vec<kiln::reference::RemoteRef>>,
        Option<kiln::reference::RemoteRef>,
    ),
    String,
> {
    let from = if !args.cache_from.is_empty() {
        Some(args.cache_from.clone())
    } else {
        match std::env::var("KILN_CACHE_FROM") {
            Ok(text) if !text.trim().is_empty() => Some(
                text.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|part| !part.is_empty())
                    .map(|part| {
                        super::parse_cache_repository(part)
                            .map_err(|reason| format!("KILN_CACHE_FROM: `{part}`: {reason}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => None,
        }
    };
    let to = match &args.cache_to {
        Some(to) => Some(to.clone()),
        None => match std::env::var("KILN_CACHE_TO") {
            Ok(text) if !text.trim().is_empty() => Some(
                super::parse_cache_repository(text.trim())
                    .map_err(|reason| format!("KILN_CACHE_TO: `{}`: {reason}", text.trim()))?,
            ),
            _ => None,
        },
    };
    Ok((from, to))
}

/// `SOURCE_DATE_EPOCH`, or 0.
pub fn source_date_epoch() -> Result<u64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => text.parse().map_err(|_| {
            format!("SOURCE_DATE_EPOCH must be a whole number of seconds, not `{text}`")
        }),
        _ => Ok(0),
    }
}

/// A flag set by the first SIGINT or SIGTERM; a second one exits at once.
pub fn cancel_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            Exit::Interrupted as i32,
            flag.clone(),
        );
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
    flag
}

/// The exit code of a failed build, by the contract.
pub fn exit_of(error: &BuildError) -> Exit {
    if matches!(error, BuildError::Cancelled) {
        Exit::Interrupted
    } else if error.is_version_conflict() {
        Exit::VersionConflict
    } else {
        Exit::Failure
    }
}

/// Loads and plans every template; prints what is wrong with each.
fn plans(args: &BuildArgs, epoch: u64) -> Result<Vec<BuildPlan>, Exit> {
    let mut templates = Vec::new();
    for path in &args.templates {
        templates.extend(diagnostics::load_template(path, &args.inputs));
    }
    if templates.len() != args.templates.len() {
        return Err(Exit::Usage);
    }
    let home = kiln::kiln_home();
    let options = PlanOptions {
        home: &home,
        epoch,
        output: args.output.as_deref(),
        publish: !args.no_publish,
        remote: &args.remote,
    };
    let mut plans = Vec::new();
    let mut exit = Exit::Success;
    for template in templates {
        let name = format!("{}:{}", template.image.name, template.image.version);
        let redactor = template.redactor();
        match plan::plan(template, &options) {
            Ok(plan) => plans.push(plan),
            Err(error) => {
                eprintln!(
                    "error: failed to plan {name}: {}",
                    redactor.redact(&diagnostics::error_chain(&error))
                );
                exit = Exit::Failure;
            }
        }
    }
    match exit {
        Exit::Success => Ok(plans),
        exit => Err(exit),
    }
}

pub fn run(args: BuildArgs) -> Exit {
    let epoch = match source_date_epoch() {
        Ok(epoch) => epoch,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Usage;
        }
    };
    let (cache_from, cache_to) = match shared_cache(&args) {
        Ok(repositories) => repositories,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Usage;
        }
    };
    let plans = match plans(&args, epoch) {
        Ok(plans) => plans,
        Err(exit) => return exit,
    };
    if args.plan_only {
        for plan in &plans {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&plan::show::plan_json(plan))
                        .expect("JSON values serialize")
                );
            } else {
                print!("{}", plan::show::plan_text(plan));
            }
        }
        return Exit::Success;
    }
    let options = BuildOptions {
        home: kiln::kiln_home(),
        on_error: args.on_error,
        no_cache: args.no_cache,
        remote: args.remote.clone(),
        cache_from,
        cache_to,
    };
    let cancelled = cancel_flag();
    let reporter = reporters::choose(args.json);
    let jobs = args.jobs.unwrap_or(1).clamp(1, plans.len().max(1));
    let queue: Mutex<VecDeque<(usize, &BuildPlan)>> =
        Mutex::new(plans.iter().enumerate().collect());
    let results: Mutex<Vec<(usize, Result<Built, BuildError>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let Some((index, plan)) =
                        queue.lock().expect("no build thread panics").pop_front()
                    else {
                        return;
                    };
                    let result = pipeline::build(plan, &options, reporter.as_ref(), &cancelled);
                    results
                        .lock()
                        .expect("no build thread panics")
                        .push((index, result));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("no build thread panics");
    results.sort_by_key(|(index, _)| *index);
    let mut exit = Exit::Success;
    for (index, result) in results {
        if let Err(error) = result {
            print_build_error(&plans[index], &error);
            exit = exit.worst(exit_of(&error));
        }
    }
    exit
}

fn print_build_error(plan: &BuildPlan, error: &BuildError) {
    let redactor = plan.template.redactor();
    let chain = diagnostics::error_chain(error);
    eprintln!(
        "error: failed to build {}: {}",
        plan.reference,
        redactor.redact(&chain)
    );
    let output = error.output();
    if !output.is_empty() {
        eprintln!("last lines of output:");
        for line in output {
            eprintln!("  | {line}");
        }
    }
    match error.kept_root() {
        Some(Ok(kept)) => {
            eprintln!("the failed stage's root is kept at {}", kept.display());
            eprintln!("enter it with: chroot {} /bin/sh", kept.display());
        }
        Some(Err(failure)) => eprintln!(
            "error: failed to keep the failed stage's root: {}",
            redactor.redact(&diagnostics::error_chain(failure))
        ),
        None => {}
    }
}
