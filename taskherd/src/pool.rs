//! The public task pool: a cheap handle over the admission core.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::DefaultHashBuilder;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::builder::Builder;
use crate::core::{Admission, Config, Core, TaskAdmission, WaitAdmission};
use crate::error::{AcquireError, SpawnError, TryAcquireError, TrySpawnError};
use crate::limits::LimitChanges;
use crate::permit::Permit;
use crate::stats::GroupStats;

/// A herd of tokio tasks under per-group concurrency limits.
///
/// Every task belongs to the groups the caller names when spawning it (any number, identified
/// by keys of type `K`) and to the implicit *total* group. Each named group may carry a limit,
/// the total may carry one ([`max_tasks`](Self::max_tasks)), and every limit can be changed while
/// tasks run. A task is admitted only if **every** group it names and the total have room, and
/// the decision is atomic: a refused task is counted nowhere, never polled, and handed back.
///
/// `TaskPool` is a cheap handle: clones share one pool. It is `Send` and `Sync`.
///
/// # Counting
///
/// A task counts in its groups and the total from admission until its future completes,
/// returns an error value, panics, is aborted through its [`JoinHandle`], or is dropped because
/// its runtime shut down. The count is given back by a guard owned by the task's future, exactly
/// once, and is already lower when the `JoinHandle` resolves.
///
/// A group that has no running tasks and no explicit limit holds no memory, so keys can be as
/// fine-grained and short-lived as peers, requests or tenants. Keys are hashed with a
/// HashDoS-resistant hasher by default ([`DefaultHashBuilder`]); see [`with_hasher`](Self::with_hasher).
///
/// # Keys that panic
///
/// A key type's `Hash`, `Eq` and `Clone` run before the pool changes anything: keys are hashed
/// and cloned before its lock is taken and compared before a transition changes state. If one
/// of them panics, the call that ran it panics and nothing else happens: no count, limit or
/// place in a queue changed, a future passed to the call is dropped unpolled, and the pool
/// stays usable (its lock does not poison). Keys are dropped after the lock is released, and a
/// panic in a key's `Drop` reaches the caller too, with the pool consistent: an admission the
/// call made is given back in the unwinding (no permit is returned, no task is spawned, and
/// the future, or `make`, is dropped unpolled), a refused call's future is dropped rather than
/// handed back, and any other change (a release, a cancel, a limit change) stays made. The
/// `# Panics` section of each method names the key code it runs.
///
/// # Comparison with neighbours
///
/// - A [`Semaphore`](https://docs.rs/tokio/1/tokio/sync/struct.Semaphore.html) limits one resource; taking permits from several semaphores
///   one after another is not atomic (a refused task briefly holds slots, and waiting for them in
///   different orders deadlocks). A `TaskPool` admits across all groups at once.
/// - A map of per-key semaphores keeps an entry for every key ever seen unless you remove them
///   yourself, racing with users of the entry. A `TaskPool` reclaims idle groups itself.
/// - [`tokio::task::JoinSet`] and `tokio_util`'s `TaskTracker` track tasks but limit nothing.
///
/// # Logging
///
/// Refusals and limit changes are `tracing` events at `DEBUG` level (free when no subscriber
/// listens). Keys are shown only if the pool was built with [`Builder::log_keys`].
///
/// # Examples
///
/// At most two requests per peer and three in total:
///
/// ```
/// use taskherd::{Group, TaskPool};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = TaskPool::builder().max_tasks(3).default_limit(2).build();
/// let (tx, rx) = tokio::sync::watch::channel(());
/// let hold = || {
///     let mut rx = rx.clone();
///     async move { rx.changed().await.ok(); }
/// };
///
/// let _a1 = pool.try_spawn(["alice"], hold()).unwrap();
/// let _a2 = pool.try_spawn(["alice"], hold()).unwrap();
/// let err = pool.try_spawn(["alice"], hold()).unwrap_err();
/// assert_eq!(err.full_group(), Some(&Group::Key("alice")));
///
/// let bob = pool.try_spawn(["bob"], hold()).unwrap();
/// let err = pool.try_spawn(["carol"], hold()).unwrap_err();
/// assert_eq!(err.full_group(), Some(&Group::Total));
/// assert_eq!((pool.len(), pool.task_count(&"alice")), (3, 2));
///
/// tx.send(()).unwrap();
/// bob.await.unwrap();
/// assert_eq!(pool.task_count(&"bob"), 0);
/// # }
/// ```
pub struct TaskPool<K, S = DefaultHashBuilder> {
    core: Arc<Core<K, S>>,
}

impl<K, S> Clone for TaskPool<K, S> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
        }
    }
}

impl<K> TaskPool<K>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    /// Creates a pool with no limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<&str>::new();
    /// assert_eq!(pool.max_tasks(), None);
    /// assert_eq!(pool.default_limit(), None);
    /// assert_eq!(pool.limit(&"any"), None);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Returns a [`Builder`] to set limits before the pool starts.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().max_tasks(10).limit("db", 2).build();
    /// assert_eq!(pool.limit(&"db"), Some(2));
    /// ```
    pub fn builder() -> Builder<K> {
        Builder::new()
    }
}

impl<K> Default for TaskPool<K>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, S> TaskPool<K, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Creates a pool with no limits that hashes keys with `hasher`.
    ///
    /// The default [`DefaultHashBuilder`] resists attacker-chosen keys; choose another hasher only if
    /// keys cannot be chosen by an adversary. With limits, use [`Builder::hasher`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::BuildHasherDefault;
    /// use std::collections::hash_map::DefaultHasher;
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<u64, _>::with_hasher(BuildHasherDefault::<DefaultHasher>::default());
    /// pool.set_limit(1, 4);
    /// assert_eq!(pool.limit(&1), Some(4));
    /// ```
    #[must_use]
    pub fn with_hasher(hasher: S) -> Self {
        Builder::new().hasher(hasher).build()
    }

    pub(crate) fn from_config(config: Config<K, S>) -> Self {
        Self {
            core: Arc::new(Core::new(config)),
        }
    }

    /// Sets the explicit limit of group `key`; `None` clears it (like
    /// [`clear_limit`](Self::clear_limit)).
    ///
    /// The limit takes effect at once. An explicit limit overrides the
    /// [default limit](Self::set_default_limit) whether it is higher or lower. A group with an
    /// explicit limit is kept (and uses memory) until the limit is cleared.
    ///
    /// Raising a limit hands the new room at once to the oldest waiters. Lowering it never
    /// cancels running work: if more tasks than the new limit run, they continue, and new
    /// ones wait or are refused until the count is below the limit. Slots that were promised
    /// to waiters (reserved for a waiter that still waits for another group) beyond the new
    /// limit are taken back, youngest waiter first; those waiters go back to their place in
    /// the group's queue, ahead of every younger waiter, so they keep their turn. So from the
    /// moment this returns, no work is admitted in the group above the new limit: after the
    /// change, running plus promised slots are within the limit unless running work alone
    /// exceeds it. A limit of `0` admits nothing new in the group until it is raised. A waiter
    /// admitted before the change counts as running, though its future may not have been
    /// polled since: a waiting [`spawn`](Self::spawn) admitted then still spawns its task when
    /// it is next polled (unlike [`close`](Self::close), which fails such a waiter).
    ///
    /// To change several limits as one, use [`set_limits`](Self::set_limits).
    ///
    /// Cost: O(1) under the pool's lock, plus, when a lowered limit takes back slots promised
    /// to waiters, a pass over every waiter of the pool (O(waiters × the groups they name)):
    /// the admission and release paths keep no list of a group's holders.
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics, or its `Clone` while a `DEBUG` subscriber logs the
    /// change; the limits are then unchanged (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::new();
    /// pool.set_limit("db", 0);
    /// assert!(pool.try_spawn(["db"], async {}).unwrap_err().is_full());
    /// pool.set_limit("db", None);
    /// assert!(pool.try_spawn(["db"], async {}).is_ok());
    /// # }
    /// ```
    pub fn set_limit(&self, key: K, limit: impl Into<Option<usize>>) {
        self.core
            .set_limits(LimitChanges::new().limit(key, limit.into()));
    }

    /// Applies several limit changes as one: the total, the default limit and any number of
    /// named groups.
    ///
    /// The changes take effect together, in one critical section, and the room they make is
    /// handed out once, afterwards: no task or permit is admitted under a combination of
    /// limits that the batch did not ask for (half old, half new). Each change means what
    /// the single call means ([`set_limit`](Self::set_limit), [`set_max_tasks`](Self::set_max_tasks),
    /// [`set_default_limit`](Self::set_default_limit)), including what lowering a limit does
    /// to waiters. A key changed twice in the batch takes its last change.
    ///
    /// Cost: O(changes) under the pool's lock, plus one pass over every waiter of the pool if
    /// lowered limits take back promised slots (as with [`set_limit`](Self::set_limit)).
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics, or its `Clone` while a `DEBUG` subscriber logs the
    /// change; the limits are then unchanged (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// Raising the default while keeping one group pinned: nothing in `db` starts because of
    /// the higher default, not even for an instant.
    ///
    /// ```
    /// use taskherd::{LimitChanges, TaskPool};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().default_limit(1).build();
    /// let _running = pool.try_acquire(["db"]).unwrap();
    /// pool.set_limits(LimitChanges::new().default_limit(10).limit("db", 1));
    /// assert!(pool.try_acquire(["db"]).is_err());
    /// assert!(pool.try_acquire(["web"]).is_ok());
    /// # }
    /// ```
    pub fn set_limits(&self, changes: LimitChanges<K>) {
        if !changes.is_empty() {
            self.core.set_limits(changes);
        }
    }

    /// Returns the explicit limit of group `key`, or `None` if it has none.
    ///
    /// The [default limit](Self::default_limit) is not reported here; see
    /// [`effective_limit`](Self::effective_limit).
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics; nothing changed (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().default_limit(3).build();
    /// assert_eq!(pool.limit(&"a"), None);
    /// pool.set_limit("a", 5);
    /// assert_eq!(pool.limit(&"a"), Some(5));
    /// ```
    #[must_use]
    pub fn limit(&self, key: &K) -> Option<usize> {
        self.core.limit(key)
    }

    /// Returns the limit that applies to group `key`: its explicit limit, else the default limit.
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics; nothing changed (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().default_limit(3).limit("a", 10).build();
    /// assert_eq!(pool.effective_limit(&"a"), Some(10));
    /// assert_eq!(pool.effective_limit(&"b"), Some(3));
    /// ```
    #[must_use]
    pub fn effective_limit(&self, key: &K) -> Option<usize> {
        self.core.effective_limit(key)
    }

    /// Clears the explicit limit of group `key`; the default limit applies again. Does nothing if
    /// the group has no explicit limit. A default limit lower than the cleared one acts as a
    /// lowered limit (see [`set_limit`](Self::set_limit)).
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Clone`, `Hash` or `Eq` panics; the limits are then unchanged (see
    /// [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().limit("a", 1).build();
    /// pool.clear_limit(&"a");
    /// pool.clear_limit(&"a");
    /// assert_eq!(pool.limit(&"a"), None);
    /// ```
    pub fn clear_limit(&self, key: &K) {
        self.core
            .set_limits(LimitChanges::new().clear_limit(key.clone()));
    }

    /// Sets the limit of the total group, the number of tasks in the whole pool; `None` removes
    /// it.
    ///
    /// Running tasks are never cancelled by a lower limit; new ones wait or are refused until
    /// the count is below it. A waiter is promised a slot of the total only when it holds every
    /// other slot, and is then admitted at once, so no promise outlives a change of the total.
    /// Raising it hands the new room at once to the waiters that hold everything else, in the
    /// order they got there.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<u32>::new();
    /// pool.set_max_tasks(16);
    /// assert_eq!(pool.max_tasks(), Some(16));
    /// pool.set_max_tasks(None);
    /// assert_eq!(pool.max_tasks(), None);
    /// ```
    pub fn set_max_tasks(&self, max_tasks: impl Into<Option<usize>>) {
        self.core
            .set_limits(LimitChanges::new().max_tasks(max_tasks.into()));
    }

    /// Returns the limit of the total group.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// assert_eq!(TaskPool::<u32>::builder().max_tasks(2).build().max_tasks(), Some(2));
    /// ```
    #[must_use]
    pub fn max_tasks(&self) -> Option<usize> {
        self.core.max_tasks()
    }

    /// Sets the limit of every named group without an explicit limit; `None` removes it.
    ///
    /// The default limit never applies to the total group (that is
    /// [`max_tasks`](Self::max_tasks)). It holds no memory per group: it is looked up at admission.
    ///
    /// A change applies to every group without an explicit limit as [`set_limit`](Self::set_limit)
    /// would: a lower default takes back the slots promised to waiters above it (youngest first,
    /// each keeping its turn) and cancels nothing that runs; a higher one hands the room out at
    /// once. Costs O(groups in the pool).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<&str>::new();
    /// pool.set_default_limit(4);
    /// assert_eq!(pool.effective_limit(&"any"), Some(4));
    /// assert_eq!(pool.max_tasks(), None);
    /// ```
    pub fn set_default_limit(&self, limit: impl Into<Option<usize>>) {
        self.core
            .set_limits(LimitChanges::new().default_limit(limit.into()));
    }

    /// Returns the default limit of named groups.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// assert_eq!(TaskPool::<u32>::builder().default_limit(2).build().default_limit(), Some(2));
    /// ```
    #[must_use]
    pub fn default_limit(&self) -> Option<usize> {
        self.core.default_limit()
    }

    /// Returns the number of admissions currently counted in group `key`: running tasks, live
    /// permits, and waiters granted whose future has not picked up the grant yet (they count
    /// from the grant on); `0` for a group never seen.
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics; nothing changed (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::new();
    /// let task = pool.try_spawn(["a", "b"], std::future::pending::<()>()).unwrap();
    /// assert_eq!(pool.task_count(&"a"), 1);
    /// assert_eq!(pool.task_count(&"c"), 0);
    /// task.abort();
    /// let _ = task.await;
    /// assert_eq!(pool.task_count(&"a"), 0);
    /// # }
    /// ```
    #[must_use]
    pub fn task_count(&self, key: &K) -> usize {
        self.core.task_count(key)
    }

    /// Returns the number of admissions counted in the pool (the count of the total group):
    /// running tasks, live permits, and waiters granted whose future has not picked up the
    /// grant yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::<&str>::new();
    /// let task = pool.try_spawn([], std::future::pending::<()>()).unwrap();
    /// assert_eq!(pool.len(), 1);
    /// task.abort();
    /// # }
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Returns `true` if nothing is counted in the pool ([`len`](Self::len) is 0): no task, no
    /// permit, no granted waiter.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// assert!(TaskPool::<u8>::new().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spawns `future` as a tokio task in `groups` if every one of them and the total has room;
    /// otherwise hands it back without polling it.
    ///
    /// `groups` may name any number of keys; a key named twice counts once. The task is admitted
    /// atomically: either it is counted in all its groups and the total, or in none. It counts
    /// until its future completes, panics, is aborted or is dropped by its runtime (see
    /// [Counting](Self#counting)); the count is already lower when the returned [`JoinHandle`]
    /// resolves. Never waits.
    ///
    /// # Errors
    ///
    /// Returns a [`TrySpawnError`] if the pool is [closed](Self::close)
    /// ([`is_closed`](TrySpawnError::is_closed)), or if the total or a named group has no room:
    /// it is at its limit, or its free slots are promised to waiters queued on it (a `try_*`
    /// call never takes a slot a waiter is owed). Its
    /// [`full_group`](TrySpawnError::full_group) names the total if that has no room, else the
    /// first such group in `groups`' order, and [`into_inner`](TrySpawnError::into_inner)
    /// returns `future`, never polled. No count changed.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime, like [`tokio::spawn`]. The admission is given
    /// back before the panic propagates. Panics if `K`'s `Hash` or `Eq` panics: nothing is
    /// counted and `future` is dropped unpolled; if a key's `Drop` panics (the keys no new
    /// group entry keeps are dropped before the task is spawned), the admission is given back
    /// and `future` dropped unpolled (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// Shedding load per peer:
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().default_limit(1).build();
    /// let first = pool.try_spawn(["peer-1"], async { "handled" }).unwrap();
    /// let busy = pool.try_spawn(["peer-1"], async { "handled" });
    /// assert!(busy.is_err()); // answer "busy" to this request
    /// assert_eq!(first.await.unwrap(), "handled");
    /// assert!(pool.try_spawn(["peer-1"], async {}).is_ok()); // room again
    /// # }
    /// ```
    pub fn try_spawn<I, F>(
        &self,
        groups: I,
        future: F,
    ) -> Result<JoinHandle<F::Output>, TrySpawnError<K, F>>
    where
        I: IntoIterator<Item = K>,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut groups = self.core.group_set(groups);
        let span = self.core.task_span(&groups);
        match Core::try_admit_task(&self.core, &mut groups) {
            Ok(admission) => {
                // The keys no new entry took, after unlocking.
                drop(groups);
                Ok(spawn_admitted(&self.core, admission, span, future))
            }
            Err(refused) => {
                let refusal = self.core.refusal(&mut groups, refused);
                // Before the error is made: if a key's drop panics, `future` is dropped in the
                // unwinding rather than leaked with the error being returned.
                drop(groups);
                Err(TrySpawnError::new(refusal, future))
            }
        }
    }

    /// Like [`try_spawn`](Self::try_spawn), but makes the future only once the task is admitted.
    ///
    /// `make` is not called at all when the task is refused, so work that creating the future
    /// would do (opening a connection, allocating buffers) is not started for a refused task.
    ///
    /// # Errors
    ///
    /// Returns a [`TrySpawnError`] holding `make`, never called, if the pool is closed or the
    /// total or a named group has no room; see [`try_spawn`](Self::try_spawn).
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime. If `make` panics, the panic propagates to the
    /// caller and the admission is given back. Panics if `K`'s `Hash` or `Eq` panics: nothing
    /// is counted and `make` is dropped uncalled; if a key's `Drop` panics (before `make` is
    /// called), the admission is given back and `make` dropped uncalled (see [Keys that
    /// panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().limit("db", 0).build();
    /// let err = pool
    ///     .try_spawn_with(["db"], || -> std::future::Ready<()> { unreachable!("not called") })
    ///     .unwrap_err();
    /// assert!(err.is_full());
    /// # }
    /// ```
    pub fn try_spawn_with<I, M, F>(
        &self,
        groups: I,
        make: M,
    ) -> Result<JoinHandle<F::Output>, TrySpawnError<K, M>>
    where
        I: IntoIterator<Item = K>,
        M: FnOnce() -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut groups = self.core.group_set(groups);
        let span = self.core.task_span(&groups);
        match Core::try_admit_task(&self.core, &mut groups) {
            Ok(admission) => {
                drop(groups);
                Ok(spawn_admitted(&self.core, admission, span, make()))
            }
            Err(refused) => {
                let refusal = self.core.refusal(&mut groups, refused);
                drop(groups);
                Err(TrySpawnError::new(refusal, make))
            }
        }
    }

    /// Spawns `future` as a tokio task in `groups`, waiting until every one of them and the
    /// total has room.
    ///
    /// Like [`try_spawn`](Self::try_spawn), but instead of refusing a task that finds no room, it
    /// queues. The future is not polled until the task is admitted. The groups are hashed when
    /// `spawn` is called; the returned future takes its place in the queues when it is first
    /// polled. It does not borrow the pool (it is `'static`), and it is `Send` when `K`, `S` and
    /// `F` are.
    ///
    /// # Fairness
    ///
    /// Waiters are served first come, first served in every group: a slot that frees in a group
    /// goes to the oldest waiter queued on it and is reserved for it at once (granted when the
    /// slot frees, not when the waiter is next polled). `try_*` calls are refused in any group
    /// where a waiter is queued for a slot, and never take a reserved slot, so a stream of
    /// `try_spawn`s cannot starve a waiter. (A waiter that already holds its slot in a group
    /// while it waits for another group is not owed more room there: spare room beyond the
    /// reserved slot stays usable.) Waiters whose groups overlap in any way never deadlock (the
    /// argument is in the crate's internal docs, and loom and property tests check it). A
    /// waiter may be admitted before an older one that is still missing a slot in a group the
    /// younger does not name.
    ///
    /// The price of that guarantee: a waiter keeps the slots it was promised in its named groups
    /// while it waits for the rest, and they stay unused meanwhile. The total is the exception:
    /// a waiter asks for a slot of the total only once it holds all its named groups, so a
    /// waiter blocked on a full group (or one whose limit is `0`) never holds the pool's total
    /// capacity; ready waiters are served the total in the order they became ready.
    ///
    /// # Errors
    ///
    /// Returns a [`SpawnError`] holding `future`, never polled, if the pool is
    /// [closed](Self::close) after this future was made and before the task is admitted
    /// (including when its slots were granted but the future was not polled again before
    /// `close`, and when the pool was reopened before it was polled), or is closed when it is
    /// first polled.
    ///
    /// # Panics
    ///
    /// Panics if the task is admitted outside a tokio runtime, like [`tokio::spawn`], and if the
    /// future is polled again after it completed. A panic in user code while the future waits
    /// (a key's `Eq` or `Clone`, the waker's `clone` or `drop`) reaches the caller; the future
    /// still owns exactly what the pool holds for it, so it can be polled again or dropped
    /// (which gives it all back). A panic in the poll that admits it (a waker's or a key's
    /// `drop` once the slots are taken) ends it: the admission is given back in the unwinding
    /// (`future` is dropped unpolled with the future), and polling it again panics. Either way
    /// the pool stays consistent. `spawn` itself panics if `K`'s `Hash` panics (the groups are
    /// hashed when it is called), dropping `future`, with nothing counted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the returned future before it completes (in a `select!` or a
    /// `timeout`) drops `future` unpolled and gives back every slot reserved for it, handing them
    /// on at once to the next waiters; if it had just been admitted, the admission is released.
    /// Nothing leaks.
    ///
    /// # Examples
    ///
    /// A crawler fetching at most two pages per host at a time:
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().default_limit(2).build();
    /// let mut pages = Vec::new();
    /// for page in 0..5 {
    ///     let fetch = async move { format!("example.org/{page}") };
    ///     pages.push(pool.spawn(["example.org"], fetch).await.unwrap());
    ///     assert!(pool.task_count(&"example.org") <= 2);
    /// }
    /// for page in pages {
    ///     page.await.unwrap();
    /// }
    /// assert!(pool.is_empty());
    /// # }
    /// ```
    pub fn spawn<I, F>(&self, groups: I, future: F) -> Spawn<K, S, F>
    where
        I: IntoIterator<Item = K>,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let groups = self.core.group_set(groups);
        let span = self.core.task_span(&groups);
        Spawn {
            admission: Core::wait_admission(&self.core, groups),
            task: Some((future, span)),
        }
    }

    /// Takes a [`Permit`] in `groups` now if every one of them and the total has room.
    ///
    /// A permit counts exactly like a running task until it is dropped. Never waits; does not
    /// need a tokio runtime.
    ///
    /// # Errors
    ///
    /// Returns a [`TryAcquireError`] if the pool is [closed](Self::close)
    /// ([`is_closed`](TryAcquireError::is_closed)), or if the total or a named group is at its
    /// limit or has waiters queued (a `try_*` call never takes a slot a waiter is owed). Its
    /// [`full_group`](TryAcquireError::full_group) names the total first, then the first such
    /// group in `groups`' order. No count changed.
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics, or its `Clone` (a group without an entry yet
    /// gets a clone of its key: the permit keeps the keys); nothing changed. Panics if a
    /// key's `Drop` panics (a clone left unused because another caller made the entry
    /// meanwhile); the admission is then given back (see [Keys that
    /// panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// Handling a request inline, at most one per peer:
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().default_limit(1).build();
    /// let permit = pool.try_acquire(["peer-1"]).unwrap();
    /// assert!(pool.try_acquire(["peer-1"]).is_err());
    /// drop(permit);
    /// assert!(pool.try_acquire(["peer-1"]).is_ok());
    /// ```
    pub fn try_acquire<I>(&self, groups: I) -> Result<Permit<K, S>, TryAcquireError<K>>
    where
        I: IntoIterator<Item = K>,
    {
        Core::try_admit(&self.core, self.core.group_set(groups))
            .map(Permit::new)
            .map_err(TryAcquireError::new)
    }

    /// Waits for a [`Permit`] in `groups`: until every one of them and the total has room.
    ///
    /// The returned future takes its place in the queues when it is first polled; it does not
    /// borrow the pool. Waiters are served first come, first served with the same guarantees as
    /// [`spawn`](Self::spawn) (see its "Fairness" section): no barging by `try_*` calls, no deadlock across
    /// overlapping groups. Does not need a tokio runtime.
    ///
    /// # Errors
    ///
    /// Returns an [`AcquireError`] if the pool is [closed](Self::close) after this future was
    /// made and before it returns the permit (even if the pool was reopened meanwhile), or is
    /// closed when it is first polled.
    ///
    /// # Panics
    ///
    /// Panics if the future is polled again after it completed. A panic in user code while the
    /// future waits (a key's `Eq` or `Clone`, the waker's `clone` or `drop`) reaches the
    /// caller; the future still owns exactly what the pool holds for it, so it can be polled
    /// again or dropped (which gives it all back). A panic in the poll that grants the permit
    /// (a waker's or a key's `drop` once the slots are taken) ends it: the permit is given
    /// back in the unwinding, and polling it again panics. Either way the pool stays
    /// consistent. `acquire` itself panics if `K`'s `Hash` panics (the groups are hashed when
    /// it is called), with nothing counted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the returned future gives back every slot reserved for it and hands
    /// them on at once to the next waiters; a permit granted but not yet returned is released.
    /// Nothing leaks, so `acquire` can be used in `select!` or under `tokio::time::timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().limit("db", 1).build();
    /// let held = pool.acquire(["db"]).await.unwrap();
    ///
    /// // Gives up after a while; the attempt leaves nothing behind.
    /// let late = tokio::time::timeout(Duration::from_millis(10), pool.acquire(["db"])).await;
    /// assert!(late.is_err());
    ///
    /// drop(held);
    /// let _next = pool.acquire(["db"]).await.unwrap();
    /// # }
    /// ```
    pub fn acquire<I>(&self, groups: I) -> Acquire<K, S>
    where
        I: IntoIterator<Item = K>,
    {
        Acquire {
            admission: Core::wait_admission(&self.core, self.core.group_set(groups)),
        }
    }

    /// Returns the number of waiting `spawn`s and `acquire`s that name group `key` and are not
    /// admitted yet; `0` for a group never seen. Not counted in [`task_count`](Self::task_count).
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics; nothing changed (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<&str>::new();
    /// assert_eq!(pool.waiting_count(&"a"), 0);
    /// ```
    #[must_use]
    pub fn waiting_count(&self, key: &K) -> usize {
        self.core.waiting_count(key)
    }

    /// Returns the number of waiting `spawn`s and `acquire`s in the whole pool. Not counted in
    /// [`len`](Self::len).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// assert_eq!(TaskPool::<u8>::new().waiting_len(), 0);
    /// ```
    #[must_use]
    pub fn waiting_len(&self) -> usize {
        self.core.waiting_len()
    }

    /// Closes the pool: new admissions are refused, and waiting `spawn`s and `acquire`s fail.
    ///
    /// Tasks and permits already admitted carry on. `try_spawn` and `try_acquire` return errors
    /// whose `is_closed()` is `true`; every `spawn` and `acquire` future made before this call
    /// that has not completed yet returns an error, whether it was waiting, was granted its
    /// slots but not polled since, or was never polled at all, even if the pool is reopened
    /// before it is next polled (a `spawn` hands its future back, never polled); the slots they held are released
    /// at once, so [`wait`](Self::wait) does not depend on those futures being polled again. Limits and
    /// counts are kept. [`wait`](Self::wait) resolves once the pool is closed and empty.
    ///
    /// Returns `true` if this call closed the pool, `false` if it was already closed.
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Drop` panics, for the key of a group the failed waiters leave empty
    /// (dropped after unlocking); the pool is closed, and every waiter failed and woken, all
    /// the same (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::<&str>::new();
    /// assert!(pool.close());
    /// assert!(!pool.close());
    /// assert!(pool.try_spawn(["a"], async {}).unwrap_err().is_closed());
    /// assert!(pool.spawn(["a"], async {}).await.is_err());
    /// # }
    /// ```
    pub fn close(&self) -> bool {
        self.core.close()
    }

    /// Returns `true` if the pool is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<u8>::new();
    /// assert!(!pool.is_closed());
    /// pool.close();
    /// assert!(pool.is_closed());
    /// ```
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Reopens a closed pool: it admits work again.
    ///
    /// Returns `true` if this call reopened the pool, `false` if it was open.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<&str>::new();
    /// assert!(!pool.reopen());
    /// pool.close();
    /// assert!(pool.reopen());
    /// assert!(pool.try_acquire(["a"]).is_ok());
    /// ```
    pub fn reopen(&self) -> bool {
        self.core.reopen()
    }

    /// Waits until the pool is closed and nothing is counted in it: no task running and no
    /// permit held.
    ///
    /// Like `tokio_util`'s `TaskTracker::wait`: it does not close the pool, and it does not
    /// resolve while the pool is open, even if it is empty. Once the pool has been closed and
    /// empty at some moment after `wait` was called, the future resolves, even if the pool was
    /// reopened since.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future forgets its registration; nothing else changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::new();
    /// for peer in ["a", "b"] {
    ///     pool.try_spawn([peer], async {}).unwrap();
    /// }
    /// pool.close();
    /// pool.wait().await;
    /// assert!(pool.is_empty());
    /// # }
    /// ```
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static + use<K, S> {
        Core::wait_idle(&self.core)
    }

    /// Aborts every spawned task counted in group `key`, as by [`JoinHandle::abort`].
    ///
    /// A task in several groups is aborted when any of them is. Each aborted task releases its
    /// slots through the same guard as every other exit, once tokio has dropped its future (at
    /// its next scheduling point, not necessarily before this returns). Permits are not tasks and
    /// are not affected. A task being spawned concurrently with this call is aborted as soon as
    /// it is spawned.
    ///
    /// Returns how many tasks were signalled (tasks that had already finished, or were already
    /// aborted but not yet dropped, may be counted). Costs O(tasks in the pool that name a
    /// group): it is an operator's action, and keeping the hot path free of per-group task
    /// lists is worth it.
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics; nothing changed (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// Cancelling everything a misbehaving peer started:
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::new();
    /// let stuck = pool.try_spawn(["peer-9"], std::future::pending::<()>()).unwrap();
    /// let fine = pool.try_spawn(["peer-1"], async { 1 }).unwrap();
    /// assert_eq!(pool.abort_group(&"peer-9"), 1);
    /// assert!(stuck.await.unwrap_err().is_cancelled());
    /// assert_eq!(fine.await.unwrap(), 1);
    /// assert_eq!(pool.task_count(&"peer-9"), 0);
    /// # }
    /// ```
    pub fn abort_group(&self, key: &K) -> usize {
        self.core.abort(Some(key))
    }

    /// Aborts every spawned task in the pool; see [`abort_group`](Self::abort_group).
    /// Permits are not affected. Returns how many tasks were signalled.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::<&str>::new();
    /// let task = pool.try_spawn([], std::future::pending::<()>()).unwrap();
    /// assert_eq!(pool.abort_all(), 1);
    /// assert!(task.await.unwrap_err().is_cancelled());
    /// assert!(pool.is_empty());
    /// # }
    /// ```
    pub fn abort_all(&self) -> usize {
        self.core.abort(None)
    }

    /// Shuts the pool down: [`close`](Self::close), [`abort_all`](Self::abort_all), then
    /// [`wait`](Self::wait) until every task has ended and every permit was dropped.
    ///
    /// Permits are not aborted: `shutdown` waits for their holders to drop them.
    ///
    /// # Panics
    ///
    /// Its first poll panics if `K`'s `Drop` panics in [`close`](Self::close) (see its
    /// `# Panics`); the pool is closed then, and its tasks are not aborted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future stops only the waiting. If it was polled, the pool
    /// stays closed and its tasks stay aborted; nothing happens before the first poll.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::new();
    /// pool.try_spawn(["a"], std::future::pending::<()>()).unwrap();
    /// pool.shutdown().await;
    /// assert!(pool.is_closed() && pool.is_empty());
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        self.close();
        let wait = self.wait();
        self.abort_all();
        wait.await;
    }

    /// Returns a consistent snapshot of group `key`'s counts, limit and history; see
    /// [`GroupStats`]. A group never seen (or reclaimed) has zeros and the default limit.
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics; nothing changed (see [Keys that panic](Self#keys-that-panic)).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().default_limit(2).build();
    /// let _p = pool.try_acquire(["a"]).unwrap();
    /// let stats = pool.stats(&"a");
    /// assert_eq!((stats.running, stats.limit, stats.admitted), (1, Some(2), 1));
    /// ```
    #[must_use]
    pub fn stats(&self, key: &K) -> GroupStats {
        self.core.stats(key)
    }

    /// Returns a consistent snapshot of the total group: every task and permit in the pool,
    /// limited by `max_tasks`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().max_tasks(1).build();
    /// let _p = pool.try_acquire(["a"]).unwrap();
    /// assert!(pool.try_acquire(["b"]).is_err());
    /// let total = pool.total_stats();
    /// assert_eq!((total.running, total.limit, total.admitted, total.rejected), (1, Some(1), 1, 1));
    /// ```
    #[must_use]
    pub fn total_stats(&self) -> GroupStats {
        self.core.total_stats()
    }
}

/// The future [`TaskPool::spawn`] returns: it waits for the task's admission, then spawns it.
///
/// It owns the task's hashed groups and the task's future, and borrows nothing: it is
/// `'static` when `K`, `S` and `F` are (whatever iterator the groups came from), and `Send`
/// when they are. See [`TaskPool::spawn`] for what it resolves to, its fairness, errors and
/// cancel safety.
//
// A named future rather than an `async` block, which kept the admission twice in its layout
// (328 bytes for a 16-byte task and three `u32` keys, moved by value into the caller's future)
// and cost the waiting flow of `examples/compare.rs` more instructions per task.
#[must_use = "futures do nothing unless polled: the task is neither queued nor spawned"]
pub struct Spawn<K: Eq, S, F> {
    admission: WaitAdmission<K, S, TaskAdmission<K, S>>,
    /// The task and its span, until it is spawned or handed back.
    task: Option<(F, tracing::Span)>,
}

impl<K: Eq, S, F> fmt::Debug for Spawn<K, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Completed: the task spawned, or handed back in a `SpawnError`.
        f.debug_struct("Spawn")
            .field("completed", &self.task.is_none())
            .finish_non_exhaustive()
    }
}

// Never pin-projected: the task's future is only moved (into `tokio::spawn` or the error),
// never polled here, so `Spawn` may move whatever `F` is.
impl<K: Eq, S, F> Unpin for Spawn<K, S, F> {}

impl<K, S, F> Future for Spawn<K, S, F>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Result<JoinHandle<F::Output>, SpawnError<F>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Polled after it completed, the admission panics first.
        let admitted = ready!(Pin::new(&mut this.admission).poll(cx));
        let Some((future, span)) = this.task.take() else {
            unreachable!("the task is taken only once its admission has completed")
        };
        Poll::Ready(match admitted {
            Ok(admission) => Ok(spawn_admitted(
                this.admission.core(),
                admission,
                span,
                future,
            )),
            Err(_closed) => Err(SpawnError::new(future)),
        })
    }
}

/// The future [`TaskPool::acquire`] returns: it waits for a [`Permit`].
///
/// It owns its hashed groups and borrows nothing: it is `'static` when `K` and `S` are
/// (whatever iterator the groups came from), and `Send` when they are. See
/// [`TaskPool::acquire`] for what it resolves to, its errors and cancel safety.
//
// Named, like `Spawn`, so that it is no larger than its waiting admission.
#[must_use = "futures do nothing unless polled: no place is taken in the queues"]
pub struct Acquire<K: Eq, S> {
    admission: WaitAdmission<K, S, Admission<K, S>>,
}

impl<K: Eq, S> fmt::Debug for Acquire<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire").finish_non_exhaustive()
    }
}

impl<K, S> Future for Acquire<K, S>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
{
    type Output = Result<Permit<K, S>, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.admission).poll(cx).map(|admitted| {
            admitted
                .map(Permit::new)
                .map_err(|_closed| AcquireError::closed())
        })
    }
}

/// Spawns `future` with its admission moved into the task, so that every way the task ends
/// (completion, panic, abort, runtime drop) drops the admission and releases its counts, and
/// attaches the task's abort handle for `abort_group`. The task runs in a `DEBUG` span naming
/// its groups.
fn spawn_admitted<K, S, F>(
    core: &Core<K, S>,
    admission: TaskAdmission<K, S>,
    span: tracing::Span,
    future: F,
) -> JoinHandle<F::Output>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = admission.task();
    let run = crate::backend::guarded(admission, future);
    // Without a subscriber, the span is disabled: skip the `Instrumented` wrapper, which would
    // make the task's future bigger and add work to every poll.
    let handle = if span.is_disabled() {
        tokio::spawn(run)
    } else {
        tokio::spawn(run.instrument(span))
    };
    core.attach(task, handle.abort_handle());
    handle
}

impl<K, S> fmt::Debug for TaskPool<K, S>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = self.core.summary();
        f.debug_struct("TaskPool")
            .field("len", &summary.running)
            .field("waiting", &summary.waiting)
            .field("closed", &summary.closed)
            .field("max_tasks", &summary.max_tasks)
            .field("default_limit", &summary.default_limit)
            .field("groups", &summary.groups)
            .finish()
    }
}
