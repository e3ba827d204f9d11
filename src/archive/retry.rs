//! One retry configuration with documented defaults: exponential backoff with jitter within
//! a run, then a growing delay before a later run picks the record up again.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts on one record within one run (each with a fresh link). Default 3.
    pub attempts_per_run: u32,
    /// First in-run backoff; doubles per attempt, up to `max_delay`. Default 1 s.
    pub base_delay: Duration,
    /// Default 30 s.
    pub max_delay: Duration,
    /// Delay before a later run retries a record that ran out of in-run attempts; doubles
    /// with every such round, up to `later_max`. Default 5 min.
    pub later_base: Duration,
    /// Default 6 h.
    pub later_max: Duration,
    /// After this many attempts in all, a record that still fails is marked failed. Default 30.
    pub max_attempts: u32,
    /// The run's breaker: when the store (or the download host) has not answered at all
    /// (connection refused, reset, timed out) this many times in a row, across workers,
    /// over at least `outage_window`, the run stops and gives its records back without
    /// spending their attempts (exit 1). Default 4 failures over 2 s.
    pub outage_failures: u32,
    pub outage_window: Duration,
    /// An answer that says the recording cannot be had (`code 1002`, HTTP 404/410 on a
    /// fresh link, an illegal file name) fails the record only once it came back on at
    /// least this many attempts spread over at least `give_up_window`; before that it is
    /// retried like a passing failure. Past the retention horizon a vanished file is
    /// `expired` at once. Default 3 answers over 1 h.
    pub give_up_answers: u32,
    pub give_up_window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_per_run: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            later_base: Duration::from_secs(300),
            later_max: Duration::from_secs(6 * 3600),
            max_attempts: 30,
            outage_failures: 4,
            outage_window: Duration::from_secs(2),
            give_up_answers: 3,
            give_up_window: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Backoff before in-run attempt `attempt + 1` (`attempt` ≥ 1): half fixed, half random.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let full = exponential(self.base_delay, self.max_delay, attempt.saturating_sub(1));
        let half = full / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// How long until a later run may retry, after `rounds` runs gave up on the record.
    pub fn later(&self, rounds: u32) -> Duration {
        exponential(self.later_base, self.later_max, rounds.saturating_sub(1))
    }
}

fn exponential(base: Duration, max: Duration, doublings: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(doublings.min(30)))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let p = RetryPolicy::default();
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(
                b1 >= Duration::from_millis(500) && b1 <= Duration::from_secs(1),
                "{b1:?}"
            );
            let b3 = p.backoff(3);
            assert!(
                b3 >= Duration::from_secs(2) && b3 <= Duration::from_secs(4),
                "{b3:?}"
            );
            assert!(p.backoff(40) <= p.max_delay);
        }
        assert_eq!(p.later(1), Duration::from_secs(300));
        assert_eq!(p.later(3), Duration::from_secs(1200));
        assert_eq!(p.later(100), p.later_max);
    }
}
