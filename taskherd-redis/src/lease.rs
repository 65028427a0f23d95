//! A holder's lease as its permit or task sees it: the lost signal, and the moment from which
//! the lease is known to last, readable without the engine's lock.
//!
//! # Invariants
//!
//! - [`ValidFrom`] only moves forward, and only under the engine's lock; a reader without the
//!   lock may see an older value, never a newer one than was written. So a lease that
//!   [`LeaseView::is_lost`] finds not overdue without the lock is not overdue, and one it
//!   finds overdue is checked again under the lock (where a renewal confirmed meanwhile
//!   counts) before anything is presumed lost.
//! - While its permit or task lives, a holder leaves the engine's map only when its lease is
//!   lost (the permit's drop and the task's guard release it afterwards); the lost signal
//!   follows after the lock is released. So a view whose lease looks overdue and whose holder
//!   is gone while it was not [given back](LeaseView::give_back) reads as lost, even before
//!   the signal arrives. (A lease a renewal found gone in Redis, not overdue by age, reads as
//!   lost once its signal is sent, a moment after its holder left the map: within the
//!   documented window of such a loss.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Engine, LeaseCheck, presumed_lost_after};

/// No later than when the last call that set a lease in Redis (its admission, or a renewal
/// confirmed since) was sent: the lease lasts at least the pool's lease from here. Shared by
/// the holder and the views of it; also says whether its permit was given back.
#[derive(Debug)]
pub(crate) struct ValidFrom {
    /// The first value.
    start: Instant,
    /// Nanoseconds after `start`.
    after_start: AtomicU64,
    /// The permit was dropped: its holder leaves the map without being lost.
    given_back: AtomicBool,
}

impl ValidFrom {
    pub(crate) fn new(at: Instant) -> Self {
        Self {
            start: at,
            after_start: AtomicU64::new(0),
            given_back: AtomicBool::new(false),
        }
    }

    pub(crate) fn get(&self) -> Instant {
        // Relaxed: a stale value is an older one, which only sends the reader to the locked
        // check (see the module's invariants).
        self.start + Duration::from_nanos(self.after_start.load(Ordering::Relaxed))
    }

    /// Moves it to `at`, if that is later. Called under the engine's lock.
    pub(crate) fn advance(&self, at: Instant) {
        let nanos =
            u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        self.after_start.fetch_max(nanos, Ordering::Relaxed);
    }
}

/// What a permit or a spawned task keeps of its holder.
#[derive(Debug, Clone)]
pub(crate) struct LeaseView {
    /// Set to `true` when the lease is found lost (by a renewal, or presumed).
    pub(crate) lost: watch::Receiver<bool>,
    valid_from: Arc<ValidFrom>,
    /// [`presumed_lost_after`] the pool's lease.
    after: Duration,
}

impl LeaseView {
    pub(crate) fn new(
        lost: watch::Receiver<bool>,
        valid_from: Arc<ValidFrom>,
        lease: Duration,
    ) -> Self {
        Self {
            lost,
            valid_from,
            after: presumed_lost_after(lease),
        }
    }

    /// Marks the holder given back by its permit: called before the permit's drop takes it
    /// out of the map, so that a view that finds it gone afterwards does not read a loss.
    pub(crate) fn give_back(&self) {
        // Ordered before the view's read by the engine's lock (taken by the release after
        // this, and by the view before it reads).
        self.valid_from.given_back.store(true, Ordering::Relaxed);
    }

    /// Whether the lost signal was sent.
    pub(crate) fn signalled(&self) -> bool {
        *self.lost.borrow()
    }

    /// Whether holder `id`'s lease is lost: found so, or overdue now (then presumed lost
    /// with every other overdue lease of the process, its signal sent and its task aborted if
    /// the pool aborts tasks, as the expirer would when it next runs: see
    /// [`Engine::check_lease`]), or, looking overdue, taken out of the map by whoever found it
    /// lost and about to be told. Takes the engine's lock only for a lease that looks
    /// overdue. Never called under that lock.
    pub(crate) fn is_lost(&self, engine: &Weak<Engine>, id: &str) -> bool {
        if self.signalled() {
            return true;
        }
        if Instant::now().saturating_duration_since(self.valid_from.get()) < self.after {
            return false;
        }
        let Some(engine) = engine.upgrade() else {
            return false;
        };
        match engine.check_lease(id) {
            LeaseCheck::Held => false,
            LeaseCheck::PresumedLost => true,
            // Given back: lost only if the signal says so (it was found lost before).
            LeaseCheck::NotHeld if self.valid_from.given_back.load(Ordering::Relaxed) => {
                self.signalled()
            }
            // Gone while still held: found lost, the signal on its way (see the module's
            // invariants).
            LeaseCheck::NotHeld => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// It only moves forward: a renewal confirmed out of order (an older `sent` after a newer
    /// one) leaves the newer moment.
    #[test]
    fn valid_from_only_moves_forward() {
        let start = Instant::now();
        let valid_from = ValidFrom::new(start);
        assert_eq!(valid_from.get(), start);
        valid_from.advance(start + Duration::from_millis(30));
        valid_from.advance(start + Duration::from_millis(10));
        assert_eq!(valid_from.get(), start + Duration::from_millis(30));
        valid_from.advance(start);
        assert_eq!(valid_from.get(), start + Duration::from_millis(30));
        valid_from.advance(start + Duration::from_millis(45));
        assert_eq!(valid_from.get(), start + Duration::from_millis(45));
    }
}
