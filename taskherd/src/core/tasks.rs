//! The registry of spawned tasks: their groups, and what `abort_group` and `abort_all` reach.
//!
//! A spawned task's groups live here, in a slab record created under the lock at admission,
//! rather than in the task: the task's future then carries only a 16-byte reference, which keeps
//! it small (it is moved several times on its way into tokio). The task's `AbortHandle` is
//! attached right after `tokio::spawn` returns; an abort requested in between is remembered and
//! carried out when the handle arrives, so no task escapes an `abort_all`.

use slab::Slab;
use tokio::task::AbortHandle;

use super::state::MIN_RETAINED_CAPACITY;
use crate::group_set::GroupSet;

/// Identifies one task record; the generation tells a reused slab slot from the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef {
    index: usize,
    generation: u64,
}

struct TaskRecord<K> {
    generation: u64,
    groups: GroupSet<K>,
    abort: Option<AbortHandle>,
    /// An abort was requested before the handle was attached.
    abort_requested: bool,
}

/// Spawned tasks that are still counted.
pub(crate) struct Tasks<K> {
    records: Slab<TaskRecord<K>>,
    next_generation: u64,
}

impl<K> Default for Tasks<K> {
    fn default() -> Self {
        Self {
            records: Slab::new(),
            next_generation: 0,
        }
    }
}

impl<K> Tasks<K> {
    pub(crate) fn insert(&mut self, groups: GroupSet<K>) -> TaskRef {
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

    /// Removes a task's record and returns its groups; `None` if it was removed already.
    pub(crate) fn remove(&mut self, task: TaskRef) -> Option<GroupSet<K>> {
        let live = self
            .records
            .get(task.index)
            .is_some_and(|r| r.generation == task.generation);
        if !live {
            return None;
        }
        let record = self.records.remove(task.index);
        if self.records.is_empty() && self.records.capacity() > MIN_RETAINED_CAPACITY {
            self.records = Slab::new();
        }
        Some(record.groups)
    }
}

impl<K: Eq> Tasks<K> {
    /// Signals every task in group `key` (every task if `None`): collects the handles to abort
    /// once the lock is released and marks tasks whose handle is not attached yet. Returns how
    /// many tasks were signalled. O(tasks in the pool × groups they name).
    pub(crate) fn abort(
        &mut self,
        key: Option<(u64, &K)>,
        handles: &mut Vec<AbortHandle>,
    ) -> usize {
        let mut signalled = 0;
        for (_, record) in self.records.iter_mut() {
            if let Some((hash, key)) = key {
                if !record.groups.iter().any(|(h, k)| *h == hash && k == key) {
                    continue;
                }
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

    use std::hash::{BuildHasher, RandomState};

    use super::*;

    fn groups(keys: &[&'static str]) -> GroupSet<&'static str> {
        GroupSet::new(keys.iter().copied(), &RandomState::new())
    }

    #[tokio::test]
    async fn an_abort_requested_before_attach_is_carried_out_on_attach() {
        let mut tasks = Tasks::default();
        let task = tasks.insert(groups(&["a"]));
        let mut handles = Vec::new();
        assert_eq!(tasks.abort(None, &mut handles), 1, "the task is signalled");
        assert!(handles.is_empty(), "no handle to abort yet");

        let spawned = tokio::spawn(std::future::pending::<()>());
        let late = tasks.attach(task, spawned.abort_handle());
        late.expect("attach hands the handle back to be aborted")
            .abort();
        assert!(spawned.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn abort_matches_keys_not_just_hashes() {
        let hasher = RandomState::new();
        let mut tasks = Tasks::default();
        // Two records whose groups collide on purpose: same hash, different keys.
        let mut a = groups(&["a"]);
        let mut b = groups(&["b"]);
        let collision = hasher.hash_one("a");
        a.set_hash_for_test(0, collision);
        b.set_hash_for_test(0, collision);
        let _a = tasks.insert(a);
        let _b = tasks.insert(b);
        let mut handles = Vec::new();
        assert_eq!(tasks.abort(Some((collision, &"a")), &mut handles), 1);
    }

    #[tokio::test]
    async fn attach_after_the_task_ended_is_ignored() {
        let mut tasks = Tasks::default();
        let task = tasks.insert(groups(&["a"]));
        assert!(tasks.remove(task).is_some());
        assert!(tasks.remove(task).is_none(), "a record is removed once");
        let spawned = tokio::spawn(async {});
        assert!(tasks.attach(task, spawned.abort_handle()).is_none());
        spawned.await.unwrap();
    }
}
