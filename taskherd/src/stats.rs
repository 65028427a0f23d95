//! Statistics of one group.

/// A snapshot of one group's counts and history, from [`TaskPool::stats`](crate::TaskPool::stats)
/// or [`TaskPool::total_stats`](crate::TaskPool::total_stats).
///
/// All fields are read under one lock, so they are consistent with each other (never torn):
/// `running` and `waiting` describe the same instant. Exact when the pool is used from a single
/// thread; under concurrency, each snapshot is exact for some instant.
///
/// `admitted`, `rejected` and `peak` are kept while the group exists: while it has running
/// tasks or permits, waiters, or an explicit limit. When an idle group without an explicit limit
/// is reclaimed (so that memory stays bounded by live state), its history is dropped and a later
/// use of the key starts again from zero. Give a group an explicit limit to keep its history.
/// The total group is never reclaimed.
///
/// # Examples
///
/// ```
/// use taskherd::TaskPool;
///
/// let pool = TaskPool::builder().limit("db", 1).build();
/// let permit = pool.try_acquire(["db"]).unwrap();
/// assert!(pool.try_acquire(["db"]).is_err());
/// let stats = pool.stats(&"db");
/// assert_eq!((stats.running, stats.limit, stats.admitted, stats.rejected, stats.peak),
///            (1, Some(1), 1, 1, 1));
/// drop(permit);
/// assert_eq!(pool.stats(&"db").running, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GroupStats {
    /// Admitted tasks and permits currently counted in the group.
    pub running: usize,
    /// Waiting `spawn`s and `acquire`s that name the group and are not admitted yet.
    pub waiting: usize,
    /// Of `waiting`, those that hold a slot of this group promised to them while they wait for
    /// another group; for a named group, the others are queued for a slot of it. Promised
    /// slots count against the limit like running ones: at every moment `reserved == 0` or
    /// `running + reserved <= limit` (a lowered limit takes promises back, see
    /// [`TaskPool::set_limit`](crate::TaskPool::set_limit)). Always `0` for the total, which
    /// is promised only to a waiter that holds everything else and is granted at once; the
    /// total's `waiting` counts every waiter in the pool, including those still blocked on a
    /// named group, which do not queue for the total yet.
    pub reserved: usize,
    /// The limit in force: the explicit limit, else the default limit (for the total:
    /// `max_tasks`).
    pub limit: Option<usize>,
    /// Admissions made in the group (tasks, permits, waiters granted). A waiter granted and then
    /// failed by [`close`](crate::TaskPool::close) before its future picked up the grant counts
    /// here (its slots were granted, and counted in `running` until the close) and, for the
    /// total, in `rejected` too.
    pub admitted: u64,
    /// `try_*` calls refused because this group was the first full one (see
    /// [`full_group`](crate::TrySpawnError::full_group)), counted while the group exists: a
    /// refusal by the default limit in a group that has no entry (nothing running, no explicit
    /// limit, e.g. a default limit of 0) is counted in the total only. For the total: every
    /// refused `try_*` call, full or closed, plus every `spawn`/`acquire` that failed because
    /// the pool was closed.
    pub rejected: u64,
    /// The highest `running` seen.
    pub peak: usize,
}
