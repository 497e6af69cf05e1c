//! metrics.jsonl: one record per evaluation, appended as the run goes; a
//! resume drops the records past its checkpoint, and a torn last line (a
//! crash mid-append) is left out and repaired.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::METRICS_FILE;
use crate::train::EpochReport;
use crate::train::checkpoint::write_atomically;

/// metrics.jsonl of a run, opened for appending (a resumed run continues it).
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(MetricsLog { path, file })
    }

    pub fn append(&mut self, report: &EpochReport) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(report)?)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Drops metrics.jsonl records past `step` (written after the checkpoint a
/// resume starts from, e.g. before a kill), so the resumed run does not
/// record them twice. Rewritten atomically; a missing file is fine.
pub(super) fn drop_records_after(run_dir: &Path, step: u64) -> Result<()> {
    let read = read_metrics_log(run_dir)?;
    let records = read.records;
    let kept: Vec<&EpochReport> = records.iter().filter(|r| r.step <= step).collect();
    if read.torn {
        eprintln!(
            "metrics.jsonl: dropped a torn last line (an append cut short by a crash or a full \
             disk)"
        );
    }
    if kept.len() == records.len() && !read.unterminated {
        return Ok(());
    }
    let mut text = String::new();
    for r in &kept {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomically(&run_dir.join(METRICS_FILE), text.as_bytes())?;
    if kept.len() < records.len() {
        eprintln!(
            "metrics.jsonl: dropped {} record(s) past step {step}, where this run resumes",
            records.len() - kept.len()
        );
    }
    Ok(())
}

/// The evaluations a run folder has recorded (none for a new run).
pub fn read_metrics(run_dir: &Path) -> Result<Vec<EpochReport>> {
    Ok(read_metrics_log(run_dir)?.records)
}

/// metrics.jsonl as read: its records, and whether its end needs repair.
struct MetricsLogRead {
    records: Vec<EpochReport>,
    /// The last line was cut short (the disk filled, or the process died,
    /// during an append): not newline-terminated and not a record.
    torn: bool,
    /// The file does not end with a newline (the next append would join it).
    unterminated: bool,
}

/// Reads metrics.jsonl: a torn last line is the crash it is and is left
/// out; an unreadable line anywhere else is damage and refused, naming it.
fn read_metrics_log(run_dir: &Path) -> Result<MetricsLogRead> {
    let path = run_dir.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let unterminated = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut read = MetricsLogRead {
        records: vec![],
        torn: false,
        unterminated,
    };
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(record) => read.records.push(record),
            Err(_) if unterminated && i + 1 == lines.len() => read.torn = true,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{} line {}: not a metrics record", path.display(), i + 1)
                });
            }
        }
    }
    Ok(read)
}
