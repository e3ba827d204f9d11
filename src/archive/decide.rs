//! The one choice of how an attempt ends: from what happened, where the record stands
//! (attempts so far, the retention horizon, whether the run is stopping) and the retry
//! policy, to the settlement and the attempt's outcome. Pure, so every case sits in one
//! table-driven test; `record::process` is the loop around it and only carries it out.

use super::retry::RetryPolicy;
use crate::domain::AttemptOutcome;

/// What one attempt came to, as far as the decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Happened {
    /// The recording and its sidecar are stored and checked.
    Archived,
    /// A passing failure.
    Passing,
    /// An answer saying the recording cannot be had; `gone` when the provider no longer has
    /// the file (past the retention horizon that is an expiry, not a failure).
    CannotBeHad { gone: bool },
    /// The run must stop (refused credentials, a store that refuses us, an outage): no
    /// record is to blame.
    RunStopped,
    /// Shutdown interrupted the attempt.
    Interrupted,
}

/// Where the record stands as the attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Standing {
    /// This attempt's number within the run (1: the one the claim started).
    pub attempt_in_run: u32,
    /// Attempts counted in the ledger for this record, this one included.
    pub total_attempts: i64,
    /// The call is older than the provider's retention.
    pub past_horizon: bool,
    /// The run stops claiming (deadline, shutdown): no more in-run retries.
    pub stopping: bool,
    /// Another worker stopped the run (a refusal, an outage): whatever happened here, the
    /// record goes back without spending this attempt.
    pub halted: bool,
    /// Attempts that got this same answer, this one included, and how long since the
    /// first of them: an answer that the recording cannot be had must repeat.
    pub same_answers: u32,
    pub same_answers_over: std::time::Duration,
}

/// How the record is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Archive,
    /// Try again in this run, after the backoff.
    Again,
    /// Back to pending for a later run, `rounds` runs having given up on it so far.
    Later {
        rounds: u32,
    },
    /// Failed; `gave_up` when only the attempt limit made it so.
    Fail {
        gave_up: bool,
    },
    Expire,
    /// Back to pending, due at once, the attempt counted (shutdown).
    Release,
    /// Back to pending, due at once, the attempt given back (the run stopped).
    Return,
}

/// The settlement and the attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decision {
    pub verdict: Verdict,
    pub outcome: AttemptOutcome,
}

/// Decides how the attempt ends.
pub(super) fn decide(happened: Happened, at: Standing, policy: &RetryPolicy) -> Decision {
    let d = |verdict, outcome| Decision { verdict, outcome };
    match happened {
        Happened::Archived => d(Verdict::Archive, AttemptOutcome::Archived),
        Happened::Interrupted => d(Verdict::Release, AttemptOutcome::Aborted),
        Happened::RunStopped => d(Verdict::Return, AttemptOutcome::Stopped),
        _ if at.halted => d(Verdict::Return, AttemptOutcome::Stopped),
        Happened::CannotBeHad { gone: true } if at.past_horizon => {
            d(Verdict::Expire, AttemptOutcome::Expired)
        }
        Happened::CannotBeHad { .. }
            if at.same_answers >= policy.give_up_answers
                && at.same_answers_over >= policy.give_up_window =>
        {
            d(Verdict::Fail { gave_up: false }, AttemptOutcome::Failed)
        }
        // Not repeated enough yet: tried again like any passing failure.
        Happened::CannotBeHad { .. } => decide(Happened::Passing, at, policy),
        Happened::Passing if at.total_attempts >= i64::from(policy.max_attempts) => {
            d(Verdict::Fail { gave_up: true }, AttemptOutcome::Transient)
        }
        Happened::Passing if at.attempt_in_run >= policy.attempts_per_run || at.stopping => {
            let per_run = i64::from(policy.attempts_per_run.max(1));
            let rounds = u32::try_from(at.total_attempts / per_run)
                .unwrap_or(u32::MAX)
                .max(1);
            d(Verdict::Later { rounds }, AttemptOutcome::Transient)
        }
        Happened::Passing => d(Verdict::Again, AttemptOutcome::Transient),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptOutcome as O;
    use Happened as H;
    use Verdict as V;
    use std::time::Duration;

    /// `attempts_per_run` 3, `max_attempts` 30.
    fn at(attempt_in_run: u32, total_attempts: i64) -> Standing {
        Standing {
            attempt_in_run,
            total_attempts,
            past_horizon: false,
            stopping: false,
            halted: false,
            same_answers: 1,
            same_answers_over: Duration::ZERO,
        }
    }

    /// The same answer came back `n` times over `hours`.
    fn repeated(n: u32, hours: u64, s: Standing) -> Standing {
        Standing {
            same_answers: n,
            same_answers_over: Duration::from_secs(hours * 3600),
            ..s
        }
    }

    fn past(s: Standing) -> Standing {
        Standing {
            past_horizon: true,
            ..s
        }
    }

    fn stopping(s: Standing) -> Standing {
        Standing {
            stopping: true,
            ..s
        }
    }

    fn halted(s: Standing) -> Standing {
        Standing { halted: true, ..s }
    }

    #[test]
    fn every_outcome_is_chosen_here() {
        let policy = RetryPolicy::default();
        let gone = H::CannotBeHad { gone: true };
        let refused = H::CannotBeHad { gone: false };
        let table: [(Happened, Standing, Verdict, AttemptOutcome); 25] = [
            (H::Archived, at(1, 1), V::Archive, O::Archived),
            (H::Archived, halted(at(2, 5)), V::Archive, O::Archived),
            (
                H::Archived,
                past(stopping(at(3, 30))),
                V::Archive,
                O::Archived,
            ),
            (H::Passing, at(1, 1), V::Again, O::Transient),
            (H::Passing, at(2, 2), V::Again, O::Transient),
            (H::Passing, at(3, 3), V::Later { rounds: 1 }, O::Transient),
            (H::Passing, at(3, 9), V::Later { rounds: 3 }, O::Transient),
            (
                H::Passing,
                stopping(at(1, 1)),
                V::Later { rounds: 1 },
                O::Transient,
            ),
            (
                H::Passing,
                at(1, 30),
                V::Fail { gave_up: true },
                O::Transient,
            ),
            (
                H::Passing,
                stopping(at(2, 31)),
                V::Fail { gave_up: true },
                O::Transient,
            ),
            (H::Passing, halted(at(1, 30)), V::Return, O::Stopped),
            (gone, at(1, 1), V::Again, O::Transient),
            (
                gone,
                repeated(2, 2, at(3, 3)),
                V::Later { rounds: 1 },
                O::Transient,
            ),
            (gone, repeated(3, 0, at(1, 3)), V::Again, O::Transient),
            (
                gone,
                repeated(3, 1, at(1, 3)),
                V::Fail { gave_up: false },
                O::Failed,
            ),
            (
                refused,
                repeated(4, 5, at(2, 8)),
                V::Fail { gave_up: false },
                O::Failed,
            ),
            (
                refused,
                stopping(at(1, 1)),
                V::Later { rounds: 1 },
                O::Transient,
            ),
            (gone, past(at(1, 1)), V::Expire, O::Expired),
            (refused, past(at(1, 1)), V::Again, O::Transient),
            (gone, halted(at(1, 1)), V::Return, O::Stopped),
            (H::RunStopped, at(1, 1), V::Return, O::Stopped),
            (H::RunStopped, past(at(3, 30)), V::Return, O::Stopped),
            (H::Interrupted, at(2, 2), V::Release, O::Aborted),
            (H::Interrupted, halted(at(1, 1)), V::Release, O::Aborted),
            (H::Interrupted, stopping(at(1, 30)), V::Release, O::Aborted),
        ];
        for (i, (happened, standing, verdict, outcome)) in table.into_iter().enumerate() {
            assert_eq!(
                decide(happened, standing, &policy),
                Decision { verdict, outcome },
                "row {i}: {happened:?} at {standing:?}"
            );
        }
    }
}
