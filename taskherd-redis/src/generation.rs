//! Which generation of the pool's limits this process has seen, and what it does when Redis
//! has another.
//!
//! The first write of limits into a pool that has none (never set, or lost with Redis's data)
//! starts a generation: a random number in `cfg` (see `scripts/lib.lua`), kept by every later
//! write until Redis loses the pool's data again. One bit ("some limits are set") could not
//! tell a process that saw the limits whether those in Redis are still them or were written
//! again after a loss, perhaps only some of them, by a process that knew only those: it then
//! admitted under what was there, over every limit it knew and the new writer did not.
//!
//! # Invariant
//!
//! A process that has seen generation G and finds another one (or none) acts on none of the
//! pool's limits until it has caught up: with limits to restore
//! ([`restore_limits`](crate::RedisPoolBuilder::restore_limits) or
//! [`restore_limits_with`](crate::RedisPoolBuilder::restore_limits_with)), it writes them
//! where the pool has none (`fill`, in the generation there is, or a new one) and then takes
//! that generation as seen; without, it fails closed while there are none
//! ([`Unavailable::forgotten`]) and takes the new generation as it is once there is one (it
//! knows nothing to write, as a process built after the loss). Its admission is made again
//! after that, never before. A write of limits by a process with limits to restore is refused
//! by `limits.lua` in another generation than the one it saw, and made after it caught up:
//! its batch lands on top of its limits to restore, which never undo it.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionManager;

use crate::engine::Unavailable;
use crate::key::InvalidKey;
use crate::scripts::{LimitBatch, LimitsMode};
use crate::wakers::caught;

/// The limits a process writes into a pool that lost them: computed each time they are
/// written.
pub(crate) type Restore = Arc<dyn Fn() -> Result<LimitBatch, InvalidKey> + Send + Sync>;

/// The generation of the pool's limits this process has seen (0: none yet), and the limits it
/// restores. Shared by the engine (reads, writes) and its admitter (admissions).
pub(crate) struct Generations {
    seen: AtomicU64,
    restore: Option<Restore>,
    prefix: String,
    /// How many times the limits to restore were written after a loss (a statistic).
    restored: AtomicU64,
}

impl fmt::Debug for Generations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generations")
            .field("seen", &self.seen())
            .field("restore", &self.restore.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`Generations::caught_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaughtUp {
    /// Nothing to do: what was read or decided holds.
    Already,
    /// The new generation was taken as it is: what was read holds; an admission refused for
    /// it is to be made again.
    Taken,
    /// This process's limits were written where the pool had none: what was read may be
    /// stale; an admission refused for it is to be made again.
    Written,
}

impl Generations {
    pub(crate) fn new(seen: u64, restore: Option<Restore>, prefix: String) -> Self {
        Self {
            seen: AtomicU64::new(seen),
            restore,
            prefix,
            restored: AtomicU64::new(0),
        }
    }

    /// The generation seen, 0 for none. Relaxed: a number sent with later calls; one racing
    /// with an update sends the older value, as if it had been sent first, and is answered
    /// with a generation to catch up with.
    pub(crate) fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// See [`RedisPool::limits_restored`](crate::RedisPool::limits_restored).
    pub(crate) fn restored(&self) -> u64 {
        self.restored.load(Ordering::Relaxed)
    }

    /// A read of counts alone found the pool's limits in generation `found` (0: not set):
    /// taken as seen if none was (the limits were set), nothing else.
    pub(crate) fn observe(&self, found: u64) {
        // Read first: every admission call's reply comes here, and a generation is seen
        // after the first (no read-modify-write on the shared line then).
        if found != 0 && self.seen() == 0 {
            let _ = self
                .seen
                .compare_exchange(0, found, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Writes the limits to restore, if this process has any, into a pool that has none
    /// (`restore` mode: the pool is left as it is if it has limits); the generation there is
    /// after it (0 if there are none and nothing was written). For building the pool.
    pub(crate) async fn restore_at_start(
        &self,
        conn: &mut ConnectionManager,
    ) -> Result<Option<u64>, Unavailable> {
        let Some(restore) = &self.restore else {
            return Ok(None);
        };
        let batch = limits(restore)?;
        let (_, generation) = write(&batch, &self.prefix, LimitsMode::Restore, 0, conn).await?;
        Ok(Some(generation))
    }

    /// A call that acts on the limits (an admission, a read of a limit or of statistics)
    /// found them in generation `found` (0: not set). See the module's invariant.
    ///
    /// # Errors
    ///
    /// [`Unavailable::forgotten`] if this process saw limits set, there are none now, and it
    /// has none to restore; an error of the write of its limits.
    pub(crate) async fn caught_up(
        &self,
        found: u64,
        conn: &mut ConnectionManager,
    ) -> Result<CaughtUp, Unavailable> {
        let seen = self.seen();
        if found == seen {
            return Ok(CaughtUp::Already);
        }
        if seen == 0 {
            // The first limits this process sees.
            self.observe(found);
            return Ok(CaughtUp::Already);
        }
        let Some(restore) = &self.restore else {
            if found == 0 {
                return Err(Unavailable::forgotten());
            }
            self.seen.store(found, Ordering::Relaxed);
            tracing::info!(
                "Redis had lost the pool's limits; limits have been written again since"
            );
            return Ok(CaughtUp::Taken);
        };
        let batch = limits(restore)?;
        let (_, generation) = write(&batch, &self.prefix, LimitsMode::Fill, 0, conn)
            .await
            .inspect_err(|error| {
                tracing::warn!(
                    error = %error.0,
                    "Redis has lost the pool's limits; writing this process's limits failed"
                );
            })?;
        self.seen.store(generation, Ordering::Relaxed);
        // Relaxed: a statistic.
        self.restored.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "Redis had lost the pool's limits (restarted without its data?): this process \
             wrote its restore_limits again where the pool had none"
        );
        Ok(CaughtUp::Written)
    }

    /// The generation a write of limits by this process (`set_limits` and the like) is to
    /// find the pool in: for a process with limits to restore, the one it has seen (a write
    /// into another is refused, and the process catches up first, so that what it writes is
    /// on top of its limits to restore and never undone by them); 0 (any) for the others.
    pub(crate) fn expected_by_writes(&self) -> u64 {
        if self.restore.is_some() {
            self.seen()
        } else {
            0
        }
    }

    /// A write of limits by this process found the pool in generation `found`, or started it:
    /// seen now.
    pub(crate) fn wrote(&self, found: u64) {
        self.seen.store(found, Ordering::Relaxed);
    }
}

/// One `limits.lua` call applying `batch` in `mode` if the pool's limits are in generation
/// `expected` (0: any): the number of waiters granted, -1 if in [`LimitsMode::Restore`] the
/// pool had limits (no limit written), -2 if its generation is not `expected` (nothing
/// written); and the generation of the pool's limits after it.
pub(crate) async fn write(
    batch: &LimitBatch,
    prefix: &str,
    mode: LimitsMode,
    expected: u64,
    conn: &mut ConnectionManager,
) -> Result<(i64, u64), Unavailable> {
    let invocation = batch.invocation(prefix, mode, expected);
    Ok(caught(invocation.invoke_async(conn)).await?)
}

/// The limits `restore` gives now. Its panic is caught (it runs on the admitter's task, which
/// must not end) and fails the call that needed them.
fn limits(restore: &Restore) -> Result<LimitBatch, Unavailable> {
    match catch_unwind(AssertUnwindSafe(|| restore())) {
        Ok(Ok(batch)) => Ok(batch),
        Ok(Err(InvalidKey(_))) => Err(Unavailable::lost(
            "a key of the limits to restore is invalid (a custom RedisKey)",
        )),
        Err(_) => {
            tracing::error!("the function given to restore_limits_with panicked");
            Err(Unavailable::lost(
                "the function given to restore_limits_with panicked",
            ))
        }
    }
}
