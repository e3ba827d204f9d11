//! Steps 5 to 7 of the check: each checkpoint's signature, origin and manifest; its
//! time-stamp tokens; and its consistency with its account's newest checkpoint.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::files::walk;
use super::{BundleProblem, Check};
use crate::export::format::{CHECKPOINTS_DIR, CONSISTENCY, ConsistencyLine};
use crate::proof::checkpoint::{CheckpointError, SignedCheckpoint, origin};
use crate::proof::merkle::{Hash, verify_consistency};
use crate::proof::tsa::verify_token;

/// A checkpoint file as read from the bundle.
pub(crate) struct Loaded {
    pub account: String,
    pub seq: i64,
    pub parsed: SignedCheckpoint,
}

/// `checkpoints/<account>/<seq>.checkpoint` split into account and seq.
fn place(path: &str) -> Option<(String, i64)> {
    let rest = path.strip_prefix(CHECKPOINTS_DIR)?.strip_prefix('/')?;
    let (account, file) = rest.split_once('/')?;
    let seq = file.strip_suffix(".checkpoint")?.parse().ok()?;
    Some((account.to_owned(), seq))
}

pub(super) fn hex_hashes(hashes: &[String]) -> Result<Vec<Hash>, String> {
    hashes
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| format!("{h:?} is not a 32-byte hex hash"))
        })
        .collect()
}

impl Check<'_> {
    /// Steps 5 and 6 for every checkpoint in the bundle.
    pub(super) fn checkpoints(&mut self) {
        let files: Vec<String> = walk(&self.path(CHECKPOINTS_DIR))
            .into_iter()
            .map(|f| format!("{CHECKPOINTS_DIR}/{f}"))
            .collect();
        for file in files.iter().filter(|f| f.ends_with(".checkpoint")) {
            self.counts.checkpoints += 1;
            let loaded = self.checkpoint(file);
            let tokens: Vec<&String> = files
                .iter()
                .filter(|t| t.starts_with(&format!("{file}.")) && t.ends_with(".tsr"))
                .collect();
            self.tokens(file, &tokens);
            self.checkpoints.insert(file.clone(), loaded);
        }
    }

    /// Reads one checkpoint and checks its signature, origin and manifest line.
    fn checkpoint(&mut self, file: &str) -> Option<Loaded> {
        let bad = |why: String| BundleProblem::BadCheckpoint {
            checkpoint: file.to_owned(),
            why,
        };
        let Some((account, seq)) = place(file) else {
            self.problem(bad(
                "its path is not checkpoints/<account>/<seq>.checkpoint".into(),
            ));
            return None;
        };
        let parsed = match std::fs::read_to_string(self.path(file)) {
            Ok(text) => SignedCheckpoint::parse(&text).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(why) => {
                self.problem(bad(why));
                return None;
            }
        };
        self.signature(file, &parsed);
        let expected = origin(&account);
        if parsed.checkpoint.origin != expected {
            self.problem(BundleProblem::WrongOrigin {
                checkpoint: file.to_owned(),
                found: parsed.checkpoint.origin.clone(),
                expected,
            });
        }
        if parsed.checkpoint.manifest.as_ref().map(|m| m.0) != Some(seq) {
            let found = match &parsed.checkpoint.manifest {
                Some((s, _)) => format!("manifest {s}"),
                None => "no manifest".into(),
            };
            self.problem(BundleProblem::WrongManifest {
                checkpoint: file.to_owned(),
                found,
                expected: seq,
            });
        }
        Some(Loaded {
            account,
            seq,
            parsed,
        })
    }

    fn signature(&mut self, file: &str, parsed: &SignedCheckpoint) {
        let checkpoint = file.to_owned();
        let problem = match parsed.verify(&self.keys) {
            Ok(_) => return,
            Err(CheckpointError::Unsigned) => BundleProblem::Unsigned { checkpoint },
            Err(CheckpointError::BadSignature { name }) => {
                BundleProblem::BadSignature { checkpoint, name }
            }
            Err(CheckpointError::UnknownKey { names }) => BundleProblem::UnknownKey {
                checkpoint,
                signers: names,
                source_of_keys: self.keys_said(),
            },
            Err(CheckpointError::Malformed(why)) => {
                BundleProblem::BadCheckpoint { checkpoint, why }
            }
        };
        self.problem(problem);
    }

    /// Step 6: the checkpoint's tokens, over the SHA-256 of its file's bytes.
    fn tokens(&mut self, file: &str, tokens: &[&String]) {
        if tokens.is_empty() {
            return self.problem(BundleProblem::NoToken {
                checkpoint: file.to_owned(),
            });
        }
        let Ok(bytes) = std::fs::read(self.path(file)) else {
            return;
        };
        let imprint: [u8; 32] = Sha256::digest(&bytes).into();
        for token in tokens {
            self.counts.tokens += 1;
            let result = std::fs::read(self.path(token))
                .map_err(|e| crate::proof::tsa::TokenError::Malformed(e.to_string()))
                .and_then(|der| verify_token(&der, &imprint, None, self.roots.as_ref()));
            if let Err(error) = result {
                self.problem(BundleProblem::Token {
                    token: (*token).clone(),
                    error,
                });
            }
        }
    }
}

impl Check<'_> {
    /// Step 7: every checkpoint but its account's newest has a consistency proof to it.
    pub(super) fn consistency(&mut self) {
        let mut newest: BTreeMap<String, (i64, String)> = BTreeMap::new();
        for (file, loaded) in &self.checkpoints {
            let Some(l) = loaded else { continue };
            let entry = newest
                .entry(l.account.clone())
                .or_insert((l.seq, file.clone()));
            if l.seq > entry.0 {
                *entry = (l.seq, file.clone());
            }
        }
        let mut proved = std::collections::BTreeSet::new();
        let text = std::fs::read_to_string(self.path(CONSISTENCY)).unwrap_or_default();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<ConsistencyLine>(line) {
                Ok(c) => {
                    self.counts.consistency_proofs += 1;
                    if self.consistency_line(&c) {
                        proved.insert((c.from.clone(), c.to.clone()));
                    }
                }
                Err(e) => self.problem(BundleProblem::Unreadable {
                    file: format!("{CONSISTENCY} line {}", n + 1),
                    why: e.to_string(),
                }),
            }
        }
        let files: Vec<(String, String)> = (self.checkpoints.iter())
            .filter_map(|(file, l)| {
                Some((file.clone(), newest.get(&l.as_ref()?.account)?.1.clone()))
            })
            .filter(|(file, newest)| file != newest)
            .collect();
        for (checkpoint, newest) in files {
            if !proved.contains(&(checkpoint.clone(), newest.clone()))
                && !self.reported(&checkpoint)
            {
                self.problem(BundleProblem::NoConsistencyProof { checkpoint, newest });
            }
        }
    }

    /// Whether a consistency problem was already reported for `from`.
    fn reported(&self, from: &str) -> bool {
        self.problems.iter().any(|p| {
            matches!(p, BundleProblem::NotConsistent { from: f, .. } if f == from)
                || matches!(p, BundleProblem::CheckpointMissing { checkpoint, .. } if checkpoint == from)
        })
    }

    /// One line of `consistency.jsonl`; true when it holds.
    fn consistency_line(&mut self, c: &ConsistencyLine) -> bool {
        let not_consistent = |why: String| BundleProblem::NotConsistent {
            from: c.from.clone(),
            to: c.to.clone(),
            why,
        };
        let mut ends = Vec::new();
        for file in [&c.from, &c.to] {
            match self.checkpoints.get(file) {
                Some(Some(l)) => ends.push((l.parsed.checkpoint.size, l.parsed.checkpoint.root)),
                Some(None) => return false,
                None => {
                    self.problem(BundleProblem::CheckpointMissing {
                        checkpoint: file.clone(),
                        referrer: CONSISTENCY.into(),
                    });
                    return false;
                }
            }
        }
        let ((old, old_root), (new, new_root)) = (ends[0], ends[1]);
        if (c.from_size, c.to_size) != (old, new) {
            let why = format!(
                "consistency.jsonl gives sizes {} and {}, the checkpoints {old} and {new}",
                c.from_size, c.to_size
            );
            self.problem(not_consistent(why));
            return false;
        }
        let result = hex_hashes(&c.proof).and_then(|p| {
            verify_consistency(old, new, &old_root, &new_root, &p).map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => true,
            Err(why) => {
                self.problem(not_consistent(why));
                false
            }
        }
    }
}
