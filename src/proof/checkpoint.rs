//! Checkpoints: what the log looked like after each manifest, in C2SP's `tlog-checkpoint`
//! format as a signed note (C2SP `signed-note`), so that any checkpoint tooling reads it:
//!
//! ```text
//! callvault/acme                        origin: the log, one per account
//! 1042                                  tree size
//! 8j3vM1…=                              root hash, base64
//! manifest 7 sha256:3f1e…               extension: the manifest this checkpoint follows
//!                                       (blank line)
//! — acme-log AbCdEf…=                   signature line(s): key name, base64(key id || sig)
//! ```
//!
//! The signed text is everything up to and including the newline before the blank line.
//! A checkpoint written without a key is that text alone (no blank line, no signatures):
//! still a statement of the tree, which the time-stamp then dates, but not signed by the
//! operator (`status` counts them).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::keys::{SigningKey, VerifierKey};
use super::merkle::Hash;

/// A checkpoint's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The manifest after whose lines the tree has this size: its seq and SHA-256 (hex).
    pub manifest: Option<(i64, String)>,
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    pub signature: [u8; 64],
}

/// A checkpoint as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The signed text (the checkpoint's lines, each ending in a newline).
    pub body: String,
    pub signatures: Vec<NoteSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a checkpoint: {0}")]
    Malformed(String),
    #[error("the checkpoint is not signed")]
    Unsigned,
    #[error(
        "the checkpoint's signature by {name} does not verify: it was altered, or signed by another key of that name"
    )]
    BadSignature { name: String },
    #[error("the checkpoint is signed by {names}, none of them a key given to check it with")]
    UnknownKey { names: String },
}

/// The origin line of an account's log.
pub fn origin(account: &str) -> String {
    format!("callvault/{account}")
}

impl Checkpoint {
    /// The signed text.
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        if let Some((seq, sha256)) = &self.manifest {
            body.push_str(&format!("manifest {seq} sha256:{sha256}\n"));
        }
        body
    }

    /// The checkpoint file: the body, signed by `key` when there is one.
    pub fn to_note(&self, key: Option<&SigningKey>) -> String {
        let body = self.body();
        let Some(key) = key else {
            return body;
        };
        let sig = key.sign(body.as_bytes());
        let id = key.verifier().id();
        let blob = B64.encode([&id[..], &sig[..]].concat());
        format!("{body}\n\u{2014} {} {blob}\n", key.name())
    }
}

fn malformed(why: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed(why.into())
}

impl SignedCheckpoint {
    /// Parses a checkpoint file (signed or not).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let (body, sigs) = match text.find("\n\n") {
            Some(at) => (&text[..=at], &text[at + 2..]),
            None => (text, ""),
        };
        if !body.ends_with('\n') {
            return Err(malformed("it does not end in a newline"));
        }
        let mut lines = body.lines();
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| malformed("no origin line"))?;
        let size = lines
            .next()
            .and_then(|l| l.parse::<u64>().ok())
            .ok_or_else(|| malformed("the second line is not a tree size"))?;
        let root: Hash = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| malformed("the third line is not a base64 SHA-256 root hash"))?;
        let mut manifest = None;
        for line in lines {
            if let Some(rest) = line.strip_prefix("manifest ") {
                let (seq, sha) = rest
                    .split_once(" sha256:")
                    .and_then(|(s, h)| Some((s.parse().ok()?, h.to_owned())))
                    .ok_or_else(|| malformed(format!("bad manifest line {line:?}")))?;
                manifest = Some((seq, sha));
            }
        }
        let signatures = sigs
            .lines()
            .filter(|l| !l.is_empty())
            .map(parse_signature)
            .collect::<Result<_, _>>()?;
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            manifest,
        };
        Ok(Self {
            checkpoint,
            body: body.to_owned(),
            signatures,
        })
    }

    /// Checks the signatures against `keys`: the key that verifies it; an error naming
    /// what failed when none does.
    pub fn verify<'k>(&self, keys: &'k [VerifierKey]) -> Result<&'k VerifierKey, CheckpointError> {
        if self.signatures.is_empty() {
            return Err(CheckpointError::Unsigned);
        }
        for sig in &self.signatures {
            let known = keys
                .iter()
                .find(|k| k.name() == sig.name && k.id() == sig.key_id);
            if let Some(key) = known {
                return if key.verify(self.body.as_bytes(), &sig.signature) {
                    Ok(key)
                } else {
                    Err(CheckpointError::BadSignature {
                        name: sig.name.clone(),
                    })
                };
            }
        }
        let names = self
            .signatures
            .iter()
            .map(|s| format!("{}+{}", s.name, hex::encode(s.key_id)))
            .collect::<Vec<_>>()
            .join(", ");
        Err(CheckpointError::UnknownKey { names })
    }
}

fn parse_signature(line: &str) -> Result<NoteSignature, CheckpointError> {
    let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
        malformed(format!(
            "a signature line must start with an em dash: {line:?}"
        ))
    })?;
    let (name, blob) = rest
        .split_once(' ')
        .ok_or_else(|| malformed("a signature line is `— NAME SIGNATURE`"))?;
    let raw = B64
        .decode(blob)
        .map_err(|_| malformed("a signature is not base64"))?;
    if raw.len() != 68 {
        return Err(malformed("an ed25519 signature line holds 4 + 64 bytes"));
    }
    let mut key_id = [0u8; 4];
    key_id.copy_from_slice(&raw[..4]);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&raw[4..]);
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::merkle::leaf_hash;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: origin("acme"),
            size: 3,
            root: leaf_hash(b"x"),
            manifest: Some((2, "ab".repeat(32))),
        }
    }

    #[test]
    fn a_signed_checkpoint_reads_back_and_verifies() {
        let key = SigningKey::generate("acme-log").unwrap();
        let text = checkpoint().to_note(Some(&key));
        assert!(text.contains("\n\n\u{2014} acme-log "), "{text}");
        let read = SignedCheckpoint::parse(&text).unwrap();
        assert_eq!(read.checkpoint, checkpoint());
        assert_eq!(read.verify(&[key.verifier()]).unwrap(), &key.verifier());
        let other = SigningKey::generate("other").unwrap();
        assert!(matches!(
            read.verify(&[other.verifier()]),
            Err(CheckpointError::UnknownKey { .. })
        ));
        let tampered = SignedCheckpoint::parse(&text.replacen("\n3\n", "\n4\n", 1)).unwrap();
        assert_eq!(
            tampered.verify(&[key.verifier()]),
            Err(CheckpointError::BadSignature {
                name: "acme-log".into()
            })
        );
    }

    #[test]
    fn an_unsigned_checkpoint_is_its_body() {
        let text = checkpoint().to_note(None);
        assert_eq!(text, checkpoint().body());
        let read = SignedCheckpoint::parse(&text).unwrap();
        assert_eq!(read.checkpoint, checkpoint());
        assert_eq!(read.verify(&[]), Err(CheckpointError::Unsigned));
        assert!(SignedCheckpoint::parse("acme\nnot a size\nxx\n").is_err());
    }
}
