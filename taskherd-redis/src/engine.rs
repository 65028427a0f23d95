//! The engine behind every clone of a [`RedisPool`](crate::RedisPool): the connection, this
//! process's holders and waiters, and the background tasks that renew, reap, release and
//! wake.
//!
//! Nothing here decides admission: every decision is one script call (see [`scripts`]).
//! The engine keeps what the process must know locally:
//!
//! - its **holders** (admitted ids, with the signal a permit watches and the abort handle of a
//!   spawned task), renewed all together in one `renew.lua` call every `lease / 3`; an
//!   **expirer** presumes a holder lost (fail closed) once no renewal of it has been confirmed
//!   for [`presumed_lost_after`] the lease, counted from when the last confirmed call was
//!   *sent* (so a process cut off from Redis stops its work before the fleet reaps it);
//! - its **waiters** (ids queued in Redis), renewed with the holders and woken by the
//!   notifier, which `BLPOP`s this process's list `n:<process>` on a connection of its own and,
//!   every second whatever arrives, polls every local waiter in one `poll.lua` call;
//! - an **admitter** that sends the admissions of callers who come together in one
//!   `admit.lua` call (a caller waits for the call in flight at most: with one caller, each
//!   admission is its own call), and releases what a caller that went away was given;
//! - a **releaser** that batches the ids of ended holders and cancelled waiters into one
//!   `release.lua` call, retrying while Redis is unreachable until the lease would have
//!   expired anyway; dropping a guard only queues its id, so a task's exit never blocks. The
//!   admitter's next call takes the ids queued and not yet taken, and releases them before
//!   its admissions (after the releaser's call in flight, if any, was answered): what this
//!   process gave back is free for what it asks next.
//!
//! Background tasks hold a `Weak` reference and end once the last pool, permit and task of
//! this engine are gone (the releaser ends once it has flushed the ids queued before that).
//!
//! # Deadlock safety
//!
//! `local` is the only lock, and no user code runs while it is held (invariant 8 of the
//! design): under it the engine only reads and moves its own records. Signalling a holder's
//! lost flag, waking a waiter's `Notify` (both run the wakers of whoever waits on them), and
//! dropping a removed holder (its watch sender wakes its receivers, and its abort handle may
//! be the last reference to a task whose future holds a permit) all happen after the guard is
//! dropped. A waker that drops a permit re-enters [`Engine::release_later`], which takes the
//! lock again: under the lock, that would deadlock the whole pool.
//!
//! # Wakers that panic
//!
//! A waker is user code too, and may panic when woken (or dropped). Every place that wakes
//! another caller's waker (a reply handed to an admission call, a flush or shutdown told it is
//! done, a waiter woken, a lost lease told) does it through [`woken`], which catches the
//! panic (see [`crate::wakers`]): otherwise it would end the background task that woke it (the admitter, renewer, expirer,
//! notifier or releaser: every later caller of the pool would fail or wait for ever), leave
//! the other holders of the same batch untold (their tasks never aborted), or come out of an
//! unrelated call (a permit's `is_lost()` that presumed another lease lost, `close()`).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::generation::{CaughtUp, Generations, Restore};
use crate::lease::{LeaseView, ValidFrom};
use crate::life::Life;
use crate::scripts::{self, LimitBatch, LimitsMode, REAP_BATCH};
use crate::wakers::{caught, woken};

/// How often expired leases are reaped (by every process: whoever comes first does it).
const REAP_EVERY: Duration = Duration::from_millis(500);

/// How long after the last confirmed renewal of a holder was sent (or its admission, if none
/// was confirmed yet) this process presumes its lease lost: 90% of the lease. Redis computes
/// the expiry from its own clock when it runs the call, which is after the call was sent, so
/// the lease cannot have expired in Redis before this, as long as the two clocks run at rates
/// within 10% of each other (a margin far above real clock drift) and Redis's clock does not
/// jump. The expirer also runs at least every tenth of a lease.
pub(crate) fn presumed_lost_after(lease: Duration) -> Duration {
    lease - lease / 10
}
/// How long the notifier blocks on its list before polling every local waiter.
const NOTIFY_TIMEOUT_SECS: f64 = 1.0;

/// Redis could not be reached, or answered with an error; or (`forgotten`) Redis has lost the
/// pool's data, limits included, since this process saw them set.
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) redis::RedisError, pub(crate) bool);

/// Why `admit.lua` admitted nothing: the pool's limits are gone from Redis.
pub(crate) const FORGOTTEN: &str = "Redis has lost this pool's data since this process saw its limits \
     set (restarted without persistence, flushed, or failed over to a replica that lacked \
     them): nothing is admitted until the limits are set again";

impl Unavailable {
    /// An error of the client's own making (a reply it cannot read, a task that ended).
    pub(crate) fn lost(what: &'static str) -> Self {
        Self(
            redis::RedisError::from((redis::ErrorKind::Client, what)),
            false,
        )
    }

    /// Redis has lost the pool's limits (`admit.lua` answered -1, or a read found them gone).
    pub(crate) fn forgotten() -> Self {
        Self(
            redis::RedisError::from((redis::ErrorKind::Client, FORGOTTEN)),
            true,
        )
    }

    /// Whether the same call can succeed later with nobody changing Redis's data or
    /// configuration: the connection failed, was refused or timed out, or the server is
    /// loading, failing over, busy with a long script (`BUSY`) or out of memory (`OOM`).
    /// Not: errors Redis will repeat until someone intervenes (a script error, `WRONGTYPE`,
    /// `NOPERM` after an ACL change) and the client's own (a reply it cannot read, a task
    /// that ended).
    pub(crate) fn is_transient(&self) -> bool {
        match self.0.retry_method() {
            redis::RetryMethod::NoRetry => matches!(self.0.code(), Some("BUSY" | "OOM")),
            _ => true,
        }
    }

    /// The same error again, for each caller of a shared call.
    fn copy(&self) -> Self {
        if self.1 {
            return Self::forgotten();
        }
        Self(
            redis::RedisError::from((self.0.kind(), "admission call failed", self.0.to_string())),
            false,
        )
    }
}

impl From<redis::RedisError> for Unavailable {
    fn from(error: redis::RedisError) -> Self {
        Self(error, false)
    }
}

/// What an admission script call decided, for one admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Now,
    Full(usize),
    Waiting,
}

/// What an admission came to, as its caller reads it.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// The id holds a lease, already a holder of this process (renewed from the moment the
    /// answer arrived): its lost signal and age, for its permit or task.
    Now(LeaseView),
    /// Refused: 0 for the total, `i` for the `i`-th segment (1-based).
    Full(usize),
    /// The id is a waiter, already marked queued (renewed, and polled by the notifier).
    Waiting,
    /// Not sent: the pool was closed in this process when the admitter took the request.
    Closed,
}

/// A waiter's state, from `poll.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Granted,
    Waiting,
    Gone,
}

/// Where the answer to an admission comes (see [`Engine::send_admission`]).
pub(crate) type Answer = oneshot::Receiver<Result<Admitted, Unavailable>>;

/// An admission for the admitter.
struct AdmitRequest {
    id: String,
    wait: bool,
    segments: Vec<String>,
    /// The pool's [`Life::generation`] when the call was made.
    generation: u64,
    reply: oneshot::Sender<Result<Admitted, Unavailable>>,
}

/// A message to the admitter.
enum ToAdmitter {
    Admit(AdmitRequest),
    /// Answer once every admission sent before this message has been answered (its call, if
    /// any, has run in Redis), after releasing the calls made before generation `.1`, if set
    /// (see [`Engine::release_unclaimed`]): done by the admitter, so that it happens even if
    /// whoever sent this stops waiting for the answer.
    Barrier(oneshot::Sender<()>, Option<u64>),
}

/// At most this many admissions share one `admit.lua` call.
const ADMIT_BATCH: usize = 64;

/// How many times one admission call catches up with a new generation of the pool's limits
/// and is made again (see [`Generations`]) before it fails as forgotten: each is a loss of
/// Redis's data while the call was made.
const CATCH_UPS: usize = 3;

/// A message to the releaser.
enum Release {
    /// Ids were queued in [`Fresh`] while it was empty, or left there: take them.
    Fresh,
    /// Answer once every id queued before this message was released (or given up). The ids an
    /// admission call carries are released with it, or put back in [`Fresh`] if it failed,
    /// before the call lets go of [`Releases::sending`], which the releaser takes before it
    /// takes the ids.
    Flush(oneshot::Sender<()>),
}

/// Ids to release, each with the instant it was queued, not yet taken by a call. Whichever
/// call comes first takes them: the admitter's next `admit.lua` call, which releases them
/// before its admissions (so what this process gave back is free for what it asks next, as
/// in `TaskPool`: a release queued in the background no longer reaches Redis after an
/// admission made later), or the releaser's next `release.lua` call.
type Fresh = Mutex<Vec<(String, Instant)>>;

/// How long the releaser leaves Redis alone after a call failed as unreachable (an admission
/// call or its own), doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] while calls keep
/// failing. A release call sent to a Redis that does not answer holds [`Releases::sending`]
/// for a whole response timeout, and every admission made meanwhile waits behind it: during a
/// stall, each request took two timeouts instead of one. Admission calls carry the ids
/// meanwhile; the ids whose lease expires are given up as before.
///
/// The releaser's wait ends early when a call is answered (Redis is back: the ids go at once)
/// or a message comes (a `flush` is served without backing off).
#[derive(Debug, Default)]
struct Backoff {
    /// Until when, and the next step.
    state: Mutex<(Option<Instant>, Duration)>,
    /// Told when a call is answered during a backoff.
    over: tokio::sync::Notify,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Backoff {
    /// A call failed as unreachable: no release call before the next step.
    fn failed(&self) {
        let mut state = self.state.lock();
        let step = state.1.max(BACKOFF_MIN);
        state.0 = Some(Instant::now() + step);
        state.1 = (step * 2).min(BACKOFF_MAX);
    }

    /// A call was answered: release calls go at once again (a releaser backing off is told).
    fn answered(&self) {
        let was = std::mem::replace(&mut *self.state.lock(), (None, Duration::ZERO));
        if was.0.is_some() {
            // A permit if the releaser is not waiting yet: its next wait ends at once (one
            // pass more, harmless).
            self.over.notify_one();
        }
    }

    /// How long the releaser should still wait, if it should.
    fn wait(&self) -> Option<Duration> {
        let until = self.state.lock().0?;
        until
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }
}

/// Where the engine and the admitter queue ids to release.
struct Releases {
    fresh: Arc<Fresh>,
    /// Admissions sent to the admitter and not answered yet. While there are any, the releaser
    /// leaves the ids queued to the admitter's next call (one round trip for both; the
    /// admitter tells the releaser when it leaves ids behind).
    admitting: Arc<AtomicUsize>,
    /// Held by whichever call carries ids, from taking them until it has been answered (and
    /// the ids put back if it failed): ids the releaser took before an admission call reach
    /// Redis before it, and a flush waits for the ids an admission call carries.
    sending: Arc<tokio::sync::Mutex<()>>,
    /// Keeps the releaser's calls away from a Redis that does not answer (see [`Backoff`]).
    backoff: Arc<Backoff>,
    /// To the releaser; it ends once every sender is gone.
    tx: mpsc::UnboundedSender<Release>,
    /// An id queued longer ago than this is given up: its lease has expired by now (Redis
    /// reaps it), so releasing it would release nothing.
    lease: Duration,
}

impl Releases {
    /// Queues `id` for release (never blocks, never fails).
    fn queue(&self, id: String) {
        let was_empty = {
            let mut fresh = self.fresh.lock();
            fresh.push((id, Instant::now()));
            fresh.len() == 1
        };
        // While the list is not empty, the releaser has been told and takes everything in it
        // once it reads the message: one message per run of ids.
        if was_empty {
            let _ = self.tx.send(Release::Fresh);
        }
    }

    /// Takes every queued id, once the releaser's call in flight (if any) has been answered:
    /// every id queued until now is then released, or taken here. The guard is to be held
    /// until the call carrying them has been answered (see [`sending`](Self::sending)).
    ///
    /// Ids whose lease has expired since they were queued are given up, as the releaser gives
    /// them up: while Redis is unreachable every failed admission queues its id, and each
    /// admission call that fails puts them all back, so without this an outage under steady
    /// traffic grew the list (and the first call after it) without bound.
    async fn take(&self) -> (tokio::sync::OwnedMutexGuard<()>, Vec<(String, Instant)>) {
        let sending = Arc::clone(&self.sending).lock_owned().await;
        let mut ids = std::mem::take(&mut *self.fresh.lock());
        if !ids.is_empty() {
            let now = Instant::now();
            ids.retain(|(_, queued)| *queued + self.lease > now);
        }
        (sending, ids)
    }

    /// Puts back ids whose call failed, first in line, and tells the releaser.
    fn put_back(&self, ids: Vec<(String, Instant)>) {
        put_back(&self.fresh, ids);
        let _ = self.tx.send(Release::Fresh);
    }
}

/// Puts `ids` back at the front of `fresh`, in their order: the next call carries them.
fn put_back(fresh: &Fresh, ids: Vec<(String, Instant)>) {
    if !ids.is_empty() {
        fresh.lock().splice(0..0, ids);
    }
}

/// A lease this process holds.
struct Holder {
    /// Set to `true` when a renewal finds the lease gone.
    lost: watch::Sender<bool>,
    /// The spawned task, aborted when its lease is lost (unless the pool keeps it running).
    abort: Option<AbortHandle>,
    /// No later than when the last call that set its lease in Redis (its admission, or a
    /// renewal confirmed since) was sent: the lease lasts at least `lease` from here. Shared
    /// with its permit or task, which read it without the lock.
    valid_from: Arc<ValidFrom>,
    /// Until its caller reads it (see [`Engine::claim`]): the pool's [`Life::generation`]
    /// when the call was made, for `shutdown` to give it back if it was made before.
    unclaimed: Option<u64>,
}

/// A waiter of this process.
struct Waiter {
    wake: Arc<Notify>,
    /// As [`Holder::valid_from`], for the waiter's lease (which a granted waiter keeps).
    valid_from: Instant,
    /// Its `admit.lua` call returned "waiting": only then do renewals and the fallback poll
    /// ask about it (before, Redis does not know it yet, and would call it gone).
    queued: bool,
    /// Set by the notifier's poll, so the woken future need not poll again.
    status: Option<Status>,
    /// The pool's [`Life::generation`] when the call was made.
    generation: u64,
}

#[derive(Default)]
struct Local {
    holders: HashMap<String, Holder>,
    waiters: HashMap<String, Waiter>,
}

/// What [`Engine::check_lease`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseCheck {
    /// Held, and not overdue.
    Held,
    /// Overdue: presumed lost now, its signal sent.
    PresumedLost,
    /// Not a holder any more: released, or found lost (its signal sent, or about to be: a
    /// holder is taken out of the map under the lock and told after unlocking).
    NotHeld,
}

/// What [`Overdue::take`] found overdue (taken under the lock, told unlocked).
struct Overdue {
    /// The wakers of the queued waiters presumed to have lost their place (marked gone).
    wakes: Vec<Arc<Notify>>,
    /// The holders presumed lost, removed.
    holders: Vec<(String, Holder)>,
    /// The earliest `valid_from` of the holders and waiters that remain.
    earliest: Option<Instant>,
}

impl Overdue {
    /// Takes every holder, and marks gone every queued waiter, whose lease may have expired
    /// in Redis: no renewal confirmed for [`presumed_lost_after`] `lease`.
    fn take(local: &mut Local, lease: Duration) -> Self {
        let after = presumed_lost_after(lease);
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        let mut keep = |valid_from: Instant| {
            let overdue = now.saturating_duration_since(valid_from) >= after;
            if !overdue {
                earliest = Some(earliest.map_or(valid_from, |e| e.min(valid_from)));
            }
            overdue
        };
        let mut wakes = Vec::new();
        for waiter in local.waiters.values_mut() {
            // Only waiters Redis knows have a lease, and one granted (its status read later)
            // becomes a holder, presumed lost as such if it is overdue.
            if waiter.queued && waiter.status.is_none() && keep(waiter.valid_from) {
                waiter.status = Some(Status::Gone);
                wakes.push(Arc::clone(&waiter.wake));
            }
        }
        let holders = local
            .holders
            .extract_if(|_, holder| keep(holder.valid_from.get()))
            .collect();
        Self {
            wakes,
            holders,
            earliest,
        }
    }
}

pub(crate) struct Engine {
    conn: ConnectionManager,
    /// `taskherd:{<pool>}:`.
    prefix: String,
    /// Unique in the fleet; the first part of every id this process makes.
    process: String,
    next_id: AtomicU64,
    pub(crate) lease: Duration,
    pub(crate) abort_on_lost: bool,
    local: Mutex<Local>,
    admit_tx: mpsc::UnboundedSender<ToAdmitter>,
    releases: Arc<Releases>,
    /// This process's side of the pool's life (closed or open, what it holds).
    pub(crate) life: Arc<Life>,
    lost: AtomicU64,
    /// Waiters that found their place lost and queued again.
    lost_waits: AtomicU64,
    /// Test hook: renewals stop (as if the process were paused).
    renewal_stopped: AtomicBool,
    /// The generation of the pool's limits this process has seen, and those it restores:
    /// from then on, `admit.lua` admits nothing if they are gone or were written again
    /// since (see [`Generations`]).
    generations: Arc<Generations>,
    /// For `Debug`: the URL without credentials.
    pub(crate) redacted_url: String,
    /// See [`evicts_keys`].
    pub(crate) evicts: bool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.local.lock();
        f.debug_struct("Engine")
            .field("url", &self.redacted_url)
            .field("prefix", &self.prefix)
            .field("process", &self.process)
            .field("lease", &self.lease)
            .field("holders", &local.holders.len())
            .field("waiters", &local.waiters.len())
            .field("lost", &self.lost.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Whether the Redis behind `conn` evicts keys without an expiry when it is full (`maxmemory`
/// set, `maxmemory-policy` `allkeys-*`), read from `INFO memory`; logged as a warning if so.
/// The pool's keys have no expiry: such a Redis may drop one of them (a limit, a count, a
/// holder) when full, which no script can tell from a key never written (`volatile-*`
/// policies evict only the notification lists, which expire; polling covers for them).
/// `false` if it cannot be read (an ACL without `INFO`, a proxy that hides it).
async fn evicts_keys(conn: &mut ConnectionManager, url: &str) -> bool {
    let info: String = match redis::cmd("INFO").arg("memory").query_async(conn).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "could not read Redis's eviction policy (INFO memory)");
            return false;
        }
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let maxmemory = field("maxmemory").and_then(|v| v.parse::<u64>().ok());
    let policy = field("maxmemory_policy").unwrap_or_default();
    let evicts = maxmemory.is_some_and(|bytes| bytes > 0) && policy.starts_with("allkeys-");
    if evicts {
        tracing::warn!(
            redis = %redact(url),
            policy,
            "Redis evicts keys when it is full (maxmemory-policy {policy}): it may drop a \
             key of the pool (a limit, a count, a holder) and limits may then be exceeded; \
             set maxmemory-policy to noeviction (or a volatile-* policy)"
        );
    }
    evicts
}

/// The URL with any user name and password replaced by `***`, for logs, errors and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redis url>".to_owned();
    };
    // The last `@` anywhere, not only in the authority: a password written with a `/`, `?`
    // or `#` not percent-encoded would end the authority early. (A path or query with an
    // `@` is redacted too: too much rather than too little.)
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// A duration in whole milliseconds, as the scripts take leases.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A random 64-bit value from the standard library's per-process hash keys.
pub(crate) fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// The client for `url`, with the certificates of `tls` if any were given.
#[cfg(feature = "tls")]
fn client(url: &str, tls: &crate::builder::Tls) -> Result<redis::Client, Unavailable> {
    if url
        .get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
    {
        // The redis crate's rustls support takes the process's crypto provider, which rustls
        // chooses by its features only when exactly one is built in: an application whose
        // other dependencies build in `aws-lc-rs` too would panic at connecting. So ring's is
        // installed, unless the application installed one of its own (then this fails, and
        // its own is used).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if tls.roots.is_none() && tls.client.is_none() {
        return Ok(redis::Client::open(url)?);
    }
    let certificates = redis::TlsCertificates {
        client_tls: tls
            .client
            .clone()
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: tls.roots.clone(),
    };
    Ok(redis::Client::build_with_tls(url, certificates)?)
}

/// The client for `url` (without the `tls` feature there are no certificates to give).
#[cfg(not(feature = "tls"))]
fn client(url: &str, _tls: &crate::builder::Tls) -> Result<redis::Client, Unavailable> {
    Ok(redis::Client::open(url)?)
}

/// How soon a failed renewal is tried again (or a third of the lease, if that is sooner).
const RENEW_RETRY: Duration = Duration::from_millis(250);

/// The longest a call waits for Redis's answer before it fails as unavailable.
const MAX_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call on the shared connection waits for Redis's answer: a third of the lease
/// (so that a renewal fails before the next is due, every third of a lease), at most
/// [`MAX_RESPONSE_TIMEOUT`]: a Redis that stops answering without closing the connection must
/// make admissions fail as unavailable within seconds, not hang for a third of a long lease
/// (each call holds back the process's later admissions, `flush` and `shutdown`).
fn response_timeout(lease: Duration) -> Duration {
    (lease / 3).min(MAX_RESPONSE_TIMEOUT)
}

fn manager_config(response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200))
}

impl Engine {
    /// Connects (the multiplexed connection, and the notifier's own) and starts the
    /// background tasks.
    pub(crate) async fn start(
        url: &str,
        pool: &str,
        lease: Duration,
        abort_on_lost: bool,
        tls: &crate::builder::Tls,
        restore: Option<Restore>,
    ) -> Result<Arc<Self>, Unavailable> {
        let client = client(url, tls)?;
        let conn = ConnectionManager::new_with_config(
            client.clone(),
            manager_config(Some(response_timeout(lease))),
        )
        .await?;
        // BLPOP blocks for a second: its connection must not be the shared one, and its
        // response timeout must exceed the block.
        let notify_conn = ConnectionManager::new_with_config(
            client,
            manager_config(Some(Duration::from_secs(3))),
        )
        .await?;
        let evicts = evicts_keys(&mut conn.clone(), url).await;
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        let fresh = Arc::new(Fresh::default());
        let sending = Arc::new(tokio::sync::Mutex::new(()));
        let admitting = Arc::new(AtomicUsize::new(0));
        let backoff = Arc::new(Backoff::default());
        let releases = Arc::new(Releases {
            fresh: Arc::clone(&fresh),
            admitting: Arc::clone(&admitting),
            sending: Arc::clone(&sending),
            backoff: Arc::clone(&backoff),
            tx: release_tx,
            lease,
        });
        let (admit_tx, admit_rx) = mpsc::unbounded_channel();
        let life = Arc::new(Life::default());
        let prefix = format!("taskherd:{{{}}}:", crate::key::encode_segment(pool));
        // Limits set before this process started count as seen: a loss of Redis's data from
        // now on makes its admissions fail closed, or write its limits again. Limits to
        // restore are written into a pool without limits, checked in the same script call.
        let mut conn_for_check = conn.clone();
        let generations = Generations::new(0, restore, prefix.clone());
        let seen = match generations.restore_at_start(&mut conn_for_check).await? {
            Some(generation) => generation,
            None => {
                let (generation, _): (u64, String) = scripts::LIMIT
                    .key(&prefix)
                    .arg("t")
                    .invoke_async(&mut conn_for_check)
                    .await?;
                generation
            }
        };
        generations.observe(seen);
        let generations = Arc::new(generations);
        let process = format!("{:016x}", random_u64());
        let admitter_parts = Admitter {
            conn: conn.clone(),
            prefix: prefix.clone(),
            process: process.clone(),
            lease_ms: millis(lease),
            releases: Arc::clone(&releases),
            life: Arc::clone(&life),
            engine: Weak::new(),
            generations: Arc::clone(&generations),
        };
        let engine = Arc::new_cyclic(|engine| {
            tokio::spawn(admitter(
                Admitter {
                    engine: Weak::clone(engine),
                    ..admitter_parts
                },
                admit_rx,
            ));
            Self {
                conn: conn.clone(),
                prefix,
                process,
                next_id: AtomicU64::new(0),
                lease,
                abort_on_lost,
                local: Mutex::new(Local::default()),
                admit_tx,
                releases,
                life,
                lost: AtomicU64::new(0),
                lost_waits: AtomicU64::new(0),
                renewal_stopped: AtomicBool::new(false),
                generations,
                redacted_url: redact(url),
                evicts,
            }
        });
        let weak = Arc::downgrade(&engine);
        let queue = ReleaseQueue {
            fresh,
            admitting,
            sending,
            backoff,
            rx: release_rx,
        };
        tokio::spawn(releaser(conn, engine.prefix.clone(), lease, queue));
        tokio::spawn(renewer(weak.clone()));
        tokio::spawn(expirer(weak.clone()));
        tokio::spawn(reaper(weak.clone()));
        tokio::spawn(notifier(weak, notify_conn));
        Ok(engine)
    }

    /// A new id, unique in the fleet.
    pub(crate) fn new_id(&self) -> String {
        // Relaxed: only uniqueness matters, which the atomic increment gives.
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.process)
    }

    /// Sends one admission to the admitter, for its next `admit.lua` call; returns where its
    /// answer comes. In wait mode, register the id as a waiter first, so that a grant
    /// notification is never missed. On an error the call may still have run: the caller
    /// releases the id.
    ///
    /// If the receiver is dropped before the answer comes, the admitter gives back whatever
    /// the call gave the id (the caller's own release may reach Redis first, as a no-op).
    pub(crate) fn send_admission(
        &self,
        id: &str,
        wait: bool,
        segments: &[String],
        generation: u64,
    ) -> Result<Answer, Unavailable> {
        let (reply, answer) = oneshot::channel();
        let request = AdmitRequest {
            id: id.to_owned(),
            wait,
            segments: segments.to_vec(),
            generation,
            reply,
        };
        // Counted before it is sent; the admitter counts it off once answered.
        self.releases.admitting.fetch_add(1, Ordering::AcqRel);
        // The admitter ends only after every sender (this engine) is gone.
        if self.admit_tx.send(ToAdmitter::Admit(request)).is_err() {
            self.releases.admitting.fetch_sub(1, Ordering::AcqRel);
            return Err(Unavailable::lost("the admitter has ended"));
        }
        Ok(answer)
    }

    /// Records a new holder, whose admission call was sent no earlier than `valid_from`
    /// (`unclaimed`: the generation its call was made at, if its caller has not read it yet:
    /// see [`claim`](Self::claim)); returns its lost signal and age, for its permit or task.
    ///
    /// A lease not confirmed for [`presumed_lost_after`] already (a grant read long after
    /// the waiter's last renewal, Redis unreachable since) is lost at once, as the expirer
    /// would find it a moment later: never handed out as held.
    pub(crate) fn hold(&self, id: &str, valid_from: Instant, unclaimed: Option<u64>) -> LeaseView {
        self.hold_from(id, unclaimed, |_| (valid_from, None))
    }

    /// [`hold`](Self::hold), with the start of the lease found under the same lock as the
    /// holder is recorded, by `valid_from`, which may take a waiter out (dropped unlocked):
    /// a renewal recorded meanwhile finds the waiter or the holder, never neither.
    fn hold_from(
        &self,
        id: &str,
        unclaimed: Option<u64>,
        valid_from: impl FnOnce(&mut Local) -> (Instant, Option<Waiter>),
    ) -> LeaseView {
        let (lost, rx) = watch::channel(false);
        let mut local = self.local.lock();
        let (valid_from, waiter) = valid_from(&mut local);
        let shared = Arc::new(ValidFrom::new(valid_from));
        let view = LeaseView::new(rx, Arc::clone(&shared), self.lease);
        let holder = Holder {
            lost,
            abort: None,
            valid_from: shared,
            unclaimed,
        };
        if Instant::now().saturating_duration_since(valid_from) >= presumed_lost_after(self.lease) {
            drop(local);
            drop(waiter);
            // Released too (a no-op where Redis reaped it).
            self.releases.queue(id.to_owned());
            self.holders_lost(
                vec![holder],
                "no renewal confirmed within the lease before the grant was read: lease \
                 presumed lost",
            );
            return view;
        }
        let replaced = local.holders.insert(id.to_owned(), holder);
        drop(local);
        // Ids are unique, so nothing is replaced; if it were, it is dropped unlocked.
        drop((replaced, waiter));
        view
    }

    /// Records what Redis answered admission `request` (its call sent no earlier than
    /// `sent`) before its caller reads it, which may be much later (its future not polled for
    /// a while: a busy worker, a `select!` branch): a holder for an admission made, a waiter
    /// marked queued for one that waits, so that renewals keep their leases from the moment
    /// the answer arrived.
    fn answered(&self, request: &AdmitRequest, decision: Decision, sent: Instant) -> Admitted {
        // Redis set the lease when the call ran, after `sent`.
        match decision {
            Decision::Now if request.wait => Admitted::Now(self.waiter_to_holder(
                &request.id,
                Some(sent),
                Some(request.generation),
            )),
            Decision::Now => Admitted::Now(self.hold(&request.id, sent, Some(request.generation))),
            Decision::Full(_) | Decision::Waiting if request.wait => {
                self.mark_queued(&request.id, sent);
                Admitted::Waiting
            }
            Decision::Full(at) => Admitted::Full(at),
            Decision::Waiting => Admitted::Waiting,
        }
    }

    /// The caller of admission `id` reads it: from now on it is the caller's to give back,
    /// and `shutdown` leaves it to the caller (who then holds a task or a permit, which
    /// `shutdown` aborts or waits for). Does nothing if it is not a holder any more (lost, or
    /// given back by `shutdown`: the caller finds the pool closed, or the lease lost).
    pub(crate) fn claim(&self, id: &str) {
        if let Some(holder) = self.local.lock().holders.get_mut(id) {
            holder.unclaimed = None;
        }
    }

    /// Attaches a spawned task to its holder, for abort on a lost lease.
    ///
    /// A holder that is not in the map any more was either released by the task's own guard
    /// (the task has ended: aborting it does nothing) or found lost since its admission (the
    /// lost signal and the count are done; the task, spawned too late to be aborted with the
    /// others, is aborted here). Either way the task is aborted if the pool aborts tasks of
    /// lost leases.
    pub(crate) fn attach(&self, id: &str, abort: AbortHandle) {
        {
            let mut local = self.local.lock();
            if let Some(holder) = local.holders.get_mut(id)
                && !*holder.lost.borrow()
            {
                // `abort` was `None` (one task per holder): nothing is dropped here.
                holder.abort = Some(abort);
                return;
            }
        }
        if self.abort_on_lost {
            abort.abort();
        }
    }

    /// Forgets a holder or waiter and queues its release (never blocks, never fails).
    pub(crate) fn release_later(&self, id: String) {
        let removed = {
            let mut local = self.local.lock();
            (local.holders.remove(&id), local.waiters.remove(&id))
        };
        // Dropped unlocked: a holder's watch sender wakes its receivers.
        drop(removed);
        self.releases.queue(id);
    }

    /// Once every admission sent to the admitter so far has been answered (the call that
    /// carried it, if any, has run in Redis), releases the calls made before generation
    /// `before` ([`release_unclaimed`](Self::release_unclaimed)); waits for that. The admitter
    /// does it as it reaches this request, whether or not this future is still there then.
    pub(crate) async fn release_unclaimed_once_admitted(&self, before: u64) {
        let (tx, rx) = oneshot::channel();
        match self.admit_tx.send(ToAdmitter::Barrier(tx, Some(before))) {
            Ok(()) => {
                // The admitter ended before it reached the barrier (its runtime shut down):
                // released here. (Twice is harmless: what was released is gone from the maps.)
                if rx.await.is_err() {
                    self.release_unclaimed(before);
                }
            }
            // No admitter: no call in flight either.
            Err(_) => self.release_unclaimed(before),
        }
    }

    /// Releases (in the background) every waiter of this process and every admission its
    /// caller has not read yet, of the calls made before generation `before` (before
    /// `shutdown`'s `close`: their futures find the pool closed when they next run), and
    /// forgets them. A call made after a `reopen` racing with the shutdown keeps its place.
    pub(crate) fn release_unclaimed(&self, before: u64) {
        let (mut ids, holders): (Vec<String>, Vec<(String, Holder)>) = {
            let mut local = self.local.lock();
            let waiters = local
                .waiters
                .extract_if(|_, waiter| waiter.generation < before)
                .map(|(id, _)| id)
                .collect();
            let holders = local
                .holders
                .extract_if(|_, holder| {
                    holder
                        .unclaimed
                        .is_some_and(|generation| generation < before)
                })
                .collect();
            (waiters, holders)
        };
        // Unlocked: the holders' watch senders are dropped here (their wakers, if any, run:
        // see `woken`).
        let (holder_ids, holders): (Vec<String>, Vec<Holder>) = holders.into_iter().unzip();
        ids.extend(holder_ids);
        woken(
            "an unread admission's lease watcher, as it was given back",
            || {
                drop(holders);
            },
        );
        for id in ids {
            self.releases.queue(id);
        }
    }

    /// Waits until every release queued so far has reached Redis (or was given up, its lease
    /// having expired meanwhile).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.releases.tx.send(Release::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Registers a waiter before its `admit.lua` call, made at `generation`.
    pub(crate) fn register_waiter(&self, id: &str, generation: u64) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        let replaced = self.local.lock().waiters.insert(
            id.to_owned(),
            Waiter {
                wake: Arc::clone(&wake),
                valid_from: Instant::now(),
                queued: false,
                status: None,
                generation,
            },
        );
        // Ids are unique, so nothing is replaced; if it were, it is dropped unlocked.
        drop(replaced);
        wake
    }

    /// Forgets a waiter whose `admit.lua` call was never made (nothing to release).
    pub(crate) fn unregister_waiter(&self, id: &str) {
        let waiter = self.local.lock().waiters.remove(id);
        drop(waiter);
    }

    /// The waiter's `admit.lua` call, sent no earlier than `sent`, returned: it is queued in
    /// Redis, its lease set when the call ran.
    fn mark_queued(&self, id: &str, sent: Instant) {
        if let Some(waiter) = self.local.lock().waiters.get_mut(id) {
            waiter.queued = true;
            waiter.valid_from = waiter.valid_from.max(sent);
        }
    }

    /// The status the notifier's poll found for a waiter, if any.
    pub(crate) fn take_status(&self, id: &str) -> Option<Status> {
        self.local
            .lock()
            .waiters
            .get_mut(id)
            .and_then(|w| w.status.take())
    }

    /// A waiter was granted: it is a holder now, under the same id (`unclaimed` as in
    /// [`hold`](Self::hold)). The holder keeps the waiter's lease (in Redis as here), set
    /// again no earlier than `set` by the call that granted it, if one did.
    pub(crate) fn waiter_to_holder(
        &self,
        id: &str,
        set: Option<Instant>,
        unclaimed: Option<u64>,
    ) -> LeaseView {
        // Under one lock: a renewal recorded between the waiter's removal and the holder's
        // insertion would find neither, and its advance be lost.
        self.hold_from(id, unclaimed, |local| {
            let waiter = local.waiters.remove(id);
            // A waiter is registered before its admission call; one not found (its caller
            // went away) is given back by the caller of this, and its lease taken to start
            // now.
            let valid_from = waiter
                .as_ref()
                .map_or_else(Instant::now, |waiter| waiter.valid_from);
            (set.map_or(valid_from, |set| valid_from.max(set)), waiter)
        })
    }

    /// One `poll.lua` call: the status of each of `ids`, or the error of one whose record
    /// cannot be read (not a hash: something else wrote that key), which Redis will repeat.
    pub(crate) async fn poll(
        &self,
        ids: &[String],
    ) -> Result<Vec<Result<Status, Unavailable>>, Unavailable> {
        let mut invocation = scripts::POLL.key(&self.prefix);
        for id in ids {
            invocation.arg(id);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<String> = caught(invocation.invoke_async(&mut conn)).await?;
        Ok(reply
            .iter()
            .map(|s| match s.as_str() {
                "g" => Ok(Status::Granted),
                "w" => Ok(Status::Waiting),
                "e" => Err(Unavailable::lost(
                    "WRONGTYPE: the waiter's record in Redis is not a hash (something else wrote its \
                     key)",
                )),
                _ => Ok(Status::Gone),
            })
            .collect())
    }

    /// [`poll`](Self::poll) of one waiter.
    pub(crate) async fn poll_one(&self, id: &str) -> Result<Status, Unavailable> {
        self.poll(&[id.to_owned()])
            .await?
            .pop()
            .unwrap_or(Ok(Status::Gone))
    }

    /// One `limits.lua` call in `mode`. The number of waiters granted, or `None` if in
    /// [`LimitsMode::Restore`] the pool had limits. A process with limits to restore that
    /// finds the pool's limits in another generation than it saw (lost and written again, or
    /// gone) writes those first, then this batch (see [`Generations::expected_by_writes`]).
    pub(crate) async fn set_limits(
        &self,
        batch: &LimitBatch,
        mode: LimitsMode,
    ) -> Result<Option<usize>, Unavailable> {
        let mut conn = self.conn.clone();
        for _ in 0..=CATCH_UPS {
            let expected = self.generations.expected_by_writes();
            let (granted, generation) =
                crate::generation::write(batch, &self.prefix, mode, expected, &mut conn).await?;
            if granted == -2 {
                self.generations.caught_up(generation, &mut conn).await?;
                continue;
            }
            self.generations.wrote(generation);
            return Ok(usize::try_from(granted).ok());
        }
        Err(Unavailable::forgotten())
    }

    /// One `stats.lua` call: the total, then each segment. With [`Reads::Limits`] it fails
    /// as [`Unavailable::forgotten`] as a limit read does (see
    /// [`limit_field`](Self::limit_field)): every row names the limit in force.
    pub(crate) async fn stats(
        &self,
        segments: &[String],
        reads: Reads,
    ) -> Result<Vec<taskherd::GroupStats>, Unavailable> {
        let read = || async move {
            let mut invocation = scripts::STATS.key(&self.prefix);
            for segment in segments {
                invocation.arg(segment);
            }
            let mut rows: Vec<Vec<String>> =
                caught(invocation.invoke_async(&mut self.conn.clone())).await?;
            let generation = rows
                .pop()
                .and_then(|flag| flag.first().and_then(|generation| generation.parse().ok()))
                .unwrap_or(0);
            Ok::<_, Unavailable>((rows, generation))
        };
        let rows = match reads {
            // Counts are true either way; what they teach about the limits is kept.
            Reads::Counts => {
                let (rows, generation) = read().await?;
                self.generations.observe(generation);
                rows
            }
            Reads::Limits => self.read_limits(read).await?,
        };
        Ok(rows.iter().map(|row| parse_stats(row)).collect())
    }

    /// One limit field (`t`, `d` or `g:<segment>`), with the generation of the pool's limits,
    /// in one `limit.lua` call. A process that has seen the limits set fails the read as
    /// [`Unavailable::forgotten`] if Redis has lost them (the read would say "no limit",
    /// which is not true), or writes its limits to restore first and reads again (see
    /// [`Generations::caught_up`]).
    pub(crate) async fn limit_field(&self, field: &str) -> Result<Option<usize>, Unavailable> {
        let value = self
            .read_limits(|| async move {
                let mut invocation = scripts::LIMIT.key(&self.prefix);
                invocation.arg(field);
                let (generation, value): (String, String) =
                    caught(invocation.invoke_async(&mut self.conn.clone())).await?;
                Ok((value, generation.parse().unwrap_or(0)))
            })
            .await?;
        if value.is_empty() {
            return Ok(None);
        }
        // A value that is not a number (written by something else) is no "no limit" either.
        value
            .parse()
            .map(Some)
            .map_err(|_| Unavailable::lost("a stored limit is not a number"))
    }

    /// What `read` (a read of limits, with the generation of the pool's limits it found)
    /// returns, once this process has caught up with that generation (see
    /// [`Generations::caught_up`]): read again if it wrote its limits to restore meanwhile.
    async fn read_limits<T, F: Future<Output = Result<(T, u64), Unavailable>>>(
        &self,
        read: impl Fn() -> F,
    ) -> Result<T, Unavailable> {
        let (value, generation) = read().await?;
        let caught_up = self
            .generations
            .caught_up(generation, &mut self.conn.clone())
            .await?;
        if caught_up == CaughtUp::Written {
            return Ok(read().await?.0);
        }
        Ok(value)
    }

    pub(crate) fn lost_count(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// A waiter found its place lost, and queues again.
    pub(crate) fn waiter_lost(&self) {
        // Relaxed: a statistic.
        self.lost_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn limits_restored(&self) -> u64 {
        self.generations.restored()
    }

    pub(crate) fn lost_waits(&self) -> u64 {
        self.lost_waits.load(Ordering::Relaxed)
    }

    pub(crate) fn stop_renewal(&self) {
        self.renewal_stopped.store(true, Ordering::Relaxed);
    }

    /// The ids to renew: every holder, then every queued waiter of this process; and how many
    /// of them are holders.
    fn live_ids(&self) -> (Vec<String>, usize) {
        let local = self.local.lock();
        let ids = local
            .holders
            .keys()
            .chain(queued(&local.waiters))
            .cloned()
            .collect();
        (ids, local.holders.len())
    }

    /// Records a confirmed renewal of `ids` (sent no earlier than `sent`): their leases last
    /// at least `lease` from `sent`.
    fn renewed(local: &mut Local, ids: &[String], sent: Instant) {
        for id in ids {
            if let Some(holder) = local.holders.get_mut(id) {
                holder.valid_from.advance(sent);
            } else if let Some(waiter) = local.waiters.get_mut(id) {
                waiter.valid_from = waiter.valid_from.max(sent);
            }
        }
    }

    /// Presumes lost every holder whose lease may have expired in Redis without this process
    /// knowing (no renewal confirmed for [`presumed_lost_after`] the lease: Redis unreachable,
    /// or too slow to answer). Their ids are released too (a no-op where Redis reaped them).
    /// Queued waiters in the same case are told their place is gone, as a renewal that found
    /// them gone would: each gives up its id (released) and queues again, which fails while
    /// Redis is unreachable, so the caller gets its work back. Returns the earliest
    /// `valid_from` of the holders and waiters that remain.
    fn expire_overdue(&self) -> Option<Instant> {
        let overdue = Overdue::take(&mut self.local.lock(), self.lease);
        let earliest = overdue.earliest;
        self.presume_lost(overdue);
        earliest
    }

    /// Checks holder `id`'s lease now. Overdue (it may have expired in Redis: no renewal
    /// confirmed for [`presumed_lost_after`] the lease), every overdue lease of this process
    /// is presumed lost at once, as the expirer does when it runs: `id`'s lost signal is sent
    /// (and its task aborted, if the pool aborts tasks) before this returns.
    ///
    /// For a process that resumes after a pause longer than its leases (SIGSTOP, a frozen VM,
    /// a runtime whose threads were all blocked): the work may run again before the expirer
    /// does, and must not commit as if it were still counted.
    pub(crate) fn check_lease(&self, id: &str) -> LeaseCheck {
        let overdue = {
            let mut local = self.local.lock();
            let Some(holder) = local.holders.get(id) else {
                return LeaseCheck::NotHeld;
            };
            let after = presumed_lost_after(self.lease);
            if Instant::now().saturating_duration_since(holder.valid_from.get()) < after {
                return LeaseCheck::Held;
            }
            // Checked and taken under one lock: a renewal confirmed in between cannot make
            // this say lost while the holder stays.
            Overdue::take(&mut local, self.lease)
        };
        self.presume_lost(overdue);
        LeaseCheck::PresumedLost
    }

    /// Tells what [`Overdue::take`] took; never called under the lock.
    fn presume_lost(&self, overdue: Overdue) {
        let Overdue {
            wakes,
            holders: expired,
            ..
        } = overdue;
        if !wakes.is_empty() {
            tracing::warn!(
                waiters = wakes.len(),
                "no renewal confirmed within the lease (Redis unreachable?): waiters presumed \
                 to have lost their place; they queue again, or fail while Redis is unreachable"
            );
        }
        // Unlocked from here on: the wakers woken (and the holders dropped) are user code.
        for wake in wakes {
            woken("a waiter presumed to have lost its place", || {
                wake.notify_one()
            });
        }
        let mut holders = Vec::with_capacity(expired.len());
        for (id, holder) in expired {
            self.releases.queue(id);
            holders.push(holder);
        }
        self.holders_lost(
            holders,
            "no renewal confirmed within the lease (Redis unreachable, or this process \
             paused?): leases presumed lost",
        );
    }

    /// Records a renewal's answer: `ids` (the call sent no earlier than `sent`) renewed, but
    /// for `gone`, the ids Redis no longer knew: lost leases. Both under one lock, the
    /// renewals first: a check made while the losses are being told (logged, signalled,
    /// aborted: user code, which takes its time) must find the others' renewal recorded, or
    /// it would read a lease Redis just renewed as overdue and presume it lost.
    fn renewal_answered(&self, ids: &[String], gone: Vec<String>, sent: Instant) {
        let mut holders = Vec::new();
        let mut wakes = Vec::new();
        {
            let mut local = self.local.lock();
            // A gone id's holder is removed below, and a gone waiter gives its id up.
            Self::renewed(&mut local, ids, sent);
            for id in gone {
                // An id released since the renewal was sent is not in the map any more.
                if let Some(holder) = local.holders.remove(&id) {
                    holders.push(holder);
                } else if let Some(waiter) = local.waiters.get_mut(&id) {
                    waiter.status = Some(Status::Gone);
                    wakes.push(Arc::clone(&waiter.wake));
                }
            }
        }
        // Unlocked from here on: the wakers woken (and the holders dropped) are user code.
        for wake in wakes {
            woken("a waiter whose place a renewal found gone", || {
                wake.notify_one();
            });
        }
        self.holders_lost(holders, "leases lost");
    }

    /// Tells removed holders that their lease is lost, aborts their tasks (unless the pool
    /// keeps them running) and drops them. Never called under the lock.
    fn holders_lost(&self, holders: Vec<Holder>, why: &'static str) {
        if holders.is_empty() {
            return;
        }
        let lost = holders.len();
        // Counted before the holders are told, so that whoever sees `lost()` resolve reads a
        // count that includes it. Relaxed: a statistic, ordered for that reader by the watch
        // channel's own synchronisation.
        self.lost
            .fetch_add(u64::try_from(lost).unwrap_or(u64::MAX), Ordering::Relaxed);
        if self.abort_on_lost {
            tracing::warn!(lost, "{why}: their tasks are aborted");
        } else {
            tracing::warn!(lost, "{why}: their tasks keep running, uncounted by Redis");
        }
        for holder in holders {
            // The signal first; the abort and the drop happen even if one of its wakers
            // panics.
            woken("a lost lease's watcher", || {
                holder.lost.send_replace(true);
            });
            if self.abort_on_lost
                && let Some(abort) = &holder.abort
            {
                abort.abort();
            }
            // The watch sender and the abort handle are dropped here, unlocked.
            woken("a lost lease's watcher, as its signal was dropped", || {
                drop(holder);
            });
        }
    }

    /// Wakes every local waiter (the pool closed: they check and fail).
    pub(crate) fn wake_all(&self) {
        let wakes: Vec<Arc<Notify>> = self
            .local
            .lock()
            .waiters
            .values()
            .map(|waiter| Arc::clone(&waiter.wake))
            .collect();
        // Unlocked: notifying runs the waiters' wakers.
        for wake in wakes {
            woken("a waiter, as the pool closed", || wake.notify_one());
        }
    }

    fn wake(&self, id: &str, status: Option<Status>) {
        let wake = self.local.lock().waiters.get_mut(id).map(|waiter| {
            if status.is_some() {
                waiter.status = status;
            }
            Arc::clone(&waiter.wake)
        });
        // Unlocked: notifying runs the waiter's waker.
        if let Some(wake) = wake {
            woken("a waiter, as its status changed", || wake.notify_one());
        }
    }
}

/// The ids of the waiters that Redis knows.
fn queued(waiters: &HashMap<String, Waiter>) -> impl Iterator<Item = &String> {
    waiters
        .iter()
        .filter(|(_, waiter)| waiter.queued)
        .map(|(id, _)| id)
}

fn parse_stats(row: &[String]) -> taskherd::GroupStats {
    let n = |i: usize| row.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let u = |i: usize| usize::try_from(n(i)).unwrap_or(usize::MAX);
    let limit = row
        .get(3)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    taskherd::GroupStats {
        running: u(0),
        waiting: u(1),
        reserved: u(2),
        limit,
        admitted: n(4),
        rejected: n(5),
        peak: u(6),
    }
}

/// What a caller of [`Engine::stats`] reads of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// The limits in force too: fails as forgotten after a loss of Redis's data.
    Limits,
    /// Counts alone, true whatever happened to the limits.
    Counts,
}

/// What the admitter needs of the engine (it holds no reference to the engine itself, so
/// that it ends when the engine's sender is dropped).
struct Admitter {
    conn: ConnectionManager,
    prefix: String,
    process: String,
    lease_ms: u64,
    releases: Arc<Releases>,
    life: Arc<Life>,
    /// To record answers as they arrive (see [`Engine::answered`]).
    engine: Weak<Engine>,
    /// [`Engine::generations`].
    generations: Arc<Generations>,
}

/// What one `admit.lua` call answered.
enum AdmitReply {
    /// Each admission's outcome, in order.
    Decided(Vec<Decision>),
    /// Nothing was admitted: the pool's limits are not in the generation this process saw,
    /// but in this one (0: none; see [`Generations`]). The releases were made.
    Generation(u64),
}

impl Admitter {
    /// One `admit.lua` call for `batch`, which first releases `released`: each admission's
    /// outcome, in order.
    async fn call(
        &mut self,
        released: &[(String, Instant)],
        batch: &[AdmitRequest],
    ) -> Result<AdmitReply, Unavailable> {
        let mut invocation = scripts::ADMIT.key(&self.prefix);
        invocation
            .arg(self.lease_ms)
            .arg(&self.process)
            .arg(REAP_BATCH)
            .arg(self.generations.seen())
            .arg(released.len());
        for (id, _) in released {
            invocation.arg(id);
        }
        for request in batch {
            invocation
                .arg(if request.wait { "wait" } else { "try" })
                .arg(&request.id)
                .arg(request.segments.len())
                .arg(&request.segments);
        }
        let reply: Vec<i64> = invocation.invoke_async(&mut self.conn).await?;
        let unexpected = || Unavailable::lost("unexpected reply from admit.lua");
        let (decisions, generation) = match reply.as_slice() {
            [-1] => return Ok(AdmitReply::Generation(0)),
            &[-2, generation] => {
                return Ok(AdmitReply::Generation(
                    u64::try_from(generation).unwrap_or(0),
                ));
            }
            [decisions @ .., generation] if decisions.len() == 2 * batch.len() => {
                (decisions, *generation)
            }
            _ => return Err(unexpected()),
        };
        self.generations
            .observe(u64::try_from(generation).unwrap_or(0));
        decisions
            .chunks_exact(2)
            .map(|pair| match *pair {
                [1, _] => Ok(Decision::Now),
                [2, _] => Ok(Decision::Waiting),
                [0, i] => Ok(Decision::Full(usize::try_from(i).unwrap_or(0))),
                _ => Err(unexpected()),
            })
            .collect::<Result<_, _>>()
            .map(AdmitReply::Decided)
    }

    /// [`call`](Self::call), made again (without releases: they were made) while the pool's
    /// limits are in another generation than this process's and it catches up (at most
    /// [`CATCH_UPS`] times: generations that keep changing under it fail the call as
    /// forgotten); the time the call that decided was sent.
    async fn decide(
        &mut self,
        released: &[(String, Instant)],
        batch: &[AdmitRequest],
    ) -> (Result<Vec<Decision>, Unavailable>, Instant) {
        let mut sent = Instant::now();
        let mut answer = self.call(released, batch).await;
        for _ in 0..CATCH_UPS {
            let Ok(AdmitReply::Generation(generation)) = answer else {
                break;
            };
            if let Err(error) = self.generations.caught_up(generation, &mut self.conn).await {
                return (Err(error), sent);
            }
            sent = Instant::now();
            answer = self.call(&[], batch).await;
        }
        let decided = match answer {
            Ok(AdmitReply::Decided(decisions)) => Ok(decisions),
            Ok(AdmitReply::Generation(_)) => Err(Unavailable::forgotten()),
            Err(error) => Err(error),
        };
        (decided, sent)
    }
}

/// Sends the admissions queued while the previous call was in flight in one call, and hands
/// each caller its outcome. A caller that went away (its future dropped) gets its id released:
/// whatever the call gave it goes back.
async fn admitter(mut admitter: Admitter, mut rx: mpsc::UnboundedReceiver<ToAdmitter>) {
    let mut received = Vec::new();
    let mut batch = Vec::new();
    let mut barriers = Vec::new();
    while rx.recv_many(&mut received, ADMIT_BATCH).await > 0 {
        // Once the pool is closed here, nothing more is sent (after `shutdown`'s barrier no
        // admission can reach Redis behind the releases of this process's waiters), and no
        // call made before a `close`, even if the pool was reopened since.
        let life = Arc::clone(&admitter.life);
        let admissions = received
            .iter()
            .filter(|message| matches!(message, ToAdmitter::Admit(_)))
            .count();
        for message in received.drain(..) {
            match message {
                ToAdmitter::Admit(request) if life.closed_since(request.generation) => {
                    woken("an admission call, as the pool closed", || {
                        let _ = request.reply.send(Ok(Admitted::Closed));
                    });
                }
                // Its caller went away before it was sent: nothing to send, nothing to release.
                ToAdmitter::Admit(request) if request.reply.is_closed() => {}
                ToAdmitter::Admit(request) => batch.push(request),
                ToAdmitter::Barrier(done, release) => barriers.push((done, release)),
            }
        }
        if !batch.is_empty() {
            // What this process gave back before these admissions were made goes back first,
            // in the same call.
            let (sending, released) = admitter.releases.take().await;
            // Closed while a release call in flight held this one back: nothing made before
            // the `close()` is sent after it. A caller that went away meanwhile is not sent
            // either (its id, carried in `released` if its future queued it, releases nothing).
            for request in batch.extract_if(.., |request| {
                life.closed_since(request.generation) || request.reply.is_closed()
            }) {
                woken("an admission call, as the pool closed", || {
                    let _ = request.reply.send(Ok(Admitted::Closed));
                });
            }
            if batch.is_empty() {
                // The releaser takes the ids again.
                if !released.is_empty() {
                    admitter.releases.put_back(released);
                }
            } else {
                // The leases start when the call runs in Redis, after `sent`. Redis lost the
                // limits or they were written again (the releases were made): this process
                // catches up (writes its limits to restore, if any), then the same admissions
                // once more.
                let (outcomes, sent) = admitter.decide(&released, &batch).await;
                match &outcomes {
                    Err(error) if error.is_transient() => admitter.releases.backoff.failed(),
                    Err(_) => {}
                    Ok(_) => admitter.releases.backoff.answered(),
                }
                if outcomes.is_err() && !released.is_empty() {
                    // Maybe not released: the next call carries them.
                    admitter.releases.put_back(released);
                }
                answer(&admitter, batch.drain(..), &outcomes, sent);
            }
            // Only now: a flush waiting for this call also sees what its callers that went
            // away were given.
            drop(sending);
        }
        admitter
            .releases
            .admitting
            .fetch_sub(admissions, Ordering::AcqRel);
        // Ids the releaser left to this call came after it took them (or no call was made):
        // the releaser takes them now, unless more admissions carry them first.
        if !admitter.releases.fresh.lock().is_empty() {
            let _ = admitter.releases.tx.send(Release::Fresh);
        }
        for (done, release) in barriers.drain(..) {
            if let Some(before) = release
                && let Some(engine) = admitter.engine.upgrade()
            {
                engine.release_unclaimed(before);
            }
            woken("a shutdown", || {
                let _ = done.send(());
            });
        }
    }
}

/// Hands each caller of `batch` its outcome, recorded first (see [`Engine::answered`]); a
/// caller that went away gets its id released: whatever the call gave it goes back.
fn answer(
    admitter: &Admitter,
    batch: impl Iterator<Item = AdmitRequest>,
    outcomes: &Result<Vec<Decision>, Unavailable>,
    sent: Instant,
) {
    // Gone only once every caller is (each holds the engine).
    let engine = admitter.engine.upgrade();
    for (i, request) in batch.enumerate() {
        let outcome = match (outcomes, &engine) {
            (Ok(decisions), Some(engine)) => Ok(engine.answered(&request, decisions[i], sent)),
            (Ok(_), None) => Err(Unavailable::lost("the pool has ended")),
            (Err(error), _) => Err(error.copy()),
        };
        let reply = request.reply;
        // A waker that panics was woken with the outcome stored: it is delivered.
        let mut refused = false;
        woken("an admission call, with its outcome", || {
            refused = reply.send(outcome).is_err();
        });
        if refused {
            match &engine {
                // Forgets the holder or waiter recorded for it, too.
                Some(engine) => engine.release_later(request.id),
                None => admitter.releases.queue(request.id),
            }
        }
    }
}

/// Renews every lease of the process in one call per `lease / 3`.
async fn renewer(engine: Weak<Engine>) {
    let period = match engine.upgrade() {
        Some(engine) => engine.lease / 3,
        None => return,
    };
    // After a failed renewal, tried again this soon rather than at the next tick: an outage
    // of two ticks (a restart that kept its data, a short network cut) would otherwise reach
    // the moment the expirer presumes the leases lost (90% of a lease) before the third,
    // even with Redis back for seconds.
    let retry = period.min(RENEW_RETRY);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        if failing {
            tokio::time::sleep(retry).await;
        } else {
            tick.tick().await;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if engine.renewal_stopped.load(Ordering::Relaxed) {
            failing = false;
            continue;
        }
        // Taken before the ids are read: every id renewed was live at this instant, and the
        // call is sent after it.
        let sent = Instant::now();
        let (ids, holders) = engine.live_ids();
        if ids.is_empty() {
            failing = false;
            continue;
        }
        let mut invocation = scripts::RENEW.key(&engine.prefix);
        // Holders first: one that Redis holds only as a waiter is gone (see renew.lua).
        invocation.arg(millis(engine.lease)).arg(holders);
        for id in &ids {
            invocation.arg(id);
        }
        let mut conn = engine.conn.clone();
        let reply: Result<Vec<String>, _> = invocation.invoke_async(&mut conn).await;
        match reply {
            Ok(gone) => {
                engine.renewal_answered(&ids, gone, sent);
                if failing {
                    // The next renewal a whole period after this one.
                    tick.reset();
                    failing = false;
                }
            }
            // The expirer presumes the holders lost if this lasts (fail closed).
            Err(error) if failing => tracing::debug!(%error, "renewal failed again; retrying"),
            Err(error) => {
                tracing::warn!(%error, "renewal failed; retried every {retry:?} until it works");
                failing = true;
            }
        }
    }
}

/// Presumes lost the holders whose renewal has not been confirmed for
/// [`presumed_lost_after`] the lease: at the earliest such instant, and at least every tenth
/// of a lease (for holders added meanwhile).
async fn expirer(engine: Weak<Engine>) {
    let (after, period) = match engine.upgrade() {
        Some(engine) => (presumed_lost_after(engine.lease), engine.lease / 10),
        None => return,
    };
    loop {
        let earliest = match engine.upgrade() {
            Some(engine) => engine.expire_overdue(),
            None => return,
        };
        let next = Instant::now() + period;
        let wake = earliest.map_or(next, |from| (from + after).min(next));
        tokio::time::sleep_until(wake).await;
    }
}

/// Reaps expired leases every 500 ms, so a crashed process's slots reach the next waiter
/// within about a second of the expiry.
async fn reaper(engine: Weak<Engine>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        // A call that reaped a whole batch may have left more (a crashed process's leases
        // expire together): the next call follows at once.
        loop {
            let mut invocation = scripts::REAP.key(&engine.prefix);
            invocation.arg(REAP_BATCH);
            let mut conn = engine.conn.clone();
            let reaped: Result<i64, _> = invocation.invoke_async(&mut conn).await;
            match reaped {
                Ok(0) => break,
                Ok(reaped) => {
                    tracing::debug!(reaped, "expired leases reaped");
                    if usize::try_from(reaped).unwrap_or(0) < REAP_BATCH {
                        break;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "reaping failed; retried");
                    break;
                }
            }
        }
    }
}

/// Wakes this process's granted waiters: `BLPOP n:<process>` on its own connection, and every
/// second, one `poll.lua` call for every local waiter queued, which answers for each (an
/// unreadable record fails its own waiter only): a notification can be lost (the connection
/// dropped after Redis popped it), and a process that keeps being notified for other waiters
/// must still find that grant.
async fn notifier(engine: Weak<Engine>, mut conn: ConnectionManager) {
    let list = match engine.upgrade() {
        Some(engine) => format!("{}n:{}", engine.prefix, engine.process),
        None => return,
    };
    let poll_every = Duration::from_secs_f64(NOTIFY_TIMEOUT_SECS);
    let mut polled = Instant::now();
    // `BLPOP` failed since it last answered (and this was said once).
    let mut failing = false;
    loop {
        let popped: Result<Option<(String, String)>, _> = redis::cmd("BLPOP")
            .arg(&list)
            .arg(NOTIFY_TIMEOUT_SECS)
            .query_async(&mut conn)
            .await;
        if let Err(error) = &popped {
            if failing {
                tracing::debug!(%error, "notifier: BLPOP failed again; retrying");
            } else {
                tracing::warn!(
                    %error,
                    "notifier: BLPOP failed; waiters are found granted by the poll every \
                     second until it works again"
                );
            }
            failing = true;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        match popped {
            Ok(Some((_, id))) => {
                failing = false;
                engine.wake(&id, None);
            }
            Ok(None) => failing = false,
            // The poll below still runs, on its own connection: without it, a `BLPOP` that
            // keeps failing (an ACL without blocking commands, a proxy that refuses them, a
            // connection that keeps timing out) would leave granted waiters asleep.
            Err(_) => {}
        }
        if polled.elapsed() < poll_every {
            continue;
        }
        polled = Instant::now();
        let ids: Vec<String> = queued(&engine.local.lock().waiters).cloned().collect();
        if ids.is_empty() {
            continue;
        }
        // A waiter whose record cannot be read is woken to poll itself and fail with the
        // error; the others are told of a change.
        match engine.poll(&ids).await {
            Ok(statuses) => {
                for (id, status) in ids.iter().zip(statuses) {
                    match status {
                        Ok(Status::Waiting) => {}
                        Ok(status) => engine.wake(id, Some(status)),
                        Err(_) => engine.wake(id, None),
                    }
                }
            }
            // An error Redis will repeat: each waiter is woken to poll itself and fail with it.
            Err(error) if !error.is_transient() => {
                for id in &ids {
                    engine.wake(id, None);
                }
            }
            Err(_) => {}
        }
    }
}

/// The releaser's side of [`Releases`].
struct ReleaseQueue {
    fresh: Arc<Fresh>,
    admitting: Arc<AtomicUsize>,
    sending: Arc<tokio::sync::Mutex<()>>,
    backoff: Arc<Backoff>,
    rx: mpsc::UnboundedReceiver<Release>,
}

/// Releases the ids queued in `fresh` that no admission call carries, in batches, one
/// `release.lua` call each; after a failed call the ids go back to `fresh` (so the next
/// admission carries them, or this retries them later: 100 ms, or once the [`Backoff`] of a
/// Redis that does not answer is over), until the lease of an id would have expired anyway
/// (then its lease ends it). A flush waiting is served without backing off.
async fn releaser(
    mut conn: ConnectionManager,
    prefix: String,
    lease: Duration,
    queue: ReleaseQueue,
) {
    let ReleaseQueue {
        fresh,
        admitting,
        sending,
        backoff,
        mut rx,
    } = queue;
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut batch = Vec::new();
    // A call failed: look at `fresh` again without waiting for a message.
    let mut retrying = false;
    // Every sender is gone (then only what is left is released).
    let mut closed = false;
    loop {
        if flushes.is_empty() && !retrying && rx.recv_many(&mut batch, 512).await == 0 {
            return;
        }
        retrying = false;
        // Held until the call is answered (see `Releases::sending`).
        let held = sending.lock().await;
        // The messages, those that came while an admission call held the lock included: every
        // id queued before a `Fresh` or `Flush` read here is in `fresh` now, or was released
        // by an admission call.
        while let Ok(message) = rx.try_recv() {
            batch.push(message);
        }
        for message in batch.drain(..) {
            match message {
                // Taken below, with whatever was queued since.
                Release::Fresh => {}
                Release::Flush(done) => flushes.push(done),
            }
        }
        // While admissions are on their way, their call takes the ids (see
        // `Releases::admitting`), unless a flush waits.
        let mut pending = if !flushes.is_empty() || admitting.load(Ordering::Acquire) == 0 {
            std::mem::take(&mut *fresh.lock())
        } else {
            Vec::new()
        };
        let now = Instant::now();
        pending.retain(|(_, queued)| *queued + lease > now);
        // Redis did not answer a call lately: the lock goes back to the admissions (which
        // carry the ids meanwhile) until the backoff is over.
        if !pending.is_empty()
            && flushes.is_empty()
            && let Some(wait) = backoff.wait()
        {
            put_back(&fresh, pending);
            drop(held);
            retrying = true;
            // Until the backoff is over, a call is answered, or a message comes (handled in
            // the next pass: a flush is served without backing off).
            let mut sleep = std::pin::pin!(tokio::time::sleep(wait));
            let mut over = std::pin::pin!(backoff.over.notified());
            std::future::poll_fn(|cx| {
                if sleep.as_mut().poll(cx).is_ready() || over.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
                if !closed
                    && let std::task::Poll::Ready(received) = rx.poll_recv_many(cx, &mut batch, 512)
                {
                    closed = received == 0;
                    return std::task::Poll::Ready(());
                }
                std::task::Poll::Pending
            })
            .await;
            continue;
        }
        if !pending.is_empty() {
            let mut invocation = scripts::RELEASE.key(&prefix);
            invocation.arg(REAP_BATCH);
            for (id, _) in &pending {
                invocation.arg(id);
            }
            let released: Result<i64, _> = invocation.invoke_async(&mut conn).await;
            if let Err(error) = released {
                tracing::debug!(%error, ids = pending.len(), "release failed; retrying");
                if Unavailable(error, false).is_transient() {
                    backoff.failed();
                }
                // First in line for the next call, this one's or an admission's.
                put_back(&fresh, pending);
                drop(held);
                retrying = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            backoff.answered();
        }
        drop(held);
        // Everything queued before these flushes is released.
        for done in flushes.drain(..) {
            woken("a flush", || {
                let _ = done.send(());
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backoff doubles from its least to its most while calls keep failing, and ends as
    /// soon as one is answered.
    #[test]
    fn the_backoff_doubles_and_ends_with_an_answer() {
        let backoff = Backoff::default();
        assert_eq!(backoff.wait(), None);
        let mut steps = Vec::new();
        for _ in 0..7 {
            backoff.failed();
            steps.push(backoff.state.lock().1);
            let wait = backoff.wait().expect("backing off");
            assert!(wait <= BACKOFF_MAX, "{wait:?}");
        }
        assert_eq!(
            steps,
            [500, 1000, 2000, 4000, 5000, 5000, 5000].map(Duration::from_millis)
        );
        backoff.answered();
        assert_eq!(backoff.wait(), None);
        backoff.failed();
        assert!(backoff.wait().expect("backing off again") <= BACKOFF_MIN);
    }

    /// The admitter's calls give up ids queued longer ago than a lease, as the releaser does:
    /// during an outage, every failed admission call puts back what it carried.
    #[tokio::test]
    async fn an_admission_call_gives_up_ids_whose_lease_has_expired() {
        let lease = Duration::from_secs(2);
        let (tx, _rx) = mpsc::unbounded_channel();
        let releases = Releases {
            fresh: Arc::default(),
            admitting: Arc::default(),
            sending: Arc::default(),
            backoff: Arc::default(),
            tx,
            lease,
        };
        let now = Instant::now();
        let long_ago = now
            .checked_sub(lease * 2)
            .expect("the clock started long ago");
        releases
            .fresh
            .lock()
            .extend([("expired".to_owned(), long_ago), ("live".to_owned(), now)]);
        let (sending, ids) = releases.take().await;
        let ids: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["live"]);
        drop(sending);
        // A failed call puts back what it took; the next takes it again, expired ones aside.
        releases.put_back(vec![("again".to_owned(), long_ago)]);
        let (_sending, ids) = releases.take().await;
        assert!(ids.is_empty(), "{ids:?}");
    }
}
