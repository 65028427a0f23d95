//! The admission core: counts, limits, waiters and the all-or-nothing admission decision.
//!
//! Everything here is synchronous except [`WaitAdmission`], a hand-written future over the
//! same state. [`Core`] owns one short critical section (a mutex around [`State`]) in which an
//! admission checks every group it names and, only if all have room, counts itself in all of
//! them. Release happens from the `Drop` of a [`TaskAdmission`] (owned by the spawned task's
//! future; the task's groups live in its record in [`tasks`]) or of an [`Admission`] (owned by a
//! permit), so it runs exactly once on every exit: completion, panic, abort, or the runtime
//! dropping the task.
//!
//! # Invariants
//!
//! 1. For the total group and every named group `g`, `running(g)` equals the number of live
//!    admissions naming `g` (every admission names the total). A granted waiter whose future
//!    has not yet collected its admission is a live admission.
//! 2. A slot of `g` is taken (as an admission or a reservation) only while
//!    `running(g) + reserved(g) < limit(g)`, where a named group's limit is its explicit limit,
//!    else the pool's default limit, and no limit means no bound. After any limit change,
//!    `running + reserved <= limit` unless `running` alone exceeds it: lowering a limit takes
//!    back reservations above it, youngest first, and puts those waiters back at the front of
//!    the group's queue (they keep their turn); it cancels nothing that runs. So at every
//!    moment `reserved(g) == 0 || running(g) + reserved(g) <= limit(g)`.
//! 3. A `try_*` admission takes a slot in every group or in none, and a refused one changes no
//!    count and leaves no entry behind (the lookup phase only reads; the commit phase runs only
//!    after every check passed, under the same lock).
//! 4. An entry exists in the group table only while it has running admissions, reservations,
//!    queued waiters or an explicit limit, so memory is bounded by live state, not by the number
//!    of keys ever seen; the table's capacity is shrunk when it becomes mostly empty (a large
//!    table a few entries per transition, so no transition holds the lock for long). The
//!    same holds for task records, waiter records and `wait` registrations after a burst:
//!    they live in [`Records`](records::Records), compacted while less than an eighth full
//!    (a bounded number of records moved per removal), so memory comes back to a
//!    small multiple of what is live.
//! 5. Waiting is FIFO per group, and groups never keep free room while someone queues on them:
//!    if `queue(g)` is not empty then `running(g) + reserved(g) >= limit(g)`. Every transition
//!    that can make room (a release, a given-back reservation, a higher or cleared limit, a new
//!    default limit) hands it at once to the oldest waiters queued on `g` as reservations
//!    ("pumping"). So a slot freed in `g` goes to the oldest waiter on `g`, and a `try_*` call
//!    finds no room in any group with waiters (no barging). In every named group, the waiters
//!    holding a reserved slot are older than every waiter in its queue, and the queue is in
//!    arrival order; so the youngest holders are the last ones served. A waiter
//!    that holds a reservation in every group it names is granted at that moment, under the
//!    lock, not when it is polled. The total is the last gate: a waiter joins the total's queue
//!    only once it holds every named group it asked for ("ready"; waiters that become ready in
//!    the same transition join oldest first), and leaves it if a lowered limit takes a named
//!    slot back, so a waiter blocked on a full group never holds or queues for total capacity.
//!    A reservation of the total exists only within a transition (the waiter is granted in it).
//! 6. A dropped waiting future gives back its reservations (pumped to the next waiters) and
//!    its queue places; a granted waiter dropped before it saw the grant is released like any
//!    admission. No slot outlives the future that holds it.
//! 7. Cost per admission, per release and per cancellation is O(groups named), plus O(groups
//!    named by each waiter it grants); never O(waiters), O(groups in the pool) or O(tasks).
//!    Queues are intrusive lists through the waiters, so leaving one from the middle is O(1).
//!    Compacting records is amortised O(1) per removal. Only operator actions cost more: a
//!    change of the default limit is O(groups in the pool), `abort_group`/`abort_all`
//!    O(tasks), `close` O(waiters).
//! 8. No user code that can reach the pool runs under the lock. Wakers are cloned before
//!    locking; wakers are woken, and wakers, keys, task records and waiter records dropped,
//!    after unlocking ([`Deferred`]). A panic in user code fails that one
//!    call but leaves the state consistent: every transition looks up what it needs first
//!    (the only user code under the lock, `K: Eq`, runs there) and changes state only after.
//!    A waiting future changes its phase only after the call that could panic returned.
//! 9. Several limit changes are applied as one ([`State::set_limits`]): all values first,
//!    then every take-back, then one pump, in one critical section, so no admission happens
//!    under a combination of limits nobody asked for.
//!
//! # A waiter's life
//!
//! A waiting admission (`spawn(..).await`, `acquire(..).await`) is a [`WaitAdmission`] future
//! over one [`Waiter`](waiters::Waiter) record. The future's phase and the record's phase:
//!
//! ```text
//!  future: Start ──first poll──▶ (admitted at once) ─────────────────────────────▶ Done
//!            │                      try_admit succeeded: no record is made
//!            └──first poll, no room──▶ Waiting(ref) ──poll sees Granted/Closed──▶ Done
//!                                         │ drop: cancel (gives back what it holds)
//!  record:   Waiting ──last slot reserved (pump/join)──▶ Granted ──poll──▶ removed
//!              │   ▲                                        │
//!              │   └── never goes back                      └──close──▶ Closed (released)
//!              └──close──▶ Closed (gave everything up) ──poll or drop──▶ removed
//! ```
//!
//! Within `Waiting`, each of the waiter's groups has a [`Place`](waiters::Place): `Outside`
//! (only the total, before the waiter is ready), `Queued` (in the group's queue) or `Reserved`
//! (holding a slot, counted in `reserved`). `missing` counts the groups not
//! `Reserved`. Who moves it, and which counts change:
//!
//! | transition | by | place | counts |
//! |---|---|---|---|
//! | join a named group with room and no queue | `start_wait` | Outside → Reserved | `reserved(g)` +1 |
//! | join a named group otherwise | `start_wait` | Outside → Queued | — |
//! | pump: oldest queued gets a freed slot | release, cancel, raised limit | Queued → Reserved | `reserved(g)` +1 |
//! | take-back: youngest holder above a lowered limit (found by scanning the waiters) | `set_limits` | Reserved → Queued (front) | `reserved(g)` −1 |
//! | ready (holds every named group): join the total | end of the transition (`grant_all`) | total: Outside → Queued or Reserved | — |
//! | not ready any more (a named slot taken back) | take-back | total: Queued → Outside | — |
//! | grant (every place Reserved) | the transition that reserved the last slot | all → Outside; phase Granted | `reserved` −1, `running` +1 in every group; `waiting` −1 |
//! | cancel (future dropped while Waiting) | `WaitAdmission::drop` | Reserved slots pumped on, queue places left; record removed | `reserved` −1 per held slot; `waiting` −1 |
//! | close | `close` | everything given up, not pumped; phase Closed | `reserved` −1 per held slot; `waiting` −1 |
//! | collect (poll sees Granted) | `WaitAdmission::poll` | record removed; its groups become the admission | — |
//!
//! # Deadlock safety
//!
//! Waiting admission cannot deadlock, whatever the overlap of group sets. The total is only
//! ever waited for by ready waiters, which hold everything else, and held only by running
//! admissions, so it cannot be part of a cycle; it suffices to look at the named groups. Take the
//! oldest waiter `W`. Every waiter queued in one of `W`'s groups arrived after `W`, so in each of `W`'s
//! groups `W` is at the head of the queue or already holds its reservation; a younger waiter can
//! hold a reservation in a group of `W`'s only if it was pumped one after `W` got its own (per
//! group FIFO; a take-back removes the youngest holders first and puts them ahead of the
//! queue, so it keeps this order), so younger waiters never hold a slot `W` is owed. The
//! slots `W` still misses are therefore held only by running admissions, and each one that
//! ends is pumped to `W` first. So `W` is granted once enough admissions end (or limits rise);
//! then the next oldest waiter is the oldest, and so on. The classic deadlock — `A` holds `x`
//! and waits for `y` while `B` holds `y` and waits for `x` — needs the younger of the two to
//! hold a slot the older is owed, which the per-group FIFO excludes. (A group whose limit is
//! `0`, or whose running admissions never end, makes its waiters wait for ever, by design, not
//! by deadlock.)
//!
//! # Lock order
//!
//! There is one lock, and no other lock is taken while it is held. User code that still runs
//! under it: `K: Eq`, to find the entry of a key the caller passed in (admission, queueing,
//! limit changes, `stats`, `task_count`, `abort_group`), always before the transition changes
//! anything. That is safe because comparing two keys has no reason to reach the pool, and if
//! it panics the call fails with the state untouched (the mutex does not poison). Everything
//! else is kept out: keys are hashed before locking (`K: Hash`); keys for new entries are
//! moved in (a spawned task's own keys, a limit's key) or cloned before locking (`K: Clone`,
//! for permits, on a second try when the first found entries missing); wakers are cloned
//! before locking and woken and dropped after; removed keys and the keys of waiter records
//! are dropped after (a task record holds no key: a spawned task's keys not taken by new
//! entries are dropped right after its admission, outside the lock; a released task's abort
//! handle is dropped under the lock: the task holds its own reference while it releases, so
//! that drop only decrements a count and runs no task code); releases, cancellations and
//! grants find entries by their serial number, not by comparing keys. Tracing events are
//! emitted after unlocking. If `K`'s `Hash` or `Eq` is inconsistent, lookups by key may miss (as with
//! `std::collections::HashMap`), but an admission always releases the entries it counted in.

mod deferred;
mod group_table;
mod records;
mod slots;
mod state;
mod tasks;
mod waiters;

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use tokio::task::AbortHandle;

use crate::error::{Group, Refusal};
use crate::group_set::{GroupSet, Item, KeyIter, Spares};
use crate::limits::LimitChanges;
use crate::stats::GroupStats;
use crate::sync::{AtomicU64, Mutex};
use deferred::Deferred;
use records::RecordRef;
use state::{Batch, Held, IdlePolled, Keys, Polled, Refused, Started, State, WaiterRef};
use tasks::{Attached, TaskRef};

/// A small deterministic generator for the core's randomized unit tests (xorshift64).
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Formats a key for tracing events; set by [`Builder::log_keys`](crate::Builder::log_keys).
pub(crate) type KeyFmt<K> = fn(&K, &mut fmt::Formatter<'_>) -> fmt::Result;

/// The shared engine behind every clone of a [`TaskPool`](crate::TaskPool).
pub(crate) struct Core<K, S> {
    hasher: S,
    key_fmt: Option<KeyFmt<K>>,
    /// `State::closes`, for waiting admissions to note when they are made, without the lock.
    closes: AtomicU64,
    state: CacheLine<Mutex<State<K>>>,
}

/// Keeps the lock and the state it guards off the cache line of the `Arc`'s counts and of the
/// read-mostly hasher, which every admission reads outside the lock: without it, a release on
/// one core invalidates the line the other core is hashing keys from.
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
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

/// Proof of one admission held by the caller (a permit): counted in the total and in every
/// group of `groups` until dropped.
pub(crate) struct Admission<K: Eq, S> {
    core: Arc<Core<K, S>>,
    groups: GroupSet<K>,
}

impl<K: Eq, S> Admission<K, S> {
    /// The groups this admission counts in (the total is implicit), in the caller's order.
    pub(crate) fn groups(&self) -> KeyIter<'_, K> {
        self.groups.keys()
    }
}

impl<K: Eq, S> Drop for Admission<K, S> {
    fn drop(&mut self) {
        let mut out = Deferred::new();
        self.core
            .state
            .lock()
            .release(self.groups.iter().map(Item::entry), &mut out);
        out.finish();
    }
}

/// Proof of one spawned task's admission. Its groups live in the task record, so this guard,
/// which is moved into the task's future, is 16 bytes whatever the groups.
pub(crate) struct TaskAdmission<K: Eq, S> {
    core: Arc<Core<K, S>>,
    task: TaskRef,
}

impl<K: Eq, S> TaskAdmission<K, S> {
    /// The task record to attach the task's abort handle to, once spawned.
    pub(crate) fn task(&self) -> TaskRef {
        self.task
    }
}

impl<K: Eq, S> Drop for TaskAdmission<K, S> {
    fn drop(&mut self) {
        let mut out = Deferred::new();
        self.core.state.lock().release_task(self.task, &mut out);
        out.finish();
    }
}

/// What a waiting admission turns into once its future collects it (under the lock; no user
/// code runs).
pub(crate) trait Collect<K: Eq, S>: Sized {
    /// The admission is a task to be spawned: its waiter makes a task record when granted, so
    /// `abort_group` reaches it before its future has seen the grant.
    const TRACK: bool;

    fn collect(
        state: &mut State<K>,
        core: &Arc<Core<K, S>>,
        held: Held<K>,
        out: &mut Deferred<K>,
    ) -> Self;
}

impl<K: Eq, S> Collect<K, S> for Admission<K, S> {
    const TRACK: bool = false;

    fn collect(
        state: &mut State<K>,
        core: &Arc<Core<K, S>>,
        held: Held<K>,
        out: &mut Deferred<K>,
    ) -> Self {
        let groups = match held {
            Held::Groups(groups) => groups,
            // Not made for a permit (TRACK is false); handled rather than assumed.
            Held::Task(task) => state.untrack(task, out),
        };
        Admission {
            core: Arc::clone(core),
            groups,
        }
    }
}

impl<K: Eq, S> Collect<K, S> for TaskAdmission<K, S> {
    const TRACK: bool = true;

    fn collect(
        state: &mut State<K>,
        core: &Arc<Core<K, S>>,
        held: Held<K>,
        out: &mut Deferred<K>,
    ) -> Self {
        let task = match held {
            Held::Task(task) => task,
            // Admitted without waiting: the record is made now, under the same lock.
            Held::Groups(groups) => state.track(groups, out),
        };
        TaskAdmission {
            core: Arc::clone(core),
            task,
        }
    }
}

impl<K: Eq + Hash + Clone, S: BuildHasher> Core<K, S> {
    pub(crate) fn new(config: Config<K, S>) -> Self {
        let core = Self {
            hasher: config.hasher,
            key_fmt: config.key_fmt,
            closes: AtomicU64::new(0),
            state: CacheLine(Mutex::new(State::new(
                config.max_tasks,
                config.default_limit,
            ))),
        };
        let mut changes = LimitChanges::new();
        for (key, limit) in config.limits {
            changes = changes.limit(key, limit);
        }
        let mut batch = core.batch(changes);
        let mut out = Deferred::new();
        core.state.lock().set_limits(&mut batch, &mut out);
        debug_assert_eq!(out.woken(), 0, "a new pool has no waiters to wake");
        out.finish();
        core
    }

    /// Hashes and deduplicates the groups of one admission, outside the lock.
    pub(crate) fn group_set(&self, groups: impl IntoIterator<Item = K>) -> GroupSet<K> {
        GroupSet::new(groups, &self.hasher)
    }

    /// Hashes a batch of limit changes and keeps the last change of each key, outside the lock.
    fn batch(&self, changes: LimitChanges<K>) -> Batch<K> {
        let LimitChanges {
            max_tasks,
            default_limit,
            groups: changed,
        } = changes;
        let mut groups: Vec<(u64, K, Option<usize>)> = Vec::with_capacity(changed.len());
        // Index of each key's change in `groups`: O(1) per change, however large the batch.
        let mut seen: hashbrown::HashTable<usize> = hashbrown::HashTable::new();
        for (key, limit) in changed {
            let hash = self.hasher.hash_one(&key);
            let earlier = seen.find(hash, |&i| groups[i].1 == key).copied();
            match earlier {
                // The last change of a key wins; the key handed in last is dropped here.
                Some(i) => groups[i].2 = limit,
                None => {
                    seen.insert_unique(hash, groups.len(), |&i| groups[i].0);
                    groups.push((hash, key, limit));
                }
            }
        }
        Batch {
            max_tasks,
            default_limit,
            groups,
        }
    }

    /// Admits `groups` now as a permit if the total and every group have room and nobody waits
    /// for them, all or nothing.
    pub(crate) fn try_admit(
        core: &Arc<Self>,
        mut groups: GroupSet<K>,
    ) -> Result<Admission<K, S>, Refusal<K>> {
        let mut spares = Spares::default();
        loop {
            let admitted = {
                let mut state = core.state.lock();
                let admitted = state.try_admit(&mut groups, Keys::Spare(&mut spares));
                if let Err(refused @ (Refused::Closed | Refused::Total | Refused::Key { .. })) =
                    &admitted
                {
                    state.record_rejection(refused);
                }
                admitted
            };
            match admitted {
                Ok(()) => {
                    let admission = Admission {
                        core: Arc::clone(core),
                        groups,
                    };
                    // Spare keys left unused (another caller made their entries) go while the
                    // admission is still a local: if a drop panics, the admission is dropped
                    // in the unwinding, giving its slots back. Dropped as this returned, they
                    // leaked it (rust-lang/rust#47949).
                    drop(spares);
                    return Ok(admission);
                }
                // New entries need keys of their own; `K::clone` never runs under the lock.
                Err(Refused::NeedKeys(missing)) => spares.fill(&groups, &missing),
                Err(refused) => {
                    let refusal = core.refusal(&mut groups, refused);
                    drop(spares);
                    return Err(refusal);
                }
            }
        }
    }

    /// Like [`try_admit`](Self::try_admit), for a task about to be spawned: a task record keeps
    /// where its entries are (for release and `abort_group`), and its keys move into the
    /// entries it makes; the keys left in `groups` are the caller's to drop, after unlocking.
    /// Refused, `groups` are as they were: [`refusal`](Self::refusal) says which one refused.
    /// (`groups` is borrowed, not moved in and out: each move copied it.)
    #[inline]
    pub(crate) fn try_admit_task(
        core: &Arc<Self>,
        groups: &mut GroupSet<K>,
    ) -> Result<TaskAdmission<K, S>, Refused> {
        let admitted = {
            let mut state = core.state.lock();
            let admitted = state.try_admit_task(groups);
            if let Err(refused) = &admitted {
                state.record_rejection(refused);
            }
            admitted
        };
        admitted.map(|task| TaskAdmission {
            core: Arc::clone(core),
            task,
        })
    }

    /// Turns the reason a `try_*` was refused into the group to report (taking its key out of
    /// `groups`), and logs it.
    #[cold]
    pub(crate) fn refusal(&self, groups: &mut GroupSet<K>, refused: Refused) -> Refusal<K> {
        let mut position = None;
        let group = match refused {
            Refused::Closed => {
                tracing::debug!("task refused: pool closed");
                return Refusal::Closed;
            }
            Refused::Total => Group::Total,
            Refused::Key { index, .. } => match groups.take_key(index) {
                Some(key) => {
                    position = Some(index);
                    Group::Key(key)
                }
                None => {
                    debug_assert!(false, "refused at a position the group set does not have");
                    Group::Total
                }
            },
            Refused::NeedKeys(_) => {
                debug_assert!(false, "a missing key is not a refusal");
                Group::Total
            }
        };
        let label = Label {
            position,
            ..self.label(group.key())
        };
        tracing::debug!(group = ?label, "task refused: group full");
        Refusal::Full(group)
    }

    /// Returns a future that waits until `groups` can be admitted, as a permit's
    /// [`Admission`] or a [`TaskAdmission`].
    pub(crate) fn wait_admission<A: Collect<K, S>>(
        core: &Arc<Self>,
        groups: GroupSet<K>,
    ) -> WaitAdmission<K, S, A> {
        WaitAdmission {
            core: Arc::clone(core),
            closes_seen: core.closes.load(Ordering::Acquire),
            phase: WaitPhase::Start(groups),
            collect: PhantomData,
        }
    }

    /// Aborts the spawned tasks counted in `key` (every task if `None`); returns how many
    /// were signalled.
    pub(crate) fn abort(&self, key: Option<&K>) -> usize {
        let mut handles = Vec::new();
        let signalled = {
            let hashed = key.map(|key| (self.hasher.hash_one(key), key));
            self.state.lock().abort(hashed, &mut handles)
        };
        // Aborting schedules the task; done outside the lock (tokio may wake a worker), and
        // the handles are dropped here too.
        for handle in handles {
            handle.abort();
        }
        if let Some(key) = key {
            tracing::debug!(group = ?self.label(Some(key)), signalled, "group aborted");
        } else {
            tracing::debug!(signalled, "all tasks aborted");
        }
        signalled
    }

    pub(crate) fn stats(&self, key: &K) -> GroupStats {
        let hash = self.hasher.hash_one(key);
        self.state.lock().stats(hash, key)
    }

    /// A span naming the groups, for a task about to be spawned. Disabled (and not formatted)
    /// when no subscriber listens at `DEBUG`.
    pub(crate) fn task_span(&self, groups: &GroupSet<K>) -> tracing::Span {
        tracing::debug_span!(
            "taskherd.task",
            groups = ?Labels { groups, key_fmt: self.key_fmt }
        )
    }

    /// Applies a batch of limit changes as one (invariant 9).
    pub(crate) fn set_limits(&self, changes: LimitChanges<K>) {
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| changes.clone());
        // Declared before the lock is taken, so dropped after it is released if `K: Eq`
        // panics in a lookup (invariant 8).
        let mut batch = self.batch(changes);
        let mut out = Deferred::new();
        self.state.lock().set_limits(&mut batch, &mut out);
        let woken = out.woken();
        out.finish();
        if let Some(changes) = logged {
            tracing::debug!(
                changes = ?LoggedChanges { changes: &changes, key_fmt: self.key_fmt },
                woken,
                "limits changed"
            );
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
        self.state
            .lock()
            .find(hash, key)
            .map_or(0, |e| e.counts.running)
    }

    /// Waiting admissions that name `key` and are not granted yet (queued or holding a
    /// reservation in it).
    pub(crate) fn waiting_count(&self, key: &K) -> usize {
        let hash = self.hasher.hash_one(key);
        self.state
            .lock()
            .find(hash, key)
            .map_or(0, |e| e.counts.queued() + e.counts.reserved())
    }
}

impl<K: Eq, S> Core<K, S> {
    /// Attaches a spawned task's abort handle to its record; aborts it at once if an abort was
    /// requested while it was being spawned.
    pub(crate) fn attach(&self, task: TaskRef, abort: AbortHandle) {
        let attached = self.state.lock().attach(task, abort);
        match attached {
            Attached::Kept => {}
            Attached::Abort(abort) => abort.abort(),
            Attached::Ended(abort) => drop(abort),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().total.running
    }

    pub(crate) fn total_stats(&self) -> GroupStats {
        self.state.lock().total_stats()
    }

    pub(crate) fn close(&self) -> bool {
        let mut out = Deferred::new();
        let closed = {
            let mut state = self.state.lock();
            let closed = state.close(&mut out);
            // Before `close` returns: an admission made after it sees the new count.
            self.closes.store(state.closes, Ordering::Release);
            closed
        };
        let failed = out.woken();
        out.finish();
        if closed {
            tracing::debug!(woken = failed, "pool closed");
        }
        closed
    }

    pub(crate) fn reopen(&self) -> bool {
        let reopened = self.state.lock().reopen();
        if reopened {
            tracing::debug!("pool reopened");
        }
        reopened
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Returns a future that resolves once the pool is closed and nothing is counted in it.
    pub(crate) fn wait_idle(core: &Arc<Self>) -> WaitIdle<K, S> {
        let id = core.state.lock().register_idle();
        WaitIdle {
            core: Arc::clone(core),
            id: Some(id),
        }
    }

    /// Waiting admissions not granted yet.
    pub(crate) fn waiting_len(&self) -> usize {
        self.state.lock().waiting
    }

    pub(crate) fn max_tasks(&self) -> Option<usize> {
        self.state.lock().max_tasks
    }

    pub(crate) fn default_limit(&self) -> Option<usize> {
        self.state.lock().default_limit
    }

    /// A consistent snapshot for `Debug`.
    pub(crate) fn summary(&self) -> Summary {
        let state = self.state.lock();
        Summary {
            running: state.total.running,
            waiting: state.waiting,
            closed: state.closed,
            max_tasks: state.max_tasks,
            default_limit: state.default_limit,
            groups: state.groups.len(),
        }
    }

    fn label<'a>(&self, key: Option<&'a K>) -> Label<'a, K> {
        Label {
            key,
            key_fmt: self.key_fmt,
            position: None,
        }
    }
}

/// Pool-wide numbers taken under one lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) running: usize,
    pub(crate) waiting: usize,
    pub(crate) closed: bool,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) default_limit: Option<usize>,
    pub(crate) groups: usize,
}

/// A future that resolves to an admission once every group has a slot for it.
///
/// Cancel safe (invariant 6): dropping it gives back whatever it holds. Panic safe
/// (invariant 8): it changes its phase only after the call that could panic returned, so a
/// panic in user code leaves it owning exactly what the state says it holds, and its drop
/// gives that back.
pub(crate) struct WaitAdmission<K: Eq, S, A> {
    core: Arc<Core<K, S>>,
    /// How many times the pool had been closed when this was made: a `close` since fails it
    /// at its first poll, even if the pool was reopened in between.
    closes_seen: u64,
    phase: WaitPhase<K>,
    /// What the admission becomes: a permit's [`Admission`] or a [`TaskAdmission`].
    collect: PhantomData<fn() -> A>,
}

// Never pin-projected: the future is moved freely, whatever `K` is.
impl<K: Eq, S, A> Unpin for WaitAdmission<K, S, A> {}

impl<K: Eq, S, A> WaitAdmission<K, S, A> {
    /// The pool's core.
    pub(crate) fn core(&self) -> &Arc<Core<K, S>> {
        &self.core
    }
}

enum WaitPhase<K> {
    /// Not polled yet (or its first poll panicked before it queued).
    Start(GroupSet<K>),
    /// Queued as this waiter.
    Waiting(WaiterRef),
    /// Resolved; holds nothing.
    Done,
}

/// The pool was closed while waiting.
#[derive(Debug)]
pub(crate) struct Closed;

/// One poll's outcome, decided under the lock.
enum Step<A> {
    Ready(A),
    Closed,
    Waiting(WaiterRef),
    Pending,
    /// Clone keys outside the lock, then try again.
    NeedKeys(smallvec::SmallVec<[usize; 4]>),
    /// Clone the waker outside the lock, then try again.
    NeedWaker,
}

impl<K: Eq + Hash + Clone, S: BuildHasher, A: Collect<K, S>> Future for WaitAdmission<K, S, A> {
    type Output = Result<A, Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Also after a panic ended the poll that completed it: its admission was given back
        // during the unwinding, and there is nothing left to wait for.
        assert!(
            !matches!(this.phase, WaitPhase::Done),
            "a waiting admission polled after it completed"
        );
        // User code (`Waker::clone`, `K::clone`) runs only here, outside the lock, and before
        // anything changes; `K: Eq` runs under the lock before anything changes. A first poll
        // almost always needs a waker (it queues unless the groups have room): clone it now
        // rather than lock twice.
        let mut waker: Option<Waker> =
            matches!(this.phase, WaitPhase::Start(_)).then(|| cx.waker().clone());
        let mut spares = Spares::default();
        loop {
            let mut out = Deferred::new();
            let step = {
                let mut state = this.core.state.lock();
                match &mut this.phase {
                    WaitPhase::Start(groups) => {
                        match state.start_wait(
                            groups,
                            this.closes_seen,
                            &mut waker,
                            A::TRACK,
                            &mut spares,
                            &mut out,
                        ) {
                            Started::Admitted(held) => {
                                Step::Ready(A::collect(&mut state, &this.core, held, &mut out))
                            }
                            Started::Waiting(at) => Step::Waiting(at),
                            Started::Closed => Step::Closed,
                            Started::NeedKeys(missing) => Step::NeedKeys(missing),
                        }
                    }
                    WaitPhase::Waiting(at) => {
                        match state.poll_waiter(at, cx.waker(), &mut waker, &mut out) {
                            Polled::Ready(held) => {
                                Step::Ready(A::collect(&mut state, &this.core, held, &mut out))
                            }
                            Polled::Pending => Step::Pending,
                            Polled::NeedWaker => Step::NeedWaker,
                            Polled::Closed => Step::Closed,
                        }
                    }
                    // Checked before locking; not reached.
                    WaitPhase::Done => Step::Closed,
                }
            };
            // The phase follows the state at once, before anything that can panic (waking and
            // dropping what the transition left runs user code): a panic from here on leaves
            // the future owning exactly what the state says it holds.
            match &step {
                Step::Ready(_) | Step::Closed => this.phase = WaitPhase::Done,
                Step::Waiting(at) => this.phase = WaitPhase::Waiting(*at),
                Step::Pending | Step::NeedWaker | Step::NeedKeys(_) => {}
            }
            // The lock is released: wake and drop what the transition left.
            out.finish();
            match step {
                Step::NeedWaker => waker = Some(cx.waker().clone()),
                Step::NeedKeys(missing) => {
                    if let WaitPhase::Start(groups) = &this.phase {
                        spares.fill(groups, &missing);
                    }
                }
                done => {
                    // The waker copy and the spare keys go before the result is made: if a
                    // drop panics, the result (an admission) is still a local and is dropped
                    // in the unwinding, giving its slots back. Dropped as `poll` returned, they
                    // leaked it: a value being returned is not dropped when a local's
                    // destructor panics (rust-lang/rust#47949).
                    drop(waker);
                    drop(spares);
                    return match done {
                        Step::Ready(admission) => Poll::Ready(Ok(admission)),
                        Step::Closed => Poll::Ready(Err(Closed)),
                        _ => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl<K: Eq, S, A> Drop for WaitAdmission<K, S, A> {
    fn drop(&mut self) {
        if let WaitPhase::Waiting(at) = self.phase {
            let mut out = Deferred::new();
            self.core.state.lock().cancel(at, &mut out);
            out.finish();
        }
    }
}

/// A future that resolves once the pool is closed and nothing is counted in it (or was, at
/// some moment since it was created).
pub(crate) struct WaitIdle<K: Eq, S> {
    core: Arc<Core<K, S>>,
    /// Its registration among the pool's `wait` futures, until it resolves.
    id: Option<RecordRef>,
}

impl<K: Eq, S> Future for WaitIdle<K, S> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut waker = None;
        loop {
            let Some(at) = &mut this.id else {
                return Poll::Ready(());
            };
            let mut out = Deferred::new();
            let polled = this
                .core
                .state
                .lock()
                .poll_idle(at, cx.waker(), &mut waker, &mut out);
            out.finish();
            match polled {
                IdlePolled::Ready => {
                    this.id = None;
                    return Poll::Ready(());
                }
                IdlePolled::Pending => return Poll::Pending,
                IdlePolled::NeedWaker => waker = Some(cx.waker().clone()),
            }
        }
    }
}

impl<K: Eq, S> Drop for WaitIdle<K, S> {
    fn drop(&mut self) {
        if let Some(at) = self.id {
            let mut out = Deferred::new();
            self.core.state.lock().cancel_idle(at, &mut out);
            out.finish();
        }
    }
}

/// Shows a group in tracing events: its key if the pool can format keys, else a placeholder
/// (with the group's position among the admission's groups, if known).
struct Label<'a, K> {
    key: Option<&'a K>,
    key_fmt: Option<KeyFmt<K>>,
    /// The group's position among the admission's groups, repeats left out.
    position: Option<usize>,
}

impl<K> fmt::Debug for Label<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key, self.key_fmt) {
            (None, _) => f.write_str("total"),
            (Some(key), Some(key_fmt)) => key_fmt(key, f),
            (Some(_), None) => match self.position {
                Some(position) => write!(
                    f,
                    "<key at position {position}: build the pool with Builder::log_keys>"
                ),
                None => f.write_str("<key: build the pool with Builder::log_keys>"),
            },
        }
    }
}

/// Shows a task's groups in its tracing span.
struct Labels<'a, K> {
    groups: &'a GroupSet<K>,
    key_fmt: Option<KeyFmt<K>>,
}

impl<K> fmt::Debug for Labels<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key_fmt.is_none() {
            return write!(
                f,
                "{} groups (keys shown with Builder::log_keys)",
                self.groups.len()
            );
        }
        f.debug_list()
            .entries(self.groups.keys().map(|key| Label {
                key: Some(key),
                key_fmt: self.key_fmt,
                position: None,
            }))
            .finish()
    }
}

/// Shows a batch of limit changes in a tracing event, keys only if the pool can format them.
struct LoggedChanges<'a, K> {
    changes: &'a LimitChanges<K>,
    key_fmt: Option<KeyFmt<K>>,
}

impl<K> fmt::Debug for LoggedChanges<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let LimitChanges {
            max_tasks,
            default_limit,
            groups,
        } = self.changes;
        let mut list = f.debug_list();
        if let Some(limit) = max_tasks {
            list.entry(&format_args!("total: {limit:?}"));
        }
        if let Some(limit) = default_limit {
            list.entry(&format_args!("default: {limit:?}"));
        }
        for (key, limit) in groups {
            let label = Label {
                key: Some(key),
                key_fmt: self.key_fmt,
                position: None,
            };
            list.entry(&format_args!("{label:?}: {limit:?}"));
        }
        list.finish()
    }
}
