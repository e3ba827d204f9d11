//! Time from outside. The pass (leases, the give-up window, the retention horizon and the
//! dates a recording is locked until) and the web page's sessions and login locks read the
//! time from a [`Clock`] they are given, like any other dependency, and wait on it; never
//! from a global. The binary gives them the system's clock. A test gives them the clock of a
//! [`TestClock`], which runs with real time but can be moved forward: a lease runs out, a
//! window passes or a session ends when the test says so, instead of after a sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Where the time comes from: the system, or a test's shifted time. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock(Source);

#[derive(Debug, Clone, Default)]
enum Source {
    #[default]
    System,
    Test(Arc<Shift>),
}

/// How far a test moved its clock ahead of real time, and a signal for those waiting on it.
#[derive(Debug)]
struct Shift {
    ahead_ms: AtomicI64,
    moved: watch::Sender<()>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        match &self.0 {
            Source::System => now,
            Source::Test(shift) => {
                now + chrono::Duration::milliseconds(shift.ahead_ms.load(Ordering::SeqCst))
            }
        }
    }

    /// Waits until this clock has moved on by `period`, by real time passing or a test
    /// moving it (with tokio's paused time, as tokio's own sleep does).
    pub async fn sleep(&self, period: Duration) {
        let Source::Test(shift) = &self.0 else {
            return tokio::time::sleep(period).await;
        };
        let Some(until) = chrono::Duration::from_std(period)
            .ok()
            .and_then(|period| self.now().checked_add_signed(period))
        else {
            return std::future::pending().await;
        };
        let mut moved = shift.moved.subscribe();
        loop {
            let Ok(left) = (until - self.now()).to_std() else {
                return;
            };
            if left.is_zero() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                changed = moved.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A clock for tests: real time, plus however far the test moved it forward.
#[derive(Debug, Clone)]
pub struct TestClock(Arc<Shift>);

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClock {
    pub fn new() -> Self {
        Self(Arc::new(Shift {
            ahead_ms: AtomicI64::new(0),
            moved: watch::Sender::new(()),
        }))
    }

    /// The clock to hand to what is tested.
    pub fn clock(&self) -> Clock {
        Clock(Source::Test(Arc::clone(&self.0)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock().now()
    }

    /// Moves the clock forward by `by`; whatever waits on it wakes if its time has come.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.ahead_ms.fetch_add(ms, Ordering::SeqCst);
        self.0.moved.send_replace(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_runs_with_real_time_and_moves_forward_when_told() {
        let test = TestClock::new();
        let clock = test.clock();
        let before = Utc::now();
        assert!(clock.now() >= before);
        test.advance(Duration::from_secs(3600));
        let moved = clock.now() - before;
        assert!(
            moved >= chrono::Duration::hours(1)
                && moved < chrono::Duration::hours(1) + chrono::Duration::seconds(60),
            "{moved}"
        );
        assert!(Clock::system().now() < clock.now());
    }

    #[tokio::test]
    async fn a_sleep_on_a_test_clock_ends_when_the_clock_is_moved_past_it() {
        let test = TestClock::new();
        let clock = test.clock();
        let sleeper = tokio::spawn(async move { clock.sleep(Duration::from_secs(3600)).await });
        tokio::task::yield_now().await;
        test.advance(Duration::from_secs(1800));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "half way");
        test.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken by the move")
            .unwrap();
    }
}
