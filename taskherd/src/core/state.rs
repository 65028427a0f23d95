//! Everything the pool's lock guards, and every transition of it.
//!
//! Nothing here locks, awaits or wakes: transitions collect the wakers of the waiters they
//! granted into a [`Wakers`] list that [`Core`](super::Core) wakes after unlocking.

use std::task::Waker;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;
use slab::Slab;
use smallvec::SmallVec;

use super::tasks::{TaskRef, Tasks};
use super::waiters::{LinkRef, Phase, Queue, Waiter};
use crate::group_set::GroupSet;
use crate::stats::GroupStats;

/// Wakers to wake once the lock is released.
pub(crate) type Wakers = SmallVec<[Waker; 4]>;

/// Waiters that received their last missing slot during one transition.
type Granted = SmallVec<[usize; 4]>;

/// Tables at most this large are never shrunk (shrinking tiny tables only churns memory).
pub(crate) const MIN_RETAINED_CAPACITY: usize = 64;

/// The counts of one group (or of the total).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Live admissions (tasks, permits, granted waiters) naming this group.
    pub(crate) running: usize,
    /// Slots held for waiters that still miss a slot in another group.
    pub(crate) reserved: usize,
    /// Waiters still missing a slot in this group, oldest first.
    pub(crate) queue: Queue,
    /// Admissions ever made in this group (tasks, permits, granted waiters).
    pub(crate) admitted: u64,
    /// Refusals of `try_*` calls because this group was full (for the total: every refused
    /// `try_*` call and every waiter failed by `close`).
    pub(crate) rejected: u64,
    /// The highest `running` ever seen.
    pub(crate) peak: usize,
}

impl Counts {
    /// Counts one new admission.
    fn admit_one(&mut self) {
        self.running += 1;
        self.admitted += 1;
        self.peak = self.peak.max(self.running);
    }

    /// A snapshot for [`GroupStats`], taken under the lock so it is never torn.
    fn stats(&self, limit: Option<usize>) -> GroupStats {
        GroupStats {
            running: self.running,
            waiting: self.queue.len() + self.reserved,
            limit,
            admitted: self.admitted,
            rejected: self.rejected,
            peak: self.peak,
        }
    }

    /// Whether one more slot may be taken under `limit` (`None` = unbounded).
    fn has_room(&self, limit: Option<usize>) -> bool {
        limit.is_none_or(|limit| self.running + self.reserved < limit)
    }

    /// Hands free slots to the oldest queued waiters until the group is full or nobody waits
    /// (invariant 5). Each step is O(1). Waiters that now hold every slot, or every slot but
    /// the total's (they are now ready to queue for the total), go to `granted`; see
    /// [`State::grant_all`].
    fn pump<K>(
        &mut self,
        limit: Option<usize>,
        waiters: &mut Slab<Waiter<K>>,
        granted: &mut Granted,
    ) {
        while !self.queue.is_empty() && self.has_room(limit) {
            let Some(at) = self.queue.pop_front(waiters) else {
                break;
            };
            self.reserved += 1;
            let waiter = &mut waiters[at.waiter];
            waiter.links[at.slot].reserved = true;
            waiter.missing -= 1;
            let total = waiter.links[0];
            if waiter.missing == 0 || (waiter.missing == 1 && !total.reserved && !total.queued) {
                granted.push(at.waiter);
            }
        }
    }
}

/// One named group.
pub(crate) struct Entry<K> {
    /// `hash_one(&key)` with the pool's hasher, kept so the table can rehash without user code.
    pub(crate) hash: u64,
    pub(crate) key: K,
    pub(crate) counts: Counts,
    pub(crate) limit: Option<usize>,
}

impl<K> Entry<K> {
    fn new(hash: u64, key: K, limit: Option<usize>) -> Self {
        Self {
            hash,
            key,
            counts: Counts::default(),
            limit,
        }
    }

    /// An idle entry carries no information and must not be kept (invariant 4).
    fn is_idle(&self) -> bool {
        self.counts.running == 0
            && self.counts.reserved == 0
            && self.counts.queue.is_empty()
            && self.limit.is_none()
    }
}

/// Where an admission was refused: the total, or the i-th of the caller's distinct groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// The pool is closed.
    Closed,
    Total,
    Key(usize),
}

/// An admission handed to a waiting future: its groups (a permit), or the record of the task
/// it is about to spawn (made at grant time).
pub(crate) enum Held<K> {
    Groups(GroupSet<K>),
    Task(TaskRef),
}

/// The outcome of [`State::enqueue`].
pub(crate) enum Enqueued<K> {
    /// Queued under this id.
    Waiting(usize),
    /// Admitted at once; the counts are taken.
    Admitted(Held<K>),
}

/// What a waiting admission found when it was polled.
pub(crate) enum Poll<K> {
    /// Admitted; the counts are already taken.
    Ready(Held<K>),
    /// Still waiting.
    Pending,
    /// The pool closed while it waited; it holds nothing.
    Closed,
}

pub(crate) struct State<K> {
    /// Named groups that have running admissions, reservations, waiters or an explicit limit
    /// (invariant 4).
    pub(crate) groups: HashTable<Entry<K>>,
    /// The total group: every admission counts here.
    pub(crate) total: Counts,
    /// The total group's limit.
    pub(crate) max_tasks: Option<usize>,
    /// The limit of every named group without an explicit one.
    pub(crate) default_limit: Option<usize>,
    /// Every waiting admission, and granted ones their future has not collected yet.
    pub(crate) waiters: Slab<Waiter<K>>,
    /// Refuses new admissions; set by `close`.
    pub(crate) closed: bool,
    /// Waiters not granted yet (queued or holding reservations anywhere).
    pub(crate) waiting: usize,
    /// The next waiter's arrival ticket.
    next_ticket: u64,
    /// Spawned tasks with their groups, for release and for `abort_group` and `abort_all`.
    tasks: Tasks<K>,
    /// `wait` futures: their wakers, and whether the pool was closed and empty since they
    /// registered.
    idle_waiters: Slab<IdleWaiter>,
}

/// A `wait` future's registration.
struct IdleWaiter {
    /// Set once polled.
    waker: Option<Waker>,
    fired: bool,
}

impl<K: Eq> State<K> {
    pub(crate) fn new(max_tasks: Option<usize>, default_limit: Option<usize>) -> Self {
        Self {
            groups: HashTable::new(),
            total: Counts::default(),
            max_tasks,
            default_limit,
            waiters: Slab::new(),
            closed: false,
            waiting: 0,
            next_ticket: 0,
            tasks: Tasks::default(),
            idle_waiters: Slab::new(),
        }
    }

    pub(crate) fn find(&self, hash: u64, key: &K) -> Option<&Entry<K>> {
        self.groups.find(hash, |e| e.key == *key)
    }

    /// Takes one slot in every group of one admission, or in none (invariants 2, 3, 5).
    ///
    /// Refuses in a group that has no room, which includes every group with queued waiters
    /// (those never have room, invariant 5), so a `try_*` never takes a slot a waiter is owed.
    /// Returns where it was refused. Statistics of refusals are the caller's to record
    /// ([`record_rejection`](Self::record_rejection)): a waiting admission's first try is not a
    /// refusal.
    pub(crate) fn try_admit(&mut self, groups: &GroupSet<K>) -> Result<(), Position>
    where
        K: Clone,
    {
        if self.closed {
            return Err(Position::Closed);
        }
        if !self.total.has_room(self.max_tasks) {
            return Err(Position::Total);
        }
        // Check phase: read only. Bucket indices stay valid until the table changes shape.
        let mut buckets: SmallVec<[Option<usize>; 4]> = SmallVec::with_capacity(groups.len());
        let mut missing = false;
        for (i, (hash, key)) in groups.iter().enumerate() {
            let bucket = self.groups.find_bucket_index(*hash, |e| e.key == *key);
            let has_room = match bucket.and_then(|b| self.groups.get_bucket(b)) {
                Some(entry) => entry.counts.has_room(entry.limit.or(self.default_limit)),
                None => Counts::default().has_room(self.default_limit),
            };
            if !has_room {
                return Err(Position::Key(i));
            }
            missing |= bucket.is_none();
            buckets.push(bucket);
        }
        // The keys of new entries are cloned before anything changes, so a panicking `Clone`
        // leaves the state untouched.
        let new_keys: SmallVec<[(u64, K); 4]> = if missing {
            groups
                .iter()
                .zip(&buckets)
                .filter(|(_, bucket)| bucket.is_none())
                .map(|((hash, key), _)| (*hash, key.clone()))
                .collect()
        } else {
            SmallVec::new()
        };
        // Commit phase: existing entries first (their bucket indices are still valid), then
        // insert the new ones (which may grow the table and move buckets).
        self.total.admit_one();
        for &bucket in buckets.iter().flatten() {
            match self.groups.get_bucket_mut(bucket) {
                Some(entry) => entry.counts.admit_one(),
                None => debug_assert!(false, "a bucket found in the check phase vanished"),
            }
        }
        if !missing {
            return Ok(());
        }
        for (hash, key) in new_keys {
            let mut entry = Entry::new(hash, key, None);
            entry.counts.admit_one();
            self.groups.insert_unique(hash, entry, |e| e.hash);
        }
        Ok(())
    }

    /// [`try_admit`](Self::try_admit) for a task to be spawned: on success its groups move into
    /// a task record under the same lock; on refusal they come back.
    pub(crate) fn try_admit_task(
        &mut self,
        groups: GroupSet<K>,
    ) -> Result<TaskRef, (GroupSet<K>, Position)>
    where
        K: Clone,
    {
        match self.try_admit(&groups) {
            Ok(()) => Ok(self.tasks.insert(groups)),
            Err(position) => Err((groups, position)),
        }
    }

    /// Counts a refused `try_*` call in the total and in the group that refused it. A group
    /// without an entry (idle, no explicit limit) keeps no statistics (invariant 4).
    pub(crate) fn record_rejection(&mut self, groups: &GroupSet<K>, position: Position) {
        self.total.rejected += 1;
        if let Position::Key(i) = position {
            let (hash, key) = groups.get(i);
            if let Some(entry) = self.groups.find_mut(hash, |e| e.key == *key) {
                entry.counts.rejected += 1;
            }
        }
    }

    /// Turns an admission into a task record (an admission granted after waiting, about to be
    /// spawned).
    pub(crate) fn track(&mut self, groups: GroupSet<K>) -> TaskRef {
        self.tasks.insert(groups)
    }

    /// Turns a task record back into a permit's groups (the counts stay taken).
    pub(crate) fn untrack(&mut self, task: TaskRef) -> GroupSet<K> {
        match self.tasks.remove(task) {
            Some(groups) => groups,
            None => {
                debug_assert!(
                    false,
                    "a task record vanished before its admission was collected"
                );
                GroupSet::default()
            }
        }
    }

    /// Attaches a spawned task's abort handle; see [`Tasks::attach`].
    pub(crate) fn attach(
        &mut self,
        task: TaskRef,
        abort: tokio::task::AbortHandle,
    ) -> Option<tokio::task::AbortHandle> {
        self.tasks.attach(task, abort)
    }

    /// Signals the tasks of group `key` (all tasks if `None`); see [`Tasks::abort`].
    pub(crate) fn abort(
        &mut self,
        key: Option<(u64, &K)>,
        handles: &mut Vec<tokio::task::AbortHandle>,
    ) -> usize {
        self.tasks.abort(key, handles)
    }

    /// Queues a waiting admission in every named group, taking at once the slots of groups that
    /// have room and nobody queued, then in the total once it holds all of them (invariant 5).
    ///
    /// Returns the waiter's id, or the admission itself if every slot was free.
    pub(crate) fn enqueue(&mut self, groups: GroupSet<K>, waker: Waker, track: bool) -> Enqueued<K>
    where
        K: Clone,
    {
        // Entries for groups seen for the first time are made before the waiter joins any
        // queue, so a panicking `Clone` leaves the state untouched.
        let new_keys: SmallVec<[(u64, K); 4]> = groups
            .iter()
            .filter(|(hash, key)| self.find(*hash, key).is_none())
            .map(|(hash, key)| (*hash, key.clone()))
            .collect();
        for (hash, key) in new_keys {
            self.groups
                .insert_unique(hash, Entry::new(hash, key, None), |e| e.hash);
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let id = self
            .waiters
            .insert(Waiter::new(groups, waker, track, ticket));
        let (max_tasks, default_limit) = (self.max_tasks, self.default_limit);
        // Named groups first; the total only once they are all held (the total is the last
        // gate, so a waiter never holds total capacity while it is blocked elsewhere).
        for i in 0..self.waiters[id].groups.len() {
            let (hash, key) = self.waiters[id].groups.get(i);
            let Some(entry) = self.groups.find_mut(hash, |e| e.key == *key) else {
                debug_assert!(false, "the entry made above vanished");
                continue;
            };
            let limit = entry.limit.or(default_limit);
            let at = LinkRef {
                waiter: id,
                slot: i + 1,
            };
            Self::join(&mut entry.counts, limit, &mut self.waiters, at);
        }
        if self.waiters[id].missing == 1 {
            let at = LinkRef {
                waiter: id,
                slot: 0,
            };
            Self::join(&mut self.total, max_tasks, &mut self.waiters, at);
        }
        self.waiting += 1;
        if self.waiters[id].missing > 0 {
            return Enqueued::Waiting(id);
        }
        // Every group had room and nobody queued: the caller's own `try_admit` would have
        // admitted it too. Its own waker is the only one `grant` collects: no wake-up needed.
        let mut own_waker = Wakers::new();
        self.grant(id, &mut own_waker);
        Enqueued::Admitted(self.take_granted(id))
    }

    /// Takes a slot of `counts` for the waiter at `at` if one is free and nobody is queued,
    /// else queues it.
    fn join(counts: &mut Counts, limit: Option<usize>, waiters: &mut Slab<Waiter<K>>, at: LinkRef) {
        if counts.queue.is_empty() && counts.has_room(limit) {
            counts.reserved += 1;
            let waiter = &mut waiters[at.waiter];
            waiter.links[at.slot].reserved = true;
            waiter.missing -= 1;
        } else {
            counts.queue.push_back(waiters, at);
        }
    }

    /// Turns a waiter's reservations into running admissions and schedules its wake-up.
    /// O(groups it names).
    fn grant(&mut self, id: usize, wakers: &mut Wakers) {
        debug_assert!(self.waiting > 0, "granted more waiters than were waiting");
        self.waiting = self.waiting.saturating_sub(1);
        let waiter = &mut self.waiters[id];
        debug_assert_eq!(waiter.missing, 0, "granted a waiter that misses a slot");
        waiter.phase = Phase::Granted;
        if let Some(waker) = waiter.waker.take() {
            wakers.push(waker);
        }
        convert(&mut self.total);
        for (hash, key) in waiter.groups.iter() {
            match self.groups.find_mut(*hash, |e| e.key == *key) {
                Some(entry) => convert(&mut entry.counts),
                None => debug_assert!(false, "a waiter holds a slot in a group without an entry"),
            }
        }
        if waiter.track {
            // A task to be spawned is a task from now on: `abort_group` must reach it.
            let groups = std::mem::take(&mut waiter.groups);
            waiter.task = Some(self.tasks.insert(groups));
        }

        fn convert(counts: &mut Counts) {
            debug_assert!(counts.reserved > 0, "granted a slot that was not reserved");
            counts.reserved = counts.reserved.saturating_sub(1);
            counts.admit_one();
        }
    }

    /// Removes a granted waiter from the slab and returns what it holds.
    fn take_granted(&mut self, id: usize) -> Held<K> {
        let waiter = self.waiters.remove(id);
        self.maybe_shrink_waiters();
        match waiter.task {
            Some(task) => Held::Task(task),
            None => Held::Groups(waiter.groups),
        }
    }

    /// Gives back what a granted waiter holds, as a release.
    fn release_held(&mut self, held: Held<K>, wakers: &mut Wakers) {
        match held {
            Held::Groups(groups) => self.release(&groups, wakers),
            Held::Task(task) => self.release_task(task, wakers),
        }
    }

    /// Grants the waiters a transition completed. Those that hold every named group but not
    /// yet the total join the total's queue now, oldest first (taking a slot at once if it has
    /// room and nobody queued), and are granted if that was their last one.
    fn grant_all(&mut self, mut granted: Granted, wakers: &mut Wakers) {
        if granted.len() > 1 {
            granted.sort_unstable_by_key(|&id| self.waiters[id].ticket);
        }
        for id in granted {
            if self.waiters[id].missing == 1 {
                let at = LinkRef {
                    waiter: id,
                    slot: 0,
                };
                Self::join(&mut self.total, self.max_tasks, &mut self.waiters, at);
            }
            if self.waiters[id].missing == 0 {
                self.grant(id, wakers);
            }
        }
    }

    /// Checks on a waiter for its future: admitted (its groups come back), closed, or still
    /// waiting (then remembers `waker`).
    pub(crate) fn poll_waiter(&mut self, id: usize, waker: &Waker) -> Poll<K> {
        let Some(waiter) = self.waiters.get_mut(id) else {
            debug_assert!(false, "a waiting future lost its waiter");
            return Poll::Closed;
        };
        match waiter.phase {
            Phase::Waiting => {
                match &mut waiter.waker {
                    Some(old) if old.will_wake(waker) => {}
                    slot => *slot = Some(waker.clone()),
                }
                Poll::Pending
            }
            Phase::Granted => {
                // `close` turns every granted waiter into a closed one, so the pool is open.
                Poll::Ready(self.take_granted(id))
            }
            Phase::Closed => {
                self.waiters.remove(id);
                self.maybe_shrink_waiters();
                Poll::Closed
            }
        }
    }

    /// Gives back everything a dropped waiting future holds (invariant 6): its reservations go
    /// to the next waiters at once, its queue places are removed; a granted waiter is released
    /// like any admission. O(groups it names) plus the waiters this grants.
    pub(crate) fn cancel(&mut self, id: usize, wakers: &mut Wakers) {
        let Some(waiter) = self.waiters.get(id) else {
            debug_assert!(false, "cancelled a waiter twice");
            return;
        };
        match waiter.phase {
            Phase::Closed => {
                self.waiters.remove(id);
            }
            Phase::Granted => {
                let held = self.take_granted(id);
                self.release_held(held, wakers);
            }
            Phase::Waiting => {
                let mut granted = Granted::new();
                let (max_tasks, default_limit) = (self.max_tasks, self.default_limit);
                Self::leave(
                    &mut self.total,
                    max_tasks,
                    &mut self.waiters,
                    id,
                    0,
                    &mut granted,
                );
                for i in 0..self.waiters[id].groups.len() {
                    let (hash, key) = self.waiters[id].groups.get(i);
                    match self.groups.find_entry(hash, |e| e.key == *key) {
                        Ok(mut occupied) => {
                            let entry = occupied.get_mut();
                            let limit = entry.limit.or(default_limit);
                            Self::leave(
                                &mut entry.counts,
                                limit,
                                &mut self.waiters,
                                id,
                                i + 1,
                                &mut granted,
                            );
                            if entry.is_idle() {
                                occupied.remove();
                            }
                        }
                        Err(_) => debug_assert!(false, "a waiter's group has no entry"),
                    }
                }
                self.waiters.remove(id);
                self.waiting = self.waiting.saturating_sub(1);
                self.grant_all(granted, wakers);
                self.maybe_shrink_groups();
            }
        }
        self.maybe_shrink_waiters();
    }

    /// Takes waiter `id` out of one group: gives back its slot (to the next waiter) or its
    /// place in the queue.
    fn leave(
        counts: &mut Counts,
        limit: Option<usize>,
        waiters: &mut Slab<Waiter<K>>,
        id: usize,
        slot: usize,
        granted: &mut Granted,
    ) {
        let link = waiters[id].links[slot];
        if link.reserved {
            debug_assert!(
                counts.reserved > 0,
                "gave back a slot that was not reserved"
            );
            counts.reserved = counts.reserved.saturating_sub(1);
            counts.pump(limit, waiters, granted);
        } else if link.queued {
            counts.queue.unlink(waiters, LinkRef { waiter: id, slot });
        }
    }

    /// Gives back one admission's slots and hands them to the oldest waiters (invariants 1, 5).
    /// O(groups named) plus the waiters this grants.
    pub(crate) fn release(&mut self, groups: &GroupSet<K>, wakers: &mut Wakers) {
        let mut granted = Granted::new();
        debug_assert!(
            self.total.running > 0,
            "released more admissions than were made"
        );
        self.total.running = self.total.running.saturating_sub(1);
        if self.closed && self.total.running == 0 {
            self.fire_idle(wakers);
        }
        self.total
            .pump(self.max_tasks, &mut self.waiters, &mut granted);
        let mut reclaimed = false;
        for (hash, key) in groups.iter() {
            match self.groups.find_entry(*hash, |e| e.key == *key) {
                Ok(mut occupied) => {
                    let entry = occupied.get_mut();
                    debug_assert!(
                        entry.counts.running > 0,
                        "released a group more often than admitted"
                    );
                    entry.counts.running = entry.counts.running.saturating_sub(1);
                    let limit = entry.limit.or(self.default_limit);
                    entry.counts.pump(limit, &mut self.waiters, &mut granted);
                    if entry.is_idle() {
                        occupied.remove();
                        reclaimed = true;
                    }
                }
                Err(_) => debug_assert!(false, "released a group that has no entry"),
            }
        }
        self.grant_all(granted, wakers);
        if reclaimed {
            self.maybe_shrink_groups();
        }
    }

    /// Releases a spawned task's admission and forgets its record.
    pub(crate) fn release_task(&mut self, task: TaskRef, wakers: &mut Wakers) {
        match self.tasks.remove(task) {
            Some(groups) => self.release(&groups, wakers),
            None => debug_assert!(false, "a task was released twice"),
        }
    }

    /// Sets or clears an explicit limit and hands any room it made to waiters; returns the
    /// group's running count.
    pub(crate) fn set_limit(
        &mut self,
        hash: u64,
        key: K,
        limit: Option<usize>,
        wakers: &mut Wakers,
    ) -> usize {
        let mut granted = Granted::new();
        let running = match self.groups.entry(hash, |e| e.key == key, |e| e.hash) {
            TableEntry::Occupied(mut occupied) => {
                let entry = occupied.get_mut();
                entry.limit = limit;
                let running = entry.counts.running;
                let effective = entry.limit.or(self.default_limit);
                entry
                    .counts
                    .pump(effective, &mut self.waiters, &mut granted);
                if entry.is_idle() {
                    occupied.remove();
                    self.maybe_shrink_groups();
                }
                running
            }
            TableEntry::Vacant(vacant) => {
                if limit.is_some() {
                    vacant.insert(Entry::new(hash, key, limit));
                }
                0
            }
        };
        self.grant_all(granted, wakers);
        running
    }

    /// Sets the total's limit and hands any room it made to waiters.
    pub(crate) fn set_max_tasks(&mut self, max_tasks: Option<usize>, wakers: &mut Wakers) {
        self.max_tasks = max_tasks;
        let mut granted = Granted::new();
        self.total.pump(max_tasks, &mut self.waiters, &mut granted);
        self.grant_all(granted, wakers);
    }

    /// Sets the default limit and hands any room it made to waiters.
    ///
    /// O(named groups in the pool): every group without an explicit limit may have gained room.
    /// Limit changes are rare; admissions and releases never pay this.
    pub(crate) fn set_default_limit(&mut self, default_limit: Option<usize>, wakers: &mut Wakers) {
        self.default_limit = default_limit;
        let mut granted = Granted::new();
        for entry in self.groups.iter_mut() {
            if entry.limit.is_none() && !entry.counts.queue.is_empty() {
                entry
                    .counts
                    .pump(default_limit, &mut self.waiters, &mut granted);
            }
        }
        self.grant_all(granted, wakers);
    }

    /// Closes the pool: new admissions are refused, and every waiter that was not granted yet
    /// gives back what it holds and fails. Returns `false` if it was already closed.
    /// O(waiters × groups they name); closing is rare.
    pub(crate) fn close(&mut self, wakers: &mut Wakers) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        let mut waiting: SmallVec<[usize; 8]> = SmallVec::new();
        let mut granted: SmallVec<[usize; 8]> = SmallVec::new();
        for (id, waiter) in self.waiters.iter() {
            match waiter.phase {
                Phase::Waiting => waiting.push(id),
                Phase::Granted => granted.push(id),
                Phase::Closed => {}
            }
        }
        for id in waiting {
            // Nobody can take the slots it gives back (every waiter fails and new admissions
            // are refused), so they are not pumped.
            Self::give_up(&mut self.total, &mut self.waiters, id, 0);
            for i in 0..self.waiters[id].groups.len() {
                let (hash, key) = self.waiters[id].groups.get(i);
                match self.groups.find_entry(hash, |e| e.key == *key) {
                    Ok(mut occupied) => {
                        Self::give_up(&mut occupied.get_mut().counts, &mut self.waiters, id, i + 1);
                        if occupied.get().is_idle() {
                            occupied.remove();
                        }
                    }
                    Err(_) => debug_assert!(false, "a waiter's group has no entry"),
                }
            }
            let waiter = &mut self.waiters[id];
            waiter.phase = Phase::Closed;
            self.total.rejected += 1;
            self.waiting = self.waiting.saturating_sub(1);
            if let Some(waker) = waiter.waker.take() {
                wakers.push(waker);
            }
        }
        // Granted waiters whose future has not collected the admission yet fail too (their
        // future was already woken): their slots are released now, so `wait` does not depend
        // on those futures being polled.
        for id in granted {
            let waiter = &mut self.waiters[id];
            waiter.phase = Phase::Closed;
            let held = match waiter.task.take() {
                Some(task) => Held::Task(task),
                None => Held::Groups(std::mem::take(&mut waiter.groups)),
            };
            self.total.rejected += 1;
            self.release_held(held, wakers);
        }
        if self.total.running == 0 {
            self.fire_idle(wakers);
        }
        self.maybe_shrink_groups();
        true
    }

    /// Takes waiter `id` out of one group without handing anything on.
    fn give_up(counts: &mut Counts, waiters: &mut Slab<Waiter<K>>, id: usize, slot: usize) {
        let link = &mut waiters[id].links[slot];
        if link.reserved {
            link.reserved = false;
            counts.reserved = counts.reserved.saturating_sub(1);
        } else if link.queued {
            counts.queue.unlink(waiters, LinkRef { waiter: id, slot });
        }
    }

    /// Reopens a closed pool. Returns `false` if it was open.
    pub(crate) fn reopen(&mut self) -> bool {
        std::mem::replace(&mut self.closed, false)
    }

    /// Wakes every `wait` future: the pool is closed and empty.
    fn fire_idle(&mut self, wakers: &mut Wakers) {
        for (_, idle) in self.idle_waiters.iter_mut() {
            if !idle.fired {
                idle.fired = true;
                wakers.extend(idle.waker.take());
            }
        }
    }

    /// Registers a new `wait` future; it is ready at once if the pool is closed and empty.
    pub(crate) fn register_idle(&mut self) -> usize {
        let fired = self.closed && self.total.running == 0;
        self.idle_waiters.insert(IdleWaiter { waker: None, fired })
    }

    /// Polls the `wait` future registered as `id`: ready once the pool was closed and empty at
    /// some moment since it registered. Unregisters it when ready (then sets `id` to `None`).
    pub(crate) fn poll_idle(&mut self, id: &mut Option<usize>, waker: &Waker) -> bool {
        let Some(i) = *id else {
            return true;
        };
        let Some(idle) = self.idle_waiters.get_mut(i) else {
            debug_assert!(false, "a wait future lost its registration");
            return true;
        };
        if idle.fired {
            self.idle_waiters.remove(i);
            *id = None;
            return true;
        }
        match &mut idle.waker {
            Some(old) if old.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        false
    }

    /// Forgets a dropped `wait` future.
    pub(crate) fn cancel_idle(&mut self, id: usize) {
        self.idle_waiters.try_remove(id);
    }

    /// Statistics of group `key`; an unknown group has zeros and the default limit.
    pub(crate) fn stats(&self, hash: u64, key: &K) -> GroupStats {
        match self.find(hash, key) {
            Some(entry) => entry.counts.stats(entry.limit.or(self.default_limit)),
            None => Counts::default().stats(self.default_limit),
        }
    }

    /// Statistics of the total group.
    pub(crate) fn total_stats(&self) -> GroupStats {
        GroupStats {
            // Every waiter not granted yet, whether or not it has reached the total's queue.
            waiting: self.waiting,
            ..self.total.stats(self.max_tasks)
        }
    }

    /// Gives memory back once the group table is mostly empty. Amortised O(1) per removal:
    /// after a shrink to twice the live entries, a quarter of the new capacity must be removed
    /// again before the next one.
    fn maybe_shrink_groups(&mut self) {
        let capacity = self.groups.capacity();
        if capacity > MIN_RETAINED_CAPACITY && self.groups.len() < capacity / 4 {
            let target = (self.groups.len() * 2).max(MIN_RETAINED_CAPACITY);
            self.groups.shrink_to(target, |e| e.hash);
        }
    }

    /// Gives the waiter slab's memory back once nobody waits. (A slab cannot move live
    /// waiters, so it is only shrunk when empty; its size is bounded by the peak number of
    /// waiters of the current busy period.)
    fn maybe_shrink_waiters(&mut self) {
        if self.waiters.is_empty() && self.waiters.capacity() > MIN_RETAINED_CAPACITY {
            self.waiters = Slab::new();
        }
    }
}
