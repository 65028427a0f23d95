//! What a transition leaves to do once the lock is released: wake wakers, drop what it removed.
//!
//! Dropping a waker, a key, a task record or a waiter record runs user code (a waker's drop may
//! drop the task that owns it, whose future may hold a permit of the same pool), so nothing of
//! the kind is dropped under the lock (invariant 8): transitions move it into a [`Deferred`],
//! which the caller [`finish`](Deferred::finish)es after unlocking.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::task::Waker;

use smallvec::SmallVec;

use super::tasks::TaskRecord;
use super::waiters::Waiter;
use crate::group_set::GroupSet;

#[must_use = "finish it after releasing the lock"]
pub(crate) struct Deferred<K> {
    /// Wakers of waiters granted, failed by `close`, and of `wait` futures that fired.
    pub(crate) wake: SmallVec<[Waker; 4]>,
    /// Wakers replaced or forgotten.
    pub(crate) wakers: SmallVec<[Waker; 1]>,
    /// Keys of removed group entries, and keys handed in but not kept.
    pub(crate) keys: SmallVec<[K; 2]>,
    /// Groups of released permits granted after waiting.
    pub(crate) groups: Vec<GroupSet<K>>,
    /// Removed task records (their keys and abort handles).
    pub(crate) tasks: SmallVec<[TaskRecord<K>; 1]>,
    /// Removed waiter records.
    pub(crate) waiters: Vec<Waiter<K>>,
    /// A count would have gone below zero: the state is corrupt.
    pub(crate) underflow: bool,
}

impl<K> Deferred<K> {
    pub(crate) fn new() -> Self {
        Self {
            wake: SmallVec::new(),
            wakers: SmallVec::new(),
            keys: SmallVec::new(),
            groups: Vec::new(),
            tasks: SmallVec::new(),
            waiters: Vec::new(),
            underflow: false,
        }
    }

    /// How many wakers will be woken.
    pub(crate) fn woken(&self) -> usize {
        self.wake.len()
    }

    /// Wakes, then drops. Call only after the lock is released.
    ///
    /// Every waker is woken even if one of them panics; the first panic is raised again
    /// afterwards (unless the thread is already panicking, when it is dropped: a second panic
    /// would abort). Then everything removed is dropped; a panicking `Drop` of one item still
    /// drops the others. A count that would have gone below zero panics last, with a message
    /// that says it is a bug, never silently clamped.
    pub(crate) fn finish(self) {
        let Self {
            wake,
            wakers,
            keys,
            groups,
            tasks,
            waiters,
            underflow,
        } = self;
        let mut panic = None;
        for waker in wake {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| waker.wake())) {
                panic.get_or_insert(payload);
            }
        }
        drop((wakers, keys, groups, tasks, waiters));
        if std::thread::panicking() {
            return;
        }
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
        assert!(
            !underflow,
            "taskherd: a group's count would have gone below zero, so the pool's counts are \
             corrupt. This is a bug in taskherd: please report it with the operations that \
             led to it."
        );
    }
}
