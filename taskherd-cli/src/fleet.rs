//! The pool a run admits its jobs through: in-process (`taskherd::TaskPool`), or shared with
//! other runs through Redis (`--redis`, a `taskherd_redis::RedisPool`).
//!
//! [`Pool`] is the seam the runner, the limits-file watcher, progress and the summary use:
//! closing, the limits in force, and writing a batch of limit changes. Admission itself is
//! dispatched by the runner on the variant (see `runner::submit`), so that the in-process path
//! keeps its own future type and costs what it did.
//!
//! # With `--redis`
//!
//! - The limits a run is given (`-j`, `-d`, `-l`, and the limits file's settings) are written
//!   to the pool at the start, and the limits file's changes as they come, each time as one
//!   batch: for every setting, the last write wins, whichever run made it. What a run is not
//!   given (no `-j`, say) it leaves as it is.
//! - The limits shown by progress and the summary are read back from Redis (so they are the
//!   fleet's, whoever wrote them): at the start, every [`REFRESH`] while progress is shown, and
//!   at the end.
//! - Redis unreachable while a job waits for admission: the job keeps waiting, retrying every
//!   [`RETRY`], and never runs without an admission (fail closed); the run says so once per
//!   outage.
//! - Redis restarted without persistence forgets the limits with the leases. The pool admits
//!   nothing under limits it has not caught up with: the first admission, limit read or
//!   statistics read that finds the limits gone, or written again by another process since
//!   (a new generation of the pool's limits), writes the fleet's limits as this run knows
//!   them, its own on top, where the pool has none, before it goes on
//!   (`restore_limits_with`); jobs never start at once in a pool without limits. The guard
//!   ([`Fleet::guard`]) also writes back the fleet's limits as the run knows them where the
//!   pool has none, then its own, when that happened, when an admission was refused as
//!   forgotten (a write-back that failed: `UnavailableError::is_forgotten`), or when the
//!   pool's count of admissions went back; and its own when a renewal found this run's leases
//!   lost and one of the limits it was given is missing.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use taskherd::{LimitChanges, Permit, TaskPool};
use taskherd_redis::{RedisPermit, RedisPool, UnavailableError};

use crate::jobfile::Group;
use crate::limits::{Limits, Settings};

/// The pool name `--pool` defaults to.
pub const DEFAULT_POOL: &str = "taskherd-run";

/// How often progress reads the fleet's limits back from Redis.
pub const REFRESH: Duration = Duration::from_secs(2);

/// How long a job that could not be admitted because Redis is unreachable waits before it
/// asks again.
pub const RETRY: Duration = Duration::from_secs(1);

/// The pool of a run.
#[derive(Clone)]
pub enum Pool {
    /// This run's own pool.
    Local(TaskPool<Group>),
    /// A pool shared through Redis.
    Fleet(Arc<Fleet>),
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pool::Local(_) => f.write_str("Pool::Local"),
            Pool::Fleet(fleet) => f.debug_tuple("Pool::Fleet").field(&fleet.pool).finish(),
        }
    }
}

/// A job's admission, held while it runs.
#[must_use = "the admission is given back when it is dropped"]
#[clippy::has_significant_drop]
pub enum Admission {
    /// Held for its drop, which gives the slots back.
    Local(#[allow(dead_code)] Permit<Group>),
    Fleet(RedisPermit<Group>),
}

impl Admission {
    /// Whether Redis lost this admission's lease (never for an in-process one).
    pub fn is_lost(&self) -> bool {
        match self {
            Admission::Local(_) => false,
            Admission::Fleet(permit) => permit.is_lost(),
        }
    }

    /// Resolves if Redis lost this admission's lease (never for an in-process one).
    pub async fn lost(&self) {
        match self {
            Admission::Local(_) => std::future::pending().await,
            Admission::Fleet(permit) => permit.lost().await,
        }
    }
}

impl Pool {
    /// Fails every waiting admission of this run (other runs sharing the pool go on).
    pub fn close(&self) {
        match self {
            Pool::Local(pool) => {
                pool.close();
            }
            Pool::Fleet(fleet) => {
                fleet.pool.close();
            }
        }
    }

    /// The total's limit in force (for a fleet, as last read from Redis).
    pub fn max_tasks(&self) -> Option<usize> {
        match self {
            Pool::Local(pool) => pool.max_tasks(),
            Pool::Fleet(fleet) => fleet.known().total,
        }
    }

    /// The limit in force for `group` (for a fleet, as last read from Redis).
    pub fn effective_limit(&self, group: &Group) -> Option<usize> {
        match self {
            Pool::Local(pool) => pool.effective_limit(group),
            Pool::Fleet(fleet) => {
                let known = fleet.known();
                known.groups.get(group).copied().or(known.default)
            }
        }
    }

    /// Applies `changes` as one batch (for a fleet: one script call, for every run at once);
    /// `given` is what this run's limits are once they apply.
    ///
    /// # Errors
    ///
    /// Redis is unreachable; nothing was changed, or, into a pool whose limits Redis lost,
    /// only the fleet's limits as this run knows them were written (the caller retries).
    pub async fn set_limits(
        &self,
        changes: LimitChanges<Group>,
        given: &Limits,
    ) -> Result<(), UnavailableError> {
        match self {
            Pool::Local(pool) => {
                pool.set_limits(changes);
                Ok(())
            }
            Pool::Fleet(fleet) => {
                // Into a pool whose limits Redis lost, the fleet's as this run knows them come
                // first (in a pool that has limits, this writes nothing): a change written
                // alone would let the pool admit under it alone.
                let fleet_limits = given.over(&fleet.known());
                fleet.pool.restore_limits(fleet_limits.batch()).await?;
                fleet.pool.set_limits(changes.clone()).await?;
                fleet.remember(given);
                fleet.note_written(changes);
                Ok(())
            }
        }
    }
}

/// About how many of the fleet's limits the guard reads a second to keep what the run knows
/// of them fresh (see [`Fleet::guard`]).
const KNOWN_READS: usize = 100;

/// What [`Fleet::guard`] found of a loss of Redis's data.
enum Loss {
    None,
    /// The pool's count went back, or Redis refused an admission or a read as forgotten.
    Certain,
    /// A limit this run gave is missing, after its leases were lost.
    Likely,
}

/// The lease of a run's admissions without `--lease` (taskherd-redis's default).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// The fleet's limits as this run last read or wrote them, and how many writes of its own it
/// has taken in: a read of Redis begun before a write of this run may have reached Redis
/// before it and come back after it, and must not put back the value the write replaced
/// (after a loss of Redis's data the run writes back what it knows).
#[derive(Default)]
struct Known {
    limits: std::sync::Mutex<Limits>,
    /// Bumped and compared under `limits`' lock (read without it when a read begins: a value
    /// older than the last write only makes that read be discarded).
    writes: AtomicU64,
}

impl Known {
    fn lock(&self) -> std::sync::MutexGuard<'_, Limits> {
        lock(&self.limits)
    }

    /// Takes in a write of this run.
    fn wrote(&self, write: impl FnOnce(&mut Limits)) {
        let mut limits = self.lock();
        // Relaxed: under the lock.
        self.writes.fetch_add(1, Ordering::Relaxed);
        write(&mut limits);
    }

    /// To be called before a read of Redis is sent: what [`read`](Self::read) is given.
    fn read_begins(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Takes in what a read begun at `begun` found, unless a write of this run was taken in
    /// since. Whether it was.
    fn read(&self, begun: u64, found: impl FnOnce(&mut Limits)) -> bool {
        let mut limits = self.lock();
        if self.writes.load(Ordering::Relaxed) != begun {
            return false;
        }
        found(&mut limits);
        true
    }
}

/// `mutex`'s guard, also if a thread panicked holding it (what it guards stays whole: every
/// write under these locks is one assignment or insertion).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A pool shared through Redis, and the fleet's limits as last read.
pub struct Fleet {
    pub pool: RedisPool<Group>,
    known: Arc<Known>,
    /// A refresh for progress is under way.
    refreshing: AtomicBool,
    /// Redis was found unreachable, and the run said so.
    down: AtomicBool,
    /// The limits this run wrote last (its command line overlaid with its limits file).
    given: Arc<std::sync::Mutex<Limits>>,
    /// An admission was refused because Redis lost the pool's limits
    /// ([`UnavailableError::is_forgotten`]); the guard writes them again.
    told_forgotten: AtomicBool,
    /// The groups whose limits `known` has been read for (see [`learn`](Self::learn)).
    learnt: std::sync::Mutex<std::collections::HashSet<Group>>,
}

impl Fleet {
    /// Connects to the pool `name` on the Redis at `url`, with the certificates `tls` for a
    /// `rediss://` URL.
    ///
    /// # Errors
    ///
    /// The URL is malformed or Redis cannot be reached: the message to show (without
    /// credentials).
    pub async fn connect(
        url: &str,
        name: &str,
        lease: Option<Duration>,
        tls: Tls,
    ) -> Result<Fleet, String> {
        let known = Arc::new(Known::default());
        let given = Arc::new(std::sync::Mutex::new(Limits::default()));
        // After a loss of Redis's data, the first admission or limit read of this run that
        // finds the limits written again by another process (or gone) writes the fleet's
        // limits as this run knows them, its own on top, where the pool has none, before it
        // goes on (the guard then writes its own again, as always).
        let mut builder = RedisPool::builder(url, name).restore_limits_with({
            let (known, given) = (Arc::clone(&known), Arc::clone(&given));
            move || {
                let given = lock(&given).clone();
                given.over(&known.lock()).batch()
            }
        });
        if let Some(lease) = lease {
            builder = builder.lease(lease);
        }
        if let Some(roots) = tls.roots {
            builder = builder.tls_root_certificates(roots);
        }
        if let Some((certificate, key)) = tls.client {
            builder = builder.tls_client_certificate(certificate, key);
        }
        let pool = builder
            .build()
            .await
            .map_err(|error| format!("cannot reach Redis at {}: {error}", redacted(url)))?;
        Ok(Fleet {
            pool,
            known,
            refreshing: AtomicBool::new(false),
            down: AtomicBool::new(false),
            given,
            told_forgotten: AtomicBool::new(false),
            learnt: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Writes `limits`, those this run is given, to the pool as one batch; remembers them to
    /// write them again should Redis forget them.
    ///
    /// # Errors
    ///
    /// Redis is unreachable; nothing was changed.
    pub async fn write(&self, limits: &Limits) -> Result<(), UnavailableError> {
        self.write_clearing(limits, &Vec::new()).await
    }

    /// As [`write`](Self::write), and "no limit" for the targets `settings` leave without
    /// one (see [`Limits::batch_clearing`]).
    pub async fn write_clearing(
        &self,
        limits: &Limits,
        settings: &Settings,
    ) -> Result<(), UnavailableError> {
        let batch = limits.batch_clearing(settings);
        self.pool.set_limits(batch.clone()).await?;
        self.remember(limits);
        self.note_written(batch);
        Ok(())
    }

    /// What this run wrote is the fleet's limits now, as a read would find them: a loss of
    /// Redis's data later writes back these, not what the run read before.
    fn note_written(&self, written: LimitChanges<Group>) {
        let (total, default, groups) = written.into_parts();
        self.known.wrote(|known| {
            if let Some(total) = total {
                known.total = total;
            }
            if let Some(default) = default {
                known.default = default;
            }
            for (group, limit) in groups {
                known.set_group(group, limit);
            }
        });
    }

    fn remember(&self, given: &Limits) {
        *lock(&self.given) = given.clone();
    }

    /// Until the run ends, every [`RETRY`]: says when Redis becomes unreachable and when it is
    /// back (a job waiting for admission meanwhile just waits); and if Redis forgot the pool
    /// (Redis restarted without its data, or failed over: see [`forgotten`](Self::forgotten)),
    /// writes the limits this run was given again and says so. `notice` shows a message.
    pub async fn guard(self: Arc<Self>, notice: impl AsyncFn(String)) {
        // Leases lost, of jobs running or waiting: Redis lost its data, or this run was too
        // slow to renew them (paused longer than a lease); `forgotten` tells which.
        let lost_now = || self.pool.lost_leases() + self.pool.lost_waits();
        let mut seen = lost_now();
        let mut admitted = 0;
        // The pool wrote the fleet's limits as this run knows them back by itself (an
        // admission or read found them lost: see `connect`): a certain loss too.
        let mut restored = self.pool.limits_restored();
        let mut ticks = tokio::time::interval(RETRY);
        let mut checks: usize = 0;
        loop {
            ticks.tick().await;
            let lost = lost_now();
            let restored_before = std::mem::replace(&mut restored, self.pool.limits_restored());
            // Acquire: pairs with `saw_forgotten`'s release (a flag; nothing else is passed).
            let told =
                self.told_forgotten.swap(false, Ordering::AcqRel) | (restored != restored_before);
            let loss = match self.forgotten(&mut admitted, lost != seen).await {
                Ok(_) if told => Loss::Certain,
                Ok(loss) => loss,
                // A read of the limits or statistics refused: Redis lost the limits this run
                // saw set, and the count of admissions with them (it starts again from 0, and
                // from there on the count going down is a new loss).
                Err(error) if error.is_forgotten() => {
                    admitted = 0;
                    Loss::Certain
                }
                Err(error) => {
                    if told {
                        self.saw_forgotten();
                    }
                    if let Some(text) = self.went_down(&error) {
                        notice(text).await;
                    }
                    continue;
                }
            };
            if let Some(text) = self.came_back() {
                notice(text).await;
            }
            let written = match loss {
                Loss::None => {
                    // Leases lost while Redis kept the pool: nothing to write again.
                    seen = lost;
                    // What this run knows of the fleet's limits, kept fresh, written back after
                    // a loss: read again in the background (one read per group the run's jobs
                    // named, none while one is under way, progress's included), every check
                    // for up to `KNOWN_READS` groups, less often for more, so that a run of
                    // many groups reads about that many limits a second.
                    checks = checks.wrapping_add(1);
                    if checks.is_multiple_of(self.learnt_count().div_ceil(KNOWN_READS).max(1)) {
                        self.refresh_in_background(self.learnt_groups());
                    }
                    continue;
                }
                // Certainly lost: first the fleet's limits as this run knows them, with its own
                // on top, where the pool has none (`fill_limits`: another process may have
                // written newer ones first), so that a run given no limit, or some, does not
                // leave the rest missing; then its own.
                Loss::Certain => self.restore().await,
                // Maybe lost: its own only.
                Loss::Likely => self.write(&self.given()).await,
            };
            if written.is_ok() {
                seen = lost;
                // Written back by the pool itself during this check (its statistics read
                // found the loss too): mended by this write as well, not a second loss.
                restored = self.pool.limits_restored();
                // A refusal as forgotten that came while the limits were written back was
                // about the loss just mended (a loss since then, the next check finds itself:
                // the pool's next read finds it and writes the limits back, counted in
                // `limits_restored`): the limits are not written twice.
                self.told_forgotten.store(false, Ordering::Release);
                notice(
                    "Redis forgot this run's leases or limits (restarted without its data?): \
                     this run's limits are written to the pool again"
                        .to_owned(),
                )
                .await;
            } else if told {
                self.saw_forgotten();
            }
        }
    }

    /// After a certain loss of Redis's data: each of the limits this run last knew of the
    /// fleet, with its own on top, written where the pool has none (a process that wrote one
    /// again first keeps its value; a run started since, or a limits file's change, may have
    /// written only some), then this run's own, as always.
    async fn restore(&self) -> Result<(), UnavailableError> {
        let fleet = self.given().over(&self.known());
        self.pool.fill_limits(fleet.batch()).await?;
        self.write(&self.given()).await
    }

    fn given(&self) -> Limits {
        lock(&self.given).clone()
    }

    /// Whether Redis forgot the pool since the last call, which saw `admitted` admissions
    /// counted in it (updated). Fails as forgotten ([`UnavailableError::is_forgotten`]) if
    /// the pool's statistics or limits are refused so: a certain loss, whose count of
    /// admissions starts again from 0 (see [`guard`](Self::guard)).
    ///
    /// - The count went down: forgotten (it never does otherwise: the total's statistics are
    ///   never reclaimed).
    /// - Leases of this run's jobs were found lost since (`leases_lost`): forgotten if one of
    ///   the limits this run gave is not in the pool. A run paused longer than its lease finds
    ///   its leases lost too, while Redis kept everything, so lost leases alone are no sign:
    ///   the limits another run changed meanwhile stay as it wrote them. A limit missing from
    ///   the pool is written again even if another run removed it on purpose meanwhile (after
    ///   a loss of data, another run may have written its own limits back first, and this
    ///   run's must not stay missing).
    /// - Otherwise, in a pool that has admitted nothing yet: forgotten if none of the limits
    ///   this run gave is there. A pool whose count goes on had its limits changed on purpose
    ///   by another run (a "no limit" written by its limits file), which this run must not
    ///   undo.
    ///
    /// [`Loss::None`] if this run gave no limit (unless the count went down).
    async fn forgotten(
        &self,
        admitted: &mut u64,
        leases_lost: bool,
    ) -> Result<Loss, UnavailableError> {
        let now = self.pool.total_stats().await?.admitted;
        let went_down = now < *admitted;
        *admitted = now;
        if went_down {
            return Ok(Loss::Certain);
        }
        if now > 0 && !leases_lost {
            return Ok(Loss::None);
        }
        let given = self.given();
        let mut present = Vec::new();
        if given.total.is_some() {
            present.push(self.pool.max_tasks().await?.is_some());
        }
        if given.default.is_some() {
            present.push(self.pool.default_limit().await?.is_some());
        }
        for group in given.groups.keys() {
            present.push(self.pool.limit(group).await?.is_some());
        }
        let lost = if leases_lost {
            present.contains(&false)
        } else {
            !present.is_empty() && !present.contains(&true)
        };
        Ok(if lost { Loss::Likely } else { Loss::None })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.known.lock()
    }

    /// Reads the fleet's limits in force for the total and `groups` from Redis (one call for
    /// each, on the shared connection); keeps the last values known if Redis is unreachable,
    /// or if this run wrote limits meanwhile (the next refresh reads them).
    pub async fn refresh(&self, groups: impl IntoIterator<Item = Group>) {
        let begun = self.known.read_begins();
        let Ok(total) = self.pool.max_tasks().await else {
            return;
        };
        let Ok(default) = self.pool.default_limit().await else {
            return;
        };
        let mut explicit = HashMap::new();
        for group in groups {
            let Ok(limit) = self.pool.limit(&group).await else {
                return;
            };
            explicit.insert(group, limit);
        }
        self.known.read(begun, |known| {
            known.total = total;
            known.default = default;
            for (group, limit) in explicit {
                known.set_group(group, limit);
            }
        });
    }

    /// Reads, in the background, the fleet's limits of those of `groups` it has not read yet
    /// (a streamed job file's groups are known only as its lines come), so that what the
    /// guard writes back after a loss of Redis's data includes them.
    pub fn learn(self: &Arc<Self>, groups: &[Group]) {
        let new: Vec<Group> = {
            let mut learnt = lock(&self.learnt);
            groups
                .iter()
                .filter(|group| learnt.insert((*group).clone()))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return;
        }
        let fleet = Arc::clone(self);
        tokio::spawn(async move {
            for group in new {
                // Read again if this run wrote limits meanwhile (a group is learnt once).
                loop {
                    let begun = fleet.known.read_begins();
                    // Unreadable now (Redis unreachable, or the limits lost): left as known.
                    let Ok(limit) = fleet.pool.limit(&group).await else {
                        break;
                    };
                    if fleet
                        .known
                        .read(begun, |known| known.set_group(group.clone(), limit))
                    {
                        break;
                    }
                }
            }
        });
    }

    /// How many groups [`learn`](Self::learn) has seen.
    fn learnt_count(&self) -> usize {
        lock(&self.learnt).len()
    }

    /// The groups [`learn`](Self::learn) has seen.
    fn learnt_groups(&self) -> Vec<Group> {
        lock(&self.learnt).iter().cloned().collect()
    }

    /// [`refresh`](Self::refresh) in the background, unless one is under way.
    pub fn refresh_in_background(self: &Arc<Self>, groups: Vec<Group>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let fleet = Arc::clone(self);
        tokio::spawn(async move {
            fleet.refresh(groups).await;
            fleet.refreshing.store(false, Ordering::Release);
        });
    }

    /// Records that Redis was found unreachable (`error`); the notice to show the first time
    /// in an outage.
    pub fn went_down(&self, error: &dyn fmt::Display) -> Option<String> {
        (!self.down.swap(true, Ordering::AcqRel)).then(|| {
            format!(
                "warning: {error}; jobs wait for admission (none runs without one) until it is \
                 back"
            )
        })
    }

    /// An admission was refused because Redis lost the pool's limits: the guard writes them
    /// again at its next tick.
    pub fn saw_forgotten(&self) {
        self.told_forgotten.store(true, Ordering::Release);
    }

    /// Records that Redis answered; the notice to show if it had been unreachable.
    pub fn came_back(&self) -> Option<String> {
        // Read first: the swap (a write to a shared line) only after an outage.
        (self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel))
            .then(|| "Redis is reachable again: jobs are admitted again".to_owned())
    }
}

/// The certificates of a `rediss://` connection (`--redis-ca`, `--redis-cert`, `--redis-key`).
#[derive(Debug, Default)]
pub struct Tls {
    roots: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Tls {
    /// Reads the files named (`ca`, and `cert` with `key`).
    ///
    /// # Errors
    ///
    /// A file cannot be read: the message to show.
    pub fn read(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<Tls, String> {
        let read = |option: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|error| format!("{option} {}: cannot read it: {error}", path.display()))
        };
        let roots = ca.map(|path| read("--redis-ca", path)).transpose()?;
        let client = match (cert, key) {
            (Some(cert), Some(key)) => {
                Some((read("--redis-cert", cert)?, read("--redis-key", key)?))
            }
            // The arguments require both.
            _ => None,
        };
        Ok(Tls { roots, client })
    }
}

/// Checks that `url` is a Redis URL (`redis://`, `rediss://`, `redis+unix://`, `unix://`),
/// without connecting.
///
/// # Errors
///
/// The message to show: what is wrong, without the URL (it may hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    url.into_connection_info().map(drop).map_err(|error| {
        format!(
            "--redis: not a Redis URL ({}); expected redis://[USER:PASSWORD@]HOST[:PORT][/DB] \
             or rediss:// for TLS",
            error
        )
    })
}

/// Whether `url` is a `rediss://` (TLS) URL.
pub fn is_tls(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
}

/// The Redis a URL names, for messages: the address and database, never credentials.
pub fn redacted(url: &str) -> String {
    use redis::IntoConnectionInfo;
    match url.into_connection_info() {
        Ok(info) => match info.redis_settings().db() {
            0 => info.addr().to_string(),
            db => format!("{} (database {db})", info.addr()),
        },
        Err(_) => "a malformed URL".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read of the fleet's limits begun before a write of this run (the read may have
    /// reached Redis first) does not put back what the write replaced; a read begun after it
    /// is taken in.
    #[test]
    fn a_read_begun_before_a_write_of_this_run_is_not_taken_in() {
        let known = Known::default();
        let db: Group = Arc::from("db");
        let begun = known.read_begins();
        known.wrote(|limits| limits.set_group(db.clone(), Some(2)));
        assert!(!known.read(begun, |limits| limits.set_group(db.clone(), Some(1))));
        assert_eq!(known.lock().groups.get(&db), Some(&2));
        let begun = known.read_begins();
        assert!(known.read(begun, |limits| limits.set_group(db.clone(), None)));
        assert_eq!(known.lock().groups.get(&db), None);
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redacted("redis://user:secret@db.example:6380/2"),
            "db.example:6380 (database 2)"
        );
        assert_eq!(redacted("redis://:secret@127.0.0.1/"), "127.0.0.1:6379");
        assert_eq!(redacted("http://x:secret@host/"), "a malformed URL");
    }
}
