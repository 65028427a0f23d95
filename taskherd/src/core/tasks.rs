//! The registry of spawned tasks that `abort_group` and `abort_all` reach.
//!
//! A record is created under the lock at admission (so a task that ends at once still finds and
//! removes it), and its `AbortHandle` is attached right after `tokio::spawn` returns. An abort
//! requested in between is remembered and carried out when the handle arrives, so no task
//! escapes an `abort_all`. Records name their groups by entry id, not by key: an entry lives
//! at least as long as the tasks counted in it, ids are never reused, and no key is cloned.

use slab::Slab;
use smallvec::SmallVec;
use tokio::task::AbortHandle;

/// Identifies one task record; the generation tells a reused slab slot from the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef {
    index: usize,
    generation: u64,
}

struct TaskRecord {
    generation: u64,
    /// Ids of the entries of the task's named groups.
    groups: SmallVec<[u64; 4]>,
    abort: Option<AbortHandle>,
    /// An abort was requested before the handle was attached.
    abort_requested: bool,
}

/// Spawned tasks that are still counted.
#[derive(Default)]
pub(crate) struct Tasks {
    records: Slab<TaskRecord>,
    next_generation: u64,
}

impl Tasks {
    pub(crate) fn insert(&mut self, groups: SmallVec<[u64; 4]>) -> TaskRef {
        let generation = self.next_generation;
        self.next_generation += 1;
        let index = self.records.insert(TaskRecord {
            generation,
            groups,
            abort: None,
            abort_requested: false,
        });
        TaskRef { index, generation }
    }

    /// Attaches the task's abort handle. Returns it back if an abort was already requested
    /// (the caller aborts it outside the lock), or `None`. A task that already ended has no
    /// record any more and is left alone.
    pub(crate) fn attach(&mut self, task: TaskRef, abort: AbortHandle) -> Option<AbortHandle> {
        match self.records.get_mut(task.index) {
            Some(record) if record.generation == task.generation => {
                if record.abort_requested {
                    Some(abort)
                } else {
                    record.abort = Some(abort);
                    None
                }
            }
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, task: TaskRef) {
        if self
            .records
            .get(task.index)
            .is_some_and(|r| r.generation == task.generation)
        {
            self.records.remove(task.index);
            if self.records.is_empty()
                && self.records.capacity() > super::state::MIN_RETAINED_CAPACITY
            {
                self.records = Slab::new();
            }
        } else {
            debug_assert!(false, "a task record was removed twice");
        }
    }

    /// Signals every task in the entry with id `group` (every task if `None`): collects the
    /// handles to abort once the lock is released and marks tasks whose handle is not attached
    /// yet. Returns how many tasks were signalled. O(tasks in the pool).
    pub(crate) fn abort(&mut self, group: Option<u64>, handles: &mut Vec<AbortHandle>) -> usize {
        let mut signalled = 0;
        for (_, record) in self.records.iter_mut() {
            if group.is_some_and(|id| !record.groups.contains(&id)) {
                continue;
            }
            signalled += 1;
            match &record.abort {
                Some(abort) => handles.push(abort.clone()),
                None => record.abort_requested = true,
            }
        }
        signalled
    }
}
