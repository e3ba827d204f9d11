//! How much memory the uploads of a process may hold at once. The count of transfers
//! (`--concurrency`) bounds the provider's and the store's connections; what bounds memory
//! is this budget, in bytes of upload buffers: a recording the source announced smaller
//! than a part reserves its own size (it goes up in one PUT from memory), any other
//! reserves two parts (the one uploading and the one filling, see `upload.rs`). So many
//! small recordings travel at once while large ones stay within the budget; a
//! transfer waits for its reservation before it reads a byte of the body, and takes it
//! whole or not at all, so transfers holding part of what they need can never wait on
//! each other. One budget is shared by every account of a run (each account's [`Store`]
//! carries a clone).
//!
//! [`Store`]: super::Store

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The budget when none is chosen (`--memory-budget-mib`'s default): eight large
/// transfers of two 8 MiB parts, or some thousand 128 KiB recordings.
pub const DEFAULT_MEMORY_BUDGET: usize = 128 * 1024 * 1024;

/// Reservations are counted in these units (a semaphore counts in `u32`).
const UNIT: usize = 1024;

/// A shared budget of upload buffer bytes.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    units: u32,
}

/// Bytes held from a [`MemoryBudget`] until dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_MEMORY_BUDGET)
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Self {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// The whole budget, in bytes.
    pub fn bytes(&self) -> usize {
        self.units as usize * UNIT
    }

    /// Waits until `bytes` are free and holds them; a request larger than the whole budget
    /// holds all of it (such a transfer then runs alone). `None` when `cancel` comes first.
    /// Waiters are served first come, first served.
    pub async fn reserve(&self, bytes: usize, cancel: &CancellationToken) -> Option<Reservation> {
        let wanted = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        let permits = Arc::clone(&self.permits);
        tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            permit = permits.acquire_many_owned(wanted) => {
                permit.ok().map(|permit| Reservation { _permit: permit })
            }
        }
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_give_it_back() {
        let budget = MemoryBudget::new(10 * UNIT);
        let cancel = CancellationToken::new();
        let a = budget.reserve(6 * UNIT, &cancel).await.unwrap();
        let b = budget.reserve(4 * UNIT - 10, &cancel).await.unwrap();
        assert_eq!(budget.available(), 0);
        let waiting = tokio::spawn({
            let (budget, cancel) = (budget.clone(), cancel.clone());
            async move { budget.reserve(5 * UNIT, &cancel).await.is_some() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        assert!(waiting.await.unwrap());
        drop(b);
        assert_eq!(budget.available(), 10 * UNIT);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_takes_all_of_it_and_cancel_ends_a_wait() {
        let budget = MemoryBudget::new(4 * UNIT);
        let cancel = CancellationToken::new();
        let all = budget.reserve(100 * UNIT, &cancel).await.unwrap();
        assert_eq!(budget.available(), 0);
        cancel.cancel();
        assert!(budget.reserve(1, &cancel).await.is_none());
        drop(all);
        assert_eq!(budget.bytes(), 4 * UNIT);
    }
}
