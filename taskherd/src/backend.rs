//! For pools that decide admission somewhere else than in this process (a store shared by a
//! fleet of processes, such as `taskherd-redis`): the task side and the errors of
//! [`TaskPool`](crate::TaskPool), so that such a pool behaves like it.
//!
//! A backend decides admission its own way and gets a *guard*, a value whose `Drop` releases the
//! admission. From there on, everything is shared:
//!
//! - [`spawn_guarded`] runs a future as a tokio task holding the guard, and drops the guard on
//!   every exit (completion, panic, abort, the runtime dropping the task), before the output is
//!   stored: when the [`JoinHandle`] resolves, the admission is already given back. This is the
//!   same wrapper `TaskPool` spawns its tasks in.
//! - [`Tasks`] keeps the abort handles of a backend's running tasks by group, for
//!   `abort_group` and `abort_all`, and to abort one task whose admission was lost.
//! - The error types of this crate, with a third kind of refusal besides "full" and "closed":
//!   *unavailable*, when the store could not be reached (a backend fails closed and says so).
//!   The functions here make them; a `TaskPool` never returns an unavailable error.
//!
//! `TaskPool` itself keeps its task records inside its own critical section (one lock round
//! trip fewer per task); [`Tasks`] is the same bookkeeping for a backend, behind a lock of its
//! own.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tokio::task::{AbortHandle, JoinHandle};

use crate::error::{AcquireError, Group, Refusal, SpawnError, TryAcquireError, TrySpawnError};
use crate::sync::Mutex;

/// Spawns `future` as a tokio task that holds `guard` until it ends, however it ends.
///
/// The guard is dropped right after the future completes, before its output is stored, so the
/// admission it stands for is released by the time the returned [`JoinHandle`] resolves; if the
/// task panics, is aborted or is dropped by its runtime, the guard is dropped with the task.
///
/// # Panics
///
/// Panics if called outside a tokio runtime, like [`tokio::spawn`]; the future and the guard
/// are dropped (the guard's release runs) before the panic leaves this function.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// struct Slot(Arc<AtomicUsize>);
/// impl Drop for Slot {
///     fn drop(&mut self) {
///         self.0.fetch_sub(1, Ordering::SeqCst);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let running = Arc::new(AtomicUsize::new(1)); // admitted elsewhere
/// let task = taskherd::backend::spawn_guarded(Slot(Arc::clone(&running)), async { 7 });
/// assert_eq!(task.await.unwrap(), 7);
/// assert_eq!(running.load(Ordering::SeqCst), 0, "released before the handle resolved");
/// # }
/// ```
pub fn spawn_guarded<G, F>(guard: G, future: F) -> JoinHandle<F::Output>
where
    G: Send + 'static,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(guarded(guard, future))
}

/// `future`, holding `guard` until it completes; the guard is dropped before the output is
/// returned. The wrapper both `TaskPool` and [`spawn_guarded`] spawn.
///
/// Written as a function returning an `async move` block, not as an `async fn`: with the
/// `async fn`, `TaskPool`'s spawn path measured 27 more instructions per task (callgrind,
/// `examples/compare.rs`), from the different layout of the generated future.
#[allow(clippy::manual_async_fn)]
pub(crate) fn guarded<G, F>(guard: G, future: F) -> impl Future<Output = F::Output>
where
    F: Future,
{
    async move {
        let output = future.await;
        // Release before the output is stored, so the count is lower when the JoinHandle
        // resolves.
        drop(guard);
        output
    }
}

/// A backend's running tasks, by group: what `abort_group` and `abort_all` need.
///
/// A task is [inserted](Self::insert) with its groups when it is admitted (before it is
/// spawned), [attached](Self::attach) to its abort handle once spawned, and
/// [removed](Self::remove) when its admission is released. An abort requested between insert
/// and attach is carried out at attach. Memory is bounded by the tasks running.
pub struct Tasks<K> {
    inner: Mutex<Inner<K>>,
}

struct Inner<K> {
    next: u64,
    tasks: HashMap<u64, Record<K>>,
}

struct Record<K> {
    groups: Vec<K>,
    abort: Attach,
}

enum Attach {
    /// Spawned: its handle.
    Handle(AbortHandle),
    /// Not spawned yet.
    Pending,
    /// Not spawned yet, and an abort was asked for.
    AbortPending,
}

/// Capacity a [`Tasks`] registry keeps however empty it gets.
const MIN_RETAINED: usize = 64;

/// A task's entry in a [`Tasks`] registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId(u64);

impl<K> Default for Tasks<K> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                next: 0,
                tasks: HashMap::new(),
            }),
        }
    }
}

impl<K: Eq + Hash> Tasks<K> {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a task admitted in `groups`, about to be spawned.
    pub fn insert(&self, groups: Vec<K>) -> TaskId {
        let mut inner = self.inner.lock();
        let id = inner.next;
        inner.next += 1;
        inner.tasks.insert(
            id,
            Record {
                groups,
                abort: Attach::Pending,
            },
        );
        TaskId(id)
    }

    /// Gives task `id` its abort handle once spawned; aborts it at once if an abort was asked
    /// for meanwhile. Does nothing if the task was already removed (it ended). Attaching a
    /// second handle replaces the first.
    pub fn attach(&self, id: TaskId, handle: AbortHandle) {
        // A replaced handle is dropped after unlocking: dropping the last reference to a task
        // drops its output, which is user code.
        let (abort_now, _replaced) = {
            let mut inner = self.inner.lock();
            match inner.tasks.get_mut(&id.0) {
                Some(record) => match record.abort {
                    Attach::AbortPending => (true, None),
                    Attach::Pending | Attach::Handle(_) => (
                        false,
                        Some(std::mem::replace(
                            &mut record.abort,
                            Attach::Handle(handle.clone()),
                        )),
                    ),
                },
                None => (false, None),
            }
        };
        if abort_now {
            handle.abort();
        }
    }

    /// Forgets task `id` (its admission was released). Returns `false` if it was not there.
    /// Gives memory back once the registry is mostly empty (amortised O(1)).
    pub fn remove(&self, id: TaskId) -> bool {
        // The record (keys and handle) is dropped after unlocking.
        let removed = {
            let mut inner = self.inner.lock();
            let removed = inner.tasks.remove(&id.0);
            let tasks = &mut inner.tasks;
            if tasks.capacity() > MIN_RETAINED && tasks.len() < tasks.capacity() / 4 {
                // Rehashes the records left (moves, no user code): O(tasks), once per
                // halving of the capacity.
                tasks.shrink_to(2 * tasks.len());
            }
            removed
        };
        removed.is_some()
    }

    /// Aborts task `id`; returns `false` if it is not running any more.
    pub fn abort(&self, id: TaskId) -> bool {
        let handle = {
            let mut inner = self.inner.lock();
            let Some(record) = inner.tasks.get_mut(&id.0) else {
                return false;
            };
            match &record.abort {
                Attach::Handle(handle) => Some(handle.clone()),
                Attach::Pending | Attach::AbortPending => {
                    record.abort = Attach::AbortPending;
                    None
                }
            }
        };
        if let Some(handle) = handle {
            handle.abort();
        }
        true
    }

    /// Aborts every task that names group `key`; returns how many. O(tasks).
    pub fn abort_group(&self, key: &K) -> usize {
        self.abort_where(|groups| groups.contains(key))
    }

    /// Aborts every task; returns how many. O(tasks).
    pub fn abort_all(&self) -> usize {
        self.abort_where(|_| true)
    }

    fn abort_where(&self, mut pick: impl FnMut(&[K]) -> bool) -> usize {
        let mut handles = Vec::new();
        let count;
        {
            let mut inner = self.inner.lock();
            // Which tasks first (`pick` runs `K: Eq`, which may panic), then the changes: a
            // panic leaves every record as it was, not half of them marked.
            let picked: Vec<u64> = inner
                .tasks
                .iter()
                .filter(|(_, record)| pick(&record.groups))
                .map(|(&id, _)| id)
                .collect();
            count = picked.len();
            for id in picked {
                let Some(record) = inner.tasks.get_mut(&id) else {
                    continue;
                };
                match &record.abort {
                    Attach::Handle(handle) => handles.push(handle.clone()),
                    Attach::Pending | Attach::AbortPending => {
                        record.abort = Attach::AbortPending;
                    }
                }
            }
        }
        // Aborting runs no task code, but wakes the task: outside the lock.
        for handle in handles {
            handle.abort();
        }
        count
    }

    /// How many tasks are recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().tasks.len()
    }

    /// Whether no task is recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K> fmt::Debug for Tasks<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasks")
            .field("len", &self.inner.lock().tasks.len())
            .finish()
    }
}

/// Why a store was unavailable, as the errors keep it.
fn source(source: impl Into<Box<dyn Error + Send + Sync>>) -> Arc<dyn Error + Send + Sync> {
    Arc::from(source.into())
}

/// A [`TrySpawnError`]: `group` was full; `inner` is handed back.
pub fn try_spawn_full<K, T>(group: Group<K>, inner: T) -> TrySpawnError<K, T> {
    TrySpawnError::new(Refusal::Full(group), inner)
}

/// A [`TrySpawnError`]: the pool is closed; `inner` is handed back.
pub fn try_spawn_closed<K, T>(inner: T) -> TrySpawnError<K, T> {
    TrySpawnError::new(Refusal::Closed, inner)
}

/// A [`TrySpawnError`]: the store could not be reached (`error` says why); `inner` is handed
/// back.
pub fn try_spawn_unavailable<K, T>(
    error: impl Into<Box<dyn Error + Send + Sync>>,
    inner: T,
) -> TrySpawnError<K, T> {
    TrySpawnError::new(Refusal::Unavailable(source(error)), inner)
}

/// A [`TryAcquireError`]: `group` was full.
pub fn try_acquire_full<K>(group: Group<K>) -> TryAcquireError<K> {
    TryAcquireError::new(Refusal::Full(group))
}

/// A [`TryAcquireError`]: the pool is closed.
pub fn try_acquire_closed<K>() -> TryAcquireError<K> {
    TryAcquireError::new(Refusal::Closed)
}

/// A [`TryAcquireError`]: the store could not be reached (`error` says why).
pub fn try_acquire_unavailable<K>(
    error: impl Into<Box<dyn Error + Send + Sync>>,
) -> TryAcquireError<K> {
    TryAcquireError::new(Refusal::Unavailable(source(error)))
}

/// A [`SpawnError`]: the pool was closed before the task was admitted; `inner` is handed back.
pub fn spawn_closed<F>(inner: F) -> SpawnError<F> {
    SpawnError::new(inner)
}

/// A [`SpawnError`]: the store could not be reached (`error` says why); `inner` is handed back.
pub fn spawn_unavailable<F>(
    error: impl Into<Box<dyn Error + Send + Sync>>,
    inner: F,
) -> SpawnError<F> {
    SpawnError::unavailable(source(error), inner)
}

/// An [`AcquireError`]: the pool was closed before a permit was granted.
pub fn acquire_closed() -> AcquireError {
    AcquireError::closed()
}

/// An [`AcquireError`]: the store could not be reached (`error` says why).
pub fn acquire_unavailable(error: impl Into<Box<dyn Error + Send + Sync>>) -> AcquireError {
    AcquireError::unavailable(source(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_errors_say_so_and_keep_their_source() {
        let io = std::io::Error::other("connection refused");
        let err = try_spawn_unavailable::<&str, _>(io, 5);
        assert!(err.is_unavailable() && !err.is_full() && !err.is_closed());
        assert_eq!(err.full_group(), None);
        assert_eq!(
            err.to_string(),
            "task refused: the pool is unavailable: connection refused"
        );
        assert_eq!(
            Error::source(&err).map(ToString::to_string).as_deref(),
            Some("connection refused")
        );
        assert_eq!(err.into_inner(), 5);

        let err = try_acquire_unavailable::<&str>("timed out");
        assert!(err.is_unavailable() && !err.is_full() && !err.is_closed());
        assert_eq!(format!("{err:?}"), "Unavailable(timed out)");
        assert_eq!(err, try_acquire_unavailable("another reason"));
        assert_ne!(err, try_acquire_closed());
        assert_eq!(
            try_acquire_full(Group::Key("a")).full_group(),
            Some(&Group::Key("a"))
        );

        let err = spawn_unavailable("down", 1);
        assert!(err.is_unavailable() && !err.is_closed());
        assert_eq!(
            err.to_string(),
            "task not spawned: the pool is unavailable: down"
        );
        assert!(spawn_closed(1).is_closed());

        let err = acquire_unavailable("down");
        assert!(err.is_unavailable() && !err.is_closed());
        assert_ne!(err, acquire_closed());
        assert!(Error::source(&acquire_closed()).is_none());
    }

    #[test]
    fn the_registry_gives_memory_back_after_a_burst() {
        let tasks = Tasks::new();
        let ids: Vec<TaskId> = (0..10_000).map(|i| tasks.insert(vec![i])).collect();
        assert!(tasks.inner.lock().tasks.capacity() >= 10_000);
        let (last, rest) = ids.split_last().unwrap();
        for id in rest {
            assert!(tasks.remove(*id));
        }
        assert_eq!(tasks.len(), 1);
        let capacity = tasks.inner.lock().tasks.capacity();
        assert!(
            capacity <= 2 * MIN_RETAINED,
            "kept room for {capacity} tasks"
        );
        assert!(tasks.remove(*last), "the survivor is still found");
    }

    /// A key whose `Eq` panics when it meets `Key(0)`.
    #[derive(Debug)]
    struct Key(u32);

    impl std::hash::Hash for Key {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    impl PartialEq for Key {
        fn eq(&self, other: &Self) -> bool {
            assert!(self.0 != 0 && other.0 != 0, "Eq panicked");
            self.0 == other.0
        }
    }

    impl Eq for Key {}

    #[tokio::test(flavor = "current_thread")]
    async fn an_abort_group_whose_eq_panics_changes_nothing() {
        let tasks = Tasks::new();
        // Many tasks in group 1 not yet attached, and one in group 0 whose key panics when
        // compared: whatever order the records are visited in, none may be marked.
        let pending: Vec<TaskId> = (0..50).map(|_| tasks.insert(vec![Key(1)])).collect();
        tasks.insert(vec![Key(0)]);
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tasks.abort_group(&Key(1))));
        assert!(panicked.is_err(), "the key's Eq panicked");
        for id in pending {
            let handle = tokio::spawn(async { 7 });
            tasks.attach(id, handle.abort_handle());
            assert_eq!(
                handle
                    .await
                    .expect("not aborted: the failed abort_group marked nothing"),
                7
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_abort_asked_for_before_attach_happens_at_attach() {
        let tasks = Tasks::new();
        let id = tasks.insert(vec!["a", "b"]);
        assert_eq!(tasks.abort_group(&"b"), 1);
        let handle = tokio::spawn(std::future::pending::<()>());
        tasks.attach(id, handle.abort_handle());
        assert!(handle.await.unwrap_err().is_cancelled());
        assert!(tasks.remove(id));
        assert!(!tasks.remove(id));
        assert!(tasks.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn abort_group_reaches_only_that_group() {
        let tasks = Tasks::new();
        let spawn = |groups: Vec<&'static str>| {
            let id = tasks.insert(groups);
            let handle = tokio::spawn(std::future::pending::<()>());
            tasks.attach(id, handle.abort_handle());
            (id, handle)
        };
        let (_, a) = spawn(vec!["a"]);
        let (b_id, b) = spawn(vec!["b"]);
        assert_eq!(tasks.abort_group(&"a"), 1);
        assert!(a.await.unwrap_err().is_cancelled());
        assert!(!b.is_finished());
        assert!(tasks.abort(b_id));
        assert!(b.await.unwrap_err().is_cancelled());
        assert_eq!(tasks.abort_all(), 2, "removal is the backend's to do");
    }
}
