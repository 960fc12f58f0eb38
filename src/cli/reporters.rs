//! The binary's side of the library's [`Reporter`]: progress bars on a
//! terminal, timestamped lines elsewhere, JSON lines with `--json`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln::report::{CacheStatus, Direction, Event, Reporter, StageResult};

pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Prints rows as columns padded to their widest cell; the first row is the header.
pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

pub fn short(digest: &kiln::reference::Digest) -> String {
    format!("sha256:{}", &digest.hex()[..12])
}

fn result_text(result: &StageResult) -> String {
    match result {
        StageResult::Layer { digest, size } => {
            format!("layer {} ({})", short(digest), human_bytes(*size))
        }
        StageResult::Empty => "no changes, no layer".to_owned(),
        StageResult::Base { layers } => format!("{layers} layers from the base image"),
    }
}

/// One line for an event, or `None` for events that are only for bars.
fn line(event: &Event, totals: &HashMap<String, usize>) -> Option<String> {
    let build = event.build();
    let total = totals.get(build).copied().unwrap_or(1).saturating_sub(1);
    Some(match event {
        Event::BuildStarted {
            template,
            stages,
            tests,
            ..
        } => {
            format!("{build}: building {template} ({stages} stages, {tests} tests)")
        }
        Event::StageStarted {
            stage,
            kind,
            summary,
            ..
        } => format!("{build} [{stage}/{total}] {kind}: {summary}"),
        Event::StageOutput { stage, line, .. } => format!("{build} [{stage}] | {line}"),
        Event::StageRetry {
            stage,
            attempt,
            reason,
            ..
        } => format!("{build} [{stage}] {reason}; retry {attempt}"),
        Event::BakeStarted { .. } | Event::BakeProgress { .. } => return None,
        Event::StageFinished {
            stage,
            seconds,
            result,
            cache,
            ..
        } => match cache {
            CacheStatus::Hit => format!("{build} [{stage}] cached: {}", result_text(result)),
            CacheStatus::Shared { repository } => format!(
                "{build} [{stage}] cached (registry {repository}): {}",
                result_text(result)
            ),
            CacheStatus::Miss { reason } => {
                format!(
                    "{build} [{stage}] done in {seconds:.1}s ({reason}): {}",
                    result_text(result)
                )
            }
        },
        Event::TestStarted { name, .. } => format!("{build} test `{name}`"),
        Event::TestOutput { name, line, .. } => format!("{build} test `{name}` | {line}"),
        Event::TestFinished {
            name,
            seconds,
            passed,
            cached,
            ..
        } => {
            if *cached {
                format!(
                    "{build} test `{name}` passed (cached: same image and settings passed before)"
                )
            } else {
                format!(
                    "{build} test `{name}` {} in {seconds:.1}s",
                    if *passed { "passed" } else { "FAILED" }
                )
            }
        }
        Event::ImageStored {
            digest,
            unchanged,
            seconds,
            ..
        } => {
            if *unchanged {
                format!("{build}: already stored as {digest}; nothing changed ({seconds:.1}s)")
            } else {
                format!("{build}: stored {digest} in {seconds:.1}s")
            }
        }
        Event::BuildFailed { .. }
        | Event::TransferStarted { .. }
        | Event::TransferProgress { .. } => return None,
        Event::ArtifactWritten {
            path, size, cached, ..
        } => {
            if *cached {
                format!(
                    "{build}: {path} is in place already ({}, same image and settings)",
                    human_bytes(*size)
                )
            } else {
                format!("{build}: wrote {path} ({})", human_bytes(*size))
            }
        }
        Event::PostProcessorOutput { index, line, .. } => {
            format!("{build} post-processor {} | {line}", index + 1)
        }
        Event::ChannelMoved {
            channel, version, ..
        } => format!("{build}: channel {channel} moved to {version}"),
        Event::ChannelKept {
            channel,
            version,
            reason,
            ..
        } => match version {
            Some(version) => {
                format!("{build}: channel {channel} stays at {version}: {reason}")
            }
            None => format!("{build}: channel {channel} not moved: {reason}"),
        },
        Event::SharedCacheWarning {
            repository,
            stage,
            message,
            ..
        } => match stage {
            Some(stage) => format!(
                "{build}: warning: shared cache {repository}: entry of stage {stage} not used: {message}"
            ),
            None => format!("{build}: warning: shared cache {repository}: {message}"),
        },
        Event::SharedCachePushed {
            repository,
            stages,
            present,
            ..
        } => format!(
            "{build}: shared cache {repository}: pushed {} {}, {present} there already",
            stages.len(),
            if stages.len() == 1 { "stage" } else { "stages" }
        ),
        Event::SharedCacheSkipped {
            stage, variable, ..
        } => format!(
            "{build}: stage {stage} uses sensitive variable {variable}: it and the stages after it are not pushed to the shared cache (share = true pushes it)"
        ),
        Event::TransferFinished {
            digest,
            size,
            outcome,
            seconds,
            ..
        } => format!(
            "{build} {:<7} {digest} ({}) in {seconds:.1}s",
            outcome.word(),
            human_bytes(*size)
        ),
        Event::ImagePushed {
            reference,
            digest,
            sent_bytes,
            unchanged,
            seconds,
            ..
        } => {
            if *unchanged {
                format!("{build} is {reference} already; nothing to send")
            } else {
                format!(
                    "{build}: pushed {reference} {digest} ({} sent) in {seconds:.1}s",
                    human_bytes(*sent_bytes)
                )
            }
        }
        Event::SnapshotUploaded {
            region,
            snapshot_id,
            blocks,
            bytes,
            seconds,
            ..
        } => format!(
            "{build}: uploaded {snapshot_id} in {region}: {blocks} blocks ({}) in {seconds:.1}s",
            human_bytes(*bytes)
        ),
        Event::AmiPublished {
            region,
            name,
            image_id,
            unchanged,
            ..
        } => {
            if *unchanged {
                format!("{build}: AMI {name} is {image_id} in {region} already; nothing made")
            } else {
                format!("{build}: AMI {name} is {image_id} in {region}")
            }
        }
    })
}

fn clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    kiln::oci::rfc3339(now)[11..19].to_owned()
}

fn remember_total(totals: &Mutex<HashMap<String, usize>>, event: &Event) -> HashMap<String, usize> {
    let mut totals = totals.lock().expect("no reporter call panics");
    if let Event::BuildStarted { build, stages, .. } = event {
        totals.insert(build.clone(), *stages);
    }
    totals.clone()
}

/// JSON events on stdout; else progress on stderr: bars when stderr is a
/// terminal (indicatif draws them there), plain lines when it is not, so
/// `kiln build … 2>build.log` logs every line.
pub fn choose(json: bool) -> Box<dyn Reporter> {
    use std::io::IsTerminal;
    if json {
        Box::new(Json)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Plain::default())
    }
}

/// Timestamped lines on stderr, for logs and pipes.
#[derive(Default)]
pub struct Plain {
    totals: Mutex<HashMap<String, usize>>,
}

impl Reporter for Plain {
    fn report(&self, event: Event) {
        let totals = remember_total(&self.totals, &event);
        if let Some(text) = line(&event, &totals) {
            let mut out = std::io::stderr().lock();
            let _ = writeln!(out, "{} {text}", clock());
        }
    }
}

/// One JSON object a line on stdout.
pub struct Json;

impl Reporter for Json {
    fn report(&self, event: Event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&event).expect("events always serialize")
        );
    }
}

/// A progress bar a build, with the output and finished stages above them.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    totals: Mutex<HashMap<String, usize>>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            totals: Mutex::new(HashMap::new()),
        }
    }
}

impl Reporter for Bars {
    fn report(&self, event: Event) {
        let totals = remember_total(&self.totals, &event);
        let mut bars = self.bars.lock().expect("no reporter call panics");
        let build = event.build().to_owned();
        let bar = bars.entry(build.clone()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {elapsed}")
                    .expect("a valid template"),
            );
            bar.set_prefix(build.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        match &event {
            Event::StageStarted {
                stage,
                kind,
                summary,
                ..
            } => {
                let total = totals.get(&build).copied().unwrap_or(1).saturating_sub(1);
                bar.set_message(format!("[{stage}/{total}] {kind}: {summary}"));
            }
            Event::BakeStarted { stage, .. } => bar.set_message(format!("[{stage}] baking layer")),
            Event::BakeProgress { stage, bytes, .. } => {
                let rate = bar.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "[{stage}] baking layer: {} ({}/s)",
                    human_bytes(*bytes),
                    human_bytes((*bytes as f64 / rate) as u64)
                ));
            }
            Event::TestStarted { name, .. } => bar.set_message(format!("test `{name}`")),
            Event::TransferStarted {
                digest,
                size,
                direction,
                ..
            } => {
                let verb = match direction {
                    Direction::Push => "sending",
                    Direction::Pull => "fetching",
                };
                bar.set_message(format!("{verb} {} ({})", short(digest), human_bytes(*size)));
            }
            Event::TransferProgress { digest, bytes, .. } => {
                let rate = bar.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!(
                    "{}: {} ({}/s)",
                    short(digest),
                    human_bytes(*bytes),
                    human_bytes((*bytes as f64 / rate) as u64)
                ));
            }
            Event::ImageStored { .. } | Event::BuildFailed { .. } | Event::ImagePushed { .. } => {
                if let Some(text) = line(&event, &totals) {
                    let _ = self.multi.println(text);
                }
                bar.finish_and_clear();
                bars.remove(&build);
                return;
            }
            _ => {}
        }
        if let Some(text) = line(&event, &totals) {
            let _ = self.multi.println(text);
        }
    }
}
