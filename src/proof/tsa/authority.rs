//! A time-stamping authority made with the same crates, for the simulator, the demo and the
//! tests: a self-signed root CA and a TSA certificate it issues, both ECDSA P-256, answering
//! RFC 3161 requests with tokens that `openssl ts -verify -CAfile root.pem` accepts.
//!
//! Its certificates are valid from 2000 to 2049 so that tests and simulations running on an
//! injected clock at any plausible date get tokens that check. It can be told to misbehave
//! ([`Fault`]) so tests show the client refusing what it answers.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use cmpv2::status::{PkiFailureInfoValues, PkiStatus, PkiStatusInfo};
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::asn1::{
    Any, GeneralizedTime, Int, ObjectIdentifier, OctetString, SetOfVec, Uint, Utf8StringRef,
};
use der::{Decode, Encode, Tag};
use p256::ecdsa::{DerSignature, SigningKey};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_tsp::{Accuracy, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

use super::TrustRoots;
use super::asn1::{self, EssCertIdV2, IssuerSerial, SigningCertificateV2};

/// The TSA policy the test authority stamps under: a private OID under callvault's own
/// arc (1.3.6.1.4.1.55738, "666" for test authorities). Not a real issuing policy.
pub const POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55738.666.1");

/// 2000-01-01T00:00:00Z and 2049-12-31T23:59:59Z, the test certificates' validity.
const VALID_FROM: Duration = Duration::from_secs(946_684_800);
const VALID_TO: Duration = Duration::from_secs(2_524_607_999);

/// A way the authority misbehaves, for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Stamps a different imprint from the one asked for.
    OtherImprint,
    /// Echoes a different nonce from the request's.
    WrongNonce,
    /// Answers HTTP 503 over HTTP ([`Authority::respond`] itself still answers).
    Down,
}

/// A test RFC 3161 time-stamping authority.
pub struct Authority {
    root: Certificate,
    tsa: Certificate,
    key: SigningKey,
    fault: Mutex<Option<Fault>>,
}

impl Authority {
    /// A fresh root CA "CN=`name` root CA" and TSA "CN=`name`", with new keys.
    pub fn generate(name: &str) -> Self {
        Self::issue(name, true)
    }

    /// `timestamping: false` makes a TSA certificate without the extendedKeyUsage, which
    /// verifiers must refuse (a test needs one).
    pub(crate) fn issue(name: &str, timestamping: bool) -> Self {
        let name: String = name
            .chars()
            .filter(|c| c.is_alphanumeric() || " -_.".contains(*c))
            .collect();
        let root_key = SigningKey::random(&mut rand_core::OsRng);
        let root_name =
            Name::from_str(&format!("CN={name} root CA,O=callvault")).expect("plain name");
        let root = certificate(Profile::Root, root_name.clone(), &root_key, &root_key, None);
        let key = SigningKey::random(&mut rand_core::OsRng);
        let leaf = Profile::Leaf {
            issuer: root_name,
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        let tsa_name = Name::from_str(&format!("CN={name},O=callvault")).expect("plain name");
        let eku = timestamping.then(|| ExtendedKeyUsage(vec![asn1::ID_KP_TIME_STAMPING]));
        let tsa = certificate(leaf, tsa_name, &key, &root_key, eku);
        Self {
            root,
            tsa,
            key,
            fault: Mutex::new(None),
        }
    }

    pub fn root_pem(&self) -> String {
        self.trust_roots().to_pem()
    }

    pub fn trust_roots(&self) -> TrustRoots {
        TrustRoots::from_certificates(vec![self.root.clone()])
    }

    /// Makes the authority misbehave from now on (`None`: behave).
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    fn fault(&self) -> Option<Fault> {
        *self.fault.lock().expect("fault lock")
    }

    /// The DER TimeStampResp for `request_der` at `now`: a granted token, or a rejection
    /// (status and reason) for a request it cannot serve.
    pub fn respond(&self, request_der: &[u8], now: DateTime<Utc>) -> Vec<u8> {
        let request = match TimeStampReq::from_der(request_der) {
            Ok(request) => request,
            Err(_) => {
                return rejection(
                    PkiFailureInfoValues::BadDataFormat,
                    "the request is not a DER TimeStampReq",
                );
            }
        };
        if request.message_imprint.hash_algorithm.oid != asn1::ID_SHA_256 {
            return rejection(
                PkiFailureInfoValues::BadAlg,
                "only SHA-256 imprints are stamped",
            );
        }
        match self.token(&request, now) {
            Ok(token) => granted(token),
            Err(_) => rejection(
                PkiFailureInfoValues::SystemFailure,
                "the token could not be signed",
            ),
        }
    }

    fn tst_info(&self, request: &TimeStampReq, now: DateTime<Utc>) -> der::Result<TstInfo> {
        let mut imprint = request.message_imprint.clone();
        let mut nonce = request.nonce.clone();
        match self.fault() {
            Some(Fault::OtherImprint) => {
                let other: Vec<u8> = imprint
                    .hashed_message
                    .as_bytes()
                    .iter()
                    .map(|b| !b)
                    .collect();
                imprint.hashed_message = OctetString::new(other)?;
            }
            Some(Fault::WrongNonce) => nonce = Some(random_int(8)),
            _ => {}
        }
        let seconds = u64::try_from(now.timestamp()).unwrap_or(0);
        Ok(TstInfo {
            version: TspVersion::V1,
            policy: POLICY,
            message_imprint: imprint,
            serial_number: random_int(16),
            gen_time: GeneralizedTime::from_unix_duration(Duration::from_secs(seconds))?,
            accuracy: Some(Accuracy {
                seconds: Some(1),
                millis: None,
                micros: None,
            }),
            ordering: false,
            nonce,
            tsa: Some(GeneralName::DirectoryName(
                self.tsa.tbs_certificate.subject.clone(),
            )),
            extensions: None,
        })
    }

    /// The token: a CMS SignedData over the TSTInfo, signed attributes content-type,
    /// message-digest and ESS signing-certificate-v2, with the TSA certificate if asked for.
    fn token(
        &self,
        request: &TimeStampReq,
        now: DateTime<Utc>,
    ) -> Result<ContentInfo, cms::builder::Error> {
        let tst_der = self.tst_info(request, now)?.to_der()?;
        let content = EncapsulatedContentInfo {
            econtent_type: asn1::ID_CT_TST_INFO,
            econtent: Some(Any::new(Tag::OctetString, tst_der)?),
        };
        let tbs = &self.tsa.tbs_certificate;
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        });
        let mut signer = SignerInfoBuilder::new(&self.key, sid, sha256(), &content, None)?;
        signer.add_signed_attribute(self.signing_certificate()?)?;
        let mut signed_data = SignedDataBuilder::new(&content);
        signed_data.add_digest_algorithm(sha256())?;
        if request.cert_req {
            signed_data.add_certificate(CertificateChoices::Certificate(self.tsa.clone()))?;
        }
        signed_data.add_signer_info::<_, DerSignature>(signer)?;
        signed_data.build()
    }

    /// RFC 5035's signing-certificate-v2 attribute naming the TSA certificate by its SHA-256.
    fn signing_certificate(&self) -> der::Result<Attribute> {
        let tbs = &self.tsa.tbs_certificate;
        let value = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                hash_algorithm: None,
                cert_hash: OctetString::new(asn1::Hash::Sha256.digest(&self.tsa.to_der()?))?,
                issuer_serial: Some(IssuerSerial {
                    issuer: vec![GeneralName::DirectoryName(tbs.issuer.clone())],
                    serial_number: tbs.serial_number.clone(),
                }),
            }],
            policies: None,
        };
        Ok(Attribute {
            oid: asn1::ID_AA_SIGNING_CERTIFICATE_V_2,
            values: SetOfVec::try_from(vec![Any::encode_from(&value)?])?,
        })
    }

    /// Serves `POST /` with [`Authority::respond`] at the wall-clock time.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/", axum::routing::post(serve_request))
            .with_state(self)
    }
}

async fn serve_request(State(authority): State<Arc<Authority>>, body: Bytes) -> Response {
    if authority.fault() == Some(Fault::Down) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the time-stamping authority is down",
        )
            .into_response();
    }
    let reply = authority.respond(&body, Utc::now());
    (
        [(header::CONTENT_TYPE, "application/timestamp-reply")],
        reply,
    )
        .into_response()
}

fn sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: asn1::ID_SHA_256,
        parameters: None,
    }
}

/// A positive random integer of `bytes` bytes (token serials, wrong nonces).
fn random_int(bytes: usize) -> Int {
    let random: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    Int::from(Uint::new(&random).expect("a short integer"))
}

fn granted(token: ContentInfo) -> Vec<u8> {
    let response = TimeStampResp {
        status: PkiStatusInfo {
            status: PkiStatus::Accepted,
            status_string: None,
            fail_info: None,
        },
        time_stamp_token: Some(token),
    };
    response.to_der().expect("a signed token encodes")
}

fn rejection(reason: PkiFailureInfoValues, text: &str) -> Vec<u8> {
    let text = Utf8StringRef::new(text).expect("a short text");
    let response = TimeStampResp {
        status: PkiStatusInfo {
            status: PkiStatus::Rejection,
            status_string: Some(vec![text]),
            fail_info: Some(reason.into()),
        },
        time_stamp_token: None,
    };
    response.to_der().expect("a rejection encodes")
}

/// A certificate for `key`'s public half under `profile`, signed by `issuer_key`.
fn certificate(
    profile: Profile,
    subject: Name,
    key: &SigningKey,
    issuer_key: &SigningKey,
    eku: Option<ExtendedKeyUsage>,
) -> Certificate {
    let validity = Validity {
        not_before: Time::GeneralTime(
            GeneralizedTime::from_unix_duration(VALID_FROM).expect("2000"),
        ),
        not_after: Time::GeneralTime(GeneralizedTime::from_unix_duration(VALID_TO).expect("2049")),
    };
    let serial = SerialNumber::from(rand::random::<u64>() >> 1);
    let spki =
        SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).expect("a P-256 key encodes");
    let mut builder = CertificateBuilder::new(profile, serial, validity, subject, spki, issuer_key)
        .expect("a certificate of fixed shape");
    if let Some(eku) = eku {
        builder
            .add_extension(&eku)
            .expect("an extension of fixed shape");
    }
    builder.build::<DerSignature>().expect("P-256 signs")
}
