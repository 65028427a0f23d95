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
//! Records live in [`Records`], a slab that compacts itself once mostly empty (invariant 4)
//! and forwards the holders of moved records: insert and removal are O(1) without hashing,
//! growing it adds a chunk and copies no record, and shrinking it moves a bounded number of
//! records per removal, where a hash table keyed by id rehashed every record at each growth
//! and shrink, under the lock.

use tokio::task::AbortHandle;

use super::records::{RecordRef, Records};
use crate::group_set::EntryRefs;

/// Identifies one task record.
pub(crate) type TaskRef = RecordRef;

pub(crate) struct TaskRecord {
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
#[derive(Default)]
pub(crate) struct Tasks {
    records: Records<TaskRecord>,
}

impl Tasks {
    #[inline]
    pub(crate) fn insert(&mut self, groups: EntryRefs) -> TaskRef {
        self.records.insert(TaskRecord {
            groups,
            abort: None,
            abort_requested: false,
        })
    }

    /// Attaches the task's abort handle.
    #[inline]
    pub(crate) fn attach(&mut self, task: TaskRef, abort: AbortHandle) -> Attached {
        let Some(index) = self.records.find(task) else {
            return Attached::Ended(abort);
        };
        let record = &mut self.records[index];
        if record.abort_requested {
            Attached::Abort(abort)
        } else {
            record.abort = Some(abort);
            Attached::Kept
        }
    }

    /// Removes a task's record and returns it (its abort handle is for the caller to drop);
    /// `None` if it was removed already. Gives memory back once the records are mostly empty
    /// (amortised O(1) per removal).
    #[inline]
    pub(crate) fn remove(&mut self, task: TaskRef) -> Option<TaskRecord> {
        let index = self.records.find(task)?;
        let record = self.records.remove(index);
        self.records.maybe_compact();
        record
    }

    /// The number of records (for tests of memory bounds).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.iter().count()
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
        for (_, record) in self.records.iter_mut() {
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
