//! Running the `[[test]]` blocks before anything is stored: `in =
//! "chroot"` tests in the finished root with a throwaway writable layer
//! above it, with the image's `env` and `workdir`, as root or their
//! `user`. A test that passed before with the same key (the digest the
//! image will have, its settings, its script) is not run again unless
//! `--no-cache`. VM tests run later, on the written disk (`vm_tests.rs`).

use std::time::Instant;

use super::image::ImageBuilder;
use super::{BuildContext, BuildError};
use crate::image_test::{ImageTest, TestPlace};
use crate::io_error::IoError;
use crate::oci::ContainerConfig;
use crate::plan::PlannedTest;
use crate::provisioners::shell::Place;
use crate::record::TestRecord;
use crate::reference::Digest;
use crate::report::Event;
use crate::sandbox::{Overlay, Spec, Task};
use crate::stage::{OutputOf, TaskError};

impl BuildContext<'_> {
    /// Runs every chroot test on `image`, whose digest will be `digest`
    /// and whose config is `config`; the first failure fails the build.
    pub(super) fn run_tests(
        &self,
        image: &ImageBuilder,
        digest: &Digest,
        config: &ContainerConfig,
    ) -> Result<Vec<TestRecord>, BuildError> {
        let plan = self.plan;
        let mut records = Vec::with_capacity(plan.tests.len());
        for planned in &plan.tests {
            let test = &plan.template.tests[planned.index];
            if test.place != TestPlace::Chroot {
                continue;
            }
            self.check_cancelled()?;
            let record = self.run_test(planned, digest, |cx| {
                cx.run_chroot_test(image, config, planned, test)
            })?;
            records.push(record);
        }
        Ok(records)
    }

    /// Runs one test through `run` unless its key passed before, reporting
    /// it and recording a pass.
    pub(super) fn run_test(
        &self,
        planned: &PlannedTest,
        digest: &Digest,
        run: impl FnOnce(&Self) -> Result<Result<(), TaskError>, BuildError>,
    ) -> Result<TestRecord, BuildError> {
        let plan = self.plan;
        let test = &plan.template.tests[planned.index];
        let started = Instant::now();
        self.report(Event::TestStarted {
            build: plan.reference.clone(),
            name: planned.name.clone(),
        });
        let key = planned.inputs.key(Some(digest));
        let cached = !self.options.no_cache && self.cache.test_passed(&key);
        if !cached {
            if let Err(failure) = run(self)? {
                self.report(Event::TestFinished {
                    build: plan.reference.clone(),
                    name: planned.name.clone(),
                    seconds: started.elapsed().as_secs_f64(),
                    passed: false,
                    cached: false,
                });
                return Err(match failure {
                    TaskError::Cancelled => BuildError::Cancelled,
                    failure => BuildError::Test {
                        name: planned.name.clone(),
                        command: test
                            .failed_command(failure.output())
                            .map(|(number, command)| {
                                format!("command {number}, `{}`", self.redactor().redact(command))
                            }),
                        failure,
                    },
                });
            }
            self.cache.record_test_pass(&key).map_err(IoError::at(
                "record the result of test",
                std::path::Path::new(&planned.name),
            ))?;
        }
        let seconds = if cached {
            0.0
        } else {
            started.elapsed().as_secs_f64()
        };
        self.report(Event::TestFinished {
            build: plan.reference.clone(),
            name: planned.name.clone(),
            seconds,
            passed: true,
            cached,
        });
        Ok(TestRecord {
            name: planned.name.clone(),
            seconds,
            outcome: "passed".to_owned(),
            cached,
        })
    }

    /// A chroot test: its commands on an overlay of the image's layers
    /// with a fresh upper, which is thrown away after.
    fn run_chroot_test(
        &self,
        image: &ImageBuilder,
        config: &ContainerConfig,
        planned: &PlannedTest,
        test: &ImageTest,
    ) -> Result<Result<(), TaskError>, BuildError> {
        let plan = self.plan;
        for dir in ["merged", "test"] {
            self.work
                .fresh_dir(dir)
                .map_err(IoError::at("create", self.work.path()))?;
        }
        for dir in ["test/upper", "test/work"] {
            let path = self.work.path().join(dir);
            std::fs::create_dir(&path).map_err(IoError::at("create", &path))?;
        }
        let lowers = self.lower_names(image);
        let shell = test.as_shell(config.working_dir.clone());
        let timeout = test.timeout.map(|timeout| timeout.as_std());
        let env = test_env(config, &plan.variables);
        let result = (|| {
            for mut task in shell.tasks(Place::InRoot, &env) {
                if let Task::InRoot { user, .. } = &mut task {
                    user.clone_from(&test.user);
                }
                let spec = Spec {
                    base: self.work.path().to_owned(),
                    overlay: Some(Overlay {
                        lowers: lowers.clone(),
                        upper: Some(("test/upper".to_owned(), "test/work".to_owned())),
                        merged: "merged".to_owned(),
                    }),
                    task,
                };
                self.runner
                    .run(&spec, timeout, OutputOf::Test(&planned.name))?;
            }
            Ok(())
        })();
        self.work.fresh_dir("test").map_err(IoError::at(
            "remove the writes of a test in",
            self.work.path(),
        ))?;
        Ok(result)
    }
}

/// What a test's commands get before their own `env`: the image's `env`,
/// then the template's variables as `KILN_VAR_NAME` (later wins).
pub(super) fn test_env(
    config: &ContainerConfig,
    variables: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = config
        .env
        .iter()
        .filter_map(|entry| entry.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    env.extend(variables.iter().cloned());
    env
}
