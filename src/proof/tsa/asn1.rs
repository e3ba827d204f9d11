//! The few ASN.1 pieces no RustCrypto crate has (RFC 5035's ESS signing-certificate-v2
//! attribute), the object identifiers the tokens use, and the signature checks by algorithm.

use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::GeneralNames;
use x509_cert::serial_number::SerialNumber;

pub use der::oid::db::rfc5280::ID_KP_TIME_STAMPING;
pub use der::oid::db::rfc5911::{
    ID_AA_SIGNING_CERTIFICATE_V_2, ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SIGNED_DATA,
};
use der::oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ECDSA_WITH_SHA_512, ID_EC_PUBLIC_KEY, RSA_ENCRYPTION,
    SHA_256_WITH_RSA_ENCRYPTION, SHA_384_WITH_RSA_ENCRYPTION, SHA_512_WITH_RSA_ENCRYPTION,
};
pub use der::oid::db::rfc5912::{ID_SHA_256, ID_SHA_384, ID_SHA_512};

/// id-ct-TSTInfo (RFC 3161 §2.4.2): the content type of a token's encapsulated TSTInfo.
pub const ID_CT_TST_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");

/// `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies SEQUENCE OF
/// PolicyInformation OPTIONAL }` (RFC 5035 §3): names the certificate that signed the token,
/// so the signer cannot be swapped for another certificate with the same key.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SigningCertificateV2 {
    pub certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    pub policies: Option<Vec<PolicyInformation>>,
}

/// `ESSCertIDv2 ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier DEFAULT {algorithm
/// id-sha256}, certHash OCTET STRING, issuerSerial IssuerSerial OPTIONAL }`; the default
/// (SHA-256) is left out when encoding, as DER wants.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct EssCertIdV2 {
    #[asn1(optional = "true")]
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    pub cert_hash: OctetString,
    #[asn1(optional = "true")]
    pub issuer_serial: Option<IssuerSerial>,
}

/// `IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber CertificateSerialNumber }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct IssuerSerial {
    pub issuer: GeneralNames,
    pub serial_number: SerialNumber,
}

/// The digests a token or certificate may be signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            ID_SHA_256 => Some(Self::Sha256),
            ID_SHA_384 => Some(Self::Sha384),
            ID_SHA_512 => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

enum KeyKind {
    Ecdsa,
    Rsa,
}

/// Which key and digest `algorithm` names. CMS signers may name only the key algorithm
/// (OpenSSL writes rsaEncryption), then the digest is the signer's `digest` algorithm.
fn signature_kind(
    algorithm: &ObjectIdentifier,
    digest: Option<&ObjectIdentifier>,
) -> Result<(KeyKind, Hash), String> {
    let from_digest = || {
        digest
            .and_then(Hash::from_oid)
            .ok_or_else(|| format!("unsupported digest algorithm {digest:?}"))
    };
    Ok(match *algorithm {
        ECDSA_WITH_SHA_256 => (KeyKind::Ecdsa, Hash::Sha256),
        ECDSA_WITH_SHA_384 => (KeyKind::Ecdsa, Hash::Sha384),
        ECDSA_WITH_SHA_512 => (KeyKind::Ecdsa, Hash::Sha512),
        SHA_256_WITH_RSA_ENCRYPTION => (KeyKind::Rsa, Hash::Sha256),
        SHA_384_WITH_RSA_ENCRYPTION => (KeyKind::Rsa, Hash::Sha384),
        SHA_512_WITH_RSA_ENCRYPTION => (KeyKind::Rsa, Hash::Sha512),
        RSA_ENCRYPTION => (KeyKind::Rsa, from_digest()?),
        ID_EC_PUBLIC_KEY => (KeyKind::Ecdsa, from_digest()?),
        other => return Err(format!("unsupported signature algorithm {other}")),
    })
}

/// Checks `signature` over `message` with the key `spki`, by `algorithm` (and the CMS
/// signer's `digest` algorithm when `algorithm` names only the key type).
pub fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    algorithm: &AlgorithmIdentifierOwned,
    digest: Option<&ObjectIdentifier>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let (kind, hash) = signature_kind(&algorithm.oid, digest)?;
    let spki_der = spki.to_der().map_err(|e| e.to_string())?;
    let spki_ref = spki::SubjectPublicKeyInfoRef::from_der(&spki_der).map_err(|e| e.to_string())?;
    match kind {
        KeyKind::Ecdsa => {
            let key = p256::ecdsa::VerifyingKey::try_from(spki_ref)
                .map_err(|e| format!("not a P-256 public key: {e}"))?;
            let signature = p256::ecdsa::DerSignature::from_bytes(signature)
                .map_err(|e| format!("not a DER ECDSA signature: {e}"))?;
            key.verify_prehash(&hash.digest(message), &signature)
                .map_err(|_| "the ECDSA signature does not match".to_string())
        }
        KeyKind::Rsa => verify_rsa(spki_ref, hash, message, signature),
    }
}

fn verify_rsa(
    spki: spki::SubjectPublicKeyInfoRef<'_>,
    hash: Hash,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;
    let key = rsa::RsaPublicKey::try_from(spki).map_err(|e| format!("not an RSA key: {e}"))?;
    let signature =
        Signature::try_from(signature).map_err(|e| format!("not an RSA signature: {e}"))?;
    let checked = match hash {
        Hash::Sha256 => VerifyingKey::<sha2::Sha256>::new(key).verify(message, &signature),
        Hash::Sha384 => VerifyingKey::<sha2::Sha384>::new(key).verify(message, &signature),
        Hash::Sha512 => VerifyingKey::<sha2::Sha512>::new(key).verify(message, &signature),
    };
    checked.map_err(|_| "the RSA signature does not match".to_string())
}

/// Checks that `issuer`'s key signed `certificate`.
pub fn verify_certificate_signature(
    certificate: &Certificate,
    issuer: &Certificate,
) -> Result<(), String> {
    let tbs = certificate
        .tbs_certificate
        .to_der()
        .map_err(|e| e.to_string())?;
    verify_signature(
        &issuer.tbs_certificate.subject_public_key_info,
        &certificate.signature_algorithm,
        None,
        &tbs,
        certificate.signature.raw_bytes(),
    )
}

/// TSTInfo as `x509_tsp::TstInfo` has it, but with a [`GenTime`], so tokens whose genTime
/// carries fractions of a second (as RFC 3161 §2.4.2 allows and many TSAs write) are read.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TstInfo {
    pub version: x509_tsp::TspVersion,
    pub policy: ObjectIdentifier,
    pub message_imprint: x509_tsp::MessageImprint,
    pub serial_number: der::asn1::Int,
    pub gen_time: GenTime,
    #[asn1(optional = "true")]
    pub accuracy: Option<x509_tsp::Accuracy>,
    #[asn1(default = "Default::default")]
    pub ordering: bool,
    #[asn1(optional = "true")]
    pub nonce: Option<der::asn1::Int>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub tsa: Option<x509_cert::ext::pkix::name::GeneralName>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub extensions: Option<x509_cert::ext::Extensions>,
}

/// A GeneralizedTime `YYYYMMDDhhmmss[.f…]Z`: der's own type refuses the fraction RFC 3161
/// allows in genTime. Keeps the value's bytes as read, to encode them back unchanged.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct GenTime {
    text: String,
    since_epoch: std::time::Duration,
}

impl GenTime {
    /// Time since the Unix epoch, to the nanosecond (finer fractions are cut).
    pub fn since_epoch(&self) -> std::time::Duration {
        self.since_epoch
    }

    fn parse(text: &str) -> Option<std::time::Duration> {
        let text = text.strip_suffix('Z')?;
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.len() != 14 || !digits(whole) || !digits(fraction) {
            return None;
        }
        let n = |at: usize| whole[at..at + 2].parse::<u8>().ok();
        let year = whole[..4].parse::<u16>().ok()?;
        let time = der::DateTime::new(year, n(4)?, n(6)?, n(8)?, n(10)?, n(12)?).ok()?;
        let nanos: u32 = format!("{fraction:0<9}")[..9].parse().ok()?;
        Some(time.unix_duration() + std::time::Duration::from_nanos(nanos.into()))
    }
}

impl der::FixedTag for GenTime {
    const TAG: der::Tag = der::Tag::GeneralizedTime;
}

impl<'a> der::DecodeValue<'a> for GenTime {
    fn decode_value<R: der::Reader<'a>>(reader: &mut R, header: der::Header) -> der::Result<Self> {
        let bytes = reader.read_vec(header.length)?;
        let text = String::from_utf8(bytes).map_err(|_| der::Tag::GeneralizedTime.value_error())?;
        let since_epoch = Self::parse(&text).ok_or(der::Tag::GeneralizedTime.value_error())?;
        Ok(Self { text, since_epoch })
    }
}

impl der::EncodeValue for GenTime {
    fn value_len(&self) -> der::Result<der::Length> {
        der::Length::try_from(self.text.len())
    }

    fn encode_value(&self, writer: &mut impl der::Writer) -> der::Result<()> {
        writer.write(self.text.as_bytes())
    }
}
