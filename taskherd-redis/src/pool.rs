//! The pool: `TaskPool`'s vocabulary over the Redis scripts.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::task::Poll;

use taskherd::backend::{self, TaskId, Tasks};
use taskherd::{
    AcquireError, Group, GroupStats, LimitChanges, SpawnError, TryAcquireError, TrySpawnError,
};
use tokio::task::JoinHandle;

use crate::builder::RedisPoolBuilder;
use crate::engine::{Admitted, Answer, Engine, Reads, Status, Unavailable, presumed_lost_after};
use crate::key::{InvalidKey, checked_segment};
use crate::lease::LeaseView;
use crate::life::{Hold, Life};
use crate::scripts::{LimitBatch, LimitsMode};
use crate::{RedisKey, RedisPermit, UnavailableError};

/// A pool of tasks and permits whose limits are shared by every process that opens a pool of
/// the same name on the same Redis.
///
/// The same semantics as [`TaskPool`](taskherd::TaskPool), across processes and machines:
/// an admission checks the total and every group it names and takes a slot in all or none, in
/// one server-side script; waiting is FIFO per group with one ticket order for the whole pool,
/// cancel safe and deadlock free. The differences come from the network:
///
/// - Calls that need Redis are `async` (one round trip each): `try_spawn(..).await`,
///   `try_acquire(..).await`, `set_limit(..).await`, `stats(..).await`. Admissions that the
///   process's callers make while its previous admission call is in flight go together in the
///   next call (at most 64): one round trip each, shared.
/// - Redis unreachable is its own error (`is_unavailable()` on `taskherd`'s error types, or
///   [`UnavailableError`]), never "full"; the work is handed back and nothing is admitted
///   without Redis. The pool reconnects by itself.
/// - Every admission is *leased*: its expiry is computed from the Redis server's clock, and
///   renewed for all of the process's admissions in one call every `lease / 3`. A process that
///   dies gives its slots back within the lease; one that loses its lease (a Redis restart
///   without persistence, a failover) finds out at the next renewal: its spawned task is
///   aborted (by default) and its permit's [`lost`](RedisPermit::lost) resolves. One paused
///   longer than its lease finds out as it resumes: a spawned task checks its lease's age
///   before each poll (and is aborted before the step runs), a permit when
///   [`is_lost`](RedisPermit::is_lost) is called or `lost` polled.
/// - Failing closed: a process that cannot get a renewal confirmed (Redis unreachable from it,
///   or too slow) presumes its leases lost once 90% of the lease has passed since the last
///   confirmed renewal was sent, the same way (tasks aborted, `lost` resolves), so that its
///   work stops before the rest of the fleet can reap those leases and admit others in its
///   place. The 10% margin covers the rate difference between this machine's clock and
///   Redis's (not a jump of Redis's clock). A waiting call presumes its place in the queues
///   lost at the same moment: it gives it up and queues again, which fails while Redis is
///   unreachable (the work handed back, [`is_unavailable`](taskherd::SpawnError::is_unavailable)).
///
/// Cheap to clone (an `Arc`); background tasks end when the last clone, permit and task of it
/// are gone. Needs a tokio runtime with the `time` driver.
///
/// # Redis Cluster
///
/// Every key of a pool is `taskherd:{<pool name>}:<suffix>`: one hash tag per pool, so each
/// script is legal on a cluster and one pool lives on one shard. Spread load over several
/// pools (different names) when one shard is not enough.
pub struct RedisPool<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    engine: Arc<Engine>,
    tasks: Tasks<K>,
    life: Arc<Life>,
}

/// How soon a woken waiter whose status poll failed (Redis unreachable for a moment) polls
/// again, unless woken before.
const POLL_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

impl<K> Clone for RedisPool<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for RedisPool<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("engine", &self.shared.engine)
            .field("closed", &self.shared.life.is_closed())
            .field("local_len", &self.shared.life.held())
            .finish_non_exhaustive()
    }
}

/// An id being admitted: released in the background if dropped before it was settled (the
/// call may have run in Redis even if its reply never came, or its future was dropped).
struct Pending {
    engine: Arc<Engine>,
    id: Option<String>,
    /// While its admission call is under way: where the answer comes. Dropped before the id
    /// is released (see `Drop`).
    answer: Option<Answer>,
}

impl Pending {
    fn new(engine: &Arc<Engine>) -> Self {
        Self::of(engine, engine.new_id())
    }

    /// `id`, admitted but not settled yet.
    fn of(engine: &Arc<Engine>, id: String) -> Self {
        Self {
            engine: Arc::clone(engine),
            id: Some(id),
            answer: None,
        }
    }

    fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// Sends the id's admission (in wait mode, registered as a waiter first) and waits for
    /// the answer.
    ///
    /// Cancel safety: if the future is dropped, the id is released when `self` is (see
    /// `Drop`).
    async fn admit(
        &mut self,
        wait: bool,
        segments: &[String],
        generation: u64,
    ) -> Result<Admitted, Unavailable> {
        let answer = self.answer.insert(self.engine.send_admission(
            self.id.as_deref().unwrap_or_default(),
            wait,
            segments,
            generation,
        )?);
        let admitted = answer
            .await
            .unwrap_or_else(|_| Err(Unavailable::lost("the admitter has ended")));
        self.answer = None;
        admitted
    }

    /// Settles the id: nothing to release (refused), or held by a guard from now on.
    fn settle(mut self) -> String {
        self.id.take().unwrap_or_default()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // The answer's receiver first: from then on the admitter finds the caller gone and
        // gives back what it recorded for the id itself; an answer sent before was recorded
        // before, and the release below takes it out (whatever order the caller's future
        // drops its parts in).
        drop(self.answer.take());
        if let Some(id) = self.id.take() {
            self.engine.release_later(id);
        }
    }
}

/// A spawned task's admission: dropped with the task, however it ends.
struct TaskGuard<K: Eq + Hash> {
    shared: Arc<Shared<K>>,
    id: String,
    task: TaskId,
    /// Dropped after the release is queued: `wait` resolves after it.
    _hold: Hold,
}

impl<K: Eq + Hash> Drop for TaskGuard<K> {
    fn drop(&mut self) {
        // The release first: forgetting the task drops its keys, user code that may panic
        // (invariant 8: the slot is given back all the same; the hold, a field, is dropped
        // during the unwinding too).
        self.shared
            .engine
            .release_later(std::mem::take(&mut self.id));
        self.shared.tasks.remove(self.task);
    }
}

/// Why an admission was not made.
enum Refused {
    Full(usize),
    Closed,
    Unavailable(UnavailableError),
}

impl From<Unavailable> for Refused {
    fn from(error: Unavailable) -> Self {
        Self::Unavailable(error.into())
    }
}

impl From<InvalidKey> for Refused {
    fn from(error: InvalidKey) -> Self {
        Self::Unavailable(error.into())
    }
}

/// The caller's groups without repeats (first occurrence wins), and their segments; an
/// error if a key's segment is invalid (see [`checked_segment`]).
fn dedup<K: RedisKey>(
    groups: impl IntoIterator<Item = K>,
) -> Result<(Vec<K>, Vec<String>), InvalidKey> {
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    let mut segments = Vec::new();
    for key in groups {
        let segment = checked_segment(&key)?;
        if seen.insert(segment.clone()) {
            segments.push(segment);
            keys.push(key);
        }
    }
    Ok((keys, segments))
}

/// The group a refusal names: 0 is the total, `i` the `i`-th key.
fn full_group<K>(mut keys: Vec<K>, at: usize) -> Group<K> {
    if at == 0 || at > keys.len() {
        Group::Total
    } else {
        Group::Key(keys.swap_remove(at - 1))
    }
}

impl<K> RedisPool<K> {
    /// Starts building a pool named `pool` on the Redis at `url` (`redis://`,
    /// `redis://user:password@host:port/db`, `rediss://` for TLS with the `tls` feature: see
    /// `RedisPoolBuilder::tls_root_certificates`).
    /// Credentials never appear in logs, errors or `Debug` output.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use taskherd_redis::RedisPool;
    ///
    /// # async fn run() -> Result<(), taskherd_redis::UnavailableError> {
    /// let pool: RedisPool<&str> = RedisPool::builder("redis://127.0.0.1/", "crawler")
    ///     .lease(Duration::from_secs(20))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(url: &str, pool: &str) -> RedisPoolBuilder<K> {
        RedisPoolBuilder::new(url, pool)
    }

    pub(crate) fn from_engine(engine: Arc<Engine>) -> Self {
        Self {
            shared: Arc::new(Shared {
                life: Arc::clone(&engine.life),
                engine,
                tasks: Tasks::default(),
            }),
        }
    }

    /// Whether a spawned task whose lease is lost is aborted, as set by
    /// [`abort_on_lost`](crate::RedisPoolBuilder::abort_on_lost) (`true` by default). Work
    /// guarded by a [`RedisPermit`](crate::RedisPermit) is the holder's to stop; code that
    /// holds permits for others (`taskherd-tower`'s layer) reads this to do as the pool does.
    #[must_use]
    pub fn aborts_on_lost(&self) -> bool {
        self.shared.engine.abort_on_lost
    }

    /// Leases of this process lost so far (tasks and permits): found gone by a renewal, or
    /// presumed lost once no renewal was confirmed for 90% of the lease.
    #[must_use]
    pub fn lost_leases(&self) -> u64 {
        self.shared.engine.lost_count()
    }

    /// Waiting `spawn`s and `acquire`s of this process that found their place in Redis's
    /// queues lost so far (a Redis restart without its data, a failover, a pause longer than
    /// the lease), or presumed it lost (no renewal confirmed for 90% of the lease); each
    /// queued again, behind everyone (or failed, Redis being unreachable). Like [`lost_leases`](Self::lost_leases),
    /// a sign that Redis lost its data, for a process that has work waiting but none running.
    #[must_use]
    pub fn lost_waits(&self) -> u64 {
        self.shared.engine.lost_waits()
    }

    /// Whether Redis, when this pool was built, was set to evict keys without an expiry when
    /// it is full (`maxmemory` set and `maxmemory-policy` one of the `allkeys-*` policies,
    /// read from `INFO memory`; `false` if Redis does not let this client read it). The
    /// pool's keys have no expiry: such a Redis may drop one of them (a limit, a count, a
    /// holder) when it runs out of memory, which the pool cannot tell from a key never
    /// written, and limits may then be exceeded. Use `maxmemory-policy noeviction` (Redis's
    /// default), or a `volatile-*` policy, for the Redis that holds pools (see
    /// [Redis's configuration](crate#rediss-configuration)). A warning is logged too
    /// (`tracing`). Read once, at build: a policy changed later is not seen.
    #[must_use]
    pub fn redis_evicts_keys(&self) -> bool {
        self.shared.engine.evicts
    }

    /// How many times this process has written its limits to restore
    /// ([`restore_limits`](crate::RedisPoolBuilder::restore_limits),
    /// [`restore_limits_with`](crate::RedisPoolBuilder::restore_limits_with)) after finding
    /// that Redis had lost the pool's limits since it saw them (gone, or written again in a
    /// new generation; see [Redis loses its data](crate#redis-loses-its-data)): a sign of a
    /// loss of Redis's data, for a process that wants to say so or do more. (In a fleet that
    /// still runs a version of this crate from before generations, each write of limits by
    /// such a process looks like a loss too, and is counted.)
    #[must_use]
    pub fn limits_restored(&self) -> u64 {
        self.shared.engine.limits_restored()
    }

    /// Waits until every release this process queued so far (tasks ended, permits dropped,
    /// waits cancelled) has reached Redis. Releases are sent in the background, so that no
    /// task's exit waits for a round trip; call this before a process exits, so that the fleet
    /// gets the slots back at once rather than when their leases expire. (A runtime shut down
    /// first drops its tasks, and the background task that would send their releases with
    /// them: their slots stay counted until their leases expire. Use
    /// [`shutdown`](Self::shutdown), or this, before the runtime ends.)
    ///
    /// While Redis is unreachable, it waits until it is back or the leases have expired.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the releases go on in the background.
    pub async fn flush(&self) {
        self.shared.engine.flush().await;
    }

    /// Stops this process's renewals, as if it were paused: its leases expire. For tests.
    #[doc(hidden)]
    pub fn stop_renewal(&self) {
        self.shared.engine.stop_renewal();
    }

    /// Refuses new admissions from this pool in this process (every clone of this handle; other
    /// processes, and other pools opened on the same name, are not affected) and fails its
    /// waiting `spawn`s and `acquire`s, which leave their queues. Running tasks and permits
    /// keep their slots.
    ///
    /// As with [`TaskPool::close`](taskherd::TaskPool::close), every admission call of this
    /// pool that has not returned yet fails with a closed error, even one whose slots Redis
    /// granted after this call (a `try_*` call in flight, a waiter granted meanwhile), and
    /// even if the pool is reopened before it returns (a call is made when `try_spawn`,
    /// `try_spawn_with`, `spawn`, `try_acquire` or `acquire` is called, not when its future is
    /// first polled):
    /// the slots are given back (in the background) and a `spawn`'s future is handed back,
    /// never polled. No admission is sent to Redis after this call. These refusals are decided
    /// in this process and never reach Redis, so the fleet's statistics
    /// ([`total_stats`](Self::total_stats)) do not count them (the in-process pool counts them
    /// in its total's `rejected`). So once [`wait`](Self::wait)
    /// resolves, nothing of this pool is admitted in this process until
    /// [`reopen`](Self::reopen). A waiting call leaves Redis's queues, and a call whose
    /// answer its future has not read yet gives its slots back, when its future next runs
    /// or is dropped (a waiting call is woken now); [`shutdown`](Self::shutdown) takes both
    /// out at once.
    ///
    /// Returns `true` if this call closed the pool, `false` if it was already closed.
    pub fn close(&self) -> bool {
        let closed = self.shared.life.close();
        if closed {
            self.shared.engine.wake_all();
        }
        closed
    }

    /// Whether [`close`](Self::close) was called (and [`reopen`](Self::reopen) not since).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.life.is_closed()
    }

    /// Reopens a pool closed in this process: it admits work again.
    ///
    /// Returns `true` if this call reopened the pool, `false` if it was open.
    pub fn reopen(&self) -> bool {
        self.shared.life.reopen()
    }

    /// The tasks running and permits held in this process from this pool (every clone of this
    /// handle). The fleet's count is [`len`](Self::len).
    #[must_use]
    pub fn local_len(&self) -> usize {
        self.shared.life.held()
    }

    /// Waits until this pool is closed in this process and nothing of it is held here: no
    /// task running, no permit held.
    ///
    /// Like [`TaskPool::wait`](taskherd::TaskPool::wait) (and `tokio_util`'s
    /// `TaskTracker::wait`), for this process's share of the fleet: it does not close the
    /// pool, and it does not resolve while the pool is open, even if nothing is held. Once
    /// the pool has been closed with nothing held at some moment after `wait` was called, the
    /// future resolves, even if the pool was reopened since. The releases of the last tasks
    /// and permits may still be on their way to Redis: [`flush`](Self::flush) waits for them
    /// ([`shutdown`](Self::shutdown) does both).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future changes nothing.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static + use<K> {
        self.shared.life.wait()
    }
}

impl<K: RedisKey + Eq + Hash + Send + Sync + 'static> RedisPool<K> {
    /// The caller's groups (without repeats) and one admission of them; no admission if a
    /// key's segment is invalid. `generation` is the pool's [`Life::generation`] when the
    /// call was made: closed since, the call fails as closed.
    async fn admit_groups(
        &self,
        groups: impl IntoIterator<Item = K>,
        wait: bool,
        generation: u64,
    ) -> (Vec<K>, Result<Held, Refused>) {
        match dedup(groups) {
            Ok((keys, segments)) => {
                let admitted = self.admit(&segments, wait, generation).await;
                (keys, admitted)
            }
            Err(invalid) => (Vec::new(), Err(invalid.into())),
        }
    }

    /// One try-mode or wait-mode admission of `segments`, with a fresh id, for a call made
    /// at `generation`.
    async fn admit(
        &self,
        segments: &[String],
        wait: bool,
        generation: u64,
    ) -> Result<Held, Refused> {
        let life = &self.shared.life;
        if life.closed_since(generation) {
            return Err(Refused::Closed);
        }
        let engine = &self.shared.engine;
        if !wait {
            let mut pending = Pending::new(engine);
            return match pending.admit(false, segments, generation).await? {
                // A holder already (renewed from the moment the answer arrived).
                Admitted::Now(lost) => self.granted(pending.settle(), lost, generation),
                Admitted::Full(at) => {
                    pending.settle();
                    // A call in flight when the pool closed fails as closed, whatever Redis
                    // answered.
                    if life.closed_since(generation) {
                        Err(Refused::Closed)
                    } else {
                        Err(Refused::Full(at))
                    }
                }
                // Not sent: nothing to release.
                Admitted::Closed => {
                    pending.settle();
                    Err(Refused::Closed)
                }
                Admitted::Waiting => Err(Refused::Unavailable(UnavailableError::new(
                    redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "admit.lua queued a try-mode call",
                    )),
                ))),
            };
        }
        loop {
            let mut pending = Pending::new(engine);
            let wake = engine.register_waiter(pending.id(), generation);
            // Checked after registering, on every round (a waiter that queues again after its
            // lease was lost included): a `close()` that set the flag before this reads it is
            // seen here; one after wakes the waiter just registered. Checked only before
            // registering, a `close()` in between would leave it waiting.
            if life.closed_since(generation) {
                engine.unregister_waiter(&pending.settle());
                return Err(Refused::Closed);
            }
            match pending.admit(true, segments, generation).await? {
                // A holder already (renewed from the moment the answer arrived).
                Admitted::Now(lost) => return self.granted(pending.settle(), lost, generation),
                // Marked queued already: renewed, and polled by the notifier.
                Admitted::Full(_) | Admitted::Waiting => {}
                // Not sent: nothing to release.
                Admitted::Closed => {
                    engine.unregister_waiter(&pending.settle());
                    return Err(Refused::Closed);
                }
            }
            // Since when its own polls have failed, if they do.
            let mut unreachable_since: Option<tokio::time::Instant> = None;
            // The retry's timer is woken by tokio's time driver, many timers at a time: with
            // the caller's waker as it is, its panic would abort the process (see `wakers`).
            let mut catching = crate::wakers::CatchingWaker::default();
            loop {
                match unreachable_since {
                    None => wake.notified().await,
                    // Its poll failed: tried again soon, or at the next wake-up.
                    Some(_) => {
                        let mut retry =
                            std::pin::pin!(tokio::time::timeout(POLL_RETRY, wake.notified()));
                        let _ = std::future::poll_fn(|cx| catching.poll(retry.as_mut(), cx)).await;
                    }
                }
                // Closed since the call was made, even if reopened since (`close` wakes every
                // waiter): it leaves the queues as it is dropped.
                if life.closed_since(generation) {
                    return Err(Refused::Closed);
                }
                let status = match engine.take_status(pending.id()) {
                    Some(status) => status,
                    None => match engine.poll_one(pending.id()).await {
                        Ok(polled) => {
                            unreachable_since = None;
                            polled
                        }
                        // An outage shorter than 90% of the lease keeps the place (it is
                        // renewed, or presumed lost by the expirer, which wakes this with
                        // `Gone`): only polls failing that long fail the call. An error
                        // Redis will repeat (`WRONGTYPE`, `NOPERM`) fails it at once.
                        Err(error) => {
                            let since =
                                *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                            if error.is_transient()
                                && since.elapsed() < presumed_lost_after(engine.lease)
                            {
                                tracing::debug!(
                                    error = %error.0,
                                    "a woken waiter's poll failed; retrying"
                                );
                                continue;
                            }
                            // A status the notifier recorded meanwhile (a grant) is not given up.
                            match engine.take_status(pending.id()) {
                                Some(status) => status,
                                None => return Err(error.into()),
                            }
                        }
                    },
                };
                match status {
                    Status::Waiting => {}
                    Status::Granted => {
                        let id = pending.settle();
                        let lost = engine.waiter_to_holder(&id, None, None);
                        return self.granted(id, lost, generation);
                    }
                    Status::Gone => {
                        // Its lease expired (Redis restarted, or this process was paused):
                        // queue again, behind everyone. The old id is released all the same
                        // (a no-op if it is really gone), so that it can never hold a slot.
                        drop(pending);
                        engine.waiter_lost();
                        tracing::warn!("a waiter's lease was lost; it queues again");
                        break;
                    }
                }
            }
        }
    }

    /// An admission Redis granted, counted in this process ([`Life::hold`]); given back
    /// instead if the pool was closed since the call was made at `generation` (see
    /// [`close`](Self::close)).
    fn granted(&self, id: String, lease: LeaseView, generation: u64) -> Result<Held, Refused> {
        let engine = &self.shared.engine;
        // Read: the caller's from now on (before `hold`, which a `shutdown` makes fail).
        engine.claim(&id);
        match self.shared.life.hold(generation) {
            Some(hold) => Ok(Held {
                id: Pending::of(engine, id),
                lease,
                hold,
            }),
            None => {
                engine.release_later(id);
                Err(Refused::Closed)
            }
        }
    }

    /// `held`, for a task; or, if its lease is lost already, the refusal its caller gets
    /// instead: a grant or an answer read after its lease could have expired (this process
    /// cut off from Redis, or the call not polled, meanwhile) would give a task aborted before
    /// its first poll, its future lost, so the future (or `make`) is handed back as when Redis
    /// is unreachable. `held`, dropped, releases the id (a no-op where Redis reaped it). A
    /// permit is handed out lost instead ([`RedisPermit::is_lost`]): its holder decides.
    fn unless_lost(&self, held: Held) -> Result<Held, Refused> {
        if held
            .lease
            .is_lost(&Arc::downgrade(&self.shared.engine), held.id.id())
        {
            return Err(Unavailable::lost(
                "the admission's lease was lost before its task could start (no renewal \
                 confirmed for 90% of the lease: Redis unreachable from this process, or the \
                 call not polled, meanwhile)",
            )
            .into());
        }
        Ok(held)
    }

    fn permit(&self, held: Held, groups: Vec<K>) -> RedisPermit<K> {
        let (id, lease, hold) = held.into_parts();
        RedisPermit {
            engine: Arc::clone(&self.shared.engine),
            id,
            groups,
            lease,
            _hold: hold,
        }
    }

    fn spawn_held<F>(&self, held: Held, groups: Vec<K>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.shared.tasks.insert(groups);
        // From here the task's guard releases the id.
        let (id, lease, hold) = held.into_parts();
        let guard = TaskGuard {
            shared: Arc::clone(&self.shared),
            id: id.clone(),
            task,
            _hold: hold,
        };
        let watched = watched(&self.shared.engine, id.clone(), lease, future);
        let handle = backend::spawn_guarded(guard, watched);
        self.shared.tasks.attach(task, handle.abort_handle());
        // A `shutdown` whose `abort_all` ran before the record above was made (the task was
        // admitted, then `make` ran or this thread was preempted) finds it here: the flag is
        // set before `abort_all` looks at the records.
        if self.shared.life.is_shutting_down() {
            handle.abort();
        }
        self.shared.engine.attach(&id, handle.abort_handle());
        handle
    }

    /// Spawns `future` now if the total and every group in `groups` have room in the whole
    /// fleet, all or nothing, in one round trip; otherwise hands it back.
    ///
    /// # Errors
    ///
    /// [`TrySpawnError`]: the first full group (the total first, then `groups` in order),
    /// closed, or unavailable (Redis unreachable, or a key whose segment is invalid: see
    /// [`RedisKey`]; nothing was admitted; or an admission whose lease was lost before its
    /// task could start: answered, then this process cut off from Redis, or the call not
    /// polled, for 90% of the lease). The future is in it.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future before it resolves drops `future` and gives back any
    /// slot its call took (in the background).
    pub fn try_spawn<I, F>(
        &self,
        groups: I,
        future: F,
    ) -> impl Future<Output = Result<JoinHandle<F::Output>, TrySpawnError<K, F>>>
    where
        I: IntoIterator<Item = K>,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let generation = self.shared.life.generation();
        async move {
            let (keys, admitted) = self.admit_groups(groups, false, generation).await;
            match admitted.and_then(|held| self.unless_lost(held)) {
                Ok(held) => Ok(self.spawn_held(held, keys, future)),
                Err(refused) => Err(try_spawn_error(refused, keys, future)),
            }
        }
    }

    /// Like [`try_spawn`](Self::try_spawn), but builds the future only once admitted: a
    /// refusal hands `make` back, uncalled.
    ///
    /// # Errors
    ///
    /// As [`try_spawn`](Self::try_spawn), with `make` in the error.
    ///
    /// # Cancel safety
    ///
    /// As [`try_spawn`](Self::try_spawn).
    pub fn try_spawn_with<I, M, F>(
        &self,
        groups: I,
        make: M,
    ) -> impl Future<Output = Result<JoinHandle<F::Output>, TrySpawnError<K, M>>>
    where
        I: IntoIterator<Item = K>,
        M: FnOnce() -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let generation = self.shared.life.generation();
        async move {
            let (keys, admitted) = self.admit_groups(groups, false, generation).await;
            match admitted.and_then(|held| self.unless_lost(held)) {
                Ok(held) => Ok(self.spawn_held(held, keys, make())),
                Err(refused) => Err(try_spawn_error(refused, keys, make)),
            }
        }
    }

    /// Waits until the total and every group in `groups` have room for `future` in the whole
    /// fleet, then spawns it. FIFO per group across every process; a `try_*` call never takes
    /// a slot a waiter is owed.
    ///
    /// # Errors
    ///
    /// [`SpawnError`] if this pool is closed while it waits, or Redis is unreachable (or a
    /// key's segment is invalid: see [`RedisKey`]); the future is in it. Unreachable means:
    /// when the call is made, or, once it waits, for 90% of its lease (no renewal confirmed:
    /// it gives up its place in the queues, as a holder presumes its lease lost, and its try
    /// to queue again fails; a grant read only after that, its lease presumed lost, fails
    /// the same way rather than spawn a task aborted before it runs). An outage shorter than
    /// that keeps its place; so does a Redis
    /// answering `BUSY`, `LOADING`, `OOM` or a failover's errors. An error Redis will repeat
    /// until someone intervenes (`NOPERM` after an ACL change, `WRONGTYPE` from a key
    /// overwritten by something else) fails the call as soon as it is seen.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the returned future takes it out of every queue and hands any
    /// slot it was promised to the next waiter, in one `release.lua` call sent at once in the
    /// background (while Redis is unreachable from this process, the waiter keeps its place
    /// until that call lands or its lease expires).
    pub fn spawn<I, F>(
        &self,
        groups: I,
        future: F,
    ) -> impl Future<Output = Result<JoinHandle<F::Output>, SpawnError<F>>>
    where
        I: IntoIterator<Item = K>,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let generation = self.shared.life.generation();
        async move {
            let (keys, admitted) = self.admit_groups(groups, true, generation).await;
            match admitted.and_then(|held| self.unless_lost(held)) {
                Ok(held) => Ok(self.spawn_held(held, keys, future)),
                Err(Refused::Closed | Refused::Full(_)) => Err(backend::spawn_closed(future)),
                Err(Refused::Unavailable(error)) => Err(backend::spawn_unavailable(error, future)),
            }
        }
    }

    /// A permit now if the total and every group in `groups` have room in the whole fleet,
    /// all or nothing, in one round trip.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError`]: the first full group, closed, or unavailable (Redis unreachable,
    /// or a key's segment is invalid: see [`RedisKey`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future gives back any slot its call took (in the background).
    pub fn try_acquire<I>(
        &self,
        groups: I,
    ) -> impl Future<Output = Result<RedisPermit<K>, TryAcquireError<K>>>
    where
        I: IntoIterator<Item = K>,
    {
        let generation = self.shared.life.generation();
        async move {
            match self.admit_groups(groups, false, generation).await {
                (keys, Ok(held)) => Ok(self.permit(held, keys)),
                (keys, Err(Refused::Full(at))) => {
                    Err(backend::try_acquire_full(full_group(keys, at)))
                }
                (_, Err(Refused::Closed)) => Err(backend::try_acquire_closed()),
                (_, Err(Refused::Unavailable(error))) => {
                    Err(backend::try_acquire_unavailable(error))
                }
            }
        }
    }

    /// Waits for a permit in `groups` (FIFO per group across the fleet).
    ///
    /// # Errors
    ///
    /// [`AcquireError`] if this pool is closed while it waits, or Redis is unreachable (or a
    /// key's segment is invalid: see [`RedisKey`]), as for [`spawn`](Self::spawn).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: as [`spawn`](Self::spawn).
    pub fn acquire<I>(
        &self,
        groups: I,
    ) -> impl Future<Output = Result<RedisPermit<K>, AcquireError>>
    where
        I: IntoIterator<Item = K>,
    {
        let generation = self.shared.life.generation();
        async move {
            match self.admit_groups(groups, true, generation).await {
                (keys, Ok(held)) => Ok(self.permit(held, keys)),
                (_, Err(Refused::Closed | Refused::Full(_))) => Err(backend::acquire_closed()),
                (_, Err(Refused::Unavailable(error))) => Err(backend::acquire_unavailable(error)),
            }
        }
    }

    /// Applies several limit changes as one, for the whole fleet: every value, then the
    /// take-back of promised slots above lowered limits, then one hand-out of the room made,
    /// in one script call. Returns how many waiters it granted.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`]; then nothing changed, or everything did (the script is atomic).
    /// Nothing changed if a key's segment is invalid ([`UnavailableError::is_invalid_key`]).
    pub async fn set_limits(&self, changes: LimitChanges<K>) -> Result<usize, UnavailableError> {
        // The last change of a segment wins; each is sent once, in first-seen order.
        let batch = LimitBatch::of(changes)?;
        let granted = self
            .shared
            .engine
            .set_limits(&batch, LimitsMode::Set)
            .await?;
        Ok(granted.unwrap_or(0))
    }

    /// Applies `changes` as [`set_limits`](Self::set_limits) does, but only to a pool that has
    /// no limits: never set, or lost with Redis's data (see
    /// [Redis loses its data](crate#redis-loses-its-data)); checked in the same script call.
    /// Returns whether they were written (`false`: the pool had limits, left as they are).
    /// [`RedisPoolBuilder::restore_limits`](crate::RedisPoolBuilder::restore_limits) does
    /// this by itself when the pool is built, and [`fill_limits`](Self::fill_limits) when it
    /// finds the limits lost later.
    ///
    /// # Errors
    ///
    /// As [`set_limits`](Self::set_limits).
    pub async fn restore_limits(&self, changes: LimitChanges<K>) -> Result<bool, UnavailableError> {
        let batch = LimitBatch::of(changes)?;
        let granted = self
            .shared
            .engine
            .set_limits(&batch, LimitsMode::Restore)
            .await?;
        Ok(granted.is_some())
    }

    /// Applies each of `changes` only where the pool has no such limit (the total, the
    /// default, a group's explicit limit), in one script call; the others are left as they
    /// are. For a process that knows the fleet's limits and finds some of them lost with
    /// Redis's data while others were written again since (`taskherd run --redis` does
    /// this); a "no limit" in `changes` changes nothing.
    ///
    /// # Errors
    ///
    /// As [`set_limits`](Self::set_limits).
    pub async fn fill_limits(&self, changes: LimitChanges<K>) -> Result<(), UnavailableError> {
        let batch = LimitBatch::of(changes)?;
        self.shared
            .engine
            .set_limits(&batch, LimitsMode::Fill)
            .await?;
        Ok(())
    }

    /// Sets (or with `None` removes) the explicit limit of group `key` for the whole fleet.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`] (also if `key`'s segment is invalid: see [`RedisKey`]).
    pub async fn set_limit(
        &self,
        key: K,
        limit: impl Into<Option<usize>>,
    ) -> Result<(), UnavailableError> {
        self.set_limits(LimitChanges::<K>::new().limit(key, limit))
            .await
            .map(drop)
    }

    /// Removes the explicit limit of group `key` (the default limit applies again).
    ///
    /// # Errors
    ///
    /// [`UnavailableError`] (also if `key`'s segment is invalid: see [`RedisKey`]).
    pub async fn clear_limit(&self, key: &K) -> Result<(), UnavailableError> {
        let segment = checked_segment(key)?;
        self.shared
            .engine
            .set_limits(&LimitBatch::clear(segment), LimitsMode::Set)
            .await?;
        Ok(())
    }

    /// Sets (or removes) the limit of every named group without an explicit one.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`].
    pub async fn set_default_limit(
        &self,
        limit: impl Into<Option<usize>>,
    ) -> Result<(), UnavailableError> {
        self.set_limits(LimitChanges::<K>::new().default_limit(limit))
            .await
            .map(drop)
    }

    /// Sets (or removes) the total's limit.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`].
    pub async fn set_max_tasks(
        &self,
        max_tasks: impl Into<Option<usize>>,
    ) -> Result<(), UnavailableError> {
        self.set_limits(LimitChanges::<K>::new().max_tasks(max_tasks))
            .await
            .map(drop)
    }

    /// The explicit limit of group `key` (not the default limit: see
    /// [`stats`](Self::stats) for the limit in force).
    ///
    /// # Errors
    ///
    /// [`UnavailableError`] (also if `key`'s segment is invalid: see [`RedisKey`]).
    pub async fn limit(&self, key: &K) -> Result<Option<usize>, UnavailableError> {
        let field = format!("g:{}", checked_segment(key)?);
        Ok(self.shared.engine.limit_field(&field).await?)
    }

    /// The total's limit.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`].
    pub async fn max_tasks(&self) -> Result<Option<usize>, UnavailableError> {
        Ok(self.shared.engine.limit_field("t").await?)
    }

    /// The default limit.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`].
    pub async fn default_limit(&self) -> Result<Option<usize>, UnavailableError> {
        Ok(self.shared.engine.limit_field("d").await?)
    }

    /// Admissions counted in group `key` across the fleet.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`] (also if `key`'s segment is invalid: see [`RedisKey`]).
    pub async fn task_count(&self, key: &K) -> Result<usize, UnavailableError> {
        Ok(self.group_row(key, Reads::Counts).await?.running)
    }

    /// Statistics of group `key` across the fleet, in one consistent snapshot.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`] (also if `key`'s segment is invalid: see [`RedisKey`]), with
    /// [`is_forgotten`](UnavailableError::is_forgotten) if this process has seen the pool's
    /// limits set and Redis has lost them since: the statistics name the limit in force,
    /// which would read "none" (see [Redis loses its data](crate#redis-loses-its-data)). So
    /// does [`effective_limit`](Self::effective_limit); the reads of counts alone
    /// ([`task_count`](Self::task_count), [`waiting_count`](Self::waiting_count)) do not.
    pub async fn stats(&self, key: &K) -> Result<GroupStats, UnavailableError> {
        self.group_row(key, Reads::Limits).await
    }

    /// The statistics of group `key` (`stats.lua`), failing as forgotten if `reads` includes
    /// a limit.
    async fn group_row(&self, key: &K, reads: Reads) -> Result<GroupStats, UnavailableError> {
        let segments = [checked_segment(key)?];
        let rows = self.shared.engine.stats(&segments, reads).await?;
        Ok(rows.get(1).copied().unwrap_or_default())
    }

    /// The statistics of the total (`stats.lua`), failing as forgotten if `reads` includes a
    /// limit.
    async fn total_row(&self, reads: Reads) -> Result<GroupStats, UnavailableError> {
        let rows = self.shared.engine.stats(&[], reads).await?;
        Ok(rows.first().copied().unwrap_or_default())
    }

    /// Statistics of the total across the fleet. Its `rejected` counts the refusals Redis
    /// decided (a full group or total); a call refused because its own process closed the
    /// pool is not sent to Redis and not counted (see [`close`](Self::close)).
    ///
    /// # Errors
    ///
    /// [`UnavailableError`], with [`is_forgotten`](UnavailableError::is_forgotten) as for
    /// [`stats`](Self::stats) (not so [`len`](Self::len), [`is_empty`](Self::is_empty) and
    /// [`waiting_len`](Self::waiting_len), which read counts alone).
    pub async fn total_stats(&self) -> Result<GroupStats, UnavailableError> {
        self.total_row(Reads::Limits).await
    }

    /// Admissions counted in the total across the fleet: tasks and permits of every process.
    /// This process's share is [`local_len`](Self::local_len).
    ///
    /// # Errors
    ///
    /// [`UnavailableError`].
    pub async fn len(&self) -> Result<usize, UnavailableError> {
        Ok(self.total_row(Reads::Counts).await?.running)
    }

    /// Whether nothing is counted in the total across the fleet.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`].
    pub async fn is_empty(&self) -> Result<bool, UnavailableError> {
        Ok(self.len().await? == 0)
    }

    /// The limit in force for group `key` across the fleet: its explicit limit, else the
    /// default limit.
    ///
    /// # Errors
    ///
    /// [`UnavailableError`] (also if `key`'s segment is invalid: see [`RedisKey`]), with
    /// [`is_forgotten`](UnavailableError::is_forgotten) as for [`stats`](Self::stats).
    pub async fn effective_limit(&self, key: &K) -> Result<Option<usize>, UnavailableError> {
        Ok(self.group_row(key, Reads::Limits).await?.limit)
    }

    /// Waiting `spawn`s and `acquire`s of every process that name group `key` (queued for
    /// it, or holding a slot of it promised to them while they wait for another group).
    ///
    /// # Errors
    ///
    /// [`UnavailableError`] (also if `key`'s segment is invalid: see [`RedisKey`]).
    pub async fn waiting_count(&self, key: &K) -> Result<usize, UnavailableError> {
        Ok(self.group_row(key, Reads::Counts).await?.waiting)
    }

    /// Waiting `spawn`s and `acquire`s in the whole pool, across the fleet. Not counted in
    /// [`len`](Self::len).
    ///
    /// # Errors
    ///
    /// [`UnavailableError`].
    pub async fn waiting_len(&self) -> Result<usize, UnavailableError> {
        Ok(self.total_row(Reads::Counts).await?.waiting)
    }

    /// Shuts this process's share of the pool down: closes it here, aborts the tasks this
    /// process spawned from it (a task admitted before and spawned after is aborted as it is
    /// spawned), takes this process's waiters out of Redis's queues and gives back what
    /// Redis granted calls whose futures have not read the answer yet (whether or not those
    /// futures run again), waits until no task runs and no permit is held (permits are their
    /// holders' to drop), then waits until every release has reached Redis, so that the fleet
    /// gets the slots back at once. Call it before a process exits: nothing of this process is
    /// then left counted or queued in Redis. Other processes go on.
    ///
    /// While Redis is unreachable, the last step waits until it is back or the leases have
    /// expired (see [`flush`](Self::flush)).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future stops only the waiting. If it was polled, the pool
    /// stays closed, its tasks stay aborted, and its waiters and unread admissions are still
    /// given back (by the pool's background task, once the admission call in flight, if any,
    /// has been answered); nothing happens before the first poll.
    pub async fn shutdown(&self) {
        // The calls made before this are closed since `closed_at`; one made after a `reopen`
        // racing with this is not, and keeps its place.
        let (closed, closed_at, wait) = self.shared.life.begin_shutdown();
        if closed {
            self.shared.engine.wake_all();
        }
        self.abort_all();
        // No admission is sent once closed; the one in flight, if any, has run in Redis after
        // this. Then the waiters it (or an earlier call) queued are released behind it, on the
        // same connection, whether or not their futures run again before the process exits.
        self.shared
            .engine
            .release_unclaimed_once_admitted(closed_at)
            .await;
        wait.await;
        self.flush().await;
    }

    /// Aborts the tasks this process spawned in group `key`; returns how many.
    pub fn abort_group(&self, key: &K) -> usize {
        self.shared.tasks.abort_group(key)
    }

    /// Aborts every task this process spawned from this pool; returns how many.
    pub fn abort_all(&self) -> usize {
        self.shared.tasks.abort_all()
    }
}

/// `future`, its lease (`lease`, of holder `id`) checked before each poll: a task woken after
/// a pause of its process longer than its lease is presumed lost before its next step runs,
/// so that the step does not run uncounted (the expirer, which would find it a moment later,
/// may be scheduled after it). If the pool aborts tasks of lost leases, a task whose lease is
/// lost has been aborted (by whoever found the loss, or by [`Engine::attach`] if the task is
/// not attached yet), and the step is not run: the abort takes effect as this poll returns.
/// Otherwise it goes on, the loss counted.
///
/// Costs a clock read and an atomic load per poll; the engine's lock only for a lease that
/// looks overdue (see [`LeaseView::is_lost`]).
fn watched<F: Future>(
    engine: &Arc<Engine>,
    id: String,
    lease: LeaseView,
    future: F,
) -> impl Future<Output = F::Output> + use<F> {
    let abort_on_lost = engine.abort_on_lost;
    let engine = Arc::downgrade(engine);
    async move {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            // Checked with `abort_on_lost(false)` too: the loss is counted and said before
            // the step runs uncounted.
            if lease.is_lost(&engine, &id) && abort_on_lost {
                return Poll::Pending;
            }
            future.as_mut().poll(cx)
        })
        .await
    }
}

/// The error of a refused `try_spawn`, with `inner` handed back.
fn try_spawn_error<K, T>(refused: Refused, keys: Vec<K>, inner: T) -> TrySpawnError<K, T> {
    match refused {
        Refused::Full(at) => backend::try_spawn_full(full_group(keys, at), inner),
        Refused::Closed => backend::try_spawn_closed(inner),
        Refused::Unavailable(error) => backend::try_spawn_unavailable(error, inner),
    }
}

/// An admission made: its id, its lost signal, and its count in this process. The id is
/// released in the background if dropped before a permit or a task's guard took it over
/// (`make` of `try_spawn_with`, or a key's `Hash`, panicked in between).
struct Held {
    id: Pending,
    lease: LeaseView,
    hold: Hold,
}

impl Held {
    /// The id, the lease (its lost signal and age) and the count, for the permit or task
    /// guard that releases the id.
    fn into_parts(self) -> (String, LeaseView, Hold) {
        (self.id.settle(), self.lease, self.hold)
    }
}
