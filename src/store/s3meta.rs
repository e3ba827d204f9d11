//! S3 takes user metadata when an upload starts, but a streamed recording's SHA-256 is known
//! only at its end. After a multipart upload completes, the object is copied onto itself
//! with the full metadata (`CopyObject`, `x-amz-metadata-directive: REPLACE`), signed with
//! object_store's own SigV4 authorizer: object_store has no call for it.

use std::sync::Arc;

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path;
use url::Url;

use super::StoreError;

/// Where an S3 bucket is reached (path-style), for requests object_store cannot make.
#[derive(Debug, Clone)]
pub(crate) struct S3Target {
    pub s3: Arc<AmazonS3>,
    pub endpoint: Url,
    pub bucket: String,
    pub region: String,
    pub http: reqwest::Client,
    /// What a `CopyObject` must repeat of how object_store writes (server-side encryption,
    /// storage class): a copy takes the bucket's defaults for whatever it does not name.
    pub copy_headers: Vec<(&'static str, String)>,
}

pub(crate) fn failed(context: &str, detail: String) -> StoreError {
    StoreError::Transient {
        context: context.to_owned(),
        source: object_store::Error::Generic {
            store: "S3",
            source: detail.into(),
        },
    }
}

impl S3Target {
    /// Replaces the object's user metadata (and content type); returns its new ETag and
    /// version, when the store gives them.
    pub async fn replace_metadata(
        &self,
        path: &Path,
        content_type: Option<&str>,
        metadata: &[(&'static str, String)],
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        const CONTEXT: &str = "setting the object's metadata";
        let url = self.url_of(Some(path), "", CONTEXT)?;
        let meta_names: Vec<String> = metadata
            .iter()
            .map(|(name, _)| format!("x-amz-meta-{name}"))
            .collect();
        let mut headers: Vec<(&str, String)> = vec![
            (
                "x-amz-copy-source",
                url[url::Position::BeforePath..].to_owned(),
            ),
            ("x-amz-metadata-directive", "REPLACE".to_owned()),
        ];
        if let Some(ct) = content_type {
            headers.push((http::header::CONTENT_TYPE.as_str(), ct.to_owned()));
        }
        for (name, (_, value)) in meta_names.iter().zip(metadata) {
            headers.push((name.as_str(), value.clone()));
        }
        for (name, value) in &self.copy_headers {
            headers.push((*name, value.clone()));
        }
        let answer = self
            .signed(http::Method::PUT, Some(path), "", &headers, None, CONTEXT)
            .await?;
        // CopyObject may answer 200 with an error in the body.
        if !answer.status.is_success() || answer.body.contains("<Error>") {
            return Err(answer.into_error(CONTEXT));
        }
        let etag = xml_value(&answer.body, "ETag")
            .map(|etag| etag.replace("&quot;", "\"").trim().to_owned());
        Ok((etag, answer.version))
    }
}

/// A response to a signed request: status, headers and body text.
pub(crate) struct Answer {
    pub status: http::StatusCode,
    pub body: String,
    /// `x-amz-object-lock-mode`, when the answer carries it.
    pub lock_mode: Option<String>,
    /// `x-amz-object-lock-retain-until-date`, when the answer carries it.
    pub lock_until: Option<String>,
    /// `x-amz-object-lock-legal-hold` (`ON`/`OFF`), when the answer carries it.
    pub legal_hold: Option<String>,
    /// `x-amz-version-id`: the version written, on a versioned bucket.
    pub version: Option<String>,
}

impl S3Target {
    /// The URL of `path` in the bucket (or of the bucket itself, `None`), with `query`.
    fn url_of(&self, path: Option<&Path>, query: &str, context: &str) -> Result<Url, StoreError> {
        let mut url = self.endpoint.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| failed(context, "endpoint cannot take a path".into()))?;
            segments.pop_if_empty().push(&self.bucket);
            if let Some(path) = path {
                for part in path.parts() {
                    segments.push(part.as_ref());
                }
            }
        }
        url.set_query((!query.is_empty()).then_some(query));
        Ok(url)
    }

    /// Signs `request` with SigV4, as object_store signs its own.
    async fn authorize(&self, request: &mut HttpRequest, context: &str) -> Result<(), StoreError> {
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| StoreError::classify(context, e))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(request, None)
            .map_err(|e| StoreError::classify(context, e))
    }

    /// Sends one SigV4-signed request (payload signed; a body carries its
    /// `x-amz-checksum-sha256`, which S3 requires of Object Lock requests).
    pub(crate) async fn signed(
        &self,
        method: http::Method,
        path: Option<&Path>,
        query: &str,
        headers: &[(&str, String)],
        body: Option<String>,
        context: &str,
    ) -> Result<Answer, StoreError> {
        use base64::Engine;
        use sha2::Digest;
        let url = self.url_of(path, query, context)?;
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url.as_str());
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(body) = &body {
            let digest = sha2::Sha256::digest(body.as_bytes());
            builder = builder
                .header(
                    "x-amz-checksum-sha256",
                    base64::engine::general_purpose::STANDARD.encode(digest),
                )
                .header(http::header::CONTENT_TYPE, "application/xml");
        }
        let payload = body.clone().unwrap_or_default();
        let mut request: HttpRequest = builder
            .body(HttpRequestBody::from(payload.clone()))
            .map_err(|e| failed(context, e.to_string()))?;
        self.authorize(&mut request, context).await?;
        let mut call = self.http.request(method, url.as_str());
        for (name, value) in request.headers() {
            call = call.header(name.as_str(), value.as_bytes());
        }
        if body.is_some() {
            call = call.body(payload);
        }
        let response = call
            .send()
            .await
            .map_err(|e| failed(context, e.without_url().to_string()))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let lock_mode = header("x-amz-object-lock-mode");
        let lock_until = header("x-amz-object-lock-retain-until-date");
        let legal_hold = header("x-amz-object-lock-legal-hold");
        let version = header("x-amz-version-id");
        let body = response
            .text()
            .await
            .map_err(|e| failed(context, e.without_url().to_string()))?;
        Ok(Answer {
            status,
            body,
            lock_mode,
            lock_until,
            legal_hold,
            version,
        })
    }
}

impl Answer {
    /// The S3 error code in the body (`<Code>…</Code>`), if any.
    pub fn error_code(&self) -> Option<&str> {
        xml_value(&self.body, "Code")
    }

    /// The answer as an error for `context`: 403 a refusal, anything else passing.
    pub fn into_error(self, context: &str) -> StoreError {
        let refused = self.status.as_u16() == 403;
        self.into_error_refused_if(context, refused)
    }

    /// The answer to an Object Lock request as an error for `context`: besides 403, a 400
    /// is a refusal too (the bucket takes no such request: no lock configuration, a mode it
    /// refuses), since it would come back for every recording; only `InvalidArgument` (a
    /// date S3 will not take, which belongs to one recording) stays passing.
    pub fn into_lock_error(self, context: &str) -> StoreError {
        let refused = match self.status.as_u16() {
            403 => true,
            400 => self.error_code() != Some("InvalidArgument"),
            _ => false,
        };
        self.into_error_refused_if(context, refused)
    }

    fn into_error_refused_if(self, context: &str, refused: bool) -> StoreError {
        let detail = format!(
            "HTTP {}: {}",
            self.status,
            self.body.chars().take(300).collect::<String>()
        );
        if refused {
            StoreError::Refused {
                context: context.into(),
                source: object_store::Error::Generic {
                    store: "S3",
                    source: detail.into(),
                },
            }
        } else {
            failed(context, detail)
        }
    }
}

/// The text of the first `<tag>…</tag>` in an XML body.
pub(crate) fn xml_value<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let (_, rest) = body.split_once(open.as_str())?;
    let (value, _) = rest.split_once(close.as_str())?;
    Some(value.trim())
}
