//! The operator's signing key for checkpoints: ed25519, in the text formats of Go's signed
//! notes (`golang.org/x/mod/sumdb/note`, which C2SP's signed-note spec writes down), so that
//! a third party checks a checkpoint with tools that already exist:
//! - private key file: `PRIVATE+KEY+<name>+<key id, 8 hex>+<base64(0x01 || seed)>`, mode 0600;
//! - public key file (`FILE.pub`): `<name>+<key id>+<base64(0x01 || public key)>`.
//!
//! The key id is the first four bytes of `SHA-256(name || "\n" || 0x01 || public key)`:
//! every signature line names it, so checkpoints signed by an older key stay checkable
//! with that key's public file (the bucket keeps every public key it was given, under
//! `<manifests prefix>/keys/`).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The algorithm byte signed notes put before an ed25519 key.
const ED25519: u8 = 0x01;
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the signing key file {path} can be read by others (mode {mode:o}): run `chmod 600 {path}` (a key others can read signs for anyone)"
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error(
        "{path} is not a callvault signing key (expected PRIVATE+KEY+NAME+ID+KEY, as `callvault keys generate` writes)"
    )]
    NotPrivate { path: PathBuf },
    #[error("{what} is not a signed-note public key (expected NAME+ID+KEY): {why}")]
    NotPublic { what: String, why: String },
    #[error("a key name must be non-empty, without spaces or '+': {0:?}")]
    BadName(String),
    #[error(
        "{path} already exists: choose another file, or remove it first (a key is never overwritten)"
    )]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A key's public half, as a checkpoint's reader holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: ed25519_dalek::VerifyingKey,
}

/// The operator's private key; its seed never appears in logs, errors or output.
#[derive(Clone)]
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("id", &hex::encode(self.verifier().id))
            .finish_non_exhaustive()
    }
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(KeyError::BadName(name.into()));
    }
    Ok(())
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// `name+id+base64(0x01 || key)`, split and checked.
fn split_key(text: &str) -> Result<(String, [u8; 4], [u8; 32]), String> {
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not three '+'-separated parts".into());
    };
    check_name(name).map_err(|e| e.to_string())?;
    let id: [u8; 4] = hex::decode(id)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or("the key id is not 8 hex digits")?;
    let raw = B64
        .decode(key)
        .map_err(|e| format!("the key is not base64: {e}"))?;
    let Some((&ED25519, key)) = raw.split_first() else {
        return Err("not an ed25519 key (algorithm byte 0x01)".into());
    };
    let key: [u8; 32] = key.try_into().map_err(|_| "an ed25519 key is 32 bytes")?;
    Ok((name.to_owned(), id, key))
}

impl SigningKey {
    /// A new key named `name`.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        Ok(Self {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a private key file, refusing one that others can read.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(read_err)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::Readable {
                    path: path.to_owned(),
                    mode: mode & 0o777,
                });
            }
        }
        let text = SecretString::from(std::fs::read_to_string(path).map_err(read_err)?);
        Self::parse(text.expose_secret()).ok_or_else(|| KeyError::NotPrivate {
            path: path.to_owned(),
        })
    }

    fn parse(text: &str) -> Option<Self> {
        let (name, id, seed) = split_key(text.trim().strip_prefix(PRIVATE_PREFIX)?).ok()?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let parsed = Self { name, key };
        (parsed.verifier().id == id).then_some(parsed)
    }

    /// Writes the private key to `path` (mode 0600, never over an existing file) and the
    /// public key to `path.pub`; returns the public key's path.
    pub fn write_new(&self, path: &Path) -> Result<PathBuf, KeyError> {
        let public = PathBuf::from(format!("{}.pub", path.display()));
        for p in [path, public.as_path()] {
            if p.exists() {
                return Err(KeyError::Exists { path: p.to_owned() });
            }
        }
        let private = SecretString::from(format!(
            "{PRIVATE_PREFIX}{}+{}+{}\n",
            self.name,
            hex::encode(self.verifier().id),
            B64.encode([&[ED25519][..], self.key.as_bytes()].concat())
        ));
        write_file(path, private.expose_secret().as_bytes(), 0o600)?;
        write_file(
            &public,
            format!("{}\n", self.verifier().to_text()).as_bytes(),
            0o644,
        )?;
        Ok(public)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> VerifierKey {
        let key = self.key.verifying_key();
        VerifierKey {
            id: key_id(&self.name, key.as_bytes()),
            name: self.name.clone(),
            key,
        }
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let write_err = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let _ = mode;
    let mut file = options.open(path).map_err(write_err)?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

impl VerifierKey {
    /// Parses `name+id+base64key`, checking the id against the name and key.
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let bad = |why: String| KeyError::NotPublic {
            what: what.to_owned(),
            why,
        };
        let (name, id, raw) = split_key(text).map_err(bad)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map_err(|e| bad(format!("not an ed25519 point: {e}")))?;
        if key_id(&name, &raw) != id {
            return Err(bad("its key id does not match its name and key".into()));
        }
        Ok(Self { name, id, key })
    }

    /// Reads a public key file (`FILE.pub`, or a bundle's copy); one key a line.
    pub fn read_file(path: &Path) -> Result<Vec<Self>, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Self::parse(l, &path.display().to_string()))
            .collect()
    }

    /// `name+id+base64(0x01 || key)`.
    pub fn to_text(&self) -> String {
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode([&[ED25519][..], self.key.as_bytes()].concat())
        )
    }

    /// The key as PEM SubjectPublicKeyInfo, for `openssl pkeyutl -verify`.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The file name the bucket and bundles keep it under: `NAME+ID.pub`.
    pub fn file_name(&self) -> String {
        format!("{}+{}.pub", self.name, hex::encode(self.id))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_round_trips_through_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let key = SigningKey::generate("acme-log").unwrap();
        let public = key.write_new(&path).unwrap();
        let again = SigningKey::read_file(&path).unwrap();
        assert_eq!(again.verifier(), key.verifier());
        let verifiers = VerifierKey::read_file(&public).unwrap();
        assert_eq!(verifiers, [key.verifier()]);
        let sig = again.sign(b"checkpoint");
        assert!(verifiers[0].verify(b"checkpoint", &sig));
        assert!(!verifiers[0].verify(b"checkpoinT", &sig));
        assert!(matches!(key.write_new(&path), Err(KeyError::Exists { .. })));
        assert!(!format!("{again:?}").contains(&B64.encode(again.key.as_bytes())));
        assert!(
            verifiers[0]
                .to_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        SigningKey::generate("log")
            .unwrap()
            .write_new(&path)
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::read_file(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_tampered_public_key_is_refused() {
        let key = SigningKey::generate("log").unwrap().verifier();
        let text = key.to_text().replacen("log+", "log2+", 1);
        assert!(VerifierKey::parse(&text, "test").is_err());
        assert!(SigningKey::generate("bad name").is_err());
    }
}
