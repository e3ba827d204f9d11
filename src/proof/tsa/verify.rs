//! Checking a token the way `openssl ts -verify` does: what it says (status, imprint, nonce),
//! that its signer signed it, that the signer may sign time stamps, and that the signer's
//! chain ends in a root the operator trusts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cmpv2::status::PkiStatus;
use cms::cert::CertificateChoices;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectKeyIdentifier};
use x509_tsp::TimeStampResp;

use super::asn1::{self, Hash, SigningCertificateV2, TstInfo};
use super::{Stamp, TokenError, TrustRoots, certificates_pem};

/// How many certificates above the signer a chain may have before it is given up on.
const MAX_CHAIN: usize = 8;

/// A token taken apart: the signed data, its one signer and the TSTInfo it signs.
struct Token {
    signed_data: SignedData,
    content: Vec<u8>,
    tst_info: TstInfo,
}

fn malformed(what: &str) -> impl Fn(der::Error) -> TokenError + '_ {
    move |e| TokenError::Malformed(format!("{what}: {e}"))
}

impl Token {
    fn parse(der: &[u8]) -> Result<Self, TokenError> {
        let response = TimeStampResp::from_der(der).map_err(malformed("not a TimeStampResp"))?;
        let status = response.status.status;
        if !matches!(status, PkiStatus::Accepted | PkiStatus::GrantedWithMods) {
            let text = response.status.status_string.iter().flatten();
            return Err(TokenError::NotGranted {
                status: format!("{status:?}"),
                text: text.map(|t| format!(": {}", t.as_str())).collect(),
            });
        }
        let Some(content_info) = response.time_stamp_token else {
            return Err(TokenError::Malformed(
                "a granted response without a token".into(),
            ));
        };
        if content_info.content_type != asn1::ID_SIGNED_DATA {
            return Err(TokenError::Malformed(format!(
                "the token is a {}, not a CMS SignedData",
                content_info.content_type
            )));
        }
        let signed_data: SignedData = content_info
            .content
            .decode_as()
            .map_err(malformed("the token is not a CMS SignedData"))?;
        let encap = &signed_data.encap_content_info;
        if encap.econtent_type != asn1::ID_CT_TST_INFO {
            return Err(TokenError::WrongContentType(
                encap.econtent_type.to_string(),
            ));
        }
        let econtent = encap
            .econtent
            .as_ref()
            .ok_or_else(|| TokenError::Malformed("the token's SignedData has no content".into()))?;
        let content = econtent.value().to_vec();
        let tst_info =
            TstInfo::from_der(&content).map_err(malformed("the content is not a TSTInfo"))?;
        Ok(Self {
            signed_data,
            content,
            tst_info,
        })
    }

    fn certificates(&self) -> Vec<Certificate> {
        let set = self
            .signed_data
            .certificates
            .iter()
            .flat_map(|s| s.0.iter());
        set.filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c.clone()),
            CertificateChoices::Other(_) => None,
        })
        .collect()
    }

    fn signer_info(&self) -> Result<&SignerInfo, TokenError> {
        let mut infos = self.signed_data.signer_infos.0.iter();
        match (infos.next(), infos.next()) {
            (Some(info), None) => Ok(info),
            _ => Err(TokenError::Malformed(
                "a token must have exactly one signer".into(),
            )),
        }
    }
}

/// Checks a token (DER TimeStampResp) for `imprint`, its nonce when `nonce` is given, and its
/// chain when `roots` holds any certificates; see the module doc for what is checked.
pub fn verify_token(
    token: &[u8],
    imprint: &[u8; 32],
    nonce: Option<&[u8]>,
    roots: Option<&TrustRoots>,
) -> Result<Stamp, TokenError> {
    let parsed = Token::parse(token)?;
    check_what_it_says(&parsed.tst_info, imprint, nonce)?;
    let certificates = parsed.certificates();
    let info = parsed.signer_info()?;
    let signer = find_signer(&certificates, &info.sid)?;
    check_signer_info(info, signer, &parsed.content)?;
    check_timestamping(signer)?;
    let gen_time = parsed.tst_info.gen_time.since_epoch();
    check_valid_at(signer, gen_time)?;
    let roots = roots.filter(|r| !r.is_empty());
    if let Some(roots) = roots {
        check_chain(signer, &certificates, roots, gen_time)?;
    }
    Ok(Stamp {
        token: token.to_vec(),
        gen_time: to_chrono(gen_time),
        tsa: signer.tbs_certificate.subject.to_string(),
        // The number, without the zero byte DER puts before a high first bit.
        serial: hex::encode(strip_sign_byte(parsed.tst_info.serial_number.as_bytes())),
        chain_checked: roots.is_some(),
    })
}

/// The certificates a token carries, as PEM (for a bundle's reader).
pub fn token_certificates_pem(token: &[u8]) -> Result<String, TokenError> {
    Ok(certificates_pem(&Token::parse(token)?.certificates()))
}

fn to_chrono(since_epoch: Duration) -> DateTime<Utc> {
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    DateTime::from_timestamp(secs, since_epoch.subsec_nanos()).unwrap_or_default()
}

fn check_what_it_says(
    tst: &TstInfo,
    imprint: &[u8; 32],
    nonce: Option<&[u8]>,
) -> Result<(), TokenError> {
    if tst.message_imprint.hash_algorithm.oid != asn1::ID_SHA_256 {
        return Err(TokenError::NotSha256);
    }
    let found = tst.message_imprint.hashed_message.as_bytes();
    if found != imprint {
        return Err(TokenError::ImprintMismatch {
            expected: format!("sha256:{}", hex::encode(imprint)),
            found: format!("sha256:{}", hex::encode(found)),
        });
    }
    match nonce {
        Some(nonce) if tst.nonce.as_ref().map(|n| n.as_bytes()) != Some(nonce) => {
            Err(TokenError::NonceMismatch)
        }
        _ => Ok(()),
    }
}

fn find_signer<'c>(
    certificates: &'c [Certificate],
    sid: &SignerIdentifier,
) -> Result<&'c Certificate, TokenError> {
    let matches = |c: &&Certificate| match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => {
            c.tbs_certificate.issuer == id.issuer
                && c.tbs_certificate.serial_number == id.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            matches!(c.tbs_certificate.get::<SubjectKeyIdentifier>(), Ok(Some((_, s))) if &s == ski)
        }
    };
    certificates
        .iter()
        .find(matches)
        .ok_or(TokenError::MissingSignerCertificate)
}

/// The signed attributes name the content type and digest of the TSTInfo (and, when there,
/// the signer's certificate), and the signer's key signed them.
fn check_signer_info(
    info: &SignerInfo,
    signer: &Certificate,
    content: &[u8],
) -> Result<(), TokenError> {
    let attrs = info.signed_attrs.as_ref().ok_or_else(|| {
        TokenError::Malformed("the token's signer has no signed attributes".into())
    })?;
    let attr = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.get(0))
    };
    let content_type: ObjectIdentifier = attr(asn1::ID_CONTENT_TYPE)
        .ok_or_else(|| TokenError::Malformed("no content-type attribute".into()))?
        .decode_as()
        .map_err(malformed("the content-type attribute"))?;
    if content_type != asn1::ID_CT_TST_INFO {
        return Err(TokenError::WrongContentType(content_type.to_string()));
    }
    let digest: OctetString = attr(asn1::ID_MESSAGE_DIGEST)
        .ok_or_else(|| TokenError::Malformed("no message-digest attribute".into()))?
        .decode_as()
        .map_err(malformed("the message-digest attribute"))?;
    let hash = Hash::from_oid(&info.digest_alg.oid).ok_or_else(|| {
        TokenError::BadSignature(format!("unsupported digest {}", info.digest_alg.oid))
    })?;
    if digest.as_bytes() != hash.digest(content) {
        return Err(TokenError::MessageDigestMismatch);
    }
    if let Some(ess) = attr(asn1::ID_AA_SIGNING_CERTIFICATE_V_2) {
        check_signing_certificate(ess, signer)?;
    }
    let signed = attrs.to_der().map_err(malformed("the signed attributes"))?;
    asn1::verify_signature(
        &signer.tbs_certificate.subject_public_key_info,
        &info.signature_algorithm,
        Some(&info.digest_alg.oid),
        &signed,
        info.signature.as_bytes(),
    )
    .map_err(TokenError::BadSignature)
}

/// The ESS signing-certificate-v2 attribute's first entry is the signer's certificate.
fn check_signing_certificate(ess: &der::Any, signer: &Certificate) -> Result<(), TokenError> {
    let ess: SigningCertificateV2 = ess
        .decode_as()
        .map_err(malformed("the signing-certificate-v2 attribute"))?;
    let Some(first) = ess.certs.first() else {
        return Err(TokenError::Malformed(
            "an empty signing-certificate-v2 attribute".into(),
        ));
    };
    let oid = first
        .hash_algorithm
        .as_ref()
        .map_or(asn1::ID_SHA_256, |a| a.oid);
    let Some(hash) = Hash::from_oid(&oid) else {
        return Ok(()); // a digest we cannot compute: the signature check still binds the key
    };
    let der = signer
        .to_der()
        .map_err(malformed("the signer certificate"))?;
    if first.cert_hash.as_bytes() != hash.digest(&der) {
        return Err(TokenError::SignerCertificateMismatch);
    }
    Ok(())
}

/// RFC 3161 §2.3: the signer's certificate has exactly one extendedKeyUsage, timeStamping,
/// marked critical (OpenSSL refuses anything else too).
fn check_timestamping(signer: &Certificate) -> Result<(), TokenError> {
    match signer.tbs_certificate.get::<ExtendedKeyUsage>() {
        Ok(Some((true, eku))) if eku.0 == [asn1::ID_KP_TIME_STAMPING] => Ok(()),
        _ => Err(TokenError::NotTimestampingCertificate),
    }
}

fn check_valid_at(certificate: &Certificate, at: Duration) -> Result<(), TokenError> {
    let validity = &certificate.tbs_certificate.validity;
    let (from, to) = (
        validity.not_before.to_unix_duration(),
        validity.not_after.to_unix_duration(),
    );
    if from <= at && at <= to {
        return Ok(());
    }
    Err(TokenError::CertificateNotValidAt(format!(
        "the certificate {} is valid from {} to {}, not at the token's time {}",
        certificate.tbs_certificate.subject,
        to_chrono(from).to_rfc3339(),
        to_chrono(to).to_rfc3339(),
        to_chrono(at).to_rfc3339()
    )))
}

/// Walks from the signer up through the token's certificates (each a CA that signed the one
/// below it) until a trusted root is the certificate itself or its issuer.
fn check_chain(
    signer: &Certificate,
    carried: &[Certificate],
    roots: &TrustRoots,
    at: Duration,
) -> Result<(), TokenError> {
    let mut current = signer;
    for _ in 0..MAX_CHAIN {
        if roots.certificates().contains(current) {
            return Ok(());
        }
        if let Some(root) = issuer_among(current, roots.certificates(), false) {
            return check_valid_at(root, at);
        }
        let Some(issuer) = issuer_among(current, carried, true) else {
            break;
        };
        check_valid_at(issuer, at)?;
        current = issuer;
    }
    Err(TokenError::UntrustedChain(
        current.tbs_certificate.issuer.to_string(),
    ))
}

/// The certificate among `candidates` that issued and signed `certificate`; an intermediate
/// (`must_be_ca`) must also be a CA, a trusted root is trusted as it is.
fn issuer_among<'c>(
    certificate: &Certificate,
    candidates: &'c [Certificate],
    must_be_ca: bool,
) -> Option<&'c Certificate> {
    candidates.iter().find(|c| {
        *c != certificate
            && c.tbs_certificate.subject == certificate.tbs_certificate.issuer
            && (!must_be_ca || is_ca(c))
            && asn1::verify_certificate_signature(certificate, c).is_ok()
    })
}

fn is_ca(certificate: &Certificate) -> bool {
    matches!(certificate.tbs_certificate.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca)
}

/// A DER integer's bytes without the leading zero that only keeps it positive.
fn strip_sign_byte(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0, rest @ ..] if rest.first().is_some_and(|b| b & 0x80 != 0) => rest,
        _ => bytes,
    }
}
