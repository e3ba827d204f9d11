//! Asking a TSA over HTTP (RFC 3161 §3.4): POST the DER request as
//! `application/timestamp-query`, read the `application/timestamp-reply`, and keep the token
//! only once [`verify_token`] accepts it for this imprint and this request's nonce.

use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::{Stamp, TrustRoots, TsaError, request, verify_token};

/// A client for time-stamping authorities; `roots`, when given, are what a TSA's chain must
/// end in.
#[derive(Clone, Debug)]
pub struct TsaClient {
    http: reqwest::Client,
    roots: Option<TrustRoots>,
}

impl TsaClient {
    pub fn new(http: reqwest::Client, roots: Option<TrustRoots>) -> Self {
        Self { http, roots }
    }

    /// A verified stamp of `imprint` from the TSA at `url`.
    pub async fn stamp(&self, url: &url::Url, imprint: &[u8; 32]) -> Result<Stamp, TsaError> {
        let request = request(imprint);
        let unreachable = |source| TsaError::Unreachable {
            url: url.to_string(),
            source,
        };
        let response = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/timestamp-query")
            .header(ACCEPT, "application/timestamp-reply")
            .body(request.der)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(TsaError::Refused {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let token = response.bytes().await.map_err(unreachable)?;
        verify_token(&token, imprint, Some(&request.nonce), self.roots.as_ref()).map_err(|source| {
            TsaError::Token {
                url: url.to_string(),
                source,
            }
        })
    }
}
