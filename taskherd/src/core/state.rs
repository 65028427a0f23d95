//! Everything the pool's lock guards, and every transition of it.
//!
//! Nothing here locks, awaits, wakes or drops user values: transitions collect wakers to wake
//! and values to drop into a [`Deferred`] that [`Core`](super::Core) finishes after unlocking.
//! The only user code that runs here is `K: Eq`, in lookups that come before any change.

use std::task::Waker;

use smallvec::SmallVec;

use super::deferred::Deferred;
use super::group_table::{GroupTable, Hashed, retained_capacity};
use super::records::{RecordRef, Records};
use super::tasks::{Attached, TaskRef, Tasks};
use super::waiters::{LinkRef, List, Phase, Place, Waiter, Waiters};
use crate::group_set::{EntryRef, GroupSet, Item, Spares};
use crate::stats::GroupStats;

/// Waiters that received a slot that may complete them during one transition.
type Granted = SmallVec<[usize; 4]>;

/// The buckets of one admission's groups, found before anything changes. Up to four are kept
/// inline and filled by index, without the capacity checks of a `SmallVec`'s pushes.
enum Buckets {
    Inline(usize, [Option<usize>; 4]),
    Heap(Vec<Option<usize>>),
}

impl Buckets {
    /// `len` buckets, none found yet.
    #[inline]
    fn new(len: usize) -> Self {
        if len <= 4 {
            Buckets::Inline(len, [None; 4])
        } else {
            Buckets::Heap(vec![None; len])
        }
    }

    #[inline]
    fn as_mut_slice(&mut self) -> &mut [Option<usize>] {
        match self {
            Buckets::Inline(len, buckets) => &mut buckets[..*len],
            Buckets::Heap(buckets) => buckets,
        }
    }
}

impl std::ops::Deref for Buckets {
    type Target = [Option<usize>];

    #[inline]
    fn deref(&self) -> &[Option<usize>] {
        match self {
            Buckets::Inline(len, buckets) => &buckets[..*len],
            Buckets::Heap(buckets) => buckets,
        }
    }
}

/// Identifies a waiter for its future.
pub(crate) type WaiterRef = RecordRef;

/// The counts of one group (or of the total).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Live admissions (tasks, permits, granted waiters) naming this group.
    pub(crate) running: usize,
    /// Slots held for waiters that still miss a slot elsewhere.
    reserved: usize,
    /// Waiters still missing a slot in this group, oldest first.
    queue: List,
    /// Admissions ever made in this group (tasks, permits, granted waiters).
    admitted: u64,
    /// Refusals of `try_*` calls because this group was full (for the total: every refused
    /// `try_*` call and every waiter failed by `close`).
    rejected: u64,
    /// The highest `running` ever seen.
    peak: usize,
}

impl Counts {
    /// Slots held for waiters.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// Waiters queued for a slot.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Counts one new admission.
    #[inline]
    fn admit_one(&mut self) {
        self.running += 1;
        self.admitted += 1;
        self.peak = self.peak.max(self.running);
    }

    /// Counts one admission gone; a count that is already zero is corruption (reported after
    /// unlocking, never clamped silently).
    #[inline]
    fn release_one<K>(&mut self, out: &mut Deferred<K>) {
        match self.running.checked_sub(1) {
            Some(running) => self.running = running,
            None => out.underflow(),
        }
    }

    /// Gives back one reserved slot (its waiter's link is no longer `Reserved`).
    fn unreserve<K>(&mut self, out: &mut Deferred<K>) {
        match self.reserved.checked_sub(1) {
            Some(reserved) => self.reserved = reserved,
            None => out.underflow(),
        }
    }

    /// A snapshot for [`GroupStats`], taken under the lock so it is never torn.
    fn stats(&self, limit: Option<usize>) -> GroupStats {
        GroupStats {
            running: self.running,
            waiting: self.queued() + self.reserved,
            reserved: self.reserved,
            limit,
            admitted: self.admitted,
            rejected: self.rejected,
            peak: self.peak,
        }
    }

    /// Whether one more slot may be taken under `limit` (`None` = unbounded).
    #[inline]
    fn has_room(&self, limit: Option<usize>) -> bool {
        limit.is_none_or(|limit| self.running + self.reserved < limit)
    }

    /// How many reserved slots exceed `limit` (invariant 2: they must be taken back).
    fn over_limit(&self, limit: Option<usize>) -> usize {
        limit.map_or(0, |limit| {
            (self.running + self.reserved)
                .saturating_sub(limit)
                .min(self.reserved)
        })
    }

    /// Hands free slots to the oldest queued waiters until the group is full or nobody waits
    /// (invariant 5). O(1) per slot handed out. Waiters that now hold every slot, or every
    /// slot but the total's (they are now ready to ask for the total), go to `granted`; see
    /// [`State::grant_all`].
    #[inline]
    fn pump<K>(&mut self, limit: Option<usize>, waiters: &mut Waiters<K>, granted: &mut Granted) {
        // The common case, inline: nobody queues.
        if !self.queue.is_empty() {
            self.pump_queue(limit, waiters, granted);
        }
    }

    fn pump_queue<K>(
        &mut self,
        limit: Option<usize>,
        waiters: &mut Waiters<K>,
        granted: &mut Granted,
    ) {
        while !self.queue.is_empty() && self.has_room(limit) {
            let Some(at) = self.queue.pop_front(waiters) else {
                break;
            };
            self.reserved += 1;
            let waiter = &mut waiters[at.waiter];
            waiter.links[at.slot].place = Place::Reserved;
            waiter.missing -= 1;
            if waiter.missing == 0 || waiter.ready_for_total() {
                granted.push(at.waiter);
            }
        }
    }

    /// Takes the waiter at `at` out of this group: gives back its slot (and hands it on) or
    /// leaves the queue.
    fn leave<K>(
        &mut self,
        limit: Option<usize>,
        waiters: &mut Waiters<K>,
        at: LinkRef,
        granted: &mut Granted,
        out: &mut Deferred<K>,
    ) {
        match waiters[at.waiter].links[at.slot].place {
            Place::Reserved => {
                waiters[at.waiter].links[at.slot].place = Place::Outside;
                self.unreserve(out);
                self.pump(limit, waiters, granted);
            }
            Place::Queued => self.queue.unlink(waiters, at),
            Place::Outside => {}
        }
    }

    /// Takes the waiter at `at` out of this group without handing anything on (`close`).
    fn give_up<K>(&mut self, waiters: &mut Waiters<K>, at: LinkRef, out: &mut Deferred<K>) {
        match waiters[at.waiter].links[at.slot].place {
            Place::Reserved => {
                waiters[at.waiter].links[at.slot].place = Place::Outside;
                self.unreserve(out);
            }
            Place::Queued => self.queue.unlink(waiters, at),
            Place::Outside => {}
        }
    }

    /// Takes the waiter at `at` into this group: a slot at once if one is free and nobody
    /// queues, else a place at the back of the queue.
    fn join<K>(&mut self, limit: Option<usize>, waiters: &mut Waiters<K>, at: LinkRef) {
        if self.queue.is_empty() && self.has_room(limit) {
            self.reserved += 1;
            let waiter = &mut waiters[at.waiter];
            waiter.links[at.slot].place = Place::Reserved;
            waiter.missing -= 1;
        } else {
            self.queue.push_back(waiters, at);
        }
    }
}

/// One named group.
pub(crate) struct Entry<K> {
    /// `hash_one(&key)` with the pool's hasher, kept so the table can rehash without user code.
    pub(crate) hash: u64,
    /// Unique for the life of the pool: admissions and waiters find their entry by `hash` and
    /// `serial`, without comparing keys.
    pub(crate) serial: u64,
    pub(crate) key: K,
    pub(crate) counts: Counts,
    pub(crate) limit: Option<usize>,
}

impl<K> Hashed for Entry<K> {
    fn stored_hash(&self) -> u64 {
        self.hash
    }
}

impl<K> Entry<K> {
    fn new(hash: u64, serial: u64, key: K, limit: Option<usize>) -> Self {
        Self {
            hash,
            serial,
            key,
            counts: Counts::default(),
            limit,
        }
    }

    /// An idle entry carries no information and must not be kept (invariant 4).
    fn is_idle(&self) -> bool {
        self.counts.running == 0
            && self.counts.reserved() == 0
            && self.counts.queue.is_empty()
            && self.limit.is_none()
    }
}

/// Why an admission was not made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The pool is closed.
    Closed,
    /// The total has no room.
    Total,
    /// The `index`-th of the caller's distinct groups has no room. `bucket` is where its entry
    /// is (`None`: it has none), valid only under the lock that refused: a refusal recorded
    /// under it counts in the entry without looking it up again.
    Key { index: usize, bucket: Option<usize> },
    /// The admission needs new entries for these groups and has no keys for them: clone them
    /// outside the lock and try again.
    NeedKeys(SmallVec<[usize; 4]>),
}

/// Where the keys of new entries come from.
pub(crate) enum Keys<'a, K> {
    /// Moved out of the admission's own groups (a task's admission never reads them again).
    Move,
    /// Clones made outside the lock.
    Spare(&'a mut Spares<K>),
}

/// An admission handed to a waiting future: its groups (a permit), or the record of the task
/// it is about to spawn (made at grant time).
pub(crate) enum Held<K> {
    Groups(GroupSet<K>),
    Task(TaskRef),
}

/// The outcome of [`State::start_wait`].
pub(crate) enum Started<K> {
    /// Admitted at once; the counts are taken.
    Admitted(Held<K>),
    /// Queued as this waiter.
    Waiting(WaiterRef),
    /// The pool is closed.
    Closed,
    /// See [`Refused::NeedKeys`].
    NeedKeys(SmallVec<[usize; 4]>),
}

/// What a waiting admission found when it was polled.
pub(crate) enum Polled<K> {
    /// Admitted; the counts are already taken.
    Ready(Held<K>),
    /// Still waiting; its waker is up to date.
    Pending,
    /// Still waiting, and its waker must be replaced: clone the new one outside the lock and
    /// poll again.
    NeedWaker,
    /// The pool closed while it waited; it holds nothing.
    Closed,
}

/// Limit changes, hashed and deduplicated outside the lock (see `LimitChanges`).
pub(crate) struct Batch<K> {
    pub(crate) max_tasks: Option<Option<usize>>,
    pub(crate) default_limit: Option<Option<usize>>,
    /// `(hash, key, limit)`, each key once.
    pub(crate) groups: Vec<(u64, K, Option<usize>)>,
}

pub(crate) struct State<K> {
    /// Named groups that have running admissions, reservations, waiters or an explicit limit
    /// (invariant 4).
    pub(crate) groups: GroupTable<Entry<K>>,
    /// The total group: every admission counts here.
    pub(crate) total: Counts,
    /// The total group's limit.
    pub(crate) max_tasks: Option<usize>,
    /// The limit of every named group without an explicit one.
    pub(crate) default_limit: Option<usize>,
    /// Every waiting admission, and granted or failed ones their future has not collected yet.
    waiters: Waiters<K>,
    /// Refuses new admissions; set by `close`.
    pub(crate) closed: bool,
    /// How many times the pool was closed: a waiting admission made before a `close` fails at
    /// its first poll, even if the pool was reopened since.
    pub(crate) closes: u64,
    /// Waiters not granted yet (queued or holding reservations anywhere).
    pub(crate) waiting: usize,
    /// The next entry's serial (0 is never used: it marks an unresolved group).
    next_serial: u64,
    /// Spawned tasks with their groups, for release and for `abort_group` and `abort_all`.
    tasks: Tasks,
    /// `wait` futures: their wakers, and whether the pool was closed and empty since they
    /// registered.
    idle_waiters: Records<IdleWaiter>,
}

/// A `wait` future's registration.
struct IdleWaiter {
    /// Set once polled.
    waker: Option<Waker>,
    fired: bool,
}

/// What a `wait` future found when it was polled.
pub(crate) enum IdlePolled {
    Ready,
    Pending,
    /// Its waker must be replaced: clone the new one outside the lock and poll again.
    NeedWaker,
}

impl<K: Eq> State<K> {
    pub(crate) fn new(max_tasks: Option<usize>, default_limit: Option<usize>) -> Self {
        Self {
            groups: GroupTable::default(),
            total: Counts::default(),
            max_tasks,
            default_limit,
            waiters: Records::default(),
            closed: false,
            closes: 0,
            waiting: 0,
            next_serial: 1,
            tasks: Tasks::default(),
            idle_waiters: Records::default(),
        }
    }

    /// Finds the entry of `key` (runs `K: Eq`: call before changing anything).
    pub(crate) fn find(&self, hash: u64, key: &K) -> Option<&Entry<K>> {
        self.groups.find(hash, |e| e.key == *key)
    }

    /// The limit in force for a named group with explicit limit `limit`.
    fn effective(&self, limit: Option<usize>) -> Option<usize> {
        limit.or(self.default_limit)
    }

    /// Finds an entry by the serial an admission or waiter recorded (no user code).
    fn entry_mut<'a>(
        groups: &'a mut GroupTable<Entry<K>>,
        item: &Item<K>,
    ) -> Option<&'a mut Entry<K>> {
        let serial = item.serial;
        groups.find_mut(item.hash, |e| e.serial == serial)
    }

    /// The bucket of each group's entry, or `None` for a group without one. Runs `K: Eq`, so
    /// it comes before any change: a panic leaves the state as it was.
    fn find_buckets(&self, groups: &GroupSet<K>) -> Buckets {
        let mut buckets = Buckets::new(groups.len());
        for (bucket, item) in buckets.as_mut_slice().iter_mut().zip(groups.iter()) {
            *bucket = self.find_bucket(item);
        }
        buckets
    }

    /// Like [`find_buckets`](Self::find_buckets), but stops at the first group without room
    /// and returns why.
    fn find_buckets_with_room(&self, groups: &GroupSet<K>) -> Result<Buckets, Refused> {
        let mut buckets = Buckets::new(groups.len());
        for (i, (slot, item)) in buckets
            .as_mut_slice()
            .iter_mut()
            .zip(groups.iter())
            .enumerate()
        {
            let bucket = self.find_bucket(item);
            let has_room = match bucket.and_then(|b| self.groups.get_bucket(b)) {
                Some(entry) => entry.counts.has_room(self.effective(entry.limit)),
                None => Counts::default().has_room(self.default_limit),
            };
            if !has_room {
                return Err(Refused::Key { index: i, bucket });
            }
            *slot = bucket;
        }
        Ok(buckets)
    }

    /// The bucket of one group's entry: by serial once known, else by key.
    fn find_bucket(&self, item: &Item<K>) -> Option<usize> {
        if item.serial != 0 {
            let serial = item.serial;
            self.groups
                .find_bucket_index(item.hash, |e| e.serial == serial)
        } else {
            let key = item.key.as_ref()?;
            self.groups.find_bucket_index(item.hash, |e| e.key == *key)
        }
    }

    /// Checks that every group without an entry has a key to make one with.
    fn keys_for_new_entries(
        groups: &GroupSet<K>,
        buckets: &[Option<usize>],
        keys: &Keys<'_, K>,
    ) -> Result<(), Refused> {
        let missing: SmallVec<[usize; 4]> = buckets
            .iter()
            .enumerate()
            .filter(|&(i, bucket)| {
                bucket.is_none()
                    && match keys {
                        Keys::Move => groups.get(i).key.is_none(),
                        Keys::Spare(spares) => !spares.has(i),
                    }
            })
            .map(|(i, _)| i)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Refused::NeedKeys(missing))
        }
    }

    /// Records in `groups` the serial of every entry found in `buckets` and makes the missing
    /// entries (with keys checked by [`keys_for_new_entries`](Self::keys_for_new_entries)).
    /// No user code runs. With `admit`, also counts one admission in each group. The entries
    /// found are settled first, then the new ones inserted: an insertion may grow or rehash
    /// the table (with the stored hashes: no user code) and move every bucket, and by then no
    /// bucket found is used any more. (Reserving room beforehand, as before, rehashed the
    /// table in place whenever deleted entries had used up its growth room, which inserting
    /// into a deleted slot does not need: 240 instructions per admission in a flow whose
    /// entries come and go.) Only a committed admission creates entries, so a refused one
    /// never grows the table (invariant 4).
    #[inline(always)]
    fn settle_entries(
        &mut self,
        groups: &mut GroupSet<K>,
        buckets: &[Option<usize>],
        mut keys: Keys<'_, K>,
        admit: bool,
    ) {
        let mut missing = false;
        for (item, bucket) in groups.iter_mut().zip(buckets) {
            match bucket.and_then(|b| self.groups.get_bucket_mut(b)) {
                Some(entry) => {
                    item.serial = entry.serial;
                    if admit {
                        entry.counts.admit_one();
                    }
                }
                None => missing = true,
            }
        }
        if !missing {
            return;
        }
        for (i, (item, bucket)) in groups.iter_mut().zip(buckets).enumerate() {
            if bucket.is_some() {
                continue;
            }
            let key = match &mut keys {
                Keys::Move => item.key.take(),
                Keys::Spare(spares) => spares.take(i),
            };
            let Some(key) = key else {
                debug_assert!(false, "a new entry has no key (checked before)");
                continue;
            };
            let serial = self.next_serial;
            self.next_serial += 1;
            item.serial = serial;
            let mut entry = Entry::new(item.hash, serial, key, None);
            if admit {
                entry.counts.admit_one();
            }
            self.groups.insert_unique(item.hash, entry);
        }
    }

    /// Takes one slot in every group of one admission, or in none (invariants 2, 3, 5).
    ///
    /// Refuses in a group that has no room, which includes every group with queued waiters
    /// (those never have room, invariant 5), so a `try_*` never takes a slot a waiter is owed.
    /// Statistics of refusals are the caller's to record
    /// ([`record_rejection`](Self::record_rejection)): a waiting admission's first try is not a
    /// refusal. On success the groups carry their entries' serials.
    pub(crate) fn try_admit(
        &mut self,
        groups: &mut GroupSet<K>,
        keys: Keys<'_, K>,
    ) -> Result<(), Refused> {
        if self.closed {
            return Err(Refused::Closed);
        }
        if !self.total.has_room(self.max_tasks) {
            return Err(Refused::Total);
        }
        if groups.len() == 0 {
            self.total.admit_one();
            return Ok(());
        }
        let buckets = self.find_buckets_with_room(groups)?;
        if buckets.iter().any(Option::is_none) {
            Self::keys_for_new_entries(groups, &buckets, &keys)?;
        }
        // Commit: no user code from here on.
        self.total.admit_one();
        self.settle_entries(groups, &buckets, keys, true);
        // The buckets found are used: the group table may move some entries on.
        self.groups.step();
        Ok(())
    }

    /// [`try_admit`](Self::try_admit) for a task to be spawned: on success a task record under
    /// the same lock keeps where its entries are, and the groups come back with the keys no
    /// entry took, to be dropped after unlocking; on refusal they come back whole. Never needs
    /// clones: the task's keys move into the entries it creates.
    #[inline]
    pub(crate) fn try_admit_task(&mut self, groups: &mut GroupSet<K>) -> Result<TaskRef, Refused> {
        self.try_admit(groups, Keys::Move)?;
        Ok(self.tasks.insert(groups))
    }

    /// Counts a refused `try_*` call in the total and in the group that refused it. A group
    /// without an entry (idle, no explicit limit) keeps no statistics (invariant 4). Call it
    /// under the lock that refused: the entry is the bucket the refusal found, not looked up
    /// again.
    pub(crate) fn record_rejection(&mut self, refused: &Refused) {
        let group = match refused {
            Refused::Key { bucket, .. } => *bucket,
            _ => None,
        };
        self.total.rejected += 1;
        if let Some(entry) = group.and_then(|b| self.groups.get_bucket_mut(b)) {
            entry.counts.rejected += 1;
        }
    }

    /// Turns an admission into a task record (an admission granted at once to a waiting
    /// `spawn`); its keys are dropped after unlocking.
    pub(crate) fn track(&mut self, groups: GroupSet<K>, out: &mut Deferred<K>) -> TaskRef {
        let task = self.tasks.insert(&groups);
        out.groups(groups);
        task
    }

    /// Turns a task record back into a permit's groups (the counts stay taken), without their
    /// keys (the record does not keep them).
    pub(crate) fn untrack(&mut self, task: TaskRef, out: &mut Deferred<K>) -> GroupSet<K> {
        if Tasks::names_no_group(task)
            && let Some(abort) = self.tasks.remove_ungrouped(task)
        {
            out.abort(abort);
            return GroupSet::default();
        }
        match self.tasks.remove(task) {
            Some(record) => {
                let groups = GroupSet::from_entries(&record.groups);
                out.task(record);
                groups
            }
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
    pub(crate) fn attach(&mut self, task: TaskRef, abort: tokio::task::AbortHandle) -> Attached {
        self.tasks.attach(task, abort)
    }

    /// Signals the tasks of group `key` (all tasks if `None`); see [`Tasks::abort`].
    pub(crate) fn abort(
        &mut self,
        key: Option<(u64, &K)>,
        handles: &mut Vec<tokio::task::AbortHandle>,
    ) -> usize {
        let group = match key {
            Some((hash, key)) => match self.find(hash, key) {
                Some(entry) => Some((hash, entry.serial)),
                // No entry: nothing runs in the group.
                None => return 0,
            },
            None => None,
        };
        self.tasks.abort(group, handles)
    }

    /// Starts a waiting admission: admits it at once if every group and the total have room
    /// and nobody queues for them, else queues it in every named group, taking at once the
    /// slots of groups that have room and nobody queued, then in the total once it holds all
    /// of them (invariant 5).
    ///
    /// `groups` stay with the caller until it is admitted or queued (a panic in `K: Eq` leaves
    /// them, and the state, as they were). `waker` is taken if the waiter queues. A task
    /// (`track`) admitted at once gets its record here, and its keys that no new entry took
    /// stay in `groups`, for the caller to drop after unlocking: not moved out and through
    /// [`Deferred`], which copied the set twice and ran `finish` for nothing but them.
    pub(crate) fn start_wait(
        &mut self,
        groups: &mut GroupSet<K>,
        closes_seen: u64,
        waker: &mut Option<Waker>,
        track: bool,
        spares: &mut Spares<K>,
        out: &mut Deferred<K>,
    ) -> Started<K> {
        if self.closes != closes_seen {
            // Closed after the admission was made (and maybe reopened since): it fails like
            // the waiters `close` failed.
            self.record_rejection(&Refused::Closed);
            return Started::Closed;
        }
        let keys = if track {
            Keys::Move
        } else {
            Keys::Spare(spares)
        };
        match self.try_admit(groups, keys) {
            Ok(()) if track => {
                return Started::Admitted(Held::Task(self.tasks.insert(groups)));
            }
            Ok(()) => return Started::Admitted(Held::Groups(std::mem::take(groups))),
            Err(Refused::Closed) => {
                self.record_rejection(&Refused::Closed);
                return Started::Closed;
            }
            Err(Refused::NeedKeys(missing)) => return Started::NeedKeys(missing),
            Err(Refused::Total | Refused::Key { .. }) => {}
        }
        let keys = if track {
            Keys::Move
        } else {
            Keys::Spare(spares)
        };
        let buckets = self.find_buckets(groups);
        if let Err(Refused::NeedKeys(missing)) = Self::keys_for_new_entries(groups, &buckets, &keys)
        {
            return Started::NeedKeys(missing);
        }
        // No user code from here on.
        self.settle_entries(groups, &buckets, keys, false);
        self.step_groups(out);
        let waker = waker.take().unwrap_or_else(|| Waker::noop().clone());
        let at = self
            .waiters
            .insert(Waiter::new(std::mem::take(groups), waker, track));
        let Some(id) = self.waiters.find(at) else {
            debug_assert!(false, "a waiter vanished as it was made");
            return Started::Closed;
        };
        self.waiters[id].ticket = at.id();
        let default_limit = self.default_limit;
        for slot in 1..self.waiters[id].links.len() {
            let item = self.waiters[id].groups.get(slot - 1);
            let Some(entry) = Self::entry_mut(&mut self.groups, item) else {
                debug_assert!(false, "the entry made above vanished");
                continue;
            };
            let limit = entry.limit.or(default_limit);
            entry
                .counts
                .join(limit, &mut self.waiters, LinkRef { waiter: id, slot });
        }
        if self.waiters[id].ready_for_total() {
            let at_total = LinkRef {
                waiter: id,
                slot: 0,
            };
            self.total.join(self.max_tasks, &mut self.waiters, at_total);
        }
        self.waiting += 1;
        if self.waiters[id].missing > 0 {
            return Started::Waiting(at);
        }
        // Every slot was free and nobody queued: possible only if `try_admit` above refused
        // for a reason that went away, which it cannot; handled rather than assumed. Its own
        // waker needs no wake-up: the caller returns `Ready`.
        self.grant(id, out, false);
        let held = self.take_granted(id, out);
        Started::Admitted(held)
    }

    /// Turns a waiter's reservations into running admissions and, with `wake`, schedules its
    /// wake-up. O(groups it names).
    fn grant(&mut self, id: usize, out: &mut Deferred<K>, wake: bool) {
        self.one_less_waiting(out);
        let waiter = &mut self.waiters[id];
        debug_assert_eq!(waiter.missing, 0, "granted a waiter that misses a slot");
        waiter.phase = Phase::Granted;
        if let Some(waker) = waiter.waker.take() {
            if wake {
                out.wake(waker);
            } else {
                out.drop_waker(waker);
            }
        }
        let waiter = &mut self.waiters[id];
        for link in &mut waiter.links {
            link.place = Place::Outside;
        }
        self.total.unreserve(out);
        self.total.admit_one();
        for item in waiter.groups.iter() {
            match Self::entry_mut(&mut self.groups, item) {
                Some(entry) => {
                    entry.counts.unreserve(out);
                    entry.counts.admit_one();
                }
                None => out.underflow(),
            }
        }
        if waiter.track {
            // A task to be spawned is a task from now on: `abort_group` must reach it. Its
            // keys stay in the waiter record, dropped after unlocking when it is removed.
            waiter.task = Some(self.tasks.insert(&waiter.groups));
        }
    }

    /// Removes a granted waiter's record and returns what it holds.
    fn take_granted(&mut self, id: usize, out: &mut Deferred<K>) -> Held<K> {
        let Some(mut waiter) = self.waiters.remove(id) else {
            debug_assert!(false, "a granted waiter vanished");
            return Held::Groups(GroupSet::default());
        };
        let held = match waiter.task.take() {
            Some(task) => Held::Task(task),
            None => Held::Groups(std::mem::take(&mut waiter.groups)),
        };
        out.waiter(waiter);
        held
    }

    /// Gives back what a granted waiter holds, as a release.
    fn release_held(&mut self, held: Held<K>, out: &mut Deferred<K>) {
        match held {
            Held::Groups(groups) => {
                self.release(groups.iter().map(Item::entry), out);
                out.groups(groups);
            }
            Held::Task(task) => self.release_task(task, out),
        }
    }

    /// Completes the waiters a transition gave slots to: those that hold every named group but
    /// not yet the total join the total's queue now, oldest first (taking a slot at once if it
    /// has room and nobody queued), and those that hold every slot are granted.
    #[inline(always)]
    fn grant_all(&mut self, granted: Granted, out: &mut Deferred<K>) {
        if !granted.is_empty() {
            self.grant_all_slow(granted, out);
        }
    }

    fn grant_all_slow(&mut self, mut granted: Granted, out: &mut Deferred<K>) {
        if granted.len() > 1 {
            granted.sort_unstable_by_key(|&id| self.waiters.get(id).map_or(0, |w| w.ticket));
            granted.dedup();
        }
        for id in granted {
            let Some(waiter) = self.waiters.get(id) else {
                debug_assert!(false, "a waiter given a slot vanished");
                continue;
            };
            if waiter.ready_for_total() {
                let at = LinkRef {
                    waiter: id,
                    slot: 0,
                };
                self.total.join(self.max_tasks, &mut self.waiters, at);
            }
            let waiter = &self.waiters[id];
            if waiter.phase == Phase::Waiting && waiter.missing == 0 {
                self.grant(id, out, true);
            }
        }
    }

    /// One waiter fewer not granted yet; below zero is corruption (reported after unlocking).
    fn one_less_waiting(&mut self, out: &mut Deferred<K>) {
        match self.waiting.checked_sub(1) {
            Some(waiting) => self.waiting = waiting,
            None => out.underflow(),
        }
    }

    /// Checks on a waiter for its future: admitted (what it holds comes back), closed, or still
    /// waiting. A waiting future's waker is replaced by `new` if it would not wake the same
    /// task as `waker`; without `new`, asks for a clone (never made under the lock).
    pub(crate) fn poll_waiter(
        &mut self,
        at: &mut WaiterRef,
        waker: &Waker,
        new: &mut Option<Waker>,
        out: &mut Deferred<K>,
    ) -> Polled<K> {
        let Some(id) = self.waiters.find_and_update(at) else {
            debug_assert!(false, "a waiting future lost its waiter");
            return Polled::Closed;
        };
        let waiter = &mut self.waiters[id];
        let polled = match waiter.phase {
            Phase::Waiting => {
                if waiter
                    .waker
                    .as_ref()
                    .is_some_and(|old| old.will_wake(waker))
                {
                    return Polled::Pending;
                }
                let Some(new) = new.take() else {
                    return Polled::NeedWaker;
                };
                out.drop_waker(waiter.waker.replace(new));
                return Polled::Pending;
            }
            // `close` turns every granted waiter into a closed one, so the pool is open.
            Phase::Granted => Polled::Ready(self.take_granted(id, out)),
            Phase::Closed => {
                if let Some(waiter) = self.waiters.remove(id) {
                    out.waiter(waiter);
                }
                Polled::Closed
            }
        };
        self.maybe_compact_waiters();
        polled
    }

    /// Gives back everything a dropped waiting future holds (invariant 6): its reservations go
    /// to the next waiters at once, its queue places are removed; a granted waiter is released
    /// like any admission. O(groups it names) plus the waiters this grants.
    pub(crate) fn cancel(&mut self, at: WaiterRef, out: &mut Deferred<K>) {
        let Some(id) = self.waiters.find(at) else {
            // Never panic in a drop while the thread unwinds (that aborts the process).
            debug_assert!(std::thread::panicking(), "cancelled a waiter twice");
            return;
        };
        match self.waiters[id].phase {
            Phase::Closed => {
                if let Some(waiter) = self.waiters.remove(id) {
                    out.waiter(waiter);
                }
            }
            Phase::Granted => {
                let held = self.take_granted(id, out);
                self.release_held(held, out);
            }
            Phase::Waiting => {
                let mut granted = Granted::new();
                let at_total = LinkRef {
                    waiter: id,
                    slot: 0,
                };
                self.total.leave(
                    self.max_tasks,
                    &mut self.waiters,
                    at_total,
                    &mut granted,
                    out,
                );
                let default_limit = self.default_limit;
                let mut reclaimed = false;
                for slot in 1..self.waiters[id].links.len() {
                    let item = self.waiters[id].groups.get(slot - 1);
                    let serial = item.serial;
                    match self.groups.find_entry(item.hash, |e| e.serial == serial) {
                        Some(mut occupied) => {
                            let entry = occupied.get_mut();
                            let limit = entry.limit.or(default_limit);
                            let at = LinkRef { waiter: id, slot };
                            entry
                                .counts
                                .leave(limit, &mut self.waiters, at, &mut granted, out);
                            if entry.is_idle() {
                                out.key(occupied.remove().0.key);
                                reclaimed = true;
                            }
                        }
                        None => out.underflow(),
                    }
                }
                // The granted list may name waiters by index: grant before removing (removal
                // moves nothing, but keeps the order of events obvious).
                self.one_less_waiting(out);
                if let Some(waiter) = self.waiters.remove(id) {
                    out.waiter(waiter);
                }
                self.grant_all(granted, out);
                if reclaimed {
                    self.maybe_shrink_groups();
                }
                self.step_groups(out);
            }
        }
        self.maybe_compact_waiters();
    }

    /// Gives back one admission's slots and hands them to the oldest waiters (invariants 1, 5).
    /// O(groups named) plus the waiters this grants. Finds entries by serial: no user code.
    pub(crate) fn release(
        &mut self,
        groups: impl IntoIterator<Item = EntryRef>,
        out: &mut Deferred<K>,
    ) {
        let mut granted = Granted::new();
        self.total.release_one(out);
        if self.closed && self.total.running == 0 {
            self.fire_idle(out);
        }
        self.total
            .pump(self.max_tasks, &mut self.waiters, &mut granted);
        let mut reclaimed = false;
        for item in groups {
            let serial = item.serial;
            match self.groups.find_entry(item.hash, |e| e.serial == serial) {
                Some(mut occupied) => {
                    let entry = occupied.get_mut();
                    entry.counts.release_one(out);
                    let limit = entry.limit.or(self.default_limit);
                    entry.counts.pump(limit, &mut self.waiters, &mut granted);
                    if entry.is_idle() {
                        out.key(occupied.remove().0.key);
                        reclaimed = true;
                    }
                }
                // An admission always counts in its entries, which keeps them alive.
                None => out.underflow(),
            }
        }
        self.grant_all(granted, out);
        if reclaimed {
            self.maybe_shrink_groups();
        }
        self.step_groups(out);
    }

    /// Releases a spawned task's admission and removes its record (dropped after unlocking).
    pub(crate) fn release_task(&mut self, task: TaskRef, out: &mut Deferred<K>) {
        if Tasks::names_no_group(task) {
            match self.tasks.remove_ungrouped(task) {
                Some(abort) => {
                    self.release(std::iter::empty(), out);
                    out.released_abort(abort);
                }
                None => out.underflow(),
            }
            return;
        }
        match self.tasks.remove(task) {
            Some(record) => {
                self.release(record.groups.iter().copied(), out);
                out.released_task(record);
            }
            None => out.underflow(),
        }
    }

    /// Applies several limit changes as one (invariant 9): one critical section, then one
    /// round of taking back reservations above lowered limits (invariant 2) and one pump of
    /// the groups that may have gained room (invariant 5).
    ///
    /// O(groups changed), plus O(named groups in the pool) if the default limit changes
    /// (every group without an explicit limit may have gained or lost room). Limit changes
    /// are rare; admissions and releases never pay this.
    ///
    /// The batch stays the caller's until its lookups are done (`K: Eq` is the only user code
    /// here): if one panics, its keys are dropped by the caller, after unlocking (invariant 8).
    pub(crate) fn set_limits(&mut self, batch: &mut Batch<K>, out: &mut Deferred<K>) {
        // Lookups first: `K: Eq` is the only user code, and it runs before any change.
        let find = |groups: &GroupTable<Entry<K>>| -> SmallVec<[Option<usize>; 4]> {
            batch
                .groups
                .iter()
                .map(|(hash, key, _)| groups.find_bucket_index(*hash, |e| e.key == *key))
                .collect()
        };
        let mut buckets = find(&self.groups);
        // Room for the entries the batch creates (explicit limits of groups without one), so
        // that creating them moves no bucket found; then the buckets are found again.
        let created = batch
            .groups
            .iter()
            .zip(&buckets)
            .filter(|((_, _, limit), bucket)| limit.is_some() && bucket.is_none())
            .count();
        if self.groups.reserve(created) {
            buckets = find(&self.groups);
        }
        if let Some(max_tasks) = batch.max_tasks {
            self.max_tasks = max_tasks;
        }
        let default_changed = match batch.default_limit {
            Some(default_limit) if default_limit != self.default_limit => {
                self.default_limit = default_limit;
                true
            }
            _ => false,
        };
        let mut touched: SmallVec<[(u64, u64); 4]> = SmallVec::new();
        for ((hash, key, limit), bucket) in
            std::mem::take(&mut batch.groups).into_iter().zip(buckets)
        {
            match bucket.and_then(|b| self.groups.get_bucket_mut(b)) {
                Some(entry) => {
                    entry.limit = limit;
                    touched.push((hash, entry.serial));
                    out.key(key);
                }
                None if limit.is_some() => {
                    let serial = self.next_serial;
                    self.next_serial += 1;
                    self.groups
                        .insert_unique(hash, Entry::new(hash, serial, key, limit));
                }
                None => out.key(key),
            }
        }
        // Take back reservations above every lowered limit, before any room is handed out.
        let default_limit = self.default_limit;
        let mut over: Vec<(u64, u64, usize)> = Vec::new();
        if default_changed {
            for entry in self.groups.iter() {
                if entry.limit.is_none() {
                    let excess = entry.counts.over_limit(default_limit);
                    if excess > 0 {
                        over.push((entry.hash, entry.serial, excess));
                    }
                }
            }
        }
        for &(hash, serial) in &touched {
            if let Some(entry) = self.groups.find(hash, |e| e.serial == serial) {
                // Groups without an explicit limit were covered above if the default changed.
                let covered = default_changed && entry.limit.is_none();
                let excess = entry.counts.over_limit(entry.limit.or(default_limit));
                if excess > 0 && !covered {
                    over.push((hash, serial, excess));
                }
            }
        }
        if !over.is_empty() {
            self.take_back(over, out);
        }
        debug_assert_eq!(self.total.reserved(), 0, "a total slot held at rest");
        // Then hand out the room there is.
        let mut granted = Granted::new();
        self.total
            .pump(self.max_tasks, &mut self.waiters, &mut granted);
        if default_changed {
            for entry in self.groups.iter_mut() {
                if entry.limit.is_none() {
                    entry
                        .counts
                        .pump(default_limit, &mut self.waiters, &mut granted);
                }
            }
        }
        let mut reclaimed = false;
        for &(hash, serial) in &touched {
            if let Some(mut occupied) = self.groups.find_entry(hash, |e| e.serial == serial) {
                let entry = occupied.get_mut();
                let limit = entry.limit.or(default_limit);
                entry.counts.pump(limit, &mut self.waiters, &mut granted);
                if entry.is_idle() {
                    out.key(occupied.remove().0.key);
                    reclaimed = true;
                }
            }
        }
        self.grant_all(granted, out);
        if reclaimed {
            self.maybe_shrink_groups();
        }
        self.step_groups(out);
    }

    /// Takes back `excess` reserved slots in each group `(hash, serial, excess)`, youngest
    /// waiter first (invariant 2). Each such waiter goes back to the front of the group's
    /// queue, ahead of every waiter younger than it (in a named group, the waiters holding a
    /// slot are older than every queued one), so it keeps its turn; one that was queued for
    /// the total leaves that queue, as it no longer holds every named group (the total is the
    /// last gate).
    ///
    /// O(waiters × groups they name), by scanning the waiters: only a lowered limit that
    /// bites pays it, and the hot paths keep no list of holders.
    fn take_back(&mut self, over: Vec<(u64, u64, usize)>, out: &mut Deferred<K>) {
        let mut left: Vec<usize> = over.iter().map(|&(_, _, excess)| excess).collect();
        let index: std::collections::HashMap<(u64, u64), usize> = over
            .iter()
            .enumerate()
            .map(|(i, &(hash, serial, _))| ((hash, serial), i))
            .collect();
        // Every reserved link in those groups, youngest waiter first.
        let mut holders: Vec<(u64, usize, usize, usize)> = Vec::new();
        for (id, waiter) in self.waiters.iter() {
            if waiter.phase != Phase::Waiting {
                continue;
            }
            for (i, item) in waiter.groups.iter().enumerate() {
                if waiter.links[i + 1].place != Place::Reserved {
                    continue;
                }
                if let Some(&group) = index.get(&(item.hash, item.serial)) {
                    holders.push((waiter.ticket, id, i + 1, group));
                }
            }
        }
        holders.sort_unstable_by_key(|&(ticket, ..)| std::cmp::Reverse(ticket));
        for (_, id, slot, group) in holders {
            if left[group] == 0 {
                continue;
            }
            left[group] -= 1;
            let (hash, serial, _) = over[group];
            let Some(entry) = self.groups.find_mut(hash, |e| e.serial == serial) else {
                out.underflow();
                continue;
            };
            entry.counts.unreserve(out);
            self.waiters[id].links[slot].place = Place::Outside;
            // Youngest first, each pushed to the front: the taken-back waiters end up in
            // arrival order, ahead of the waiters that were queued already.
            entry
                .counts
                .queue
                .push_front(&mut self.waiters, LinkRef { waiter: id, slot });
            let waiter = &mut self.waiters[id];
            waiter.missing += 1;
            let total_link = LinkRef {
                waiter: id,
                slot: 0,
            };
            match waiter.links[0].place {
                Place::Outside => {}
                Place::Queued => self.total.queue.unlink(&mut self.waiters, total_link),
                Place::Reserved => {
                    // Not reached: a waiter holding the total is granted in the same
                    // transition. Handled by giving the slot back (the caller pumps the total).
                    waiter.links[0].place = Place::Outside;
                    waiter.missing += 1;
                    self.total.unreserve(out);
                }
            }
        }
    }

    /// Closes the pool: new admissions are refused, and every waiter that was not granted yet
    /// gives back what it holds and fails. Returns `false` if it was already closed.
    /// O(waiters × groups they name); closing is rare.
    pub(crate) fn close(&mut self, out: &mut Deferred<K>) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        self.closes += 1;
        let mut waiting: Vec<usize> = Vec::new();
        let mut granted: Vec<usize> = Vec::new();
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
            let at_total = LinkRef {
                waiter: id,
                slot: 0,
            };
            self.total.give_up(&mut self.waiters, at_total, out);
            for slot in 1..self.waiters[id].links.len() {
                let item = self.waiters[id].groups.get(slot - 1);
                let serial = item.serial;
                match self.groups.find_entry(item.hash, |e| e.serial == serial) {
                    Some(mut occupied) => {
                        let at = LinkRef { waiter: id, slot };
                        occupied
                            .get_mut()
                            .counts
                            .give_up(&mut self.waiters, at, out);
                        if occupied.get().is_idle() {
                            out.key(occupied.remove().0.key);
                        }
                    }
                    None => out.underflow(),
                }
            }
            self.total.rejected += 1;
            self.one_less_waiting(out);
            let waiter = &mut self.waiters[id];
            waiter.phase = Phase::Closed;
            out.wake(waiter.waker.take());
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
            self.release_held(held, out);
        }
        if self.total.running == 0 {
            self.fire_idle(out);
        }
        self.maybe_shrink_groups();
        // The move the shrink may have started is finished, and the old table freed, now:
        // the failed waiters' polls and drops make no transition that would step it on, and
        // the entries of what still holds slots (a permit, a task) would keep it. `close` is
        // O(waiters) already; this adds O(buckets of the old table).
        self.groups.finish_move();
        self.step_groups(out);
        true
    }

    /// Reopens a closed pool. Returns `false` if it was open.
    pub(crate) fn reopen(&mut self) -> bool {
        std::mem::replace(&mut self.closed, false)
    }

    /// Wakes every `wait` future: the pool is closed and empty.
    fn fire_idle(&mut self, out: &mut Deferred<K>) {
        for (_, idle) in self.idle_waiters.iter_mut() {
            if !idle.fired {
                idle.fired = true;
                out.wake(idle.waker.take());
            }
        }
    }

    /// Registers a new `wait` future; it is ready at once if the pool is closed and empty.
    pub(crate) fn register_idle(&mut self) -> RecordRef {
        let fired = self.closed && self.total.running == 0;
        self.idle_waiters.insert(IdleWaiter { waker: None, fired })
    }

    /// Polls the `wait` future registered as `at`: ready once the pool was closed and empty at
    /// some moment since it registered (then unregisters it). Replaces its waker by `new` if
    /// it would not wake the same task as `waker`; without `new`, asks for a clone.
    pub(crate) fn poll_idle(
        &mut self,
        at: &mut RecordRef,
        waker: &Waker,
        new: &mut Option<Waker>,
        out: &mut Deferred<K>,
    ) -> IdlePolled {
        let Some(index) = self.idle_waiters.find_and_update(at) else {
            debug_assert!(false, "a wait future lost its registration");
            return IdlePolled::Ready;
        };
        let idle = &mut self.idle_waiters[index];
        if idle.fired {
            if let Some(idle) = self.idle_waiters.remove(index) {
                out.drop_waker(idle.waker);
            }
            self.idle_waiters.maybe_compact();
            return IdlePolled::Ready;
        }
        if idle.waker.as_ref().is_some_and(|old| old.will_wake(waker)) {
            return IdlePolled::Pending;
        }
        match new.take() {
            Some(new) => {
                out.drop_waker(idle.waker.replace(new));
                IdlePolled::Pending
            }
            None => IdlePolled::NeedWaker,
        }
    }

    /// Forgets a dropped `wait` future.
    pub(crate) fn cancel_idle(&mut self, at: RecordRef, out: &mut Deferred<K>) {
        if let Some(index) = self.idle_waiters.find(at) {
            if let Some(idle) = self.idle_waiters.remove(index) {
                out.drop_waker(idle.waker);
            }
            self.idle_waiters.maybe_compact();
        }
    }

    /// Statistics of group `key`; an unknown group has zeros and the default limit.
    pub(crate) fn stats(&self, hash: u64, key: &K) -> GroupStats {
        match self.find(hash, key) {
            Some(entry) => entry.counts.stats(self.effective(entry.limit)),
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

    /// Moves a few group entries on if the group table is being resized (see [`GroupTable`]);
    /// a table it empties is freed after unlocking. Call at the end of a transition.
    #[inline]
    fn step_groups(&mut self, out: &mut Deferred<K>) {
        self.groups.step();
        if let Some(tables) = self.groups.take_emptied() {
            out.tables(tables);
        }
    }

    /// Gives memory back once the group table is mostly empty (invariant 4): below a quarter
    /// full, the entries start moving to a table for twice as many, a few per transition (see
    /// [`GroupTable`]). Amortised O(1) per removal.
    fn maybe_shrink_groups(&mut self) {
        self.groups.maybe_shrink(retained_capacity::<Entry<K>>());
    }

    /// Gives the waiter records' memory back once they are mostly empty (invariant 4), one
    /// bounded step at a time (at most `STEP_MOVES` waiters move), and re-points the queue
    /// links of the waiters that moved and of their neighbours. O(moved waiters × groups they
    /// name), amortised O(groups per waiter) per removal: rewriting every waiter's links, as
    /// before, held the lock 19 ms while 100,000 waiters drained. Call only at the end of a
    /// transition: it moves waiters.
    fn maybe_compact_waiters(&mut self) {
        if !self.waiters.wants_compaction() {
            return;
        }
        let mut moves = Vec::new();
        self.waiters.compact(&mut moves);
        if moves.is_empty() {
            return;
        }
        moves.sort_unstable();
        let moved = |at: LinkRef| match moves.binary_search_by_key(&at.waiter, |&(from, _)| from) {
            Ok(i) => LinkRef {
                waiter: moves[i].1,
                slot: at.slot,
            },
            Err(_) => at,
        };
        // Only a moved waiter and its neighbours in each list point at a moved waiter. A
        // waiter's new index is never another's old one (moves go from the top of the
        // records into holes below), so a pointer rewritten once is never rewritten again.
        for &(from, to) in &moves {
            self.waiters[to].relink(moved);
            for slot in 0..self.waiters[to].links.len() {
                if self.waiters[to].links[slot].place != Place::Queued {
                    continue;
                }
                let at = LinkRef { waiter: to, slot };
                let (first, last) = List::relink_neighbours(&mut self.waiters, at);
                if !(first || last) {
                    continue;
                }
                // The ends of the lists live in the groups.
                let counts = if slot == 0 {
                    Some(&mut self.total)
                } else {
                    let item = self.waiters[to].groups.get(slot - 1);
                    Self::entry_mut(&mut self.groups, item).map(|entry| &mut entry.counts)
                };
                if let Some(counts) = counts {
                    counts.queue.relink_end(slot, from, to);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A count that would go below zero cannot be reached through the public API (every
    //! admission releases exactly once, by its guard's `Drop`), so the corruption path is
    //! tested here.

    use std::hash::{BuildHasher, RandomState};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;

    /// A `try_*` naming many groups reserves room in the group table for all the entries it
    /// might create before it knows it is refused; the room stays after the refusal. The
    /// table is shrunk only when an entry is reclaimed, so in a pool whose entries are never
    /// idle (explicit limits) one refused request keeps the table at its size for good
    /// (invariant 4: memory bounded by live state).
    #[test]
    fn a_refused_admission_naming_many_groups_leaves_no_table_capacity_behind() {
        let hasher = RandomState::new();
        let mut state: State<u32> = State::new(None, None);
        let mut out = Deferred::new();
        state.set_limits(
            &mut Batch {
                max_tasks: None,
                default_limit: None,
                groups: vec![(hasher.hash_one(0u32), 0, Some(0))],
            },
            &mut out,
        );
        out.finish();
        let before = state.groups.capacity();
        let mut groups = GroupSet::new(0..100_000u32, &hasher);
        let refused = state.try_admit(&mut groups, Keys::Move);
        assert!(
            matches!(refused, Err(Refused::Key { index: 0, .. })),
            "group 0 is full"
        );
        assert_eq!(state.groups.len(), 1, "nothing was created");
        let after = state.groups.capacity();
        assert!(
            after <= 2 * super::super::records::MIN_RETAINED_CAPACITY,
            "the group table grew from {before} to {after} slots for one refused call"
        );
    }

    /// Admits one task in each of `keys` (one group each), then releases them all: a wave of
    /// groups that come and go, as a steady flow's do when its tasks end before the next ones
    /// start.
    fn wave(state: &mut State<u32>, keys: std::ops::Range<u32>, hasher: &RandomState) {
        let mut admitted = Vec::new();
        for key in keys {
            let mut groups = GroupSet::new([key], hasher);
            state
                .try_admit(&mut groups, Keys::Move)
                .unwrap_or_else(|refused| panic!("{refused:?}"));
            admitted.push(groups);
        }
        for groups in admitted {
            let mut out = Deferred::new();
            state.release(groups.iter().map(Item::entry), &mut out);
            out.finish();
        }
        assert_eq!(
            state.groups.len(),
            0,
            "every idle entry is gone (invariant 4)"
        );
    }

    /// Groups that come and go in waves of up to a few hundred do not shrink and grow the
    /// group table every wave (it rehashed every entry twice per wave), nor grow it for the
    /// tombstones removals leave (an empty kept table gets fresh control bytes), but a table
    /// that a burst grew beyond what is kept still gives its memory back.
    #[test]
    fn the_group_table_keeps_its_size_through_waves_and_shrinks_after_a_burst() {
        let hasher = RandomState::new();
        let retained = retained_capacity::<Entry<u32>>();
        assert_eq!(retained, 448);
        for size in [200, 300, 400, 448] {
            let mut state: State<u32> = State::new(None, None);
            let mut sizes = vec![];
            for round in 0..50 {
                wave(&mut state, round * size..round * size + size, &hasher);
                if sizes.last() != Some(&state.groups.buckets()) {
                    sizes.push(state.groups.buckets());
                }
            }
            let first = if size <= 224 { 256 } else { 512 };
            assert_eq!(sizes, [first], "waves of {size}: the table resized");
            wave(&mut state, 100_000..150_000, &hasher);
            while state.groups.is_moving() {
                state.groups.step();
            }
            assert!(
                state.groups.buckets() <= 512,
                "{} buckets kept after the burst",
                state.groups.buckets()
            );
        }
    }

    #[test]
    fn a_release_too_many_panics_after_unlocking_and_clamps_nothing() {
        let hasher = RandomState::new();
        let mut state: State<&str> = State::new(None, None);
        let mut groups = GroupSet::new(["a"], &hasher);
        // A permit's keys stay with it: the new entry takes a clone made outside the lock.
        let mut spares = Spares::default();
        spares.fill(&groups, &[0]);
        state
            .try_admit(&mut groups, Keys::Spare(&mut spares))
            .unwrap_or_else(|refused| panic!("{refused:?}"));
        let mut out = Deferred::new();
        state.release(groups.iter().map(Item::entry), &mut out);
        assert!(!out.underflowed(), "the first release is fine");
        out.finish();

        // Released again: the total's count is 0, and the group's entry is gone.
        let mut out = Deferred::new();
        state.release(groups.iter().map(Item::entry), &mut out);
        assert!(out.underflowed());
        assert_eq!(state.total.running, 0, "left at zero, not wrapped");
        let panic = catch_unwind(AssertUnwindSafe(|| out.finish())).unwrap_err();
        let message = panic.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(
            message.contains("would have gone below zero") && message.contains("bug in taskherd"),
            "{message}"
        );
    }
}
