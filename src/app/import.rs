//! `callvault import`: callback files (or standard input) into the ledger, in chunks, so a
//! large export never sits in memory whole. Bad records are named by file and line.

use std::io::BufRead;
use std::path::Path;

use chrono::{FixedOffset, Utc};
use serde::Serialize;

use crate::callback::parse_document;
use crate::ledger::{ImportOutcome, Ledger, LedgerError};

#[derive(Debug, Default, Clone, Serialize)]
pub struct ImportCounts {
    pub new: u64,
    pub already_known: u64,
    pub recording_added: u64,
    pub rejected: u64,
    /// New records of unanswered calls (nothing to archive).
    pub no_recording: u64,
}

/// Read this much text before parsing and writing a batch (at a record boundary).
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {name}: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Imports one source; rejected records are reported on standard error as `name:line: why`.
pub async fn import_source(
    ledger: &Ledger,
    path: &Path,
    tz: FixedOffset,
    counts: &mut ImportCounts,
) -> Result<(), ImportError> {
    let name = if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    let read_err = |source| ImportError::Read {
        name: name.clone(),
        source,
    };
    let reader: Box<dyn BufRead + Send> = if path == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(read_err)?,
        ))
    };
    let mut chunk = String::new();
    let mut chunk_first_line = 1usize;
    let mut line_no = 0usize;
    for line in reader.lines() {
        let line = line.map_err(read_err)?;
        line_no += 1;
        chunk.push_str(&line);
        chunk.push('\n');
        let at_boundary = matches!(line.trim_end().chars().last(), Some('}' | ',' | ']'))
            && line.trim_start().starts_with(['{', '}', ']']);
        if chunk.len() >= CHUNK_BYTES && at_boundary {
            import_chunk(ledger, &name, &chunk, chunk_first_line, tz, counts).await?;
            chunk.clear();
            chunk_first_line = line_no + 1;
        }
    }
    import_chunk(ledger, &name, &chunk, chunk_first_line, tz, counts).await
}

async fn import_chunk(
    ledger: &Ledger,
    name: &str,
    text: &str,
    first_line: usize,
    tz: FixedOffset,
    counts: &mut ImportCounts,
) -> Result<(), ImportError> {
    let mut records = Vec::new();
    for parsed in parse_document(text, tz) {
        match parsed.result {
            Ok(record) => records.push(record),
            Err(why) => {
                counts.rejected += 1;
                eprintln!("{name}:{}: rejected: {why}", parsed.line + first_line - 1);
            }
        }
    }
    let outcomes = ledger.import(&records, Utc::now()).await?;
    for (record, outcome) in records.iter().zip(outcomes) {
        match outcome {
            ImportOutcome::New if record.has_recording() => counts.new += 1,
            ImportOutcome::New => {
                counts.new += 1;
                counts.no_recording += 1;
            }
            ImportOutcome::Known => counts.already_known += 1,
            ImportOutcome::RecordingAdded => counts.recording_added += 1,
        }
    }
    Ok(())
}
