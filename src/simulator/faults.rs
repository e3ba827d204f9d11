//! Fault injection: knobs that make the simulator misbehave on purpose, deterministically,
//! so tests can drive the archiver through every recovery path it claims to have.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// API-level faults, changed at runtime with [`super::Simulator::set_faults`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every Nth `GetRecodeFile` request made with a live token first invalidates all tokens,
    /// so that request (and any concurrent one) answers ret 600: a token serves N - 1 link
    /// requests. `Some(0)` is treated as off.
    pub invalidate_tokens_every: Option<u32>,
    /// Every Nth `GetRecodeFile` request made with a live token answers status 1 / code "1010"
    /// (Extension exception) and invalidates all tokens. `Some(0)` is treated as off.
    pub extension_exception_every: Option<u32>,
    /// The next N API requests other than Login answer `{"ret":500,...,"msg":"Server Error"}`.
    pub server_error_next: u32,
    /// Bursts of `ret` 500: `Some((period, len))` makes the first `len` of every `period`
    /// API requests other than Login (counted from when the knob was set) answer ret 500.
    /// A `period` of 0 is off.
    pub server_error_bursts: Option<(u32, u32)>,
    /// The next N `GetRecodeFile` requests with a valid token answer status 1 / code "1001".
    pub code_1001_next: u32,
    /// Every login answers ret 601.
    pub refuse_logins: bool,
    /// Sleep this long before answering any API request.
    pub api_delay: Option<Duration>,
    /// The download endpoint ignores `Range` and always sends the whole file (200).
    pub ignore_ranges: bool,
    /// Hand out download links under this base URL (`http://host:port/`) instead of the
    /// simulator's own, as a provider pointing at another host would.
    pub link_base: Option<String>,
    /// Drop this share (0–100) of the callbacks `deliver_callbacks` would post: exactly
    /// that many in every hundred, spread evenly, so the drill knows what to expect.
    pub drop_callbacks_percent: u8,
    /// Bills carry their call's `uuid` (the clients seen read none; off by default).
    pub bills_with_uuid: bool,
}

/// A one-shot misbehaviour of the download endpoint, queued per filename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadFault {
    /// HTTP 500 with an HTML error page.
    Http500,
    /// Full `Content-Length`, but the body ends cleanly after this many bytes and the
    /// connection is closed.
    Truncate(u64),
    /// HTTP 200 with `Content-Type: text/html` and an error page instead of audio.
    HtmlPage,
    /// HTTP 403, as if the signed link had expired.
    Expired,
    /// Headers are sent at once, the body only after this pause.
    Stall(Duration),
    /// Like `Truncate`, but the body stream fails with a connection-reset error after this
    /// many bytes.
    ResetMidBody(u64),
    /// After this many bytes the body goes silent for this long (a stall mid-body).
    StallAfter(u64, Duration),
    /// HTTP 302 to the same path and query under this base URL (`http://host:port/`).
    RedirectTo(String),
    /// HTTP 200 with an empty body.
    ZeroLength,
    /// HTTP 200 with the file's header alone (a 44-byte WAV with no samples, an ID3 tag and
    /// frame header with no frame), a complete response that is not audio.
    HeaderOnly,
}

/// The periodic faults that fire on one `GetRecodeFile` request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Periodic {
    pub invalidate_tokens: bool,
    pub extension_exception: bool,
}

/// The knobs plus the counters and queues they consume.
#[derive(Debug, Default)]
pub(super) struct FaultState {
    knobs: Faults,
    /// `GetRecodeFile` requests with a live token seen since an `*_every` knob last changed.
    recode_seq: u64,
    /// API requests other than Login seen since `server_error_bursts` last changed.
    burst_seq: u64,
    /// Callbacks considered for delivery since `drop_callbacks_percent` last changed.
    delivery_seq: u64,
    downloads: HashMap<String, VecDeque<DownloadFault>>,
}

impl FaultState {
    pub fn knobs(&self) -> &Faults {
        &self.knobs
    }

    /// Applies `f`; the every-N phase restarts when either every-N knob changes, so
    /// "every 3rd" means the 3rd, 6th, ... request after the knob was set.
    pub fn update(&mut self, f: impl FnOnce(&mut Faults)) {
        let before = (
            self.knobs.invalidate_tokens_every,
            self.knobs.extension_exception_every,
        );
        let bursts = self.knobs.server_error_bursts;
        let drops = self.knobs.drop_callbacks_percent;
        f(&mut self.knobs);
        if drops != self.knobs.drop_callbacks_percent {
            self.delivery_seq = 0;
        }
        if bursts != self.knobs.server_error_bursts {
            self.burst_seq = 0;
        }
        let after = (
            self.knobs.invalidate_tokens_every,
            self.knobs.extension_exception_every,
        );
        if before != after {
            self.recode_seq = 0;
        }
    }

    /// Counts one API request other than Login; true when it must answer ret 500 (a
    /// pending `server_error_next`, or a position inside a burst).
    pub fn take_server_error(&mut self) -> bool {
        let seq = self.burst_seq;
        self.burst_seq += 1;
        let in_burst = self
            .knobs
            .server_error_bursts
            .is_some_and(|(period, len)| period > 0 && seq % u64::from(period) < u64::from(len));
        take_one(&mut self.knobs.server_error_next) || in_burst
    }

    /// Counts one callback about to be delivered; true when it must be dropped. With p %,
    /// the n-th callback is dropped when ⌊n·p/100⌋ steps up: p of every 100, evenly.
    pub fn take_drop(&mut self) -> bool {
        let percent = u64::from(self.knobs.drop_callbacks_percent.min(100));
        let n = self.delivery_seq;
        self.delivery_seq += 1;
        (n + 1) * percent / 100 > n * percent / 100
    }

    /// Consumes one pending code-1001 answer, if any.
    pub fn take_code_1001(&mut self) -> bool {
        take_one(&mut self.knobs.code_1001_next)
    }

    /// Counts one `GetRecodeFile` request and reports which periodic faults fire on it.
    pub fn next_recode(&mut self) -> Periodic {
        self.recode_seq += 1;
        let seq = self.recode_seq;
        let fires =
            |every: Option<u32>| every.is_some_and(|n| n > 0 && seq.is_multiple_of(n.into()));
        Periodic {
            invalidate_tokens: fires(self.knobs.invalidate_tokens_every),
            extension_exception: fires(self.knobs.extension_exception_every),
        }
    }

    pub fn push_download(&mut self, filename: &str, fault: DownloadFault) {
        self.downloads
            .entry(filename.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// Forgets every queued download fault.
    pub fn clear_downloads(&mut self) {
        self.downloads.clear();
    }

    /// Consumes the next queued fault for `filename`, if any.
    pub fn take_download(&mut self, filename: &str) -> Option<DownloadFault> {
        let queue = self.downloads.get_mut(filename)?;
        let fault = queue.pop_front();
        if queue.is_empty() {
            self.downloads.remove(filename);
        }
        fault
    }
}

fn take_one(counter: &mut u32) -> bool {
    if *counter == 0 {
        return false;
    }
    *counter -= 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_callbacks_are_exactly_the_share_asked() {
        let mut state = FaultState::default();
        state.update(|f| f.drop_callbacks_percent = 10);

        let dropped: Vec<u64> = (0..100).filter(|_| state.take_drop()).collect();

        assert_eq!(dropped.len(), 10);
        assert_eq!(dropped, [9, 19, 29, 39, 49, 59, 69, 79, 89, 99]);
    }

    #[test]
    fn every_n_counts_from_when_the_knob_was_set() {
        let mut state = FaultState::default();
        state.next_recode();
        state.update(|f| f.invalidate_tokens_every = Some(3));

        let fired: Vec<bool> = (0..6)
            .map(|_| state.next_recode().invalidate_tokens)
            .collect();

        assert_eq!(fired, [false, false, true, false, false, true]);
    }

    #[test]
    fn bursts_of_server_errors_repeat_every_period() {
        let mut state = FaultState::default();
        state.take_server_error();
        state.update(|f| f.server_error_bursts = Some((5, 2)));

        let fired: Vec<bool> = (0..10).map(|_| state.take_server_error()).collect();

        assert_eq!(
            fired,
            [
                true, true, false, false, false, true, true, false, false, false
            ]
        );
    }

    #[test]
    fn zero_period_is_off_and_queues_drain_in_order() {
        let mut state = FaultState::default();
        state.update(|f| f.extension_exception_every = Some(0));
        state.push_download("a.wav", DownloadFault::Http500);
        state.push_download("a.wav", DownloadFault::Truncate(5));

        assert!(!state.next_recode().extension_exception);
        assert_eq!(state.take_download("a.wav"), Some(DownloadFault::Http500));
        assert_eq!(
            state.take_download("a.wav"),
            Some(DownloadFault::Truncate(5))
        );
        assert_eq!(state.take_download("a.wav"), None);
    }
}
