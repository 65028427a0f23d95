//! A permit: an admission held by the caller, leased in Redis.

use std::fmt;
use std::sync::Arc;
use std::task::Poll;

use crate::engine::Engine;
use crate::lease::LeaseView;

/// An admission held by the caller (for work that is not a spawned task), from
/// [`RedisPool::try_acquire`](crate::RedisPool::try_acquire) or
/// [`RedisPool::acquire`](crate::RedisPool::acquire).
///
/// Counted in the total and in every group it names, in every process of the fleet, until it
/// is dropped. Its lease is renewed by the pool's background task; if Redis loses it (a
/// restart without persistence, a failover), the next renewal finds out:
/// [`lost`](Self::lost) resolves and [`is_lost`](Self::is_lost) turns `true`. The same
/// happens, without Redis saying so, when no renewal has been confirmed for 90% of the lease
/// (Redis unreachable from this process, or this process paused longer than that): the lease
/// may be about to expire there, or have expired. `is_lost` and `lost` check that themselves,
/// so a process resuming from such a pause finds out before the background task has run. The
/// work it guards is then no longer counted anywhere: stop it; check `is_lost` before
/// committing the work's result where an uncounted run would matter.
///
/// Dropping it releases the admission in the background (one batched `release.lua` call,
/// retried while Redis is unreachable); the drop never blocks.
#[must_use = "the admission is released when the permit is dropped"]
#[clippy::has_significant_drop]
pub struct RedisPermit<K> {
    pub(crate) engine: Arc<Engine>,
    pub(crate) id: String,
    pub(crate) groups: Vec<K>,
    pub(crate) lease: LeaseView,
    /// Counts the permit in this process ([`RedisPool::wait`](crate::RedisPool::wait)).
    pub(crate) _hold: crate::life::Hold,
}

impl<K> RedisPermit<K> {
    /// The groups this permit counts in (the total is implicit), in the caller's order,
    /// without repeats.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &K> {
        self.groups.iter()
    }

    /// Whether this permit's lease is lost: a renewal found it gone, or no renewal has been
    /// confirmed for 90% of the lease (Redis unreachable, or this process paused: the lease
    /// may have expired in Redis). The second is checked here, now, not only when the pool's
    /// background task next runs: a process that resumes after a pause longer than the lease
    /// sees `true` before its work goes on. Once `true`, it stays `true`.
    #[must_use]
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost(&Arc::downgrade(&self.engine), &self.id)
    }

    /// Resolves once this permit's lease is lost, as [`is_lost`](Self::is_lost) reads it
    /// (never, while it is held): each poll checks the lease's age as `is_lost` does, so a
    /// process that resumes after a pause longer than the lease finds it ready at its first
    /// poll. A future made before the permit was dropped resolves if the loss was found
    /// before the drop, and never after it.
    ///
    /// The future does not borrow the permit: it can be kept beside it, or moved into another
    /// task, to stop the work the permit guards (`taskherd-tower` keeps one in each response
    /// whose pool [aborts on lost](crate::RedisPoolBuilder::abort_on_lost), and checks it
    /// again before it answers).
    ///
    /// Raced against the work in a `select!`, it must be polled first (`biased;` with this
    /// branch first): after a pause both may be ready at once, and unbiased `select!` picks
    /// one at random, so the work would finish uncounted about half the time.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it keeps no state between polls. A poll may presume this process's overdue
    /// leases lost (as [`is_lost`](Self::is_lost) does), which tells their permits and aborts
    /// their tasks whether or not the future is polled again.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lease = self.lease.clone();
        let mut lost = self.lease.lost.clone();
        let engine = Arc::downgrade(&self.engine);
        let id = self.id.clone();
        async move {
            let mut signalled = std::pin::pin!(async move {
                if lost.wait_for(|lost| *lost).await.is_err() {
                    std::future::pending::<()>().await;
                }
            });
            // A panic of this caller's waker must not stop tokio waking the lease's other
            // watchers (see `wakers`).
            let mut catching = crate::wakers::CatchingWaker::default();
            std::future::poll_fn(|cx| {
                if lease.is_lost(&engine, &id) {
                    return Poll::Ready(());
                }
                catching.poll(signalled.as_mut(), cx)
            })
            .await;
        }
    }

    /// The holder id of this admission in Redis (for logs and tests).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<K> Drop for RedisPermit<K> {
    fn drop(&mut self) {
        // First: a `lost()` future that finds the holder gone then knows it was not lost.
        self.lease.give_back();
        self.engine.release_later(std::mem::take(&mut self.id));
    }
}

impl<K: fmt::Debug> fmt::Debug for RedisPermit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPermit")
            .field("id", &self.id)
            .field("groups", &self.groups)
            // The signal only: `is_lost` may presume leases lost, not for a formatter to do.
            .field("lost", &self.lease.signalled())
            .finish()
    }
}
