//! The manifest format, shared by the writer and the checker: JSON lines, a header line
//! naming the previous manifest by key and SHA-256, then one line per archived object, then
//! (format 2) one line per erasure: `{"erased":{…}}`, an object that left the store for good.
//!
//! Every line of a manifest written since accounts came names its account (`"account"`):
//! each account has its own chain, and a line read alone (a manifest handed over, a line
//! quoted in a proof) still says whose call it is. A line without it is the `default`
//! account's, written before there were accounts.

use serde::{Deserialize, Serialize};

use crate::ledger::{ArchivedEntry, ManifestLink, Tombstone};
use crate::timefmt::to_ledger;

/// Names the manifest format; bumped when a field changes meaning. Format 2 added erasure
/// lines; a format-1 manifest is a format-2 manifest without them.
pub const MANIFEST_FORMAT: &str = "callvault-manifest/2";
pub const MANIFEST_CONTENT_TYPE: &str = "application/x-ndjson";
/// A longer line is not a manifest line.
const MAX_LINE: usize = 64 * 1024;

/// The first line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    pub format: String,
    /// The account whose chain this is (absent: `default`, written before accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub seq: i64,
    /// The run that claimed this manifest (a run taking it over writes the same bytes).
    pub run_id: String,
    pub created_at: String,
    pub entries: u64,
    /// `null` for the first manifest of the chain.
    pub previous: Option<PreviousManifest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousManifest {
    pub seq: i64,
    pub key: String,
    pub sha256: String,
}

impl From<&ManifestLink> for PreviousManifest {
    fn from(link: &ManifestLink) -> Self {
        Self {
            seq: link.seq,
            key: link.key.clone(),
            sha256: link.sha256.clone(),
        }
    }
}

/// One archived object (its sidecar is `<key>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The call's account (absent: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub uuid: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub archived_at: String,
}

impl From<&ArchivedEntry> for ManifestEntry {
    fn from(e: &ArchivedEntry) -> Self {
        Self {
            account: None,
            uuid: e.uuid.to_string(),
            key: e.key.clone(),
            size: e.size,
            sha256: e.sha256.clone(),
            archived_at: to_ledger(e.archived_at),
        }
    }
}

/// An erasure: the call's recording (`key`) and sidecar left the store for good, every
/// version; what they were (`size`, `sha256`, `archived_at`: as the manifest that listed
/// the recording said) and when, why and by whom they went. No personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestErasure {
    /// The call's account (absent: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub uuid: String,
    pub key: String,
    pub sidecar_key: String,
    pub size: u64,
    pub sha256: String,
    pub archived_at: Option<String>,
    pub erased_at: String,
    pub reason: String,
    pub erased_by: String,
}

impl From<&Tombstone> for ManifestErasure {
    fn from(t: &Tombstone) -> Self {
        Self {
            account: None,
            uuid: t.uuid.to_string(),
            key: t.key.clone(),
            sidecar_key: t.sidecar_key.clone(),
            size: t.size,
            sha256: t.sha256.clone(),
            archived_at: t.archived_at.map(to_ledger),
            erased_at: to_ledger(t.erased_at),
            reason: t.reason.clone(),
            erased_by: t.erased_by.clone(),
        }
    }
}

/// A manifest line after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ManifestLine {
    /// `{"erased":{…}}`.
    Erased {
        erased: ManifestErasure,
    },
    Entry(ManifestEntry),
}

/// Cuts a byte stream into lines without holding more than one partial line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines in `chunk` (with what came before it); `Err` on an overlong line.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            lines.push(std::mem::take(&mut self.partial));
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE {
            return Err(format!("a line longer than {MAX_LINE} bytes"));
        }
        Ok(lines)
    }

    /// The last line, when the stream did not end with a newline.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then_some(self.partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_and_erasure_lines_read_back_as_written() {
        let entry = ManifestLine::Entry(ManifestEntry {
            account: Some("acme".into()),
            uuid: "u1".into(),
            key: "k1".into(),
            size: 3,
            sha256: "ab".into(),
            archived_at: "2026-11-30T00:00:00.000Z".into(),
        });
        let erased = ManifestLine::Erased {
            erased: ManifestErasure {
                account: Some("acme".into()),
                uuid: "u2".into(),
                key: "k2".into(),
                sidecar_key: "k2.json".into(),
                size: 4,
                sha256: "cd".into(),
                archived_at: None,
                erased_at: "2026-11-30T00:00:00.000Z".into(),
                reason: "GDPR-1".into(),
                erased_by: "dpo".into(),
            },
        };
        for line in [entry, erased] {
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(
                serde_json::from_str::<ManifestLine>(&text).unwrap(),
                line,
                "{text}"
            );
        }
        // A format-1 entry line (or any written before accounts) reads as an entry of no
        // named account.
        let old = r#"{"uuid":"u","key":"k","size":1,"sha256":"s","archived_at":"t"}"#;
        assert!(matches!(
            serde_json::from_str::<ManifestLine>(old).unwrap(),
            ManifestLine::Entry(ManifestEntry { account: None, .. })
        ));
    }

    #[test]
    fn lines_come_out_whole_whatever_the_chunking() {
        let text = b"{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}";
        for cut in 1..text.len() {
            let mut splitter = LineSplitter::default();
            let mut lines = Vec::new();
            for chunk in text.chunks(cut) {
                lines.extend(splitter.push(chunk).unwrap());
            }
            lines.extend(splitter.finish());
            assert_eq!(
                lines,
                [&b"{\"a\":1}"[..], b"{\"b\":2}", b"", b"{\"c\":3}"],
                "cut {cut}"
            );
        }
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(&vec![b'x'; MAX_LINE + 1]).is_err());
    }
}
