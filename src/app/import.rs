//! `callvault import`: callback files or CSV exports (or standard input) into the ledger, in
//! chunks, so a large export never sits in memory whole. Bad records are named by file and
//! line.

use std::io::BufRead;
use std::path::Path;

use chrono::{FixedOffset, Utc};
use serde::Serialize;

use super::progress::Meter;
use crate::callback::{parse_document, parse_record};
use crate::cli::ImportFormat;
use crate::domain::CallRecord;
use crate::ledger::{BackendKind, ImportOutcome, Ledger, LedgerError};

#[derive(Debug, Default, Clone, Serialize)]
pub struct ImportCounts {
    pub new: u64,
    pub already_known: u64,
    pub recording_added: u64,
    pub rejected: u64,
    /// New records of unanswered calls (nothing to archive).
    pub no_recording: u64,
    /// Records of calls known only from the bill list, which they took over.
    pub matched_bill: u64,
}

/// Read this much text before parsing and writing a batch (at a record boundary), by
/// ledger. SQLite: 8 MiB, about 14,000 callbacks a transaction; each commit writes every
/// index page the batch dirtied (random uuids, file names and numbers touch pages all over),
/// so fewer, larger commits write far less (100,000 callbacks: 19.8 s at 1 MiB, 7.3 s at
/// 8 MiB; peak RSS 106 → 218 MiB; BENCHMARKS.md "Issue 20"). PostgreSQL: 1 MiB, about
/// 1,750 callbacks: the batch takes three advisory locks a call
/// (`StoreCalls::begin_storing`), and a server's lock table holds 6,400 by default
/// (`max_locks_per_transaction` 64 × 100 connections); 8 MiB ran out of shared memory.
fn chunk_bytes(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Sqlite => 8 << 20,
        BackendKind::Postgres => 1 << 20,
    }
}
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
    #[error("{name}: {problem}")]
    Format { name: String, problem: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// CSV rows go to the ledger in batches of this many.
const CSV_BATCH: usize = 1000;

/// Imports one source; rejected records are reported on standard error as `name:line: why`.
pub async fn import_source(
    ledger: &Ledger,
    path: &Path,
    format: ImportFormat,
    tz: FixedOffset,
    counts: &mut ImportCounts,
    meter: Option<&Meter>,
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
    let mut reader: Box<dyn BufRead + Send> = if path == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path).map_err(read_err)?;
        if let (Some(meter), Ok(meta)) = (meter, file.metadata()) {
            meter.set_total(meta.len());
        }
        Box::new(std::io::BufReader::new(file))
    };
    if is_csv(path, format, &mut reader).map_err(read_err)? {
        return import_csv(ledger, &name, reader, tz, counts, meter).await;
    }
    let chunk_bytes = chunk_bytes(ledger.kind());
    let mut chunk = String::new();
    let mut chunk_first_line = 1usize;
    let mut line_no = 0usize;
    let mut depth = Depth::default();
    for line in reader.lines() {
        let line = line.map_err(read_err)?;
        line_no += 1;
        if let Some(meter) = meter {
            meter.advance(line.len() as u64 + 1);
        }
        chunk.push_str(&line);
        chunk.push('\n');
        depth.feed(&line);
        // Cut between records; a record that never closes is cut anyway, much later.
        if (chunk.len() >= chunk_bytes && depth.outside_objects()) || chunk.len() >= MAX_CHUNK_BYTES
        {
            import_chunk(ledger, &name, &chunk, chunk_first_line, tz, counts, meter).await?;
            chunk.clear();
            chunk_first_line = line_no + 1;
            depth = Depth::default();
        }
    }
    import_chunk(ledger, &name, &chunk, chunk_first_line, tz, counts, meter).await
}

/// Whether the source is CSV: by the flag, the extension, or else its first character.
fn is_csv(
    path: &Path,
    format: ImportFormat,
    reader: &mut Box<dyn BufRead + Send>,
) -> std::io::Result<bool> {
    match format {
        ImportFormat::Json => return Ok(false),
        ImportFormat::Csv => return Ok(true),
        ImportFormat::Auto => {}
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("csv") => return Ok(true),
        Some(ext)
            if ["json", "jsonl", "ndjson"]
                .iter()
                .any(|j| ext.eq_ignore_ascii_case(j)) =>
        {
            return Ok(false);
        }
        _ => {}
    }
    loop {
        let buf = reader.fill_buf()?;
        let Some(&first) = buf.first() else {
            return Ok(false);
        };
        let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if blank == 0 {
            return Ok(!matches!(first, b'{' | b'['));
        }
        reader.consume(blank);
    }
}

/// A CSV export: a header row of the callback's field names, one call per row. Each row
/// becomes a callback object (all values as text, which the parser takes) and is kept as
/// such in the ledger.
async fn import_csv(
    ledger: &Ledger,
    name: &str,
    reader: Box<dyn BufRead + Send>,
    tz: FixedOffset,
    counts: &mut ImportCounts,
    meter: Option<&Meter>,
) -> Result<(), ImportError> {
    let format_err = |problem: String| ImportError::Format {
        name: name.to_owned(),
        problem,
    };
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(reader);
    let headers: Vec<String> = csv
        .headers()
        .map_err(|e| format_err(format!("unreadable CSV header: {e}")))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    if !headers.iter().any(|h| h == "uuid") {
        return Err(format_err(
            "the CSV header has no `uuid` column (the header row must name the callback's fields)"
                .into(),
        ));
    }
    let mut row = csv::StringRecord::new();
    let mut batch: Vec<CallRecord> = Vec::new();
    let mut read_so_far = 0u64;
    loop {
        let result = csv.read_record(&mut row);
        let line = match &result {
            Err(e) => e.position().map_or(0, |p| p.line()),
            Ok(_) => row.position().map_or(0, |p| p.line()),
        };
        match result {
            Ok(false) => break,
            Ok(true) if row.len() != headers.len() => {
                counts.rejected += 1;
                eprintln!(
                    "{name}:{line}: rejected: {} fields where the header has {}",
                    row.len(),
                    headers.len()
                );
            }
            Ok(true) => {
                let object: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .zip(row.iter())
                    .map(|(h, v)| (h.clone(), serde_json::Value::String(v.to_owned())))
                    .collect();
                let raw = serde_json::Value::Object(object).to_string();
                match parse_record(&raw, tz) {
                    Ok(record) => batch.push(record),
                    Err(why) => {
                        counts.rejected += 1;
                        eprintln!("{name}:{line}: rejected: {why}");
                    }
                }
            }
            Err(e) if e.is_io_error() => return Err(format_err(format!("cannot read: {e}"))),
            Err(e) => {
                counts.rejected += 1;
                eprintln!("{name}:{line}: rejected: {e}");
            }
        }
        if let Some(meter) = meter {
            let now = csv.position().byte();
            meter.advance(now.saturating_sub(read_so_far));
            read_so_far = now;
        }
        if batch.len() >= CSV_BATCH {
            store_batch(ledger, &batch, counts, meter).await?;
            batch.clear();
        }
    }
    store_batch(ledger, &batch, counts, meter).await
}

async fn import_chunk(
    ledger: &Ledger,
    name: &str,
    text: &str,
    first_line: usize,
    tz: FixedOffset,
    counts: &mut ImportCounts,
    meter: Option<&Meter>,
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
    store_batch(ledger, &records, counts, meter).await
}

async fn store_batch(
    ledger: &Ledger,
    records: &[CallRecord],
    counts: &mut ImportCounts,
    meter: Option<&Meter>,
) -> Result<(), ImportError> {
    if records.is_empty() {
        return Ok(());
    }
    let outcomes = ledger.import(records, Utc::now()).await?;
    if let Some(meter) = meter {
        meter.add_other(records.len() as u64);
    }
    for (record, outcome) in records.iter().zip(outcomes) {
        match outcome {
            ImportOutcome::New if record.has_recording() => counts.new += 1,
            ImportOutcome::New => {
                counts.new += 1;
                counts.no_recording += 1;
            }
            ImportOutcome::Known => counts.already_known += 1,
            ImportOutcome::RecordingAdded => counts.recording_added += 1,
            ImportOutcome::MatchedBill => counts.matched_bill += 1,
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
