//! A call's recording, streamed through callvault from the store: `…/audio` for the page's
//! `<audio>` player, with HTTP Range requests so the browser can seek (each range is one
//! ranged GET on the store), and `…/download` for the whole file, hashed on the way: the
//! last chunk is held back until the SHA-256 and size match the ledger's, so a changed
//! object ends the answer in an error instead of handing over a wrong file as if it were
//! right. Memory stays bounded by the store's chunks.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange};
use sha2::{Digest, Sha256};

use super::scope::{self, Miss};
use super::{Ui, UiAccount, User};
use crate::accounts::AccountName;
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{AccessAction, LedgerRow};
use crate::store::Store;

/// The call an address names (`account` given, or an old link's uuid alone) for `user`,
/// or the answer refusing it: another account's call answers as an unknown one.
async fn chosen(
    ui: &Ui,
    user: &User,
    account: Option<&str>,
    raw: &str,
    what: &str,
) -> Result<(AccountName, CallUuid), Response> {
    let found = match account {
        Some(account) => scope::named(ui, user, account, raw, what).await,
        None => scope::unnamed(ui, user, raw, what).await,
    };
    found.map_err(|miss| match miss {
        Miss::BadId => plain(StatusCode::BAD_REQUEST, "not a call id"),
        Miss::NotFound => no_such_call(),
        Miss::Unavailable => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ledger does not answer",
        ),
    })
}

fn no_such_call() -> Response {
    plain(StatusCode::NOT_FOUND, "no such call in the ledger")
}

/// The archived object of `account`'s call `uuid`, or the answer refusing it.
async fn archived(
    served: &UiAccount,
    uuid: &CallUuid,
) -> Result<(LedgerRow, String, u64), Response> {
    let row = match served.ledger.get(uuid).await {
        Ok(Some(row)) => row,
        Ok(None) => return Err(no_such_call()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a call for the web page");
            return Err(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the ledger does not answer",
            ));
        }
    };
    match (&row.state, row.object_key.clone(), row.size_bytes) {
        (RecordState::Archived, Some(key), Some(size)) if size >= 0 => Ok((row, key, size as u64)),
        _ => Err(plain(
            StatusCode::NOT_FOUND,
            "this call has no archived recording",
        )),
    }
}

/// The single byte range a `Range` header asks for within `size` bytes: `Ok(None)` for the
/// whole object (no header, or one this server does not honour, such as several ranges),
/// `Err(())` when it cannot be satisfied.
pub(crate) fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|_| ());
    let range = match (start.trim().is_empty(), end.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => {
            let n = parse(end)?;
            if n == 0 {
                return Err(());
            }
            size.saturating_sub(n)..size
        }
        (false, true) => parse(start)?..size,
        (false, false) => {
            let (a, b) = (parse(start)?, parse(end)?);
            if b < a {
                return Ok(None);
            }
            a..b.saturating_add(1).min(size)
        }
        (true, true) => return Ok(None),
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// `GET /ui/calls/{account}/{uuid}/audio`: the recording for the player, whole or the
/// range asked.
pub async fn play(
    State(ui): State<Ui>,
    user: User,
    Path((account, raw)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match chosen(&ui, &user, Some(&account), &raw, "audio").await {
        Ok((account, uuid)) => play_call(&ui, &user, &account, &uuid, &headers).await,
        Err(refusal) => refusal,
    }
}

/// `GET /ui/calls/{uuid}/audio`, an old link: as [`play`] when one of the user's accounts
/// holds the uuid.
pub async fn old_play(
    State(ui): State<Ui>,
    user: User,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Response {
    match chosen(&ui, &user, None, &raw, "audio").await {
        Ok((account, uuid)) => play_call(&ui, &user, &account, &uuid, &headers).await,
        Err(refusal) => refusal,
    }
}

async fn play_call(
    ui: &Ui,
    user: &User,
    account: &AccountName,
    uuid: &CallUuid,
    headers: &HeaderMap,
) -> Response {
    let Some(served) = ui.accounts.get(account) else {
        return no_such_call();
    };
    let (row, key, size) = match archived(served, uuid).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let range = match requested_range(headers, size) {
        Ok(range) => range,
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    let asked = match &range {
        Some(r) => format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
        None => "whole".to_owned(),
    };
    if let Err(e) = ui
        .log(
            account,
            user.name.as_str(),
            user.from,
            AccessAction::Play,
            Some(asked),
            vec![row.record.uuid.clone()],
        )
        .await
    {
        tracing::error!(error = %e, "cannot write the access log; not playing");
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the access log cannot be written",
        );
    }
    let (stream, served) = match open(&served.store, &key, range.clone()).await {
        Ok(opened) => opened,
        Err(refusal) => return refusal,
    };
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, content_type(&row));
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(served.end - served.start),
    );
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{size}",
            served.start,
            served.end.saturating_sub(1)
        )) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

/// `GET /ui/calls/{account}/{uuid}/download`: the whole recording, checked against the
/// ledger while it is sent.
pub async fn download(
    State(ui): State<Ui>,
    user: User,
    Path((account, raw)): Path<(String, String)>,
) -> Response {
    match chosen(&ui, &user, Some(&account), &raw, "download").await {
        Ok((account, uuid)) => download_call(&ui, &user, &account, &uuid).await,
        Err(refusal) => refusal,
    }
}

/// `GET /ui/calls/{uuid}/download`, an old link: as [`download`] when one of the user's
/// accounts holds the uuid.
pub async fn old_download(State(ui): State<Ui>, user: User, Path(raw): Path<String>) -> Response {
    match chosen(&ui, &user, None, &raw, "download").await {
        Ok((account, uuid)) => download_call(&ui, &user, &account, &uuid).await,
        Err(refusal) => refusal,
    }
}

async fn download_call(ui: &Ui, user: &User, account: &AccountName, uuid: &CallUuid) -> Response {
    let Some(served) = ui.accounts.get(account) else {
        return no_such_call();
    };
    let (row, key, size) = match archived(served, uuid).await {
        Ok(found) => found,
        Err(refusal) => return refusal,
    };
    let Some(want) = row.sha256.clone() else {
        return plain(StatusCode::NOT_FOUND, "this call has no recorded SHA-256");
    };
    if let Err(e) = ui
        .log(
            account,
            user.name.as_str(),
            user.from,
            AccessAction::Download,
            None,
            vec![row.record.uuid.clone()],
        )
        .await
    {
        tracing::error!(error = %e, "cannot write the access log; not downloading");
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the access log cannot be written",
        );
    }
    let (stream, _) = match open(&served.store, &key, None).await {
        Ok(opened) => opened,
        Err(refusal) => return refusal,
    };
    let uuid = row.record.uuid.as_str().to_owned();
    let checked = checked(stream, want, size, uuid.clone());
    let mut response = Response::new(Body::from_stream(checked));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type(&row));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        download_name(&uuid, &row.record.record_file)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

type ByteStream = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

/// The object at `key` (or `range` of it) as a stream, and the range actually served.
async fn open(
    store: &Store,
    key: &str,
    range: Option<Range<u64>>,
) -> Result<(ByteStream, Range<u64>), Response> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "cannot read a recording from the store");
        plain(
            StatusCode::BAD_GATEWAY,
            "the store does not answer; try again shortly",
        )
    };
    let path = store.path(key).map_err(|e| unavailable(&e))?;
    let options = GetOptions {
        range: range.map(GetRange::Bounded),
        ..GetOptions::default()
    };
    match store.object_store().get_opts(&path, options).await {
        Ok(got) => {
            let served = got.range.clone();
            let stream = got.into_stream().map_err(std::io::Error::other).boxed();
            Ok((stream, served))
        }
        Err(object_store::Error::NotFound { .. }) => Err(plain(
            StatusCode::NOT_FOUND,
            "the recording is missing from the store (run `callvault verify`)",
        )),
        Err(e) => Err(unavailable(&e)),
    }
}

/// Passes `stream` on, hashing it, but holds each chunk back until the next one comes; the
/// last is released only if the whole matches `want` and `size`, else the stream fails.
fn checked(
    stream: ByteStream,
    want: String,
    size: u64,
    uuid: String,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct State {
        inner: ByteStream,
        hasher: Sha256,
        seen: u64,
        held: Option<Bytes>,
        done: bool,
        want: String,
        size: u64,
        uuid: String,
    }
    let state = State {
        inner: stream,
        hasher: Sha256::new(),
        seen: 0,
        held: None,
        done: false,
        want,
        size,
        uuid,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            match s.inner.next().await {
                Some(Ok(chunk)) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    s.hasher.update(&chunk);
                    s.seen += chunk.len() as u64;
                    if let Some(previous) = s.held.replace(chunk) {
                        return Some((Ok(previous), s));
                    }
                }
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                None => {
                    s.done = true;
                    let got = hex::encode(std::mem::take(&mut s.hasher).finalize());
                    if got == s.want && s.seen == s.size {
                        return s.held.take().map(|last| (Ok(last), s));
                    }
                    tracing::error!(
                        uuid = %s.uuid, expected = %s.want, got = %got, bytes = s.seen,
                        "a downloaded recording does not match the ledger; the download is stopped"
                    );
                    let e = std::io::Error::other(format!(
                        "the stored recording of {} does not match the ledger's SHA-256",
                        s.uuid
                    ));
                    return Some((Err(e), s));
                }
            }
        }
    })
}

fn content_type(row: &LedgerRow) -> HeaderValue {
    row.content_type
        .as_deref()
        .filter(|t| t.starts_with("audio/"))
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or_else(|| {
            let lower = row.record.record_file.to_ascii_lowercase();
            HeaderValue::from_static(if lower.ends_with(".mp3") {
                "audio/mpeg"
            } else if lower.ends_with(".wav") {
                "audio/wav"
            } else {
                "application/octet-stream"
            })
        })
}

/// `UUID.ext` with only safe characters, for `Content-Disposition`.
fn download_name(uuid: &str, record_file: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let ext = record_file
        .rsplit_once('.')
        .map(|(_, e)| safe(e))
        .filter(|e| !e.is_empty() && e.len() <= 5)
        .unwrap_or_else(|| "bin".into());
    format!("{}.{ext}", safe(uuid))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Result<Option<Range<u64>>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        requested_range(&h, size)
    }

    #[test]
    fn ranges_are_read_as_the_browser_sends_them() {
        assert_eq!(range("bytes=0-", 100), Ok(Some(0..100)));
        assert_eq!(range("bytes=10-19", 100), Ok(Some(10..20)));
        assert_eq!(range("bytes=90-200", 100), Ok(Some(90..100)));
        assert_eq!(range("bytes=-10", 100), Ok(Some(90..100)));
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
        assert_eq!(range("bytes=x-1", 100), Err(()));
        assert_eq!(requested_range(&HeaderMap::new(), 100), Ok(None));
    }

    #[tokio::test]
    async fn a_download_that_does_not_match_the_ledger_ends_in_an_error() {
        let chunks = || {
            futures::stream::iter(vec![
                Ok(Bytes::from_static(b"abc")),
                Ok(Bytes::from_static(b"def")),
            ])
            .boxed()
        };
        let good = hex::encode(Sha256::digest(b"abcdef"));
        let out: Vec<_> = checked(chunks(), good, 6, "u".into()).collect().await;
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(out.len(), 2);
        let out: Vec<_> = checked(chunks(), "00".repeat(32), 6, "u".into())
            .collect()
            .await;
        assert_eq!(
            out.len(),
            2,
            "the first chunk, then the error instead of the last"
        );
        assert!(out[0].is_ok() && out[1].is_err());
    }
}
