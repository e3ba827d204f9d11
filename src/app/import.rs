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
/// A batch is cut here even inside a record (which then is reported as broken).
const MAX_CHUNK_BYTES: usize = 32 << 20;

/// Tracks whether the text read so far ends between records (brace depth 0), with strings
/// taken into account. JSON strings cannot span lines, so string state ends with the line.
#[derive(Debug, Default)]
struct Depth {
    braces: usize,
}

impl Depth {
    fn feed(&mut self, line: &str) {
        let (mut in_string, mut escaped) = (false, false);
        for b in line.bytes() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if in_string => escaped = true,
                b'"' => in_string = !in_string,
                b'{' if !in_string => self.braces += 1,
                b'}' if !in_string => self.braces = self.braces.saturating_sub(1),
                _ => {}
            }
        }
    }

    fn outside_objects(&self) -> bool {
        self.braces == 0
    }
}

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
    let mut depth = Depth::default();
    for line in reader.lines() {
        let line = line.map_err(read_err)?;
        line_no += 1;
        chunk.push_str(&line);
        chunk.push('\n');
        depth.feed(&line);
        // Cut between records; a record that never closes is cut anyway, much later.
        if (chunk.len() >= CHUNK_BYTES && depth.outside_objects()) || chunk.len() >= MAX_CHUNK_BYTES
        {
            import_chunk(ledger, &name, &chunk, chunk_first_line, tz, counts).await?;
            chunk.clear();
            chunk_first_line = line_no + 1;
            depth = Depth::default();
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

#[cfg(test)]
mod tests {
    use super::Depth;

    #[test]
    fn depth_sees_record_boundaries_through_strings_and_nesting() {
        let mut d = Depth::default();
        d.feed(r#"{"a": "}}{", "b": {"#);
        assert!(!d.outside_objects());
        d.feed(r#"  "c": "say \"}\" twice" },"#);
        assert!(!d.outside_objects());
        d.feed("},");
        assert!(d.outside_objects());
    }
}
