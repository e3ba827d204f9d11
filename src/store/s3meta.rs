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
}

fn failed(context: &str, detail: String) -> StoreError {
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
        let mut url = self.endpoint.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| failed(CONTEXT, "endpoint cannot take a path".into()))?;
            segments.pop_if_empty().push(&self.bucket);
            for part in path.parts() {
                segments.push(part.as_ref());
            }
        }
        let source = url[url::Position::BeforePath..].to_owned();
        let mut builder = http::Request::builder()
            .method(http::Method::PUT)
            .uri(url.as_str())
            .header("x-amz-copy-source", source)
            .header("x-amz-metadata-directive", "REPLACE");
        if let Some(ct) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, ct);
        }
        for (name, value) in metadata {
            builder = builder.header(format!("x-amz-meta-{name}"), value.as_str());
        }
        let mut request: HttpRequest = builder
            .body(HttpRequestBody::empty())
            .map_err(|e| failed(CONTEXT, e.to_string()))?;
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| StoreError::classify(CONTEXT, e))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| StoreError::classify(CONTEXT, e))?;

        let mut call = self.http.put(url.as_str());
        for (name, value) in request.headers() {
            call = call.header(name.as_str(), value.as_bytes());
        }
        let response = call
            .send()
            .await
            .map_err(|e| failed(CONTEXT, e.without_url().to_string()))?;
        let status = response.status();
        let version = response
            .headers()
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .text()
            .await
            .map_err(|e| failed(CONTEXT, e.without_url().to_string()))?;
        // CopyObject may answer 200 with an error in the body.
        if !status.is_success() || body.contains("<Error>") {
            let detail = format!(
                "HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            );
            return Err(if status.as_u16() == 403 {
                StoreError::Refused {
                    context: CONTEXT.into(),
                    source: object_store::Error::Generic {
                        store: "S3",
                        source: detail.into(),
                    },
                }
            } else {
                failed(CONTEXT, detail)
            });
        }
        let etag = body
            .split_once("<ETag>")
            .and_then(|(_, rest)| rest.split_once("</ETag>"))
            .map(|(etag, _)| etag.replace("&quot;", "\"").trim().to_owned());
        Ok((etag, version))
    }
}
