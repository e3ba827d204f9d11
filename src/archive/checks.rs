//! The checks a download must pass while it streams: not an error page, no more and no
//! fewer bytes than announced. A failing check fails the stream, so the upload is aborted
//! and nothing is stored. Whether the bytes are plausibly audio for the file's name is
//! noted, not enforced: an odd body (empty, a header alone, another format) is what the
//! provider has, and the pass keeps it, flagged, once the same bytes come back.

mod media;
#[cfg(test)]
mod media_tests;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::{Stream, StreamExt};

pub use media::{MediaInfo, Probe};

use crate::provider::{DownloadError, looks_like_error_page};

/// What the media check learnt, once the body has been read to its end: what the audio
/// holds, or why the bytes do not look like audio of their format.
#[derive(Debug, Clone, Default)]
pub(super) struct MediaReport(Arc<OnceLock<Result<MediaInfo, String>>>);

impl MediaReport {
    pub fn get(&self) -> Option<MediaInfo> {
        self.0.get().and_then(|r| r.as_ref().ok()).copied()
    }

    /// Why the body is not audio of its format, when it is not.
    pub fn odd(&self) -> Option<String> {
        self.0.get().and_then(|r| r.as_ref().err()).cloned()
    }
}

struct Checked {
    body: futures::stream::BoxStream<'static, Result<Bytes, DownloadError>>,
    received: u64,
    done: bool,
    probe: Option<Probe>,
    report: MediaReport,
}

/// The body of the recording `file_name`: refused when it starts like an error page, and
/// failing (so the upload is aborted) when it ends short of its Content-Length. The report
/// fills in when the body ends well: its audio, or why it is not audio of its format.
pub(super) fn checked_body(
    body: impl Stream<Item = Result<Bytes, DownloadError>> + Send + 'static,
    expected: Option<u64>,
    file_name: &str,
) -> (
    impl Stream<Item = Result<Bytes, DownloadError>> + Send + 'static,
    MediaReport,
) {
    let report = MediaReport::default();
    let state = Checked {
        body: body.boxed(),
        received: 0,
        done: false,
        probe: Some(Probe::new(file_name)),
        report: report.clone(),
    };
    let stream = futures::stream::unfold(state, move |mut st| async move {
        if st.done {
            return None;
        }
        let step = match st.body.next().await {
            Some(Ok(chunk)) => check_chunk(&mut st, chunk, expected),
            Some(Err(e)) => Some(Err(e)),
            None => check_end(&mut st, expected),
        };
        st.done = !matches!(step, Some(Ok(_)));
        step.map(|item| (item, st))
    });
    (stream, report)
}

fn check_chunk(
    st: &mut Checked,
    chunk: Bytes,
    expected: Option<u64>,
) -> Option<Result<Bytes, DownloadError>> {
    if st.received == 0 && looks_like_error_page(&chunk) {
        let err = DownloadError::NotARecording("the body is an HTML/JSON/XML page".into());
        return Some(Err(err));
    }
    st.received += chunk.len() as u64;
    if let Some(n) = expected.filter(|n| st.received > *n) {
        let err = DownloadError::TooLong { announced: n };
        return Some(Err(err));
    }
    if let Some(probe) = &mut st.probe
        && let Err(why) = probe.feed(&chunk)
    {
        // Noted, not refused: the rest goes on unprobed.
        st.probe = None;
        let _ = st.report.0.set(Err(why));
    }
    Some(Ok(chunk))
}

fn check_end(st: &mut Checked, expected: Option<u64>) -> Option<Result<Bytes, DownloadError>> {
    if let Some(n) = expected.filter(|n| st.received < *n) {
        return Some(Err(DownloadError::Truncated {
            received: st.received,
            expected: n,
        }));
    }
    if let Some(probe) = st.probe.take() {
        let _ = st.report.0.set(probe.finish());
    }
    None
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
        let parts: Vec<Bytes> = checked_body(body, expected, "x.bin")
            .0
            .try_collect()
            .await?;
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
            Err(DownloadError::TooLong { announced: 8 })
        ));
        assert!(matches!(
            run(&[b"<html><body>oops"], None).await,
            Err(DownloadError::NotARecording(_))
        ));
    }
}
