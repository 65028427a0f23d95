//! The admission core: counts, limits, waiters and the all-or-nothing admission decision.
//!
//! Everything here is synchronous except [`WaitAdmission`], a hand-written future over the
//! same state. [`Core`] owns one short critical section (a mutex around [`State`]) in which an
//! admission checks every group it names and, only if all have room, counts itself in all of
//! them. Release happens from [`Admission`]'s `Drop`, which is owned by the spawned task's future
//! or by a permit, so it runs exactly once on every exit: completion, panic, abort, or the
//! runtime dropping the task.
//!
//! # Invariants
//!
//! 1. For the total group and every named group `g`, `running(g)` equals the number of live
//!    admissions naming `g` (every admission names the total). A granted waiter whose future
//!    has not yet collected its admission is a live admission.
//! 2. A slot of `g` is taken (as an admission or a reservation) only while
//!    `running(g) + reserved(g) < limit(g)`, where a named group's limit is its explicit limit,
//!    else the pool's default limit, and no limit means no bound. Lowering a limit below the
//!    running count cancels nothing; new admissions wait or are refused until it is below.
//! 3. A `try_*` admission takes a slot in every group or in none, and a refused one changes no
//!    count and leaves no entry behind (the check phase only reads; the commit phase runs only
//!    after every check passed, under the same lock).
//! 4. An entry exists in the group table only while it has running admissions, reservations,
//!    queued waiters or an explicit limit, so memory is bounded by live state, not by the number
//!    of keys ever seen; the table's capacity is shrunk when it becomes mostly empty.
//! 5. Waiting is FIFO per group, and groups never keep free room while someone queues on them:
//!    if `queue(g)` is not empty then `running(g) + reserved(g) >= limit(g)`. Every transition
//!    that can make room (a release, a given-back reservation, a higher or cleared limit, a new
//!    default limit) hands it at once to the oldest waiters queued on `g` as reservations
//!    ("pumping"). So a slot freed in `g` goes to the oldest waiter on `g`, and a `try_*` call
//!    finds no room in any group with waiters (no barging). A waiter that holds a reservation in
//!    every group it names is granted at that moment, under the lock, not when it is polled.
//! 6. A dropped waiting future gives back its reservations (pumped to the next waiters) and
//!    its queue places; a granted waiter dropped before it saw the grant is released like any
//!    admission. No slot outlives the future that holds it.
//! 7. Cost per admission, per release and per cancellation is O(groups named), plus O(groups
//!    named by each waiter it grants); never O(waiters), O(groups in the pool) or O(tasks).
//!    Queues are intrusive lists through the waiters, so leaving one from the middle is O(1).
//! 8. Wakers are collected under the lock and woken after it is released.
//!
//! # Deadlock safety
//!
//! Waiting admission cannot deadlock, whatever the overlap of group sets. Take the oldest
//! waiter `W`. Every waiter queued in one of `W`'s groups arrived after `W`, so in each of `W`'s
//! groups `W` is at the head of the queue or already holds its reservation; a younger waiter can
//! hold a reservation in a group of `W`'s only if it was pumped one after `W` got its own (per
//! group FIFO), so younger waiters never hold a slot `W` is owed. The slots `W` still misses are
//! therefore held only by running admissions, and each one that ends is pumped to `W` first. So
//! `W` is granted once enough admissions end (or limits rise); then the next oldest waiter is the
//! oldest, and so on. The classic deadlock — `A` holds `x` and waits for `y` while `B` holds `y`
//! and waits for `x` — needs the younger of the two to hold a slot the older is owed, which the
//! per-group FIFO excludes. (A group whose limit is `0`, or whose running admissions never end,
//! makes its waiters wait for ever, by design, not by deadlock.)
//!
//! # Lock order
//!
//! There is one lock. No user code runs under it except `K`'s `Eq` (to find keys) and `K`'s
//! `Drop` (when an idle entry is reclaimed). Tracing events are emitted and wakers woken after it
//! is released. If `K`'s `Hash` or `Eq` panics or is inconsistent, counts may become wrong, as
//! with `std::collections::HashMap`, but there is no undefined behaviour and no deadlock (the
//! mutex does not poison).

mod state;
mod waiters;

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::{Group, Refusal};
use crate::group_set::GroupSet;
use crate::sync::Mutex;
use state::{Enqueued, Position, State, Wakers};

/// Formats a key for tracing events; set by [`Builder::log_keys`](crate::Builder::log_keys).
pub(crate) type KeyFmt<K> = fn(&K, &mut fmt::Formatter<'_>) -> fmt::Result;

/// The shared engine behind every clone of a [`TaskPool`](crate::TaskPool).
pub(crate) struct Core<K, S> {
    hasher: S,
    key_fmt: Option<KeyFmt<K>>,
    state: Mutex<State<K>>,
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

impl<K: Eq, S> Admission<K, S> {
    /// The groups this admission counts in (the total is implicit), in the caller's order.
    pub(crate) fn groups(&self) -> impl ExactSizeIterator<Item = &K> {
        self.groups.iter().map(|(_, key)| key)
    }
}

impl<K: Eq, S> Drop for Admission<K, S> {
    fn drop(&mut self) {
        let mut wakers = Wakers::new();
        self.core.state.lock().release(&self.groups, &mut wakers);
        wake_all(wakers);
    }
}

/// Wakes collected wakers; call only after the lock is released (invariant 8).
fn wake_all(wakers: Wakers) {
    for waker in wakers {
        waker.wake();
    }
}

impl<K: Eq + Hash + Clone, S: BuildHasher> Core<K, S> {
    pub(crate) fn new(config: Config<K, S>) -> Self {
        let mut state = State::new(config.max_tasks, config.default_limit);
        let mut wakers = Wakers::new();
        for (key, limit) in config.limits {
            let hash = config.hasher.hash_one(&key);
            state.set_limit(hash, key, Some(limit), &mut wakers);
        }
        debug_assert!(wakers.is_empty(), "a new pool has no waiters to wake");
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

    /// Admits `groups` now if the total and every group have room and nobody waits for them,
    /// all or nothing.
    pub(crate) fn try_admit(
        core: &Arc<Self>,
        groups: GroupSet<K>,
    ) -> Result<Admission<K, S>, Refusal<K>> {
        let refused_at = core.state.lock().try_admit(&groups);
        match refused_at {
            None => Ok(Admission {
                core: Arc::clone(core),
                groups,
            }),
            Some(position) => Err(Refusal::Full(core.refused_group(groups, position))),
        }
    }

    /// Turns the position a `try_*` was refused at into the group to report, and logs it.
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
            ?position,
            "task refused: group full"
        );
        group
    }

    /// Returns a future that waits until `groups` can be admitted.
    pub(crate) fn wait_admission(core: &Arc<Self>, groups: GroupSet<K>) -> WaitAdmission<K, S> {
        WaitAdmission {
            core: Arc::clone(core),
            phase: WaitPhase::Start(groups),
        }
    }

    pub(crate) fn set_limit(&self, key: K, limit: Option<usize>) {
        let hash = self.hasher.hash_one(&key);
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| key.clone());
        let mut wakers = Wakers::new();
        let running = self.state.lock().set_limit(hash, key, limit, &mut wakers);
        let woken = wakers.len();
        wake_all(wakers);
        if let Some(key) = logged {
            tracing::debug!(group = ?self.label(Some(&key)), ?limit, running, woken, "group limit changed");
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
            .map_or(0, |e| e.counts.queue.len() + e.counts.reserved)
    }
}

impl<K: Eq, S> Core<K, S> {
    pub(crate) fn len(&self) -> usize {
        self.state.lock().total.running
    }

    /// Waiting admissions not granted yet.
    pub(crate) fn waiting_len(&self) -> usize {
        let state = self.state.lock();
        state.total.queue.len() + state.total.reserved
    }

    pub(crate) fn set_max_tasks(&self, max_tasks: Option<usize>) {
        let mut wakers = Wakers::new();
        let running = {
            let mut state = self.state.lock();
            state.set_max_tasks(max_tasks, &mut wakers);
            state.total.running
        };
        let woken = wakers.len();
        wake_all(wakers);
        tracing::debug!(group = "total", limit = ?max_tasks, running, woken, "group limit changed");
    }

    pub(crate) fn max_tasks(&self) -> Option<usize> {
        self.state.lock().max_tasks
    }

    pub(crate) fn set_default_limit(&self, default_limit: Option<usize>) {
        let mut wakers = Wakers::new();
        self.state
            .lock()
            .set_default_limit(default_limit, &mut wakers);
        let woken = wakers.len();
        wake_all(wakers);
        tracing::debug!(limit = ?default_limit, woken, "default group limit changed");
    }

    pub(crate) fn default_limit(&self) -> Option<usize> {
        self.state.lock().default_limit
    }

    /// A consistent snapshot for `Debug`.
    pub(crate) fn summary(&self) -> Summary {
        let state = self.state.lock();
        Summary {
            running: state.total.running,
            waiting: state.total.queue.len() + state.total.reserved,
            max_tasks: state.max_tasks,
            default_limit: state.default_limit,
            groups: state.groups.len(),
        }
    }

    fn label<'a>(&self, key: Option<&'a K>) -> Label<'a, K> {
        Label {
            key,
            key_fmt: self.key_fmt,
        }
    }
}

/// Pool-wide numbers taken under one lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) running: usize,
    pub(crate) waiting: usize,
    pub(crate) max_tasks: Option<usize>,
    pub(crate) default_limit: Option<usize>,
    pub(crate) groups: usize,
}

/// A future that resolves to an admission once every group has a slot for it.
///
/// Cancel safe (invariant 6): dropping it gives back whatever it holds.
pub(crate) struct WaitAdmission<K: Eq, S> {
    core: Arc<Core<K, S>>,
    phase: WaitPhase<K>,
}

// Never pin-projected: the future is moved freely, whatever `K` is.
impl<K: Eq, S> Unpin for WaitAdmission<K, S> {}

enum WaitPhase<K> {
    /// Not polled yet.
    Start(GroupSet<K>),
    /// Queued as this waiter.
    Waiting(usize),
    /// Resolved; holds nothing.
    Done,
}

/// The pool was closed while waiting.
#[derive(Debug)]
pub(crate) struct Closed;

impl<K: Eq + Hash + Clone, S: BuildHasher> Future for WaitAdmission<K, S> {
    type Output = Result<Admission<K, S>, Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let groups = match std::mem::replace(&mut this.phase, WaitPhase::Done) {
            WaitPhase::Start(groups) => {
                let mut state = this.core.state.lock();
                if state.try_admit(&groups).is_some() {
                    match state.enqueue(groups, cx.waker().clone()) {
                        Enqueued::Waiting(id) => {
                            this.phase = WaitPhase::Waiting(id);
                            return Poll::Pending;
                        }
                        Enqueued::Admitted(groups) => groups,
                    }
                } else {
                    groups
                }
            }
            WaitPhase::Waiting(id) => match this.core.state.lock().poll_waiter(id, cx.waker()) {
                state::Poll::Ready(groups) => groups,
                state::Poll::Pending => {
                    this.phase = WaitPhase::Waiting(id);
                    return Poll::Pending;
                }
                state::Poll::Closed => return Poll::Ready(Err(Closed)),
            },
            WaitPhase::Done => {
                debug_assert!(false, "a waiting admission was polled after it resolved");
                return Poll::Ready(Err(Closed));
            }
        };
        Poll::Ready(Ok(Admission {
            core: Arc::clone(&this.core),
            groups,
        }))
    }
}

impl<K: Eq, S> Drop for WaitAdmission<K, S> {
    fn drop(&mut self) {
        if let WaitPhase::Waiting(id) = self.phase {
            let mut wakers = Wakers::new();
            self.core.state.lock().cancel(id, &mut wakers);
            wake_all(wakers);
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
