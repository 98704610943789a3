//! How many pooled connections page writes may hold at once, so they never take the ones
//! the API and the background work need.
//!
//! A job writes several pages of a listing at once ([`super::pages`]), each on its own
//! connection, and each holds its connection until its turn to commit. Unbounded, a few
//! busy jobs could hold the whole pool while they wait for each other's commits, and
//! `GetJob` beside them would time out on the pool ("database unavailable"). So only the
//! oldest write in flight of each job takes a connection freely (as a job writing one page
//! at a time did); every write beside it needs one of the *extra* slots, and a page waits
//! for whichever comes first: a slot, or the commit of the page before it (then it is the
//! oldest). Never both: a page holding its turn while it waits for a slot could wait for a
//! page that itself waits for the slot.
//!
//! The extra slots are what is left of the pool after one connection per job slot and a
//! reserve: page writes together hold at most `max_connections - POOL_RESERVE`.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections page writes always leave to everything else: the API's reads, progress
/// events, the audit outbox, the scheduler and the reconciler.
pub const POOL_RESERVE: u32 = 3;

/// The extra write slots of one process, shared by its jobs.
#[derive(Debug, Clone)]
pub struct WriteSlots {
    extra: Arc<Semaphore>,
}

/// One extra write slot, held until the page commits (or its write is dropped).
#[derive(Debug)]
pub struct ExtraSlot {
    _permit: OwnedSemaphorePermit,
}

impl WriteSlots {
    /// The slots left of a pool of `max_connections` once every one of `jobs` job slots has
    /// one write and [`POOL_RESERVE`] is set aside; none when the pool is smaller.
    pub fn for_pool(max_connections: u32, jobs: usize) -> WriteSlots {
        let jobs = u32::try_from(jobs).unwrap_or(u32::MAX);
        let extra = max_connections.saturating_sub(jobs.saturating_add(POOL_RESERVE));
        WriteSlots::with_extra(usize::try_from(extra).unwrap_or(0))
    }

    pub fn with_extra(extra: usize) -> WriteSlots {
        WriteSlots {
            extra: Arc::new(Semaphore::new(extra)),
        }
    }

    /// The next free extra slot, in the order they were asked for. `None` never happens
    /// (the slots are never closed), and would leave the caller to wait its turn.
    pub async fn extra(&self) -> Option<ExtraSlot> {
        let permit = self.extra.clone().acquire_owned().await.ok()?;
        Some(ExtraSlot { _permit: permit })
    }

    /// Extra slots free now.
    pub fn available(&self) -> usize {
        self.extra.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_left_after_a_write_per_job_and_the_reserve_is_shared_out() {
        assert_eq!(WriteSlots::for_pool(10, 4).available(), 3);
        assert_eq!(WriteSlots::for_pool(44, 20).available(), 21);
        // A pool smaller than the job slots gives no extra write to anyone.
        assert_eq!(WriteSlots::for_pool(2, 6).available(), 0);
    }

    #[tokio::test]
    async fn a_slot_is_given_back_when_its_write_ends() {
        let slots = WriteSlots::with_extra(1);
        let held = slots.extra().await;
        assert!(held.is_some());
        assert_eq!(slots.available(), 0, "only one extra slot");
        drop(held);
        assert_eq!(slots.available(), 1, "back after the write");
    }
}
