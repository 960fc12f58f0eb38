//! What a running stage is given, and how its commands fail: the interface
//! between the build engine (`pipeline`) and each kind of source,
//! provisioner, test and post-processor that runs something.
//!
//! A [`TaskRunner`] runs sandbox tasks for one build: it streams each line
//! of output, redacted, as an event, keeps the last lines for the error of
//! a failed command, and turns a cancelled build into [`TaskError::Cancelled`].
//! A [`StageContext`] adds what a stage's kind needs to know about where it
//! runs.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::redact::Redactor;
use crate::report::{Event, Reporter};
use crate::sandbox::{self, Outcome, SandboxError, Spec};

/// Lines of output kept for the error of a failed command.
const TAIL_LINES: usize = 20;

/// How a command that did not succeed ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Exited(i32),
    /// Killed, with everything it started, after its timeout.
    TimedOut(Duration),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Exited(code) => write!(f, "exited with code {code}"),
            Failure::TimedOut(after) => write!(f, "timed out after {}s", after.as_secs_f64()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{failure}")]
    Failed {
        failure: Failure,
        /// Its last lines of output, redacted.
        output: Vec<String>,
    },
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

impl TaskError {
    /// The last lines a failed command printed, if any.
    pub fn output(&self) -> &[String] {
        match self {
            TaskError::Failed { output, .. } => output,
            _ => &[],
        }
    }
}

/// Where a task's lines of output are reported.
#[derive(Clone, Copy, Debug)]
pub enum OutputOf<'a> {
    Stage(usize),
    Test(&'a str),
    /// A post-processor, by its index in the template.
    PostProcessor(usize),
}

/// Runs the sandbox tasks of one build.
pub struct TaskRunner<'a> {
    /// `name:version`, for events.
    pub build: &'a str,
    pub reporter: &'a dyn Reporter,
    pub redactor: &'a Redactor,
    pub cancelled: &'a AtomicBool,
}

impl TaskRunner<'_> {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Runs `spec` to success, reporting its output as `output`'s lines.
    pub fn run(
        &self,
        spec: &Spec,
        timeout: Option<Duration>,
        output: OutputOf<'_>,
    ) -> Result<(), TaskError> {
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let outcome = sandbox::run(spec, timeout, self.cancelled, &mut |line| {
            let line = self.redactor.redact(line).into_owned();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            let build = self.build.to_owned();
            self.reporter.report(match output {
                OutputOf::Stage(stage) => Event::StageOutput { build, stage, line },
                OutputOf::Test(name) => Event::TestOutput {
                    build,
                    name: name.to_owned(),
                    line,
                },
                OutputOf::PostProcessor(index) => Event::PostProcessorOutput { build, index, line },
            });
        })?;
        // A terminal's SIGINT reaches the task too; it ended because of the cancel.
        if outcome == Outcome::Cancelled || self.is_cancelled() {
            return Err(TaskError::Cancelled);
        }
        let failure = match outcome {
            Outcome::Exited(0) => return Ok(()),
            Outcome::Exited(code) => Failure::Exited(code),
            Outcome::TimedOut => Failure::TimedOut(timeout.unwrap_or_default()),
            Outcome::Cancelled => unreachable!("returned above"),
        };
        Err(TaskError::Failed {
            failure,
            output: tail.into(),
        })
    }
}

/// What a source or provisioner is given when it runs.
pub struct StageContext<'a> {
    pub runner: &'a TaskRunner<'a>,
    /// The stage's number: 0 for the source, N for the Nth provisioner.
    pub number: usize,
    /// The build's work folder: sandbox specs name their paths in it.
    pub work: &'a Path,
    /// The template's folder: where host commands run.
    pub template_dir: &'a Path,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    /// The template's variables as `KILN_VAR_NAME` environment variables,
    /// for the commands of shell stages.
    pub variables: &'a [(String, String)],
}

impl StageContext<'_> {
    /// Runs one of the stage's tasks to success.
    pub fn run(&self, spec: &Spec, timeout: Option<Duration>) -> Result<(), TaskError> {
        self.runner.run(spec, timeout, OutputOf::Stage(self.number))
    }
}
