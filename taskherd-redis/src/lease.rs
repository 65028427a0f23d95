//! A holder's lease as its permit or task sees it: the lost signal, and the moment from which
//! the lease is known to last, readable without the engine's lock.
//!
//! # Invariant
//!
//! [`ValidFrom`] only moves forward, and only under the engine's lock; a reader without the
//! lock may see an older value, never a newer one than was written. So a lease that
//! [`LeaseView::is_lost`] finds not overdue without the lock is not overdue, and one it finds
//! overdue is checked again under the lock (where a renewal confirmed meanwhile counts) before
//! anything is presumed lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Engine, presumed_lost_after};

/// No later than when the last call that set a lease in Redis (its admission, or a renewal
/// confirmed since) was sent: the lease lasts at least the pool's lease from here.
#[derive(Debug)]
pub(crate) struct ValidFrom {
    /// The first value.
    start: Instant,
    /// Nanoseconds after `start`.
    after_start: AtomicU64,
}

impl ValidFrom {
    pub(crate) fn new(at: Instant) -> Self {
        Self {
            start: at,
            after_start: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self) -> Instant {
        // Relaxed: a stale value is an older one, which only sends the reader to the locked
        // check (see the module's invariant).
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

    /// Whether holder `id`'s lease is lost: found so, or overdue now (then presumed lost
    /// with every other overdue lease of the process, its signal sent and its task aborted if
    /// the pool aborts tasks, as the expirer would when it next runs: see
    /// [`Engine::presume_lost_if_overdue`]). Takes the engine's lock only for a lease that
    /// looks overdue. Never called under that lock.
    pub(crate) fn is_lost(&self, engine: &Weak<Engine>, id: &str) -> bool {
        if *self.lost.borrow() {
            return true;
        }
        if Instant::now().saturating_duration_since(self.valid_from.get()) < self.after {
            return false;
        }
        engine
            .upgrade()
            .is_some_and(|engine| engine.presume_lost_if_overdue(id))
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
