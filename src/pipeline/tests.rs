//! Running the `[[test]]` blocks in the finished root, mounted read-only,
//! before anything is stored. A test that passed before with the same key
//! (the digest the image will have, its settings, its script) is not run
//! again unless `--no-cache`.

use std::time::Instant;

use super::image::ImageBuilder;
use super::{BuildContext, BuildError};
use crate::io_error::IoError;
use crate::provisioners::shell::Place;
use crate::record::TestRecord;
use crate::reference::Digest;
use crate::report::Event;
use crate::sandbox::{Overlay, Spec};
use crate::stage::{OutputOf, TaskError};

impl BuildContext<'_> {
    /// Runs every test on `image`, whose digest will be `digest`; the
    /// first failure fails the build.
    pub(super) fn run_tests(
        &self,
        image: &ImageBuilder,
        digest: &Digest,
    ) -> Result<Vec<TestRecord>, BuildError> {
        let plan = self.plan;
        let mut records = Vec::with_capacity(plan.tests.len());
        for planned in &plan.tests {
            self.check_cancelled()?;
            let test = &plan.template.tests[planned.index];
            let started = Instant::now();
            self.report(Event::TestStarted {
                build: plan.reference.clone(),
                name: planned.name.clone(),
            });
            let key = planned.inputs.key(Some(digest));
            let cached = !self.options.no_cache && self.cache.test_passed(&key);
            if !cached {
                self.work
                    .fresh_dir("merged")
                    .map_err(IoError::at("create", self.work.path()))?;
                let lowers = self.lower_names(image);
                let shell = test.as_shell();
                let timeout = test.timeout.map(|timeout| timeout.as_std());
                for task in shell.tasks(Place::InRoot, &plan.variables) {
                    let spec = Spec {
                        base: self.work.path().to_owned(),
                        overlay: Some(Overlay {
                            lowers: lowers.clone(),
                            upper: None,
                            merged: "merged".to_owned(),
                        }),
                        task,
                    };
                    if let Err(failure) =
                        self.runner
                            .run(&spec, timeout, OutputOf::Test(&planned.name))
                    {
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
                                failure,
                            },
                        });
                    }
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
            records.push(TestRecord {
                name: planned.name.clone(),
                seconds,
                outcome: "passed".to_owned(),
                cached,
            });
        }
        Ok(records)
    }
}
