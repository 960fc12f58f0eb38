//! `kiln build`: loads every template first (any error stops everything),
//! then builds them, `--jobs` at a time, into the store.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use kiln::pipeline::reporter::Reporter;
use kiln::pipeline::{self, BuildError, BuildOptions, Built, OnError};
use kiln::template::{self, Template, variables::VarInputs};

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
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone());
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
    flag
}

pub fn run(args: BuildArgs) -> Exit {
    let mut templates = Vec::new();
    for path in &args.templates {
        match template::load(path, &args.inputs) {
            Ok(template) => templates.push(template),
            Err(error) => diagnostics::print_template_error(&error),
        }
    }
    if templates.len() != args.templates.len() {
        return Exit::Usage;
    }
    let epoch = match source_date_epoch() {
        Ok(epoch) => epoch,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Usage;
        }
    };
    let options = BuildOptions {
        home: kiln::kiln_home(),
        epoch,
        on_error: args.on_error,
        no_cache: args.no_cache,
    };
    let cancelled = cancel_flag();
    let reporter = reporters::choose(args.json);
    let jobs = args.jobs.unwrap_or(1).clamp(1, templates.len().max(1));
    let queue: Mutex<VecDeque<(usize, &Template)>> =
        Mutex::new(templates.iter().enumerate().collect());
    let results: Mutex<Vec<(usize, Result<Built, BuildError>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let Some((index, template)) =
                        queue.lock().expect("no build thread panics").pop_front()
                    else {
                        return;
                    };
                    let result = pipeline::build(template, &options, reporter.as_ref(), &cancelled);
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
        let template = &templates[index];
        match result {
            Ok(built) => {
                if !args.no_publish
                    && let Err(error) = publish(template, &args.remote, reporter.as_ref())
                {
                    eprintln!(
                        "error: failed to publish {}:{}: {}",
                        template.image.name,
                        template.image.version,
                        diagnostics::error_chain(&error)
                    );
                    exit = match (exit, error.is_conflict()) {
                        (Exit::Success | Exit::VersionConflict, true) => Exit::VersionConflict,
                        _ => Exit::Failure,
                    };
                }
                if let Err(error) = post_process(
                    template,
                    &built,
                    &options,
                    args.output.as_deref(),
                    reporter.as_ref(),
                ) {
                    eprintln!(
                        "error: failed to post-process {}:{} (the image stays in the store): {error}",
                        template.image.name, template.image.version
                    );
                    exit = Exit::Failure;
                }
            }
            Err(error) => {
                print_build_error(template, &error);
                exit = match (exit, error.is_version_conflict()) {
                    (Exit::Success | Exit::VersionConflict, true) => Exit::VersionConflict,
                    _ => Exit::Failure,
                };
            }
        }
    }
    exit
}

/// Runs the template's post-processors into `output`, or
/// `output/NAME-VERSION` beside the template.
fn post_process(
    template: &Template,
    built: &Built,
    options: &BuildOptions,
    output: Option<&std::path::Path>,
    reporter: &dyn Reporter,
) -> Result<(), String> {
    use kiln::post_processors::run::{PostContext, PostInputs, run_all};
    use kiln::reference::{StoreRef, StoreTarget};

    if template.post_processors.is_empty() {
        return Ok(());
    }
    let image = &template.image;
    let output = match output {
        Some(output) => output.to_owned(),
        None => template
            .path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("output")
            .join(format!(
                "{}-{}",
                image.name.as_str().replace('/', "_"),
                image.version
            )),
    };
    let store = kiln::store::Store::open(&options.home.join("store"))
        .map_err(|error| diagnostics::error_chain(&error))?;
    let entry = store
        .resolve(&StoreRef {
            name: image.name.clone(),
            target: StoreTarget::Version(image.version.clone()),
        })
        .map_err(|error| diagnostics::error_chain(&error))?;
    let mut cx = PostContext::new(PostInputs {
        template,
        built,
        store: &store,
        entry: &entry,
        home: &options.home,
        output,
        epoch: options.epoch,
        reporter,
    });
    run_all(&mut cx, &template.post_processors).map_err(|error| error.to_string())
}

/// Moves the template's channels to the new version, then pushes the
/// version, and each channel as a movable tag, to every remote.
fn publish(
    template: &Template,
    options: &kiln::remote::RemoteOptions,
    reporter: &dyn Reporter,
) -> Result<(), kiln::remote::RemoteError> {
    use kiln::reference::{StoreRef, StoreTarget};
    use kiln::remote::push::{PushTarget, push};
    use kiln::remote::{Registry, RemoteError, block_on};

    let publish = &template.publish;
    if publish.channels.is_empty() && publish.remote.is_empty() {
        return Ok(());
    }
    let image = &template.image;
    let store = kiln::store::Store::open(&options.home.join("store"))?;
    for channel in &publish.channels {
        store
            .set_channel(&image.name, channel, &image.version, "publish")
            .map_err(|error| RemoteError::Invalid(diagnostics::error_chain(&error)))?;
        // On stderr: stdout may be a stream of JSON events.
        eprintln!(
            "{}: channel {channel} moved to {}",
            image.name, image.version
        );
    }
    let entry = store.resolve(&StoreRef {
        name: image.name.clone(),
        target: StoreTarget::Version(image.version.clone()),
    })?;
    for remote in &publish.remote {
        let registry = Registry::new(&remote.host, options)?;
        let repository = remote.repository.as_str();
        let target = |tag, movable| PushTarget {
            registry: &registry,
            repository,
            tag,
            movable,
        };
        block_on(push(
            &store,
            &options.home,
            &entry,
            target(image.version.as_str(), false),
            reporter,
        ))?;
        for channel in &publish.channels {
            block_on(push(
                &store,
                &options.home,
                &entry,
                target(channel.as_str(), true),
                reporter,
            ))?;
        }
    }
    Ok(())
}

fn print_build_error(template: &Template, error: &BuildError) {
    let redactor = template.redactor();
    let chain = diagnostics::error_chain(error);
    eprintln!(
        "error: failed to build {}:{}: {}",
        template.image.name,
        template.image.version,
        redactor.redact(&chain)
    );
    let output = error.output();
    if !output.is_empty() {
        eprintln!("last lines of output:");
        for line in output {
            eprintln!("  | {line}");
        }
    }
    if let Some(kept) = error.kept_root() {
        eprintln!("the failed stage's root is kept at {}", kept.display());
        eprintln!("enter it with: chroot {} /bin/sh", kept.display());
    }
}
