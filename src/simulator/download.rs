//! The signed download endpoint: checks the link, applies queued download faults, honours a
//! single byte range, and streams the recording.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Shared;
use super::accounts::AccountIndex;
use super::faults::DownloadFault;
use super::recordings::{Content, Plan, body_stream, content_type, header_len};

/// Hex SHA-256 over (secret, account, filename, expires), the signature of a download
/// link: a link is for one account's recording.
pub(super) fn sign(secret: &[u8], account: AccountIndex, filename: &str, expires: i64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(secret);
    hasher.update(account.to_le_bytes());
    hasher.update(filename.as_bytes());
    hasher.update(b"\n");
    hasher.update(expires.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

#[derive(Debug, Deserialize)]
pub(super) struct LinkQuery {
    /// Absent for the default account's links (index 0).
    #[serde(default)]
    account: AccountIndex,
    expires: Option<String>,
    sig: Option<String>,
}

/// `GET /recordings/{filename}?[account=..&]expires=..&sig=..`
pub(super) async fn download(
    State(shared): State<Arc<Shared>>,
    Path(filename): Path<String>,
    Query(link): Query<LinkQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let signed = is_signed(&shared.secret, &filename, &link);
    let wants_range = headers.contains_key(header::RANGE);
    let (size, fault, ignore_ranges) = {
        let mut state = shared.lock();
        state.stats.downloads += 1;
        if !signed {
            return forbidden();
        }
        let account = state.accounts.get(link.account);
        let Some(size) = account.and_then(|a| a.recordings.get(&filename).copied()) else {
            return error_page(StatusCode::NOT_FOUND, "404 Not Found");
        };
        let ignore_ranges = state.faults.knobs().ignore_ranges;
        if wants_range && !ignore_ranges {
            state.stats.ranged_downloads += 1;
        }
        (size, state.faults.take_download(&filename), ignore_ranges)
    };
    tracing::debug!(%filename, size, ?fault, "simulator download");
    let (plan, size) = match with_fault(fault, &filename, &uri, size) {
        Faulted::Send(plan, size) => (plan, size),
        Faulted::Instead(answer) => return answer,
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| !ignore_ranges);
    let ranged = range.map_or(Ranged::Full, |r| parse_range(r, size));
    shared.lock().stats.bytes_announced += match &ranged {
        Ranged::Full => size,
        Ranged::Partial(r) => r.end - r.start,
        Ranged::Unsatisfiable => 0,
    };
    send(Content::new(&filename, size), &filename, size, ranged, plan)
}

/// Whether `link` carries an unexpired signature of `filename`.
fn is_signed(secret: &[u8], filename: &str, link: &LinkQuery) -> bool {
    let now = chrono::Utc::now().timestamp();
    match (
        link.expires.as_deref().map(str::parse::<i64>),
        link.sig.as_deref(),
    ) {
        (Some(Ok(expires)), Some(sig)) => {
            expires >= now
                && sig.eq_ignore_ascii_case(&sign(secret, link.account, filename, expires))
        }
        _ => false,
    }
}

/// What a queued download fault makes of the answer.
enum Faulted {
    /// The recording is sent as the plan says, this many bytes long.
    Send(Plan, u64),
    /// This answer is sent instead.
    Instead(Response),
}

/// What a queued download `fault` makes of the recording of `size` bytes.
fn with_fault(fault: Option<DownloadFault>, filename: &str, uri: &Uri, size: u64) -> Faulted {
    let mut plan = Plan::default();
    let mut size = size;
    match fault {
        Some(DownloadFault::Http500) => {
            return Faulted::Instead(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error",
            ));
        }
        Some(DownloadFault::HtmlPage) => {
            return Faulted::Instead(error_page(
                StatusCode::OK,
                "System busy, please try again later (error)",
            ));
        }
        Some(DownloadFault::Expired) => return Faulted::Instead(forbidden()),
        Some(DownloadFault::Stall(pause)) => plan.stall = Some(pause),
        Some(DownloadFault::Truncate(n)) => plan.stop_after = Some(n),
        Some(DownloadFault::ResetMidBody(n)) => (plan.stop_after, plan.reset) = (Some(n), true),
        Some(DownloadFault::StallAfter(n, pause)) => {
            (plan.stop_after, plan.silence) = (Some(n), Some(pause));
        }
        Some(DownloadFault::RedirectTo(base)) => {
            let target = format!(
                "{}/{}",
                base.trim_end_matches('/'),
                uri.path_and_query()
                    .map_or("", |p| p.as_str())
                    .trim_start_matches('/')
            );
            return Faulted::Instead(
                (StatusCode::FOUND, [(header::LOCATION, target)]).into_response(),
            );
        }
        Some(DownloadFault::ZeroLength) => size = 0,
        Some(DownloadFault::HeaderOnly) => size = header_len(filename).min(size),
        None => {}
    }
    Faulted::Send(plan, size)
}

/// The answer for the `ranged` part of `content` (`size` bytes), sent as `plan` says.
fn send(content: Content, filename: &str, size: u64, ranged: Ranged, plan: Plan) -> Response {
    let ctype = content_type(filename);
    match ranged {
        Ranged::Full => {
            let body = Body::from_stream(body_stream(content, 0..size, plan));
            let hdrs = [
                (header::CONTENT_TYPE, ctype.to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
                (header::ACCEPT_RANGES, "bytes".to_owned()),
            ];
            (StatusCode::OK, hdrs, body).into_response()
        }
        Ranged::Partial(r) => {
            let hdrs = [
                (header::CONTENT_TYPE, ctype.to_owned()),
                (header::CONTENT_LENGTH, (r.end - r.start).to_string()),
                (
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{size}", r.start, r.end - 1),
                ),
                (header::ACCEPT_RANGES, "bytes".to_owned()),
            ];
            let body = Body::from_stream(body_stream(content, r, plan));
            (StatusCode::PARTIAL_CONTENT, hdrs, body).into_response()
        }
        Ranged::Unsatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{size}"))],
        )
            .into_response(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ranged {
    Full,
    Partial(Range<u64>),
    Unsatisfiable,
}

/// A single `bytes=N-`, `bytes=N-M` or `bytes=-N`; anything else is ignored, as RFC 9110 allows.
fn parse_range(value: &str, size: u64) -> Ranged {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ranged::Full;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Full;
    };
    if spec.contains(',') {
        return Ranged::Full;
    }
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(0) => Ranged::Unsatisfiable,
            Ok(n) if size > 0 => Ranged::Partial(size.saturating_sub(n)..size),
            Ok(_) => Ranged::Unsatisfiable,
            Err(_) => Ranged::Full,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Ranged::Full;
    };
    let end = match last {
        "" => size,
        _ => match last.parse::<u64>() {
            Ok(m) if m >= start => m.saturating_add(1).min(size),
            _ => return Ranged::Full,
        },
    };
    if start >= size {
        Ranged::Unsatisfiable
    } else {
        Ranged::Partial(start..end)
    }
}

fn forbidden() -> Response {
    let body = concat!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>",
        "<Message>Request has expired or the signature does not match</Message></Error>\n",
    );
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<html><head><title>{message}</title></head>\
         <body><h1>{message}</h1><p>error</p></body></html>\n"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_range("bytes=10-", 100), Ranged::Partial(10..100));
        assert_eq!(parse_range("bytes=10-19", 100), Ranged::Partial(10..20));
        assert_eq!(parse_range("bytes=90-500", 100), Ranged::Partial(90..100));
        assert_eq!(parse_range("bytes=-5", 100), Ranged::Partial(95..100));
        assert_eq!(parse_range("bytes=100-", 100), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=1-2,5-6", 100), Ranged::Full);
        assert_eq!(parse_range("items=1-2", 100), Ranged::Full);
    }
}
