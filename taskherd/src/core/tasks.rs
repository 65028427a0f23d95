//! The registry of spawned tasks: their groups, and what `abort_group` and `abort_all` reach.
//!
//! A spawned task's groups live here, in a record created under the lock at admission, rather
//! than in the task: the task's future then carries only an 8-byte id, which keeps it
//! small (it is moved several times on its way into tokio). The record keeps where each group's
//! entry is (hash and serial), not the keys: the task's keys were moved into the entries they
//! created or are dropped right after admission, outside the lock, so a record is small (a
//! burst keeps one per live task) and dropping it runs no user code. The task's `AbortHandle` is
//! attached right after `tokio::spawn` returns; an abort requested in between is remembered and
//! carried out when the handle arrives, so no task escapes an `abort_all`.
//!
//! Records are found by a unique id in a hash table, not by an index into a slab: nothing
//! outside the table knows where a record is, so the table can shrink after a burst by
//! rehashing (invariant 4) without moving anything its holders point at. (A slab must move
//! live records to shrink, and then forward every holder's stale index.)

use hashbrown::HashTable;
use tokio::task::AbortHandle;

use super::records::{MIN_RETAINED_CAPACITY, id_hash};
use crate::group_set::EntryRefs;

/// Identifies one task record: its id, unique for the life of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef(u64);

pub(crate) struct TaskRecord {
    id: u64,
    pub(crate) groups: EntryRefs,
    abort: Option<AbortHandle>,
    /// An abort was requested before the handle was attached.
    abort_requested: bool,
}

impl TaskRecord {
    /// The part of a removed record that may run code when dropped.
    pub(crate) fn into_abort(self) -> Option<AbortHandle> {
        self.abort
    }
}

/// What to do with a task's abort handle after attaching it, outside the lock.
pub(crate) enum Attached {
    /// Kept in the record.
    Kept,
    /// Abort it: an abort was requested while the task was being spawned.
    Abort(AbortHandle),
    /// Drop it: the task already ended.
    Ended(AbortHandle),
}

/// Spawned tasks that are still counted.
pub(crate) struct Tasks {
    records: HashTable<TaskRecord>,
    next_id: u64,
}

impl Default for Tasks {
    fn default() -> Self {
        Self {
            records: HashTable::new(),
            next_id: 0,
        }
    }
}

impl Tasks {
    #[inline]
    pub(crate) fn insert(&mut self, groups: EntryRefs) -> TaskRef {
        let id = self.next_id;
        self.next_id += 1;
        self.records.insert_unique(
            id_hash(id),
            TaskRecord {
                id,
                groups,
                abort: None,
                abort_requested: false,
            },
            |record| id_hash(record.id),
        );
        TaskRef(id)
    }

    /// Attaches the task's abort handle.
    #[inline]
    pub(crate) fn attach(&mut self, task: TaskRef, abort: AbortHandle) -> Attached {
        let Some(record) = self
            .records
            .find_mut(id_hash(task.0), |record| record.id == task.0)
        else {
            return Attached::Ended(abort);
        };
        if record.abort_requested {
            Attached::Abort(abort)
        } else {
            record.abort = Some(abort);
            Attached::Kept
        }
    }

    /// Removes a task's record and returns it (to be dropped after unlocking: it holds keys
    /// and an abort handle); `None` if it was removed already.
    #[inline]
    pub(crate) fn remove(&mut self, task: TaskRef) -> Option<TaskRecord> {
        let (record, _) = self
            .records
            .find_entry(id_hash(task.0), |record| record.id == task.0)
            .ok()?
            .remove();
        self.maybe_shrink();
        Some(record)
    }

    /// Gives memory back once the table is mostly empty: rehashes the live records into a
    /// table twice their number. Amortised O(1) per removal, like the group table.
    #[inline]
    fn maybe_shrink(&mut self) {
        let capacity = self.records.capacity();
        if capacity > MIN_RETAINED_CAPACITY && self.records.len() < capacity / 4 {
            self.shrink();
        }
    }

    #[cold]
    #[inline(never)]
    fn shrink(&mut self) {
        let target = (self.records.len() * 2).max(MIN_RETAINED_CAPACITY);
        self.records.shrink_to(target, |record| id_hash(record.id));
    }

    /// The number of records (for tests of memory bounds).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Signals every task in the group whose entry has `hash` and `serial` (every task if
    /// `None`): collects the handles to abort once the lock is released and marks tasks whose
    /// handle is not attached yet. Returns how many tasks were signalled. O(tasks in the pool ×
    /// groups they name). Compares serials, not keys: no user code runs.
    pub(crate) fn abort(
        &mut self,
        group: Option<(u64, u64)>,
        handles: &mut Vec<AbortHandle>,
    ) -> usize {
        let mut signalled = 0;
        for record in self.records.iter_mut() {
            if let Some((hash, serial)) = group
                && !record.groups.names(hash, serial)
            {
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

#[cfg(test)]
mod tests {
    //! The window between admission and `attach` cannot be reached through the public API
    //! deterministically (no user code runs in it), so it is tested here.

    use std::hash::RandomState;

    use super::*;
    use crate::group_set::GroupSet;

    fn groups(keys: &[&'static str], serial: u64) -> GroupSet<&'static str> {
        let mut set = GroupSet::new(keys.iter().copied(), &RandomState::new());
        for item in set.iter_mut() {
            item.serial = serial;
        }
        set
    }

    #[tokio::test]
    async fn an_abort_requested_before_attach_is_carried_out_on_attach() {
        let mut tasks = Tasks::default();
        let task = tasks.insert(groups(&["a"], 1).entries());
        let mut handles = Vec::new();
        assert_eq!(tasks.abort(None, &mut handles), 1, "the task is signalled");
        assert!(handles.is_empty(), "no handle to abort yet");

        let spawned = tokio::spawn(std::future::pending::<()>());
        let Attached::Abort(late) = tasks.attach(task, spawned.abort_handle()) else {
            panic!("attach hands the handle back to be aborted");
        };
        late.abort();
        assert!(spawned.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn abort_matches_entries_not_just_hashes() {
        let mut tasks = Tasks::default();
        // Two records whose groups collide on purpose: same hash, different entries.
        let mut a = groups(&["a"], 1);
        let mut b = groups(&["b"], 2);
        a.get_mut(0).hash = 42;
        b.get_mut(0).hash = 42;
        let _a = tasks.insert(a.entries());
        let _b = tasks.insert(b.entries());
        let mut handles = Vec::new();
        assert_eq!(tasks.abort(Some((42, 1)), &mut handles), 1);
    }

    #[tokio::test]
    async fn attach_after_the_task_ended_hands_the_handle_back() {
        let mut tasks = Tasks::default();
        let task = tasks.insert(groups(&["a"], 1).entries());
        assert!(tasks.remove(task).is_some());
        assert!(tasks.remove(task).is_none(), "a record is removed once");
        let spawned = tokio::spawn(async {});
        assert!(matches!(
            tasks.attach(task, spawned.abort_handle()),
            Attached::Ended(_)
        ));
        spawned.await.unwrap();
    }

    #[tokio::test]
    async fn records_shrink_after_a_burst() {
        let mut tasks = Tasks::default();
        let refs: Vec<TaskRef> = (0..10_000)
            .map(|_| tasks.insert(groups(&["a"], 1).entries()))
            .collect();
        let last = *refs.last().unwrap();
        for task in &refs[..refs.len() - 1] {
            assert!(tasks.remove(*task).is_some());
        }
        assert_eq!(tasks.len(), 1);
        assert!(tasks.records.capacity() <= 2 * super::super::records::MIN_RETAINED_CAPACITY);
        assert!(
            tasks.remove(last).is_some(),
            "the survivor is found after moving"
        );
    }
}
