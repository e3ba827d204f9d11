//! One classification of failures for the provider's API, the recording download and the
//! object store, by what the caller must do about it. Each adapter's error enum answers
//! `action()` with one of these, so the pass decides the same way whoever failed.
//!
//! Policy: re-login is handled inside the provider client (a caller only sees it when
//! logging in again did not help); stop-the-run is for what no retry can fix and no record
//! is to blame for (refused credentials, a store that refuses us), and it must not mark a
//! record failed nor spend its attempts; retry is for anything passing; give-up is for an
//! answer that says the recording cannot be had, and even then only once it repeats (see
//! `archive::decide`). Whether a retryable failure means the far side is not answering at
//! all (an outage, for the run's breaker) is asked separately, with `is_unreachable()`.

/// The action a failure asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Log in again and repeat the request.
    Relogin,
    /// Stop the whole run; release the records without counting an attempt.
    StopRun,
    /// Try again (backoff, then a later run).
    Retry,
    /// The answer says the recording cannot be had: fail the record once that repeats.
    GiveUp,
}
