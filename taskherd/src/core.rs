//! The admission core: counts, limits and the all-or-nothing admission decision.
//!
//! Everything here is synchronous and never awaits. [`Core`] owns one short critical section
//! (a `parking_lot` mutex around [`State`]) in which an admission checks every group it names and,
//! only if all have room, counts itself in all of them. Release happens from [`Admission`]'s
//! `Drop`, which is owned by the spawned task's future, so it runs exactly once on every exit:
//! completion, panic, abort, or the runtime dropping the task.
//!
//! # Invariants
//!
//! 1. For the total group and every named group `g`, the count equals the number of live
//!    [`Admission`]s naming `g` (every live admission names the total).
//! 2. An admission is made only if, for every group `g` it names and for the total,
//!    `running(g) < limit(g)`, where a named group's limit is its explicit limit, else the
//!    pool's default limit, and no limit means no bound. Lowering a limit below the running
//!    count cancels nothing; new admissions are refused until the count is below it.
//! 3. A refused admission changes no count and leaves no entry behind (the check phase only
//!    reads; the commit phase runs only after every check passed, under the same lock).
//! 4. An entry exists in the group table only while it has running admissions or an explicit
//!    limit, so memory is bounded by live state, not by the number of keys ever seen; the table's
//!    capacity is shrunk when it becomes mostly empty.
//! 5. Release runs once per admission, from `Drop`, and never panics: a count that would go
//!    below zero is a bug caught by `debug_assert!` and saturates in release builds.
//! 6. Cost per admission and per release is O(number of groups named): each key is hashed once,
//!    outside the lock, and looked up once under it.
//!
//! # Lock order
//!
//! There is one lock. No user code runs under it except `K`'s `Eq` (to find keys) and `K`'s
//! `Drop` (when an idle entry is reclaimed). Tracing events are emitted after it is released.
//! If `K`'s `Hash` or `Eq` panics or is inconsistent, counts may become wrong, as with
//! `std::collections::HashMap`, but there is no undefined behaviour and no deadlock
//! (`parking_lot` mutexes do not poison).

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::error::{Group, Refusal};
use crate::group_set::GroupSet;

/// Formats a key for tracing events; set by [`Builder::log_keys`](crate::Builder::log_keys).
pub(crate) type KeyFmt<K> = fn(&K, &mut fmt::Formatter<'_>) -> fmt::Result;

/// Tables at most this large are never shrunk (shrinking tiny tables only churns memory).
const MIN_RETAINED_CAPACITY: usize = 64;

/// The shared engine behind every clone of a [`TaskPool`](crate::TaskPool).
pub(crate) struct Core<K, S> {
    hasher: S,
    key_fmt: Option<KeyFmt<K>>,
    state: Mutex<State<K>>,
}

/// Everything guarded by the pool's lock.
struct State<K> {
    /// Named groups that have running admissions or an explicit limit (invariant 4).
    groups: HashTable<Entry<K>>,
    /// The count of the total group: every live admission.
    running: usize,
    /// The total group's limit.
    max_tasks: Option<usize>,
    /// The limit of every named group without an explicit one.
    default_limit: Option<usize>,
}

/// One named group.
struct Entry<K> {
    /// `hash_one(&key)` with the pool's hasher, kept so the table can rehash without user code.
    hash: u64,
    key: K,
    running: usize,
    limit: Option<usize>,
}

impl<K> Entry<K> {
    /// An idle entry carries no information and must not be kept (invariant 4).
    fn is_idle(&self) -> bool {
        self.running == 0 && self.limit.is_none()
    }
}

/// Initial configuration, from the builder.
pub(crate) struct Config<K, S> {
    pub(crate) hasher: S,
    pub(crate) key_fmt: Option<KeyFmt<K>>,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) default_limit: Option<usize>,
    pub(crate) limits: Vec<(K, usize)>,
}

/// Proof of one admission: counted in the total and in every group of `groups` until dropped.
pub(crate) struct Admission<K: Eq, S> {
    core: Arc<Core<K, S>>,
    groups: GroupSet<K>,
}

impl<K: Eq, S> Drop for Admission<K, S> {
    fn drop(&mut self) {
        self.core.release(&self.groups);
    }
}

impl<K: Eq + Hash + Clone, S: BuildHasher> Core<K, S> {
    pub(crate) fn new(config: Config<K, S>) -> Self {
        let mut state = State {
            groups: HashTable::new(),
            running: 0,
            max_tasks: config.max_tasks,
            default_limit: config.default_limit,
        };
        for (key, limit) in config.limits {
            let hash = config.hasher.hash_one(&key);
            state.set_limit(hash, key, Some(limit));
        }
        Self {
            hasher: config.hasher,
            key_fmt: config.key_fmt,
            state: Mutex::new(state),
        }
    }

    /// Hashes and deduplicates the groups of one admission, outside the lock.
    pub(crate) fn group_set(&self, groups: impl IntoIterator<Item = K>) -> GroupSet<K> {
        GroupSet::new(groups, &self.hasher)
    }

    /// Admits `groups` if the total and every group have room, all or nothing.
    pub(crate) fn try_admit(
        self: &Arc<Self>,
        groups: GroupSet<K>,
    ) -> Result<Admission<K, S>, Refusal<K>> {
        let refused_at = self.state.lock().try_admit(&groups);
        match refused_at {
            None => Ok(Admission {
                core: Arc::clone(self),
                groups,
            }),
            Some(position) => {
                let group = self.refused_group(groups, position);
                Err(Refusal::Full(group))
            }
        }
    }

    /// Turns the position [`State::try_admit`] refused at into the group to report, and logs it.
    #[cold]
    fn refused_group(&self, groups: GroupSet<K>, position: Position) -> Group<K> {
        let group = match position {
            Position::Total => Group::Total,
            Position::Key(i) => match groups.into_key(i) {
                Some(key) => Group::Key(key),
                None => {
                    debug_assert!(false, "refused at a position the group set does not have");
                    Group::Total
                }
            },
        };
        tracing::debug!(
            group = ?self.label(group.key()),
            position = ?position,
            "task refused: group full"
        );
        group
    }

    pub(crate) fn set_limit(&self, key: K, limit: Option<usize>) {
        let hash = self.hasher.hash_one(&key);
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| key.clone());
        let running = self.state.lock().set_limit(hash, key, limit);
        if let Some(key) = logged {
            tracing::debug!(group = ?self.label(Some(&key)), ?limit, running, "group limit changed");
        }
    }

    pub(crate) fn limit(&self, key: &K) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.state.lock().find(hash, key).and_then(|e| e.limit)
    }

    pub(crate) fn effective_limit(&self, key: &K) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        let state = self.state.lock();
        state
            .find(hash, key)
            .and_then(|e| e.limit)
            .or(state.default_limit)
    }

    pub(crate) fn task_count(&self, key: &K) -> usize {
        let hash = self.hasher.hash_one(key);
        self.state.lock().find(hash, key).map_or(0, |e| e.running)
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().running
    }

    pub(crate) fn set_max_tasks(&self, max_tasks: Option<usize>) {
        let running = {
            let mut state = self.state.lock();
            state.max_tasks = max_tasks;
            state.running
        };
        tracing::debug!(group = "total", limit = ?max_tasks, running, "group limit changed");
    }

    pub(crate) fn max_tasks(&self) -> Option<usize> {
        self.state.lock().max_tasks
    }

    pub(crate) fn set_default_limit(&self, default_limit: Option<usize>) {
        self.state.lock().default_limit = default_limit;
        tracing::debug!(limit = ?default_limit, "default group limit changed");
    }

    pub(crate) fn default_limit(&self) -> Option<usize> {
        self.state.lock().default_limit
    }

    /// A consistent snapshot for `Debug`: (running, max_tasks, default_limit, live groups).
    pub(crate) fn summary(&self) -> (usize, Option<usize>, Option<usize>, usize) {
        let state = self.state.lock();
        (
            state.running,
            state.max_tasks,
            state.default_limit,
            state.groups.len(),
        )
    }

    fn label<'a>(&self, key: Option<&'a K>) -> Label<'a, K> {
        Label {
            key,
            key_fmt: self.key_fmt,
        }
    }
}

impl<K: Eq, S> Core<K, S> {
    /// Gives back one admission's counts; called exactly once, from [`Admission::drop`].
    fn release(&self, groups: &GroupSet<K>) {
        self.state.lock().release(groups);
    }
}

/// Where an admission was refused: the total, or the i-th of the caller's distinct groups.
#[derive(Debug, Clone, Copy)]
enum Position {
    Total,
    Key(usize),
}

impl<K: Eq + Clone> State<K> {
    /// The check phase and, if it passes, the commit phase of one admission (invariants 2, 3).
    /// Returns where it was refused, or `None` if admitted.
    fn try_admit(&mut self, groups: &GroupSet<K>) -> Option<Position> {
        if self.max_tasks.is_some_and(|max| self.running >= max) {
            return Some(Position::Total);
        }
        // Check phase: read only. Bucket indices stay valid until the table changes shape.
        let mut buckets: SmallVec<[Option<usize>; 4]> = SmallVec::with_capacity(groups.len());
        for (i, (hash, key)) in groups.iter().enumerate() {
            let bucket = self.groups.find_bucket_index(*hash, |e| e.key == *key);
            let (running, explicit) = bucket
                .and_then(|b| self.groups.get_bucket(b))
                .map_or((0, None), |e| (e.running, e.limit));
            if explicit
                .or(self.default_limit)
                .is_some_and(|limit| running >= limit)
            {
                return Some(Position::Key(i));
            }
            buckets.push(bucket);
        }
        // Commit phase: existing entries first (their bucket indices are still valid), then
        // insert the new ones (which may grow the table and move buckets).
        self.running += 1;
        for &bucket in buckets.iter().flatten() {
            match self.groups.get_bucket_mut(bucket) {
                Some(entry) => entry.running += 1,
                None => debug_assert!(false, "a bucket found in the check phase vanished"),
            }
        }
        for ((hash, key), bucket) in groups.iter().zip(&buckets) {
            if bucket.is_none() {
                let entry = Entry {
                    hash: *hash,
                    key: key.clone(),
                    running: 1,
                    limit: None,
                };
                self.groups.insert_unique(*hash, entry, |e| e.hash);
            }
        }
        None
    }
}

impl<K: Eq> State<K> {
    fn find(&self, hash: u64, key: &K) -> Option<&Entry<K>> {
        self.groups.find(hash, |e| e.key == *key)
    }

    fn release(&mut self, groups: &GroupSet<K>) {
        debug_assert!(self.running > 0, "released more admissions than were made");
        self.running = self.running.saturating_sub(1);
        let mut reclaimed = false;
        for (hash, key) in groups.iter() {
            match self.groups.find_entry(*hash, |e| e.key == *key) {
                Ok(mut occupied) => {
                    let entry = occupied.get_mut();
                    debug_assert!(
                        entry.running > 0,
                        "released a group more often than admitted"
                    );
                    entry.running = entry.running.saturating_sub(1);
                    if entry.is_idle() {
                        occupied.remove();
                        reclaimed = true;
                    }
                }
                Err(_) => debug_assert!(false, "released a group that has no entry"),
            }
        }
        if reclaimed {
            self.maybe_shrink();
        }
    }

    /// Sets or clears an explicit limit; returns the group's running count.
    fn set_limit(&mut self, hash: u64, key: K, limit: Option<usize>) -> usize {
        match self.groups.entry(hash, |e| e.key == key, |e| e.hash) {
            TableEntry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                entry.limit = limit;
                let running = entry.running;
                if entry.is_idle() {
                    occupied.remove();
                    self.maybe_shrink();
                }
                running
            }
            TableEntry::Vacant(vacant) => {
                if limit.is_some() {
                    vacant.insert(Entry {
                        hash,
                        key,
                        running: 0,
                        limit,
                    });
                }
                0
            }
        }
    }

    /// Gives memory back once the table is mostly empty. Amortised O(1) per removal: after a
    /// shrink to twice the live entries, a quarter of the new capacity must be removed again
    /// before the next one.
    fn maybe_shrink(&mut self) {
        let capacity = self.groups.capacity();
        if capacity > MIN_RETAINED_CAPACITY && self.groups.len() < capacity / 4 {
            let target = (self.groups.len() * 2).max(MIN_RETAINED_CAPACITY);
            self.groups.shrink_to(target, |e| e.hash);
        }
    }
}

/// Shows a group in tracing events: its key if the pool can format keys, else a placeholder.
struct Label<'a, K> {
    key: Option<&'a K>,
    key_fmt: Option<KeyFmt<K>>,
}

impl<K> fmt::Debug for Label<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key, self.key_fmt) {
            (None, _) => f.write_str("total"),
            (Some(key), Some(key_fmt)) => key_fmt(key, f),
            (Some(_), None) => f.write_str("<key: build the pool with Builder::log_keys>"),
        }
    }
}
