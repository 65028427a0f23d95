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

/// What one critical section leaves to do once the lock is released.
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
    wake: ManuallyDrop<SmallVec<[Waker; 2]>>,
    /// Wakers replaced or forgotten.
    wakers: ManuallyDrop<SmallVec<[Waker; 1]>>,
    /// Keys of removed group entries, and keys handed in but not kept.
    keys: ManuallyDrop<SmallVec<[K; 1]>>,
    /// Groups of released admissions (their keys).
    groups: ManuallyDrop<SmallVec<[GroupSet<K>; 1]>>,
    /// Abort handles of removed task records.
    aborts: ManuallyDrop<SmallVec<[AbortHandle; 1]>>,
    /// Group tables emptied by moves (see `GroupTable`): empty, so dropping them runs no user
    /// code, but freeing a large one takes milliseconds.
    tables: Option<Vec<HashTable<Entry<K>>>>,
    /// A count would have gone below zero: the state is corrupt.
    underflow: bool,
    /// Something was pushed (or `underflow` set) since the last `finish`: every addition
    /// goes through a method that sets it, so the common `finish` with nothing to do reads
    /// one flag instead of the length of every list (twice: `finish`, then `Drop`).
    dirty: bool,
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
            dirty: false,
        }
    }

    /// A waker to wake after unlocking (nothing if `None`).
    #[inline]
    pub(crate) fn wake(&mut self, waker: impl Into<Option<Waker>>) {
        if let Some(waker) = waker.into() {
            self.wake.push(waker);
            self.dirty = true;
        }
    }

    /// A waker replaced or forgotten, dropped after unlocking (nothing if `None`).
    #[inline]
    pub(crate) fn drop_waker(&mut self, waker: impl Into<Option<Waker>>) {
        if let Some(waker) = waker.into() {
            self.wakers.push(waker);
            self.dirty = true;
        }
    }

    /// An abort handle of a removed task record, dropped after unlocking (nothing if `None`).
    #[inline]
    pub(crate) fn abort(&mut self, abort: Option<AbortHandle>) {
        if let Some(abort) = abort {
            self.aborts.push(abort);
            self.dirty = true;
        }
    }

    /// A count would have gone below zero: `finish` panics with a bug report.
    #[cold]
    pub(crate) fn underflow(&mut self) {
        self.underflow = true;
        self.dirty = true;
    }

    /// Whether [`underflow`](Self::underflow) was called.
    #[cfg(test)]
    pub(crate) fn underflowed(&self) -> bool {
        self.underflow
    }

    /// Emptied group tables, freed after unlocking.
    #[cold]
    pub(crate) fn tables(&mut self, tables: Vec<HashTable<Entry<K>>>) {
        debug_assert!(
            tables.iter().all(HashTable::is_empty),
            "only emptied tables"
        );
        self.tables.get_or_insert_default().extend(tables);
        self.dirty = true;
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
            self.dirty = true;
        }
    }

    /// Groups whose keys are to be dropped after unlocking (dropped now if that runs no code:
    /// a set that spilled to the heap is freed without running user code).
    #[inline]
    pub(crate) fn groups(&mut self, groups: GroupSet<K>) {
        if std::mem::needs_drop::<K>() && groups.len() > 0 {
            self.groups.push(groups);
            self.dirty = true;
        }
    }

    /// A removed waiter record: its waker and keys are dropped after unlocking, the rest
    /// (links, counters) now, which runs no user code.
    #[inline]
    pub(crate) fn waiter(&mut self, mut waiter: Waiter<K>) {
        self.drop_waker(waiter.waker.take());
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
        self.abort(record.into_abort());
    }

    /// Whether there is nothing to wake or drop (then nothing was pushed since the last
    /// `finish`, which emptied the lists, so none of them owns heap memory).
    #[inline]
    fn is_empty(&self) -> bool {
        debug_assert!(
            self.dirty || self.nothing_held(),
            "something was added to a Deferred without marking it"
        );
        !self.dirty
    }

    /// Whether every list is empty, read list by list (for the check above).
    fn nothing_held(&self) -> bool {
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
        self.dirty = false;
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

#[cfg(test)]
mod tests {
    use std::hash::{Hash, Hasher};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use hashbrown::HashTable;

    use super::{Deferred, Entry};
    use crate::group_set::GroupSet;
    use crate::hasher::DefaultHashBuilder;

    /// Counts its wake-ups; its `Arc`'s strong count says whether a clone is still held.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(Arc::clone(&counter));
        (counter, waker)
    }

    /// A key whose drop is counted (so `Deferred` keeps it for after unlocking).
    struct Key(u32, Arc<AtomicUsize>);

    impl Drop for Key {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl PartialEq for Key {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    impl Eq for Key {}

    impl Hash for Key {
        fn hash<H: Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    /// Each way of adding to a `Deferred` makes `finish` do its work, after, never before:
    /// `finish` skips a `Deferred` nothing was added to by a flag, which every adder sets.
    #[test]
    fn every_addition_is_carried_out_by_finish() {
        let (woken, wake) = waker();
        let (dropped, drop_later) = waker();
        let keys = Arc::new(AtomicUsize::new(0));
        let mut out = Deferred::<Key>::new();
        out.wake(wake);
        out.drop_waker(drop_later);
        out.key(Key(1, Arc::clone(&keys)));
        let set = GroupSet::new(
            [Key(2, Arc::clone(&keys)), Key(3, Arc::clone(&keys))],
            &DefaultHashBuilder::new(),
        );
        out.groups(set);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        assert_eq!(Arc::strong_count(&dropped), 2, "held until finish");
        assert_eq!(keys.load(Ordering::SeqCst), 0, "held until finish");
        out.finish();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(Arc::strong_count(&woken), 1, "woken by value");
        assert_eq!(dropped.0.load(Ordering::SeqCst), 0, "dropped, not woken");
        assert_eq!(Arc::strong_count(&dropped), 1);
        assert_eq!(keys.load(Ordering::SeqCst), 3);
        // Finished, it is empty: a second finish (its drop) does nothing more.
        drop(out);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(keys.load(Ordering::SeqCst), 3);
    }

    /// Each adder of wakers and keys alone is enough (not only the first one of a
    /// `Deferred`), and one that adds nothing (`None`) leaves nothing to do. (Abort handles
    /// and tables: the two tests below.)
    #[test]
    fn each_addition_alone_is_carried_out() {
        let (woken, wake) = waker();
        let mut out = Deferred::<Key>::new();
        out.wake(None);
        out.drop_waker(None);
        out.abort(None);
        assert!(out.is_empty());
        out.wake(Some(wake));
        out.finish();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);

        let (dropped, drop_later) = waker();
        let mut out = Deferred::<Key>::new();
        out.drop_waker(Some(drop_later));
        out.finish();
        assert_eq!(Arc::strong_count(&dropped), 1);

        let keys = Arc::new(AtomicUsize::new(0));
        let mut out = Deferred::<Key>::new();
        out.key(Key(1, Arc::clone(&keys)));
        out.finish();
        assert_eq!(keys.load(Ordering::SeqCst), 1);

        let mut out = Deferred::<Key>::new();
        out.groups(GroupSet::new(
            [Key(2, Arc::clone(&keys))],
            &DefaultHashBuilder::new(),
        ));
        out.finish();
        assert_eq!(keys.load(Ordering::SeqCst), 2);
    }

    /// An abort handle alone is dropped by `finish` (its list is `ManuallyDrop`: missed, the
    /// handle would leak, and with it the task's memory).
    #[test]
    fn an_abort_handle_alone_is_dropped_by_finish() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
        let task = rt.spawn(std::future::pending::<()>());
        let mut out = Deferred::<u32>::new();
        out.abort(Some(task.abort_handle()));
        assert_eq!(out.aborts.len(), 1);
        out.finish();
        assert!(out.aborts.is_empty(), "dropped by finish");
    }

    /// Emptied group tables alone are freed by `finish`.
    #[test]
    fn emptied_tables_alone_are_freed_by_finish() {
        let mut out = Deferred::<u32>::new();
        out.tables(vec![HashTable::<Entry<u32>>::with_capacity(64)]);
        out.finish();
        assert!(out.tables.is_none(), "freed by finish");
    }

    /// An underflow alone makes `finish` panic, once: the state is corrupt.
    #[test]
    fn an_underflow_alone_panics_at_finish() {
        let mut out = Deferred::<u32>::new();
        out.underflow();
        let panicked = catch_unwind(AssertUnwindSafe(|| out.finish()));
        assert!(panicked.is_err());
        // Reported once: the drop that follows finds nothing to do.
        drop(out);
    }
}
