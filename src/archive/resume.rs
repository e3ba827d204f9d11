//! Resume instead of restart: when a download breaks mid-body (a reset, a stall, an early end)
//! the rest is fetched with a fresh link and a `Range` from the last byte received, and the
//! bytes go on into the same upload, so the SHA-256 is still the whole file's. When the server
//! does not honour the range, the original error stands and the attempt restarts cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};

use crate::provider::{Download, DownloadError};

/// Opens the rest of the recording from a byte offset (a fresh link, then a range request).
pub(super) type Reopen =
    Box<dyn FnMut(u64) -> BoxFuture<'static, Result<Download, DownloadError>> + Send>;

/// How many times one attempt may resume.
pub(super) const MAX_RESUMES: u32 = 5;

struct State {
    body: BoxStream<'static, Result<Bytes, DownloadError>>,
    received: u64,
    total: Option<u64>,
    reopen: Reopen,
    resumes: Arc<AtomicU32>,
    done: bool,
}

/// The bytes of the whole recording, resuming the download up to `MAX_RESUMES` times.
/// `total` is the first answer's Content-Length: without it a break cannot be told from the
/// end, nor a range answer checked, so nothing is resumed. `resumes` counts the resumptions.
pub(super) fn resuming(
    first: BoxStream<'static, Result<Bytes, DownloadError>>,
    total: Option<u64>,
    reopen: Reopen,
    resumes: Arc<AtomicU32>,
) -> impl Stream<Item = Result<Bytes, DownloadError>> + Send + 'static {
    let state = State {
        body: first,
        received: 0,
        total,
        reopen,
        resumes,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let broken = match st.body.next().await {
                Some(Ok(chunk)) => {
                    st.received += chunk.len() as u64;
                    return Some((Ok(chunk), st));
                }
                Some(Err(e)) if resumable(&e) => e,
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                // A clean end short of the announced length is a break too.
                None => match st.total {
                    Some(total) if st.received < total => DownloadError::Truncated {
                        received: st.received,
                        expected: total,
                    },
                    _ => return None,
                },
            };
            let Some(total) = st.total else {
                st.done = true;
                return Some((Err(broken), st));
            };
            let used = st.resumes.load(Ordering::Relaxed);
            if st.received == 0 || used >= MAX_RESUMES {
                st.done = true;
                return Some((Err(broken), st));
            }
            tracing::info!(offset = st.received, total, error = %broken, "download broke; resuming from the last byte with a fresh link");
            match (st.reopen)(st.received).await {
                Ok(rest) if rest.content_length == Some(total - st.received) => {
                    st.resumes.fetch_add(1, Ordering::Relaxed);
                    st.body = rest.body;
                }
                Ok(rest) => {
                    st.done = true;
                    let err = DownloadError::Network(format!(
                        "resuming at byte {}: the server offered {:?} bytes, {} were missing",
                        st.received,
                        rest.content_length,
                        total - st.received
                    ));
                    return Some((Err(err), st));
                }
                Err(why) => {
                    tracing::info!(error = %why, "cannot resume; the attempt starts over");
                    st.done = true;
                    return Some((Err(broken), st));
                }
            }
        }
    })
}

/// Breaks a fresh request for the rest can mend.
fn resumable(err: &DownloadError) -> bool {
    matches!(
        err,
        DownloadError::Network(_)
            | DownloadError::Connect(_)
            | DownloadError::Timeout(_)
            | DownloadError::Truncated { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::sync::Mutex;

    const FILE: &[u8] = b"0123456789abcdefghij";

    /// A body that sends `FILE[from..upto]` and then breaks (or ends when `upto` is the end).
    fn body(from: usize, upto: usize) -> BoxStream<'static, Result<Bytes, DownloadError>> {
        let mut items: Vec<Result<Bytes, DownloadError>> = FILE[from..upto]
            .chunks(3)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if upto < FILE.len() {
            items.push(Err(DownloadError::Network("connection reset".into())));
        }
        futures::stream::iter(items).boxed()
    }

    /// Reopens at the asked offset; each reopen serves up to the next cut.
    fn reopen(cuts: Vec<usize>, asked: Arc<Mutex<Vec<u64>>>, honour: bool) -> Reopen {
        let mut cuts = cuts.into_iter();
        Box::new(move |offset| {
            asked.lock().unwrap().push(offset);
            let upto = cuts.next().unwrap_or(FILE.len());
            let from = if honour { offset as usize } else { 0 };
            let download = Download {
                content_length: Some((FILE.len() - from) as u64),
                content_type: None,
                body: body(from, upto),
            };
            Box::pin(async move {
                if honour {
                    Ok(download)
                } else {
                    Err(DownloadError::Unexpected { status: 200 })
                }
            })
        })
    }

    async fn collect(
        first_upto: usize,
        cuts: Vec<usize>,
        honour: bool,
    ) -> (Result<Vec<u8>, DownloadError>, Vec<u64>, u32) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let resumes = Arc::new(AtomicU32::new(0));
        let stream = resuming(
            body(0, first_upto),
            Some(FILE.len() as u64),
            reopen(cuts, asked.clone(), honour),
            resumes.clone(),
        );
        let result = stream
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await;
        let asked = asked.lock().unwrap().clone();
        (result, asked, resumes.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn breaks_are_mended_from_the_last_byte() {
        let (result, asked, resumes) = collect(7, vec![12, 20], true).await;
        assert_eq!(result.unwrap(), FILE);
        assert_eq!(asked, [7, 12]);
        assert_eq!(resumes, 2);
    }

    #[tokio::test]
    async fn a_server_that_ignores_ranges_leaves_the_original_error() {
        let (result, asked, resumes) = collect(7, vec![], false).await;
        assert!(matches!(result, Err(DownloadError::Network(_))));
        assert_eq!((asked.len(), resumes), (1, 0));
    }

    #[tokio::test]
    async fn resumes_are_bounded() {
        let cuts = (0..10).map(|i| 8 + i).collect();
        let (result, asked, resumes) = collect(7, cuts, true).await;
        assert!(result.is_err());
        assert_eq!(resumes, MAX_RESUMES);
        assert_eq!(asked.len() as u32, MAX_RESUMES);
    }

    #[tokio::test]
    async fn nothing_received_or_no_length_means_no_resume() {
        let (result, asked, _) = collect(0, vec![], true).await;
        assert!(result.is_err());
        assert!(asked.is_empty());
        let stream = resuming(
            body(0, 5),
            None,
            Box::new(|_| Box::pin(async { Err(DownloadError::Network("unused".into())) })),
            Arc::new(AtomicU32::new(0)),
        );
        assert!(stream.try_collect::<Vec<_>>().await.is_err());
    }
}
