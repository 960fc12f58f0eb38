//! Running the `in = "vm"` tests: after the chroot tests and before
//! anything is stored, kiln writes a test-only copy of the template's
//! bootable disk (the image, flattened, plus the helper that runs the
//! tests inside), boots it once under qemu, and runs every VM test whose
//! key did not pass before, in order, stopping at the first failure. The
//! artifact the `disk` post-processor writes later never holds the helper.

use std::time::Instant;

use super::{BuildContext, BuildError, image::PreparedImage};
use crate::disk::{DiskFormat, DiskImage, DiskSettings};
use crate::image_test::TestPlace;
use crate::io_error::IoError;
use crate::post_processors::PostProcessor;
use crate::provisioners::shell::ShellBody;
use crate::record::TestRecord;
use crate::report::Event;
use crate::stage::{Failure, TaskError};
use crate::vm::{self, VmEvent, VmOutcome, VmTest};

/// Lines of a failed test's output its error keeps.
const TAIL_LINES: usize = 20;

impl BuildContext<'_> {
    pub(super) fn run_vm_tests(
        &self,
        prepared: &PreparedImage,
    ) -> Result<Vec<TestRecord>, BuildError> {
        let plan = self.plan;
        let template = &plan.template;
        let mut records = Vec::new();
        let mut pending = Vec::new();
        for planned in &plan.tests {
            if template.tests[planned.index].place != TestPlace::Vm {
                continue;
            }
            let key = planned.inputs.key(Some(&prepared.digest));
            if !self.options.no_cache && self.cache.test_passed(&key) {
                self.report(Event::TestStarted {
                    build: plan.reference.clone(),
                    name: planned.name.clone(),
                });
                self.report(Event::TestFinished {
                    build: plan.reference.clone(),
                    name: planned.name.clone(),
                    seconds: 0.0,
                    passed: true,
                    cached: true,
                });
                records.push(TestRecord {
                    name: planned.name.clone(),
                    seconds: 0.0,
                    outcome: "passed".to_owned(),
                    cached: true,
                });
            } else {
                pending.push((planned, key));
            }
        }
        if pending.is_empty() {
            return Ok(records);
        }
        self.check_cancelled()?;
        let disk = template
            .post_processors
            .iter()
            .find_map(|post| match post {
                PostProcessor::Disk(disk) if disk.boot != crate::disk::BootMode::None => Some(disk),
                _ => None,
            })
            .ok_or(BuildError::NoBootableDisk)?;
        let tests = pending
            .iter()
            .map(|(planned, _)| self.vm_test(planned.index, prepared))
            .collect::<Result<Vec<_>, _>>()?;
        let nonce =
            vm::nonce().map_err(IoError::at("read", std::path::Path::new("/dev/urandom")))?;
        let raw = TestDisk(self.write_test_disk(prepared, disk, &tests, &nonce)?);
        let vm_work = self
            .work
            .fresh_dir("vm")
            .map_err(IoError::at("create", self.work.path()))?;
        let mut started = Instant::now();
        let mut tails: Vec<Vec<String>> = vec![Vec::new(); tests.len()];
        let mut seconds: Vec<f64> = vec![0.0; tests.len()];
        let mut on_event = |event: VmEvent<'_>| match event {
            VmEvent::Booting { accel, firmware } => {
                if let Some((planned, _)) = pending.first() {
                    self.report(Event::TestOutput {
                        build: plan.reference.clone(),
                        name: planned.name.clone(),
                        line: format!(
                            "kiln: booting the machine ({firmware}, qemu {accel}) for {} test(s)",
                            pending.len()
                        ),
                    });
                }
            }
            VmEvent::Begin(index) => {
                started = Instant::now();
                if let Some((planned, _)) = pending.get(index) {
                    self.report(Event::TestStarted {
                        build: plan.reference.clone(),
                        name: planned.name.clone(),
                    });
                }
            }
            VmEvent::Line(index, line) => {
                if let Some((planned, _)) = pending.get(index) {
                    let line = self.redactor().redact(line).into_owned();
                    let tail = &mut tails[index];
                    if tail.len() == TAIL_LINES {
                        tail.remove(0);
                    }
                    tail.push(line.clone());
                    self.report(Event::TestOutput {
                        build: plan.reference.clone(),
                        name: planned.name.clone(),
                        line,
                    });
                }
            }
            VmEvent::End(index, outcome) => {
                if let Some((planned, _)) = pending.get(index) {
                    if let Some(took) = seconds.get_mut(index) {
                        *took = started.elapsed().as_secs_f64();
                    }
                    self.report(Event::TestFinished {
                        build: plan.reference.clone(),
                        name: planned.name.clone(),
                        seconds: started.elapsed().as_secs_f64(),
                        passed: *outcome == VmOutcome::Exited(0),
                        cached: false,
                    });
                }
            }
        };
        let outcomes = vm::run_tests(
            &raw.0,
            disk.boot,
            &vm_work,
            &tests,
            &nonce,
            self.runner.cancelled,
            &mut on_event,
        );
        drop(raw);
        let outcomes = match outcomes {
            Ok(outcomes) => outcomes,
            Err(vm::VmError::Cancelled) => return Err(BuildError::Cancelled),
            Err(error) => {
                let error = error.redacted(|text| self.redactor().redact(text).into_owned());
                return Err(BuildError::Vm(Box::new(error)));
            }
        };
        for (index, (planned, key)) in pending.iter().enumerate() {
            let test = &template.tests[planned.index];
            let failure = match outcomes.get(index) {
                Some(VmOutcome::Exited(0)) => None,
                Some(VmOutcome::Exited(code)) => Some(Failure::Exited(*code)),
                Some(VmOutcome::TimedOut(after)) => Some(Failure::TimedOut(*after)),
                None => Some(Failure::Exited(-1)),
            };
            if let Some(failure) = failure {
                let output = std::mem::take(&mut tails[index]);
                return Err(BuildError::Test {
                    name: planned.name.clone(),
                    command: test.failed_command(&output).map(|(number, command)| {
                        format!("command {number}, `{}`", self.redactor().redact(command))
                    }),
                    failure: TaskError::Failed { failure, output },
                });
            }
            self.cache.record_test_pass(key).map_err(IoError::at(
                "record the result of test",
                std::path::Path::new(&planned.name),
            ))?;
            records.push(TestRecord {
                name: planned.name.clone(),
                seconds: seconds[index],
                outcome: "passed".to_owned(),
                cached: false,
            });
        }
        Ok(records)
    }

    /// What the machine runs for test `index`: its script (each inline
    /// command announced), the image's environment, kiln's and its own,
    /// the image's workdir, and its user.
    fn vm_test(&self, index: usize, prepared: &PreparedImage) -> Result<VmTest, BuildError> {
        let plan = self.plan;
        let test = &plan.template.tests[index];
        let (scripts, errexit) = match test.body_with_markers() {
            ShellBody::Inline(lines) => (vec![lines.join("\n") + "\n"], true),
            ShellBody::Scripts(paths) => {
                let mut scripts = Vec::new();
                for path in paths {
                    scripts
                        .push(std::fs::read_to_string(&path).map_err(IoError::at("read", &path))?);
                }
                (scripts, false)
            }
        };
        let config = &prepared.container_config;
        let mut env = super::tests::test_env(config, &plan.variables);
        env.extend(
            test.env
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        Ok(VmTest {
            scripts,
            errexit,
            env,
            workdir: config.working_dir.clone().unwrap_or_else(|| "/".to_owned()),
            user: test.user.clone(),
            timeout: test
                .timeout
                .map_or(vm::DEFAULT_TEST_TIMEOUT, |timeout| timeout.as_std()),
        })
    }

    /// The test-only disk: the image flattened in the work folder, the
    /// helper added, as a raw disk with the template's boot settings.
    fn write_test_disk(
        &self,
        prepared: &PreparedImage,
        disk: &DiskSettings,
        tests: &[VmTest],
        nonce: &str,
    ) -> Result<std::path::PathBuf, BuildError> {
        let store = &self.store;
        // Nothing of the image is stored before its tests pass: its layers
        // are (the stage cache's), its config not yet.
        let root = self
            .work
            .fresh_dir("vm-root")
            .map_err(IoError::at("create", self.work.path()))?;
        crate::export::flatten_layers(store, &prepared.manifest, &prepared.diff_ids, &root)
            .map_err(|error| {
                BuildError::TestDisk(Box::new(
                    crate::post_processors::context::FlattenError::Export(error).into(),
                ))
            })?;
        vm::install_helper(&root, tests, nonce)
            .map_err(IoError::at("write the test helper into", &root))?;
        let raw = self.work.path().join("vm-disk.raw");
        std::fs::write(&raw, b"").map_err(IoError::at("create", &raw))?;
        let settings = DiskSettings {
            format: DiskFormat::Raw,
            ..disk.clone()
        };
        let image = DiskImage {
            digest: &prepared.digest,
            name: self.plan.template.image.name.as_str(),
            architecture: crate::oci::host_architecture(),
            epoch: self.plan.epoch,
        };
        let written = crate::disk::write_raw(&root, &image, &settings, &raw);
        if written.is_err() {
            let _ = std::fs::remove_file(&raw);
        }
        self.work
            .fresh_dir("vm-root")
            .map_err(IoError::at("remove", &root))?;
        written.map_err(|error| BuildError::TestDisk(Box::new(error.into())))?;
        Ok(raw)
    }
}

/// The test disk, removed however the run ends (the work folder goes
/// too, but a disk is large and the rest of the build may take long).
struct TestDisk(std::path::PathBuf);

impl Drop for TestDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
