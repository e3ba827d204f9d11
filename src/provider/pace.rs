//! Politeness towards the provider: one pace for every request a process makes to its API
//! (logins, recording links, bill pages), whatever the number of workers. `--api-rate N`
//! spaces requests at least 1/N s apart (plus a small margin, so that network jitter cannot
//! put N + 1 of them into one second at the provider); a provider that answers `ret` 500 (or
//! HTTP 5xx/429) slows the pace down further (the spacing doubles, up to
//! [`MAX_BACKOFF_SPACING`]), and answers that succeed bring it back gradually. The pace is
//! shared through an `Arc`; each request reserves the next free slot and waits for it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The spacing a first server error imposes when there was none (no `--api-rate`, or a
/// faster one).
pub const MIN_BACKOFF_SPACING: Duration = Duration::from_millis(50);
/// The slowest the back-off goes: one request every 5 s.
pub const MAX_BACKOFF_SPACING: Duration = Duration::from_secs(5);
/// Added to 1/N so that jitter between here and the provider keeps the rate under N.
const JITTER_MARGIN: f64 = 1.05;

#[derive(Debug)]
pub struct Pace {
    /// 1/N (with the margin), or zero without a limit.
    spacing: Duration,
    state: Mutex<PaceState>,
}

#[derive(Debug)]
struct PaceState {
    /// The earliest the next request may start.
    next: Option<Instant>,
    /// Extra spacing imposed by server errors.
    backoff: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Pace {
    /// At most `per_second` requests a second (`None`: no limit but the back-off).
    pub fn new(per_second: Option<f64>) -> Self {
        let spacing = per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map_or(Duration::ZERO, |r| {
                Duration::from_secs_f64(JITTER_MARGIN / r)
            });
        Self {
            spacing,
            state: Mutex::new(PaceState {
                next: None,
                backoff: Duration::ZERO,
            }),
        }
    }

    /// The spacing now: the rate's, or the back-off's when larger.
    pub fn current_spacing(&self) -> Duration {
        let state = self.lock();
        self.spacing.max(state.backoff)
    }

    /// Waits for this request's slot (reserved at once, so callers queue in order).
    pub async fn wait(&self) {
        let slot = {
            let mut state = self.lock();
            let spacing = self.spacing.max(state.backoff);
            if spacing.is_zero() {
                return;
            }
            let now = Instant::now();
            let slot = state.next.map_or(now, |next| next.max(now));
            state.next = Some(slot + spacing);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// The provider answered with a server error: slow down.
    pub fn server_error(&self) {
        let mut state = self.lock();
        state.backoff = (state.backoff * 2)
            .max(MIN_BACKOFF_SPACING)
            .max(self.spacing)
            .min(MAX_BACKOFF_SPACING);
    }

    /// The provider answered properly: recover a quarter of the back-off.
    pub fn success(&self) {
        let mut state = self.lock();
        if state.backoff.is_zero() {
            return;
        }
        state.backoff = state.backoff * 3 / 4;
        if state.backoff <= self.spacing || state.backoff < Duration::from_millis(1) {
            state.backoff = Duration::ZERO;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PaceState> {
        // A panic while holding this lock leaves consistent numbers behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_rate() {
        let pace = Pace::new(Some(10.0));
        let start = Instant::now();
        for _ in 0..11 {
            pace.wait().await;
        }
        // 10 gaps of 105 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(1050));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_rate_nothing_waits() {
        let pace = Pace::default();
        let start = Instant::now();
        for _ in 0..100 {
            pace.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn server_errors_slow_down_and_successes_recover() {
        let pace = Pace::new(Some(100.0));
        let base = pace.current_spacing();
        pace.server_error();
        assert_eq!(pace.current_spacing(), MIN_BACKOFF_SPACING);
        for _ in 0..20 {
            pace.server_error();
        }
        assert_eq!(pace.current_spacing(), MAX_BACKOFF_SPACING);
        let mut successes = 0;
        while pace.current_spacing() > base {
            pace.success();
            successes += 1;
            assert!(successes < 100, "the pace recovers");
        }
        assert_eq!(pace.current_spacing(), base);
        assert!(successes > 5, "gradually: {successes}");
    }
}
