//! RFC 3161 tokens against the outside world's reader and writer: OpenSSL accepts the test
//! authority's tokens, callvault accepts tokens OpenSSL's own TSA makes (RSA-signed), and the
//! client refuses what a misbehaving authority answers over HTTP.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use callvault::proof::tsa::{
    Authority, Fault, TokenError, TrustRoots, TsaClient, TsaError, request, verify_token,
};
use chrono::Utc;
use der::Decode;
use sha2::{Digest, Sha256};

/// Runs `openssl ARGS` in `dir`, failing the test (never skipping it) without the binary.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install Debian's openssl (scripts/test does)")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "openssl {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout + &stderr
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[test]
fn openssl_verifies_the_test_authoritys_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"the manifest's checkpoint\n";
    std::fs::write(dir.path().join("data"), data).unwrap();
    let authority = Authority::generate("callvault test TSA");
    std::fs::write(dir.path().join("root.pem"), authority.root_pem()).unwrap();
    let token = authority.respond(&request(&sha256(data)).der, Utc::now());
    std::fs::write(dir.path().join("token.tsr"), &token).unwrap();

    let verified = openssl(
        dir.path(),
        &[
            "ts",
            "-verify",
            "-data",
            "data",
            "-in",
            "token.tsr",
            "-CAfile",
            "root.pem",
        ],
    );
    let text = openssl(dir.path(), &["ts", "-reply", "-in", "token.tsr", "-text"]);

    assert!(verified.contains("Verification: OK"), "{verified}");
    assert!(text.contains("Status: Granted."), "{text}");
    assert!(
        text.contains("Policy OID: 1.3.6.1.4.1.55738.666.1"),
        "{text}"
    );
    assert!(text.contains(&hex_spaced(&sha256(data)[..4])), "{text}");
}

/// "ab cd ef 01", as `openssl ts -text` prints a digest.
fn hex_spaced(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(" ")
}

#[test]
fn openssl_refuses_a_token_for_other_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), b"other data").unwrap();
    let authority = Authority::generate("callvault test TSA");
    std::fs::write(dir.path().join("root.pem"), authority.root_pem()).unwrap();
    let token = authority.respond(&request(&sha256(b"data")).der, Utc::now());
    std::fs::write(dir.path().join("token.tsr"), &token).unwrap();

    let status = Command::new("openssl")
        .args([
            "ts",
            "-verify",
            "-data",
            "data",
            "-in",
            "token.tsr",
            "-CAfile",
            "root.pem",
        ])
        .current_dir(dir.path())
        .output()
        .expect("install Debian's openssl");

    assert!(!status.status.success());
}

/// An OpenSSL CA with an RSA TSA under it, and the configuration `openssl ts -reply` reads.
fn openssl_tsa(dir: &Path) {
    let config = format!(
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
         [dn]\nCN = openssl test CA\n\
         [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [tsa_ext]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,nonRepudiation\n\
         extendedKeyUsage = critical,timeStamping\n\
         [tsa]\ndefault_tsa = tsa_config\n\
         [tsa_config]\ndir = {}\nserial = $dir/tsaserial\ncrypto_device = builtin\n\
         signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256\n\
         accuracy = secs:1\nclock_precision_digits = 3\ness_cert_id_alg = sha256\n",
        dir.display()
    );
    std::fs::write(dir.join("openssl.cnf"), config).unwrap();
    std::fs::write(dir.join("tsaserial"), "01\n").unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-config",
            "openssl.cnf",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
        ],
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tsa.key",
            "-out",
            "tsa.csr",
            "-subj",
            "/CN=openssl test TSA",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "tsa.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "tsa.crt",
            "-days",
            "30",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "tsa_ext",
        ],
    ];
    for step in steps {
        openssl(dir, step);
    }
}

#[test]
fn tokens_from_openssls_rsa_tsa_verify_against_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    openssl_tsa(dir.path());
    let data = b"a checkpoint stamped by someone else\n";
    std::fs::write(dir.path().join("data"), data).unwrap();
    openssl(
        dir.path(),
        &[
            "ts", "-query", "-data", "data", "-sha256", "-cert", "-out", "req.tsq",
        ],
    );
    openssl(
        dir.path(),
        &[
            "ts",
            "-reply",
            "-config",
            "openssl.cnf",
            "-queryfile",
            "req.tsq",
            "-inkey",
            "tsa.key",
            "-signer",
            "tsa.crt",
            "-out",
            "resp.tsr",
        ],
    );
    let query = std::fs::read(dir.path().join("req.tsq")).unwrap();
    let nonce = x509_tsp::TimeStampReq::from_der(&query)
        .unwrap()
        .nonce
        .unwrap();
    let token = std::fs::read(dir.path().join("resp.tsr")).unwrap();
    let ca = TrustRoots::from_pem_file(&dir.path().join("ca.crt")).unwrap();

    let stamp = verify_token(&token, &sha256(data), Some(nonce.as_bytes()), Some(&ca)).unwrap();

    assert!(stamp.chain_checked);
    assert_eq!(stamp.tsa, "CN=openssl test TSA");
    assert!(
        (Utc::now() - stamp.gen_time).num_minutes().abs() < 5,
        "{}",
        stamp.gen_time
    );
    let ours = Authority::generate("not openssl's");
    let err = verify_token(&token, &sha256(data), None, Some(&ours.trust_roots())).unwrap_err();
    assert!(matches!(err, TokenError::UntrustedChain(_)), "{err}");
}

/// The authority served on a loopback port, its URL, and a client trusting its root.
async fn served(authority: Arc<Authority>) -> (url::Url, TsaClient) {
    let roots = authority.trust_roots();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, authority.router()).await });
    (url, TsaClient::new(reqwest::Client::new(), Some(roots)))
}

#[tokio::test]
async fn the_client_gets_a_verified_stamp_over_http() {
    let authority = Arc::new(Authority::generate("callvault test TSA"));
    let (url, client) = served(authority).await;
    let imprint = sha256(b"checkpoint");

    let stamp = client.stamp(&url, &imprint).await.unwrap();

    assert!(stamp.chain_checked);
    assert_eq!(stamp.tsa, "CN=callvault test TSA,O=callvault");
    verify_token(&stamp.token, &imprint, None, None).unwrap();
}

#[tokio::test]
async fn the_client_refuses_a_down_authority_and_a_token_for_another_imprint() {
    let authority = Arc::new(Authority::generate("callvault test TSA"));
    let (url, client) = served(authority.clone()).await;
    let imprint = sha256(b"checkpoint");

    authority.set_fault(Some(Fault::Down));
    let down = client.stamp(&url, &imprint).await.unwrap_err();
    authority.set_fault(Some(Fault::OtherImprint));
    let other = client.stamp(&url, &imprint).await.unwrap_err();
    authority.set_fault(Some(Fault::WrongNonce));
    let replayed = client.stamp(&url, &imprint).await.unwrap_err();

    assert!(
        matches!(down, TsaError::Refused { status: 503, .. }),
        "{down}"
    );
    let TsaError::Token { source, .. } = &other else {
        panic!("{other}")
    };
    assert!(
        matches!(source, TokenError::ImprintMismatch { .. }),
        "{other}"
    );
    assert!(
        matches!(
            replayed,
            TsaError::Token {
                source: TokenError::NonceMismatch,
                ..
            }
        ),
        "{replayed}"
    );
}

#[tokio::test]
async fn the_client_refuses_an_authority_it_does_not_trust() {
    let (url, _) = served(Arc::new(Authority::generate("other"))).await;
    let trusted = Authority::generate("callvault test TSA");
    let client = TsaClient::new(reqwest::Client::new(), Some(trusted.trust_roots()));

    let err = client
        .stamp(&url, &sha256(b"checkpoint"))
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            TsaError::Token {
                source: TokenError::UntrustedChain(_),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_authority_is_an_error_to_retry_later() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = url::Url::parse(&format!("http://{}/", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let client = TsaClient::new(reqwest::Client::new(), None);

    let err = client
        .stamp(&url, &sha256(b"checkpoint"))
        .await
        .unwrap_err();

    assert!(matches!(err, TsaError::Unreachable { .. }), "{err}");
}
