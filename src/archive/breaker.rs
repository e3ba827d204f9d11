//! The run's guard against an outage and its stop signal. A store or download host that
//! does not answer at all is not a property of each recording: once it has failed that way
//! on every try for a short window, across workers, the run stops claiming and gives its
//! records back unspent (exit 1). Any answer from the far side resets the count. A refusal
//! (the store's 403, the provider's credentials) halts the run at once through the same
//! signal, so every worker gives its record back.
//!
//! The guard also keeps the reasons (attempt error codes) of every unanswered try, per
//! side: once it trips, the records this run left for later for one of those reasons before
//! it knew get their attempts back too (see `archive::work`).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio_util::sync::CancellationToken;

/// The far side a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Store,
    DownloadHost,
}

impl Side {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Side::Store => "the object store",
            Side::DownloadHost => "the recordings' download host",
        }
    }
}

/// Unanswered tries in a row on one side, and when the first of them was.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    failures: u32,
    since: Option<DateTime<Utc>>,
}

/// The reasons of the run's unanswered tries per side, and the side it found down.
#[derive(Debug, Default)]
struct Outage {
    reasons: [BTreeSet<String>; 2],
    down: Option<Side>,
}

/// Shared by the workers of one run.
#[derive(Debug)]
pub(super) struct RunGuard {
    halted: CancellationToken,
    failures: u32,
    window: Duration,
    streaks: Mutex<[Streak; 2]>,
    outage: Mutex<Outage>,
}

impl RunGuard {
    pub(super) fn new(failures: u32, window: Duration) -> Self {
        Self {
            halted: CancellationToken::new(),
            failures: failures.max(1),
            window,
            streaks: Mutex::new([Streak::default(); 2]),
            outage: Mutex::default(),
        }
    }

    /// The side the breaker found down, and the reasons its tries failed with in this run.
    pub(super) fn outage(&self) -> Option<(Side, Vec<String>)> {
        let outage = self.outage.lock().ok()?;
        let side = outage.down?;
        Some((
            side,
            outage.reasons[side as usize].iter().cloned().collect(),
        ))
    }

    /// The run was stopped by a worker (a refusal or an outage).
    pub(super) fn is_halted(&self) -> bool {
        self.halted.is_cancelled()
    }

    pub(super) fn halt(&self) {
        self.halted.cancel();
    }

    /// The side answered (whatever it said): the outage count starts over.
    pub(super) fn answered(&self, side: Side) {
        if let Ok(mut streaks) = self.streaks.lock() {
            streaks[side as usize] = Streak::default();
        }
    }

    /// The side did not answer at all (the attempt failed with `reason`, at `now`); `true`
    /// when that trips the breaker (the run halts).
    pub(super) fn unanswered(&self, side: Side, reason: &str, now: DateTime<Utc>) -> bool {
        if let Ok(mut outage) = self.outage.lock() {
            outage.reasons[side as usize].insert(reason.to_owned());
        }
        let tripped = match self.streaks.lock() {
            Ok(mut streaks) => {
                let streak = &mut streaks[side as usize];
                streak.failures = streak.failures.saturating_add(1);
                let since = *streak.since.get_or_insert(now);
                let over = (now - since).to_std().unwrap_or_default();
                streak.failures >= self.failures && over >= self.window
            }
            Err(_) => false,
        };
        if tripped {
            if let Ok(mut outage) = self.outage.lock() {
                outage.down.get_or_insert(side);
            }
            self.halt();
        }
        tripped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_only_on_enough_unanswered_tries_over_the_window() {
        let now = Utc::now();
        let guard = RunGuard::new(3, Duration::ZERO);
        assert!(!guard.unanswered(Side::Store, "store_failed", now));
        assert!(!guard.unanswered(Side::Store, "store_failed", now));
        guard.answered(Side::Store);
        assert!(!guard.unanswered(Side::Store, "sidecar_failed", now));
        assert!(!guard.unanswered(Side::DownloadHost, "download_connect", now));
        assert!(!guard.unanswered(Side::Store, "store_failed", now));
        assert!(!guard.is_halted());
        assert_eq!(guard.outage(), None, "not tripped yet");
        assert!(guard.unanswered(Side::Store, "store_failed", now));
        assert!(guard.is_halted());
        assert_eq!(
            guard.outage(),
            Some((
                Side::Store,
                vec!["sidecar_failed".to_owned(), "store_failed".to_owned()]
            )),
            "every reason the store's tries failed with, before the streak too"
        );

        let slow = RunGuard::new(2, Duration::from_secs(3600));
        assert!(!slow.unanswered(Side::DownloadHost, "download_connect", now));
        let later = now + chrono::Duration::minutes(59);
        assert!(
            !slow.unanswered(Side::DownloadHost, "download_connect", later),
            "not over the window yet"
        );
        let hour = now + chrono::Duration::hours(1);
        assert!(slow.unanswered(Side::DownloadHost, "download_connect", hour));
    }
}
