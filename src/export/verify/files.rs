//! Step 1 of the check: every file against `SHA256SUMS` (hashed streaming), the sums'
//! signature and time-stamp; and the bundle's own copies of the trust, for a check without
//! `--log-key` / `--tsa-roots`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{BundleProblem, Check};
use crate::export::format::{KEYS_DIR, SUMS, SUMS_SIG, SUMS_TSR, TSA_CERTIFICATES};
use crate::proof::keys::VerifierKey;
use crate::proof::tsa::{TrustRoots, verify_token};

/// SHA-256 (hex) and size of a file, read in chunks.
pub(super) fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Every file under `root`, as bundle paths (`/`-separated), sorted.
pub(super) fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    out
}

/// The public keys under `keys/` (`*.pub`).
pub(super) fn bundle_keys(root: &Path, problems: &mut Vec<BundleProblem>) -> Vec<VerifierKey> {
    let mut keys = Vec::new();
    for file in walk(&root.join(KEYS_DIR)) {
        if !file.ends_with(".pub") {
            continue;
        }
        match VerifierKey::read_file(&root.join(KEYS_DIR).join(&file)) {
            Ok(read) => keys.extend(read),
            Err(e) => problems.push(BundleProblem::Unreadable {
                file: format!("{KEYS_DIR}/{file}"),
                why: e.to_string(),
            }),
        }
    }
    keys
}

/// The certificates of `tsa/certificates.pem`, used as roots.
pub(super) fn bundle_roots(root: &Path, problems: &mut Vec<BundleProblem>) -> Option<TrustRoots> {
    let unreadable = |why: String| BundleProblem::Unreadable {
        file: TSA_CERTIFICATES.into(),
        why,
    };
    match std::fs::read(root.join(TSA_CERTIFICATES)) {
        Ok(pem) => match TrustRoots::from_pem(&pem) {
            Ok(roots) => Some(roots),
            Err(e) => {
                problems.push(unreadable(e.to_string()));
                None
            }
        },
        Err(e) => {
            problems.push(unreadable(e.to_string()));
            None
        }
    }
}

/// `SHA256SUMS` read as path → hex; malformed lines reported.
fn read_sums(text: &str, problems: &mut Vec<BundleProblem>) -> BTreeMap<String, String> {
    let mut sums = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let parsed = line.split_once("  ").filter(|(hex, path)| {
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && !path.is_empty()
        });
        match parsed {
            Some((hex, path)) => {
                sums.insert(path.to_owned(), hex.to_ascii_lowercase());
            }
            None => problems.push(BundleProblem::SumsMalformed { line: n + 1 }),
        }
    }
    sums
}

impl Check<'_> {
    /// Step 1.
    pub(super) fn sums(&mut self) {
        let text = match std::fs::read_to_string(self.path(SUMS)) {
            Ok(text) => text,
            Err(_) => return self.problem(BundleProblem::SumsMissing),
        };
        let sums = read_sums(&text, &mut self.problems);
        let present = walk(self.root);
        self.counts.files = present.len() as u64;
        for file in &present {
            if ![SUMS, SUMS_SIG, SUMS_TSR].contains(&file.as_str()) && !sums.contains_key(file) {
                self.problem(BundleProblem::Unlisted { file: file.clone() });
            }
        }
        for (file, listed) in sums {
            match sha256_file(&self.path(&file)) {
                Ok((found, _)) if found == listed => {}
                Ok((found, _)) => self.problem(BundleProblem::SumMismatch {
                    file,
                    found,
                    listed,
                }),
                Err(_) => self.problem(BundleProblem::ListedMissing { file }),
            }
        }
        self.sums_signature(text.as_bytes());
    }

    /// `SHA256SUMS.sig` and `SHA256SUMS.tsr`, where the bundle has them.
    fn sums_signature(&mut self, sums: &[u8]) {
        if let Ok(sig) = std::fs::read(self.path(SUMS_SIG)) {
            let verified = <[u8; 64]>::try_from(sig.as_slice())
                .is_ok_and(|sig| self.keys.iter().any(|k| k.verify(sums, &sig)));
            if !verified {
                let source_of_keys = self.keys_said();
                self.problem(BundleProblem::SumsSignature { source_of_keys });
            }
        }
        if let Ok(token) = std::fs::read(self.path(SUMS_TSR)) {
            let imprint: [u8; 32] = Sha256::digest(sums).into();
            self.counts.tokens += 1;
            if let Err(error) = verify_token(&token, &imprint, None, self.roots.as_ref()) {
                self.problem(BundleProblem::Token {
                    token: SUMS_TSR.into(),
                    error,
                });
            }
        }
    }
}
