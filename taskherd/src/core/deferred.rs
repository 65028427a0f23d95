//! What a transition leaves to do once the lock is released: wake wakers, drop what it removed.
//!
//! Dropping a waker, a key, a task record or a waiter record runs user code (a waker's drop may
//! drop the task that owns it, whose future may hold a permit of the same pool), so nothing of
//! the kind is dropped under the lock (invariant 8): transitions move it into a [`Deferred`],
//! which the caller [`finish`](Deferred::finish)es after unlocking. Keys of a type without drop
//! glue (`&str`, integers) run no code when dropped, so they are dropped in place instead
//! ([`Deferred::key`], [`Deferred::groups`]).

use std::mem::{ManuallyDrop, take};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Waker;

use hashbrown::HashTable;
use smallvec::SmallVec;
use tokio::task::AbortHandle;

use super::state::Entry;
use super::tasks::TaskRecord;
use super::waiters::Waiter;
use crate::group_set::GroupSet;

///
/// [`finish`](Self::finish) takes it by reference, and its lists are `ManuallyDrop`: taken by
/// value, the whole `Deferred` (300 bytes with `String` keys) was copied on every call, even
/// the common one with nothing to do, and the drop glue of five empty lists cost as much. The
/// lists are emptied (`mem::take`) before they are dropped, so what `ManuallyDrop` never
/// drops owns nothing; and dropping a `Deferred` that was not finished (a panic on the way)
/// finishes it, so nothing is leaked or left unwoken.
#[must_use = "finish it after releasing the lock"]
pub(crate) struct Deferred<K> {
    /// Wakers of waiters granted, failed by `close`, and of `wait` futures that fired.
    pub(crate) wake: ManuallyDrop<SmallVec<[Waker; 2]>>,
    /// Wakers replaced or forgotten.
    pub(crate) wakers: ManuallyDrop<SmallVec<[Waker; 1]>>,
    /// Keys of removed group entries, and keys handed in but not kept.
    keys: ManuallyDrop<SmallVec<[K; 1]>>,
    /// Groups of released admissions (their keys).
    groups: ManuallyDrop<SmallVec<[GroupSet<K>; 1]>>,
    /// Abort handles of removed task records.
    pub(crate) aborts: ManuallyDrop<SmallVec<[AbortHandle; 1]>>,
    /// Group tables emptied by moves (see `GroupTable`): empty, so dropping them runs no user
    /// code, but freeing a large one takes milliseconds.
    tables: Option<Vec<HashTable<Entry<K>>>>,
    /// A count would have gone below zero: the state is corrupt.
    pub(crate) underflow: bool,
}

impl<K> Deferred<K> {
    #[inline]
    pub(crate) fn new() -> Self {
        Self {
            wake: ManuallyDrop::default(),
            wakers: ManuallyDrop::default(),
            keys: ManuallyDrop::default(),
            groups: ManuallyDrop::default(),
            aborts: ManuallyDrop::default(),
            tables: None,
            underflow: false,
        }
    }

    /// Emptied group tables, freed after unlocking.
    #[cold]
    pub(crate) fn tables(&mut self, tables: Vec<HashTable<Entry<K>>>) {
        debug_assert!(
            tables.iter().all(HashTable::is_empty),
            "only emptied tables"
        );
        self.tables.get_or_insert_default().extend(tables);
    }

    /// How many wakers will be woken.
    pub(crate) fn woken(&self) -> usize {
        self.wake.len()
    }

    /// A key to drop after unlocking (dropped now if dropping it runs no code).
    #[inline]
    pub(crate) fn key(&mut self, key: K) {
        if std::mem::needs_drop::<K>() {
            self.keys.push(key);
        }
    }

    /// Groups whose keys are to be dropped after unlocking (dropped now if that runs no code:
    /// a set that spilled to the heap is freed without running user code).
    #[inline]
    pub(crate) fn groups(&mut self, groups: GroupSet<K>) {
        if std::mem::needs_drop::<K>() && groups.len() > 0 {
            self.groups.push(groups);
        }
    }

    /// A removed waiter record: its waker and keys are dropped after unlocking, the rest
    /// (links, counters) now, which runs no user code.
    #[inline]
    pub(crate) fn waiter(&mut self, mut waiter: Waiter<K>) {
        self.wakers.extend(waiter.waker.take());
        self.groups(std::mem::take(&mut waiter.groups));
    }

    /// A task record removed by its own task's guard (a release): dropped now. It holds no
    /// key, and its abort handle only decrements the task's reference count, never to zero,
    /// because the guard runs inside the task (its future completing, or being dropped by
    /// tokio), which holds its own reference meanwhile; so no task output or future is dropped
    /// here.
    #[inline]
    pub(crate) fn released_task(&mut self, record: TaskRecord) {
        drop(record);
    }

    /// The abort handle of a task in no group removed by its own task's guard: dropped now,
    /// like [`released_task`](Self::released_task)'s.
    #[inline]
    pub(crate) fn released_abort(&mut self, abort: Option<AbortHandle>) {
        drop(abort);
    }

    /// Any other removed task record: its abort handle is dropped after unlocking.
    #[inline]
    pub(crate) fn task(&mut self, record: TaskRecord) {
        self.aborts.extend(record.into_abort());
    }

    /// Whether there is nothing to wake or drop (then nothing was ever pushed, so nothing
    /// spilled to the heap).
    #[inline]
    fn is_empty(&self) -> bool {
        self.wake.is_empty()
            && self.wakers.is_empty()
            && self.keys.is_empty()
            && self.groups.is_empty()
            && self.aborts.is_empty()
            && self.tables.is_none()
            && !self.underflow
    }

    /// Wakes, then drops. Call only after the lock is released.
    ///
    /// Every waker is woken even if one of them panics. A waker's panic is not raised again
    /// here: the wakers woken are always other waiters' (a transition never wakes its caller),
    /// so their panic must not fail the unrelated call that made room (a task finishing, a
    /// permit dropped, a limit raised, `close`); the panic hook has already reported it, and it
    /// is logged as an `ERROR` event. Then everything removed is dropped; a panicking `Drop` of
    /// one item still drops the others, and that panic reaches the caller. A count that would
    /// have gone below zero panics last, with a message that says it is a bug, never silently
    /// clamped (unless the thread is already panicking: a second panic would abort).
    #[inline]
    pub(crate) fn finish(&mut self) {
        // The common case (a release that granted nobody): nothing to run, and the empty
        // lists own no memory, so there is nothing to drop either.
        if !self.is_empty() {
            self.finish_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn finish_slow(&mut self) {
        let wake = take(&mut *self.wake);
        let wakers = take(&mut *self.wakers);
        let keys = take(&mut *self.keys);
        let groups = take(&mut *self.groups);
        let aborts = take(&mut *self.aborts);
        let tables = self.tables.take();
        let underflow = std::mem::replace(&mut self.underflow, false);
        let mut panicked = 0_usize;
        for waker in wake {
            if catch_unwind(AssertUnwindSafe(|| waker.wake())).is_err() {
                panicked += 1;
            }
        }
        if panicked > 0 {
            tracing::error!(
                panicked,
                "a waiter's waker panicked when woken; the other wakers were woken"
            );
        }
        drop((wakers, keys, groups, aborts, tables));
        if std::thread::panicking() {
            return;
        }
        assert!(
            !underflow,
            "taskherd: a count would have gone below zero (or an admission's group was \
             missing), so the pool's counts are corrupt; the count was left as it was. This is \
             a bug in taskherd: please report it with the operations that led to it."
        );
    }
}

impl<K> Drop for Deferred<K> {
    /// Finishes a `Deferred` dropped without [`finish`](Self::finish) (a panic between the
    /// transition and the call); after `finish`, it is empty and this does nothing.
    #[inline]
    fn drop(&mut self) {
        self.finish();
    }
}
