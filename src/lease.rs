//! Leases: a claim in the ledger that lapses unless its holder renews it, so that work a
//! dead process held is taken over once its lease runs out, and work a live one holds is
//! never taken from it. The pass leases the records it claims, manifest writing leases the
//! chain's head; both compute a lease's end and keep it alive here, the one way: renewed
//! every third of its length while the work goes on, so two renewals can fail before it
//! lapses.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::ledger::LedgerError;

/// How often a lease is renewed at most, however short it is.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// A lease's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    length: Duration,
}

impl Lease {
    pub fn new(length: Duration) -> Self {
        Self { length }
    }

    /// When a lease taken or renewed at `now` runs out.
    pub fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.length)
            .ok()
            .and_then(|length| now.checked_add_signed(length))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// How long between renewals: a third of the lease.
    pub fn period(&self) -> Duration {
        (self.length / 3).max(MIN_PERIOD)
    }

    /// Keeps the lease alive for as long as this future is polled (it never ends: select it
    /// against the work): every [`Lease::period`] on `clock`, `renew` is given the lease's
    /// new end. A renewal that fails is logged, naming `what`; the next may succeed before
    /// the lease runs out.
    pub async fn keep<T, F, Fut>(&self, clock: &Clock, what: &str, mut renew: F) -> Infallible
    where
        F: FnMut(DateTime<Utc>) -> Fut,
        Fut: Future<Output = Result<T, LedgerError>>,
    {
        loop {
            clock.sleep(self.period()).await;
            if let Err(e) = renew(self.until(clock.now())).await {
                tracing::warn!(error = %e, "could not renew the lease on {what}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_renewed_every_third_of_its_length() {
        let lease = Lease::new(Duration::from_secs(30));
        assert_eq!(lease.period(), Duration::from_secs(10));
        let now = Utc::now();
        assert_eq!(lease.until(now), now + chrono::Duration::seconds(30));
        assert_eq!(
            Lease::new(Duration::from_millis(30)).period(),
            MIN_PERIOD,
            "however short the lease"
        );
    }
}
