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
use crate::group_set::{EntryRefs, GroupSet};

/// Identifies one task record. The parity of its id tells which table holds it: odd for a
/// task in no group.
pub(crate) type TaskRef = RecordRef;

/// What `abort_group` and `abort_all` need of a task: its abort handle once attached.
#[derive(Default)]
struct Abort {
    handle: Option<AbortHandle>,
    /// An abort was requested before the handle was attached.
    requested: bool,
}

impl Abort {
    #[inline]
    fn attach(&mut self, handle: AbortHandle) -> Attached {
        if self.requested {
            Attached::Abort(handle)
        } else {
            self.handle = Some(handle);
            Attached::Kept
        }
    }

    fn signal(&mut self, handles: &mut Vec<AbortHandle>) {
        match &self.handle {
            Some(handle) => handles.push(handle.clone()),
            None => self.requested = true,
        }
    }
}

/// The record of a task in at least one group.
pub(crate) struct TaskRecord {
    pub(crate) groups: EntryRefs,
    abort: Abort,
}

impl TaskRecord {
    /// The part of a removed record that may run code when dropped.
    pub(crate) fn into_abort(self) -> Option<AbortHandle> {
        self.abort.handle
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
///
/// A task in no group keeps only its abort handle, in a table of its own: 32 bytes a slot
/// instead of 112 (a burst of 200,000 such tasks kept 22.4 MB of records, now 6.4 MB), and
/// fewer bytes copied at its insertion and removal. `abort_group` never looks at them.
pub(crate) struct Tasks {
    grouped: Records<TaskRecord>,
    ungrouped: Records<Abort>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self {
            grouped: Records::default(),
            ungrouped: Records::odd(),
        }
    }
}

impl Tasks {
    /// Whether `task` names no group (its record holds no entry).
    #[inline]
    pub(crate) fn names_no_group(task: TaskRef) -> bool {
        task.id() & 1 == 1
    }

    /// Records a task admitted in `groups` (the entries' serials set).
    #[inline(always)]
    pub(crate) fn insert<K>(&mut self, groups: &GroupSet<K>) -> TaskRef {
        if groups.len() == 0 {
            self.ungrouped.insert(Abort::default())
        } else {
            self.grouped.insert(TaskRecord {
                groups: groups.entries(),
                abort: Abort::default(),
            })
        }
    }

    /// Attaches the task's abort handle.
    #[inline(always)]
    pub(crate) fn attach(&mut self, task: TaskRef, handle: AbortHandle) -> Attached {
        let abort = if Self::names_no_group(task) {
            match self.ungrouped.find(task) {
                Some(index) => &mut self.ungrouped[index],
                None => return Attached::Ended(handle),
            }
        } else {
            match self.grouped.find(task) {
                Some(index) => &mut self.grouped[index].abort,
                None => return Attached::Ended(handle),
            }
        };
        abort.attach(handle)
    }

    /// Removes the record of a task in at least one group and returns it (its abort handle is
    /// for the caller to drop); `None` if it was removed already, or names no group (see
    /// [`remove_ungrouped`](Self::remove_ungrouped)). Gives memory back once the records are
    /// mostly empty (amortised O(1) per removal).
    #[inline]
    pub(crate) fn remove(&mut self, task: TaskRef) -> Option<TaskRecord> {
        // An odd id is never found here (records' ids are even).
        let index = self.grouped.find(task)?;
        let record = self.grouped.remove(index);
        self.grouped.maybe_compact();
        record
    }

    /// Removes the record of a task in no group and returns its abort handle, if attached (for
    /// the caller to drop); `None` if it was removed already, or names a group.
    #[inline]
    pub(crate) fn remove_ungrouped(&mut self, task: TaskRef) -> Option<Option<AbortHandle>> {
        // An even id is never found here (records' ids are odd).
        let index = self.ungrouped.find(task)?;
        let abort = self.ungrouped.remove(index);
        self.ungrouped.maybe_compact();
        abort.map(|abort| abort.handle)
    }

    /// The number of records (for tests of memory bounds).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.grouped.iter().count() + self.ungrouped.iter().count()
    }

    /// Signals every task in the group whose entry has `hash` and `serial` (every task if
    /// `None`): collects the handles to abort once the lock is released and marks tasks whose
    /// handle is not attached yet. Returns how many tasks were signalled. O(tasks in the pool ×
    /// groups they name); tasks in no group only for `None`. Compares serials, not keys: no
    /// user code runs.
    pub(crate) fn abort(
        &mut self,
        group: Option<(u64, u64)>,
        handles: &mut Vec<AbortHandle>,
    ) -> usize {
        let mut signalled = 0;
        for (_, record) in self.grouped.iter_mut() {
            if let Some((hash, serial)) = group
                && !record.groups.names(hash, serial)
            {
                continue;
            }
            signalled += 1;
            record.abort.signal(handles);
        }
        if group.is_none() {
            for (_, abort) in self.ungrouped.iter_mut() {
                signalled += 1;
                abort.signal(handles);
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
        let task = tasks.insert(&groups(&["a"], 1));
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
        let _a = tasks.insert(&a);
        let _b = tasks.insert(&b);
        let mut handles = Vec::new();
        assert_eq!(tasks.abort(Some((42, 1)), &mut handles), 1);
    }

    #[tokio::test]
    async fn attach_after_the_task_ended_hands_the_handle_back() {
        let mut tasks = Tasks::default();
        let task = tasks.insert(&groups(&["a"], 1));
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
            .map(|_| tasks.insert(&groups(&["a"], 1)))
            .collect();
        let last = *refs.last().unwrap();
        for task in &refs[..refs.len() - 1] {
            assert!(tasks.remove(*task).is_some());
        }
        assert_eq!(tasks.len(), 1);
        assert!(tasks.grouped.capacity() <= 2 * super::super::records::MIN_RETAINED_CAPACITY);
        assert!(
            tasks.remove(last).is_some(),
            "the survivor is found after moving"
        );
    }

    /// A task in no group keeps only its abort handle: a small record in a table of its own,
    /// which `abort_group` never looks at and `abort_all` does.
    #[tokio::test]
    async fn a_task_in_no_group_has_a_small_record_that_abort_all_reaches() {
        assert!(
            std::mem::size_of::<Abort>() <= 16,
            "{} bytes",
            std::mem::size_of::<Abort>()
        );
        let mut tasks = Tasks::default();
        let a = groups(&["a"], 1);
        let grouped = tasks.insert(&a);
        let bare = tasks.insert(&GroupSet::<&str>::default());
        assert!(Tasks::names_no_group(bare) && !Tasks::names_no_group(grouped));
        assert_eq!(
            (tasks.grouped.iter().count(), tasks.ungrouped.iter().count()),
            (1, 1)
        );

        // Aborted before its handle is attached: carried out on attach.
        let mut handles = Vec::new();
        let group = a.get(0).entry();
        assert_eq!(
            tasks.abort(Some((group.hash, group.serial)), &mut handles),
            1
        );
        assert_eq!(tasks.abort(None, &mut handles), 2, "abort_all reaches both");
        let spawned = tokio::spawn(std::future::pending::<()>());
        let Attached::Abort(late) = tasks.attach(bare, spawned.abort_handle()) else {
            panic!("attach hands the handle back to be aborted");
        };
        late.abort();
        assert!(spawned.await.unwrap_err().is_cancelled());

        // Attached, then reached by abort_all only.
        let bare = tasks.insert(&GroupSet::<&str>::default());
        let spawned = tokio::spawn(std::future::pending::<()>());
        assert!(matches!(
            tasks.attach(bare, spawned.abort_handle()),
            Attached::Kept
        ));
        let mut handles = Vec::new();
        assert_eq!(
            tasks.abort(Some((group.hash, group.serial)), &mut handles),
            1
        );
        assert!(handles.is_empty(), "the grouped task has no handle yet");
        assert_eq!(tasks.abort(None, &mut handles), 3);
        assert_eq!(handles.len(), 1);
        handles.pop().unwrap().abort();
        assert!(spawned.await.unwrap_err().is_cancelled());

        // Each removal finds its own table, once.
        assert!(tasks.remove(bare).is_none(), "not a grouped record");
        assert!(
            tasks.remove_ungrouped(bare).unwrap().is_some(),
            "its handle"
        );
        assert!(tasks.remove_ungrouped(bare).is_none());
        assert!(
            tasks.remove_ungrouped(grouped).is_none(),
            "not an ungrouped record"
        );
        assert!(tasks.remove(grouped).is_some());
        assert_eq!(tasks.len(), 1);
    }

    #[tokio::test]
    async fn records_of_tasks_in_no_group_shrink_after_a_burst() {
        let mut tasks = Tasks::default();
        let none = GroupSet::<&str>::default();
        let refs: Vec<TaskRef> = (0..10_000).map(|_| tasks.insert(&none)).collect();
        let last = *refs.last().unwrap();
        for task in &refs[..refs.len() - 1] {
            assert!(matches!(tasks.remove_ungrouped(*task), Some(None)));
        }
        assert_eq!(tasks.len(), 1);
        assert!(tasks.ungrouped.capacity() <= 2 * super::super::records::MIN_RETAINED_CAPACITY);
        assert!(
            matches!(tasks.remove_ungrouped(last), Some(None)),
            "found after moving"
        );
    }
}
