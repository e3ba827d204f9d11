//! The checks a download must pass while it streams: not an error page, no more and no
//! fewer bytes than announced. A failing check fails the stream, so the upload is aborted.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::provider::{DownloadError, looks_like_error_page};

/// The body, refused when it starts like an error page, and failing (so the upload is
/// aborted) when it ends short of its Content-Length.
pub(super) fn checked_body(
    body: impl Stream<Item = Result<Bytes, DownloadError>> + Send + 'static,
    expected: Option<u64>,
) -> impl Stream<Item = Result<Bytes, DownloadError>> + Send + 'static {
    let state = (body.boxed(), 0u64, false);
    futures::stream::unfold(state, move |(mut body, received, done)| async move {
        if done {
            return None;
        }
        match body.next().await {
            Some(Ok(chunk)) => {
                if received == 0 && looks_like_error_page(&chunk) {
                    let err =
                        DownloadError::NotARecording("the body is an HTML/JSON/XML page".into());
                    return Some((Err(err), (body, received, true)));
                }
                let received = received + chunk.len() as u64;
                if expected.is_some_and(|n| received > n) {
                    let err = DownloadError::Network(format!(
                        "more bytes than the announced {}",
                        expected.unwrap_or(0)
                    ));
                    return Some((Err(err), (body, received, true)));
                }
                Some((Ok(chunk), (body, received, false)))
            }
            Some(Err(e)) => Some((Err(e), (body, received, true))),
            None => match expected {
                Some(n) if received < n => Some((
                    Err(DownloadError::Truncated {
                        received,
                        expected: n,
                    }),
                    (body, received, true),
                )),
                _ => None,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn run(
        chunks: &[&'static [u8]],
        expected: Option<u64>,
    ) -> Result<Vec<u8>, DownloadError> {
        let body = futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        );
        let parts: Vec<Bytes> = checked_body(body, expected).try_collect().await?;
        Ok(parts.concat())
    }

    #[tokio::test]
    async fn complete_bodies_pass_through() {
        assert_eq!(
            run(&[b"RIFF", b"data"], Some(8)).await.unwrap(),
            b"RIFFdata"
        );
        assert_eq!(run(&[b"RIFF", b"data"], None).await.unwrap(), b"RIFFdata");
    }

    #[tokio::test]
    async fn short_long_and_error_page_bodies_fail() {
        assert!(matches!(
            run(&[b"RIFF"], Some(8)).await,
            Err(DownloadError::Truncated {
                received: 4,
                expected: 8
            })
        ));
        assert!(matches!(
            run(&[b"RIFF", b"datadata"], Some(8)).await,
            Err(DownloadError::Network(_))
        ));
        assert!(matches!(
            run(&[b"<html><body>oops"], None).await,
            Err(DownloadError::NotARecording(_))
        ));
    }
}
