//! RFC 3161 time-stamping: asking an outside time-stamping authority (TSA) to vouch that a
//! digest existed at a time, and checking the tokens it answers with.
//!
//! Why: a checkpoint of the archive's log signed by callvault alone proves nothing about *when*
//! it was made; a token from an independent TSA does, and anyone can check it with
//! `openssl ts -verify` without callvault. So every token is checked here the way OpenSSL
//! checks it (status, imprint, nonce, CMS signature, signed attributes, the signer's
//! extendedKeyUsage, and the chain to roots the operator trusts) before it is kept, and the
//! test authority ([`Authority`]) issues tokens that OpenSSL accepts.
//!
//! Every ASN.1 structure is a RustCrypto type (`x509-tsp`, `cms`, `x509-cert`) or one derived
//! with `der` ([`asn1`]); nothing is encoded by hand. Signatures: ECDSA P-256 and RSA PKCS#1
//! v1.5, each with SHA-256, SHA-384 or SHA-512.

pub mod asn1;
mod authority;
mod client;
mod verify;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use der::asn1::{Any, Int, OctetString, Uint};
use der::{DecodePem, Encode, EncodePem, pem::LineEnding};
use x509_cert::Certificate;
use x509_tsp::{MessageImprint, TimeStampReq, TspVersion};

pub use authority::{Authority, Fault, POLICY};
pub use client::TsaClient;
pub use verify::{token_certificates_pem, verify_token};

/// PEM certificates a TSA's chain must end in (`--tsa-trust FILE`).
#[derive(Clone, Debug, Default)]
pub struct TrustRoots {
    certificates: Vec<Certificate>,
}

impl TrustRoots {
    /// Reads every `CERTIFICATE` block of a PEM file, skipping text between blocks (as
    /// bundles carry); an input without blocks gives no roots.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TokenError> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let text = std::str::from_utf8(pem)
            .map_err(|_| TokenError::Malformed("the trusted roots are not PEM text".into()))?;
        let mut certificates = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(BEGIN) {
            let Some(end) = rest[start..].find(END) else {
                return Err(TokenError::Malformed(
                    "a PEM certificate is not closed".into(),
                ));
            };
            let block = &rest[start..start + end + END.len()];
            let certificate = Certificate::from_pem(block).map_err(|e| {
                TokenError::Malformed(format!("a trusted root is not a certificate: {e}"))
            })?;
            certificates.push(certificate);
            rest = &rest[start + end + END.len()..];
        }
        Ok(Self { certificates })
    }

    pub fn from_pem_file(path: &Path) -> Result<Self, TsaError> {
        let pem = std::fs::read(path).map_err(|source| TsaError::TrustFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|source| TsaError::TrustPem {
            path: path.to_owned(),
            source,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    pub fn to_pem(&self) -> String {
        certificates_pem(&self.certificates)
    }

    pub(crate) fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }

    pub(crate) fn from_certificates(certificates: Vec<Certificate>) -> Self {
        Self { certificates }
    }
}

fn certificates_pem(certificates: &[Certificate]) -> String {
    certificates
        .iter()
        .filter_map(|c| c.to_pem(LineEnding::LF).ok())
        .collect()
}

/// A DER TimeStampReq for a SHA-256 imprint, certReq = true, with a fresh random 64-bit nonce.
#[derive(Clone, Debug)]
pub struct StampRequest {
    pub der: Vec<u8>,
    /// The nonce's big-endian integer bytes as encoded in the request (a leading 0x00 when
    /// its top bit is set), as [`verify_token`] takes it.
    pub nonce: Vec<u8>,
}

/// Builds the request for `imprint` (a SHA-256 digest).
pub fn request(imprint: &[u8; 32]) -> StampRequest {
    let nonce = Int::from(Uint::new(&rand::random::<u64>().to_be_bytes()).expect("8 bytes fit"));
    let request = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: sha256_imprint(imprint),
        req_policy: None,
        nonce: Some(nonce.clone()),
        cert_req: true,
        extensions: None,
    };
    StampRequest {
        der: request
            .to_der()
            .expect("a TimeStampReq of fixed shape encodes"),
        nonce: nonce.as_bytes().to_vec(),
    }
}

pub(crate) fn sha256_imprint(imprint: &[u8; 32]) -> MessageImprint {
    MessageImprint {
        hash_algorithm: spki::AlgorithmIdentifier {
            oid: asn1::ID_SHA_256,
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(imprint.to_vec()).expect("32 bytes fit"),
    }
}

/// A verified token and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The DER TimeStampResp exactly as received.
    pub token: Vec<u8>,
    pub gen_time: DateTime<Utc>,
    /// The TSA certificate's subject, as an RFC 4514 string.
    pub tsa: String,
    /// The token's serial number (TSTInfo serialNumber), in hex.
    pub serial: String,
    /// Whether the signer's chain was checked to a trusted root (false: no roots were given).
    pub chain_checked: bool,
}

/// One variant per way a token fails.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a well-formed RFC 3161 time-stamp response: {0}")]
    Malformed(String),
    #[error("the time-stamping authority did not grant the stamp (status {status}){text}")]
    NotGranted { status: String, text: String },
    #[error("the token stamps a digest other than SHA-256")]
    NotSha256,
    #[error("the token is for another imprint: it stamps {found}, the expected one is {expected}")]
    ImprintMismatch { expected: String, found: String },
    #[error(
        "the token does not echo the request's nonce: it answers another request (or replays an old one)"
    )]
    NonceMismatch,
    #[error(
        "the token does not carry its signer's certificate, so its signature cannot be checked"
    )]
    MissingSignerCertificate,
    #[error("the token's signature does not verify: {0}")]
    BadSignature(String),
    #[error(
        "the token's signed message digest does not match its TSTInfo: the content was altered"
    )]
    MessageDigestMismatch,
    #[error("the token's signed content type is {0}, not id-ct-TSTInfo")]
    WrongContentType(String),
    #[error(
        "the token's signing-certificate attribute names another certificate than the one that signed it"
    )]
    SignerCertificateMismatch,
    #[error(
        "the token's signer certificate is not a time-stamping certificate (it needs a critical extendedKeyUsage of timeStamping only)"
    )]
    NotTimestampingCertificate,
    #[error("the token's signer chain does not end in any of the trusted roots (signed by {0})")]
    UntrustedChain(String),
    #[error("{0}")]
    CertificateNotValidAt(String),
}

/// Asking a TSA failed; the caller logs it and asks again later.
#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    #[error("the time-stamping authority at {url} could not be reached: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the time-stamping authority at {url} refused the request with HTTP {status}")]
    Refused { url: String, status: u16 },
    #[error(
        "the time-stamping authority at {url} answered with a token that does not check: {source}"
    )]
    Token {
        url: String,
        #[source]
        source: TokenError,
    },
    #[error("cannot read the trusted TSA roots {}: {source}", path.display())]
    TrustFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the trusted TSA roots {} are unusable: {source}", path.display())]
    TrustPem {
        path: PathBuf,
        #[source]
        source: TokenError,
    },
}
