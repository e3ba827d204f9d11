//! Steps 2 to 4 of the check, one `calls.jsonl` line at a time: the order of the lines, each
//! call's fields against its leaves' manifest lines (which are what the log proves), the
//! recording's bytes, and each leaf's inclusion in its checkpoint.

use std::collections::BTreeSet;
use std::io::BufRead;

use serde_json::Value;

use super::checkpoints::hex_hashes;
use super::files::{sha256_file, walk};
use super::{BundleProblem, Check};
use crate::export::format::{BUNDLE_JSON, CALLS, CallLine, Leaf, RECORDINGS_DIR};
use crate::proof::merkle::{leaf_hash, verify_inclusion};

/// Where the check is in `calls.jsonl`.
struct At<'l> {
    line: usize,
    call: String,
    data: &'l CallLine,
}

impl Check<'_> {
    /// Steps 2 to 4, then the recordings no call lists and the count in `bundle.json`.
    pub(super) fn calls(&mut self) {
        let file = match std::fs::File::open(self.path(CALLS)) {
            Ok(file) => std::io::BufReader::new(file),
            Err(e) => {
                return self.problem(BundleProblem::Unreadable {
                    file: CALLS.into(),
                    why: e.to_string(),
                });
            }
        };
        let mut previous: Option<(String, u64, String)> = None;
        let mut listed = BTreeSet::new();
        for (n, line) in file.lines().enumerate() {
            let line_no = n + 1;
            let parsed = line
                .map_err(|e| e.to_string())
                .and_then(|l| serde_json::from_str::<CallLine>(&l).map_err(|e| e.to_string()));
            let data = match parsed {
                Ok(data) => data,
                Err(why) => {
                    self.problem(BundleProblem::BadLine { line: line_no, why });
                    continue;
                }
            };
            self.counts.calls += 1;
            let at = At {
                line: line_no,
                call: format!("{}/{}", data.account, data.uuid),
                data: &data,
            };
            self.order(&at, &mut previous);
            self.fields(&at);
            if let Some(recording) = &data.recording {
                listed.insert(recording.clone());
                self.recording(&at, recording);
            }
            for leaf in &data.leaves {
                self.inclusion(&at, leaf);
            }
        }
        self.unlisted_recordings(&listed);
        self.call_count();
    }

    fn order(&mut self, at: &At, previous: &mut Option<(String, u64, String)>) {
        let first = at.data.leaves.iter().map(|l| l.index).min().unwrap_or(0);
        let here = (at.data.account.clone(), first, at.call.clone());
        if let Some(before) = previous.as_ref()
            && (before.0.as_str(), before.1) > (here.0.as_str(), here.1)
        {
            self.problem(BundleProblem::OutOfOrder {
                line: at.line,
                call: at.call.clone(),
                previous: format!("{} (leaf {})", before.2, before.1),
            });
        }
        *previous = Some(here);
    }

    /// Step 2: the call's account, uuid and object against each leaf's line.
    fn fields(&mut self, at: &At) {
        for leaf in &at.data.leaves {
            let Ok(line) = serde_json::from_str::<Value>(&leaf.line) else {
                self.problem(BundleProblem::BadLine {
                    line: at.line,
                    why: format!("leaf {} is not a JSON manifest line", leaf.index),
                });
                continue;
            };
            let said = line.get("erased").unwrap_or(&line);
            let mut expect = vec![("uuid", Value::from(at.data.uuid.clone()))];
            if said.get("account").is_some_and(|a| !a.is_null()) {
                expect.push(("account", Value::from(at.data.account.clone())));
            }
            if let Some(object) = &at.data.object {
                expect.push(("key", Value::from(object.key.clone())));
                expect.push(("size", Value::from(object.size)));
                expect.push(("sha256", Value::from(object.sha256.clone())));
            }
            for (field, call_says) in expect {
                let leaf_says = said.get(field).cloned().unwrap_or(Value::Null);
                if leaf_says != call_says {
                    self.problem(BundleProblem::FieldDiffers {
                        line: at.line,
                        call: at.call.clone(),
                        index: leaf.index,
                        field,
                        leaf_says: leaf_says.to_string(),
                        call_says: call_says.to_string(),
                    });
                }
            }
        }
    }

    /// Step 3: the recording's bytes against the call's size and SHA-256.
    fn recording(&mut self, at: &At, file: &str) {
        let Some(object) = &at.data.object else {
            return;
        };
        self.counts.recordings += 1;
        let (found, size) = match sha256_file(&self.path(file)) {
            Ok(read) => read,
            Err(_) => {
                return self.problem(BundleProblem::RecordingMissing {
                    file: file.to_owned(),
                    call: at.call.clone(),
                });
            }
        };
        if found != object.sha256 {
            self.problem(BundleProblem::RecordingHash {
                file: file.to_owned(),
                call: at.call.clone(),
                found,
                expected: object.sha256.clone(),
            });
        } else if size != object.size {
            self.problem(BundleProblem::RecordingSize {
                file: file.to_owned(),
                call: at.call.clone(),
                found: size,
                expected: object.size,
            });
        }
    }

    /// Step 4: the leaf's line is leaf `index` of its checkpoint's tree.
    fn inclusion(&mut self, at: &At, leaf: &Leaf) {
        self.counts.leaves += 1;
        let checkpoint = match self.checkpoints.get(&leaf.checkpoint) {
            Some(Some(loaded)) => loaded.parsed.checkpoint.clone(),
            Some(None) => return,
            None => {
                return self.problem(BundleProblem::CheckpointMissing {
                    checkpoint: leaf.checkpoint.clone(),
                    referrer: format!("{CALLS} line {} ({})", at.line, at.call),
                });
            }
        };
        let result = hex_hashes(&leaf.inclusion).and_then(|proof| {
            if leaf.tree_size != checkpoint.size {
                return Err(format!(
                    "the line gives tree size {}, the checkpoint {}",
                    leaf.tree_size, checkpoint.size
                ));
            }
            let hash = leaf_hash(leaf.line.as_bytes());
            verify_inclusion(&hash, leaf.index, checkpoint.size, &proof, &checkpoint.root)
                .map_err(|e| e.to_string())
        });
        if let Err(why) = result {
            self.problem(BundleProblem::NotIncluded {
                line: at.line,
                call: at.call.clone(),
                index: leaf.index,
                checkpoint: leaf.checkpoint.clone(),
                why,
            });
        }
    }

    fn unlisted_recordings(&mut self, listed: &BTreeSet<String>) {
        for file in walk(&self.path(RECORDINGS_DIR)) {
            let file = format!("{RECORDINGS_DIR}/{file}");
            if !listed.contains(&file) {
                self.problem(BundleProblem::RecordingUnlisted { file });
            }
        }
    }

    /// `bundle.json`'s count of calls against `calls.jsonl`.
    fn call_count(&mut self) {
        let said = std::fs::read_to_string(self.path(BUNDLE_JSON))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("calls").cloned());
        let found = self.counts.calls;
        match said {
            Some(Value::Number(n)) if n.as_u64() == Some(found) => {}
            Some(other) => self.problem(BundleProblem::CallCount {
                said: other.to_string(),
                found,
            }),
            None => self.problem(BundleProblem::CallCount {
                said: "nothing".into(),
                found,
            }),
        }
    }
}
