//! A request, a token from the test authority, and each way a token is refused.

use chrono::{DateTime, TimeZone, Utc};
use der::{Decode, Encode};
use x509_tsp::{TimeStampReq, TimeStampResp};

use super::*;

const IMPRINT: [u8; 32] = [0xab; 32];

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()
}

/// A request for `IMPRINT`, the authority's token for it, and the request's nonce.
fn issued(authority: &Authority) -> (Vec<u8>, Vec<u8>) {
    let request = request(&IMPRINT);
    (authority.respond(&request.der, at()), request.nonce)
}

#[test]
fn a_token_for_our_request_verifies_and_says_when_and_who() {
    let authority = Authority::generate("unit TSA");
    let (token, nonce) = issued(&authority);

    let stamp = verify_token(
        &token,
        &IMPRINT,
        Some(&nonce),
        Some(&authority.trust_roots()),
    )
    .unwrap();

    assert_eq!(stamp.gen_time, at());
    assert_eq!(stamp.tsa, "CN=unit TSA,O=callvault");
    assert!(stamp.chain_checked);
    assert_eq!(stamp.token, token);
    assert!(
        stamp.serial.len() <= 32 && !stamp.serial.is_empty(),
        "a serial of at most 128 bits: {}",
        stamp.serial
    );
    let unchecked = verify_token(&token, &IMPRINT, None, None).unwrap();
    assert!(!unchecked.chain_checked);
}

#[test]
fn the_request_asks_for_sha256_the_certificate_and_carries_its_nonce() {
    let request = request(&IMPRINT);
    let parsed = TimeStampReq::from_der(&request.der).unwrap();

    assert!(parsed.cert_req);
    assert_eq!(parsed.message_imprint.hash_algorithm.oid, asn1::ID_SHA_256);
    assert_eq!(parsed.message_imprint.hashed_message.as_bytes(), IMPRINT);
    assert_eq!(parsed.nonce.unwrap().as_bytes(), request.nonce);
    assert_ne!(super::request(&IMPRINT).nonce, request.nonce);
}

#[test]
fn trust_roots_go_to_pem_and_back_and_tokens_show_their_certificates() {
    let authority = Authority::generate("unit TSA");
    let roots = TrustRoots::from_pem(authority.root_pem().as_bytes()).unwrap();
    assert_eq!(roots.to_pem(), authority.root_pem());
    assert!(!roots.is_empty());
    assert!(TrustRoots::from_pem(b"").unwrap().is_empty());

    let (token, _) = issued(&authority);
    let carried = token_certificates_pem(&token).unwrap();
    assert_eq!(carried.matches("BEGIN CERTIFICATE").count(), 1);
    assert!(!carried.contains(&authority.root_pem()));
}

#[test]
fn a_token_for_another_imprint_is_refused_naming_both() {
    let authority = Authority::generate("unit TSA");
    let (token, nonce) = issued(&authority);

    let err = verify_token(&token, &[0xcd; 32], Some(&nonce), None).unwrap_err();

    let TokenError::ImprintMismatch { expected, found } = &err else {
        panic!("{err}")
    };
    assert_eq!(expected, &format!("sha256:{}", "cd".repeat(32)));
    assert_eq!(found, &format!("sha256:{}", "ab".repeat(32)));
}

#[test]
fn faults_make_tokens_for_another_imprint_or_nonce() {
    let authority = Authority::generate("unit TSA");
    authority.set_fault(Some(Fault::OtherImprint));
    let (token, nonce) = issued(&authority);
    let err = verify_token(&token, &IMPRINT, Some(&nonce), None).unwrap_err();
    assert!(matches!(err, TokenError::ImprintMismatch { .. }), "{err}");

    authority.set_fault(Some(Fault::WrongNonce));
    let (token, nonce) = issued(&authority);
    assert_eq!(
        verify_token(&token, &IMPRINT, Some(&nonce), None),
        Err(TokenError::NonceMismatch)
    );

    authority.set_fault(None);
    let (token, nonce) = issued(&authority);
    verify_token(&token, &IMPRINT, Some(&nonce), None).unwrap();
}

#[test]
fn a_token_answering_another_request_is_refused_by_its_nonce() {
    let authority = Authority::generate("unit TSA");
    let (token, _) = issued(&authority);
    let other = request(&IMPRINT);

    let err = verify_token(&token, &IMPRINT, Some(&other.nonce), None).unwrap_err();

    assert_eq!(err, TokenError::NonceMismatch);
}

#[test]
fn a_token_from_an_untrusted_authority_is_refused_naming_its_issuer() {
    let trusted = Authority::generate("unit TSA");
    let other = Authority::generate("other");
    let (token, nonce) = issued(&other);

    let err =
        verify_token(&token, &IMPRINT, Some(&nonce), Some(&trusted.trust_roots())).unwrap_err();

    assert_eq!(
        err,
        TokenError::UntrustedChain("CN=other root CA,O=callvault".into())
    );
    assert!(
        err.to_string()
            .contains("does not end in any of the trusted roots"),
        "{err}"
    );
}

/// `token` with the byte at the end of the first occurrence of `part` flipped.
fn flipped_at_end_of(token: &[u8], part: &[u8]) -> Vec<u8> {
    let at = token
        .windows(part.len())
        .position(|w| w == part)
        .expect("part in token");
    let mut token = token.to_vec();
    token[at + part.len() - 1] ^= 0x01;
    token
}

fn signer_info(token: &[u8]) -> cms::signed_data::SignerInfo {
    let response = TimeStampResp::from_der(token).unwrap();
    let signed_data: cms::signed_data::SignedData = response
        .time_stamp_token
        .unwrap()
        .content
        .decode_as()
        .unwrap();
    signed_data.signer_infos.0.get(0).unwrap().clone()
}

#[test]
fn a_flipped_byte_in_the_signature_is_a_bad_signature() {
    let authority = Authority::generate("unit TSA");
    let (token, nonce) = issued(&authority);
    let signature = signer_info(&token).signature.as_bytes().to_vec();

    let err = verify_token(
        &flipped_at_end_of(&token, &signature),
        &IMPRINT,
        Some(&nonce),
        None,
    );

    assert!(matches!(err, Err(TokenError::BadSignature(_))), "{err:?}");
}

#[test]
fn an_altered_tst_info_no_longer_matches_the_signed_digest() {
    let authority = Authority::generate("unit TSA");
    let (token, nonce) = issued(&authority);
    let serial = hex::decode(verify_token(&token, &IMPRINT, None, None).unwrap().serial).unwrap();

    let err = verify_token(
        &flipped_at_end_of(&token, &serial),
        &IMPRINT,
        Some(&nonce),
        None,
    );

    assert_eq!(err, Err(TokenError::MessageDigestMismatch));
}

#[test]
fn a_rejected_request_is_not_granted_and_says_why() {
    let authority = Authority::generate("unit TSA");

    let answer = authority.respond(b"not a request", at());
    let err = verify_token(&answer, &IMPRINT, None, None).unwrap_err();

    let TokenError::NotGranted { status, text } = &err else {
        panic!("{err}")
    };
    assert_eq!(status, "Rejection");
    assert!(text.contains("not a DER TimeStampReq"), "{text}");
}

#[test]
fn a_token_without_its_signer_certificate_cannot_be_checked() {
    let authority = Authority::generate("unit TSA");
    let mut without = TimeStampReq::from_der(&request(&IMPRINT).der).unwrap();
    without.cert_req = false;

    let token = authority.respond(&without.to_der().unwrap(), at());

    let err = verify_token(&token, &IMPRINT, None, None).unwrap_err();
    assert_eq!(err, TokenError::MissingSignerCertificate);
}

#[test]
fn a_signer_without_the_timestamping_usage_is_refused() {
    let authority = Authority::issue("no usage", false);
    let (token, nonce) = issued(&authority);

    let err = verify_token(&token, &IMPRINT, Some(&nonce), None).unwrap_err();

    assert_eq!(err, TokenError::NotTimestampingCertificate);
}

#[test]
fn a_token_dated_outside_its_certificates_validity_is_refused() {
    let authority = Authority::generate("unit TSA");
    let request = request(&IMPRINT);
    let late = Utc.with_ymd_and_hms(2055, 1, 1, 0, 0, 0).unwrap();

    let token = authority.respond(&request.der, late);

    let err = verify_token(&token, &IMPRINT, Some(&request.nonce), None).unwrap_err();
    assert!(matches!(err, TokenError::CertificateNotValidAt(_)), "{err}");
    assert!(err.to_string().contains("2055-01-01"), "{err}");
}

#[test]
fn gen_times_with_fractions_of_a_second_are_read() {
    let encoded = |text: &str| {
        der::asn1::Any::new(der::Tag::GeneralizedTime, text.as_bytes())
            .unwrap()
            .to_der()
            .unwrap()
    };
    let read = |text: &str| asn1::GenTime::from_der(&encoded(text)).map(|t| t.since_epoch());

    let whole = read("20240102030405Z").unwrap();
    assert_eq!(whole.as_secs(), 1_704_164_645);
    assert_eq!(
        read("20240102030405.25Z").unwrap() - whole,
        std::time::Duration::from_millis(250)
    );
    assert!(read("20240102030405").is_err());
    assert!(read("2024010203Z").is_err());
    assert_eq!(
        asn1::GenTime::from_der(&encoded("20240102030405.5Z"))
            .unwrap()
            .to_der()
            .unwrap(),
        encoded("20240102030405.5Z")
    );
}
