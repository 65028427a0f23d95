//! taskherd's per-group concurrency limits shared by a fleet of processes, on Redis, with
//! leases.
//!
//! A [`RedisPool`] speaks the vocabulary of [`taskherd::TaskPool`] (`try_spawn`, `spawn`,
//! `try_acquire`, `acquire`, `set_limit`, `stats`…) but keeps its counts, limits and queues in
//! Redis (or anything speaking its protocol, such as Valkey), so that every process that opens
//! a pool of the same name shares them: "at most 2 jobs against db-7, 20 per tenant, 500 in
//! all", for ten workers on five machines.
//!
//! - [`RedisPool`]: the pool, and [`RedisPoolBuilder`] to connect it.
//! - [`RedisPermit`]: an admission held by the caller, which tells when its lease is lost.
//! - [`RedisKey`]: how a group key becomes a Redis key segment.
//! - [`UnavailableError`]: Redis unreachable, for calls that are not admissions (admissions
//!   use `taskherd`'s error types, whose `is_unavailable()` says so).
//!
//! Every decision is made in one server-side Lua script call (one round trip): an admission
//! checks the total and every named group and takes a slot in all or none (admissions that one
//! process's callers make at the same moment share a call, each still all or none); waiting is FIFO per group with
//! one ticket order for the pool, cancel safe and deadlock free, as in-process. Admissions and
//! waiters are leased on the Redis server's clock and renewed in one call per interval for the
//! whole process; a crashed process's slots come back within the lease.
//!
//! # Features
//!
//! - `tls`: `rediss://` URLs, over rustls (with its `ring` provider): the server's certificate
//!   is checked against the system's root certificates or those given to
//!   `RedisPoolBuilder::tls_root_certificates`, and `RedisPoolBuilder::tls_client_certificate`
//!   presents a client certificate. Off by default.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use taskherd::LimitChanges;
//! use taskherd_redis::RedisPool;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Every worker of the fleet opens the pool "jobs" on the same Redis.
//! let pool: RedisPool<&str> = RedisPool::builder("redis://127.0.0.1:6379/", "jobs")
//!     .lease(Duration::from_secs(15))
//!     .build()
//!     .await?;
//! pool.set_limits(LimitChanges::new().max_tasks(500).default_limit(20).limit("db-7", 2))
//!     .await?;
//!
//! match pool.try_spawn(["tenant-3", "db-7"], async { /* the job */ }).await {
//!     Ok(task) => task.await?,
//!     Err(refused) if refused.is_unavailable() => eprintln!("Redis is down: {refused}"),
//!     Err(refused) => println!("full: {:?}", refused.full_group()),
//! }
//!
//! // Waiting, first come first served across the fleet; the permit says if Redis lost it.
//! let permit = pool.acquire(["db-7"]).await?;
//! assert!(!permit.is_lost());
//! drop(permit);
//! // Before exiting: stop this process's share (close here, abort its tasks, wait for them)
//! // and hand the last slots back now rather than when their leases expire.
//! pool.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # When not to use it
//!
//! - One process: use [`taskherd::TaskPool`], which admits in nanoseconds, not a round trip.
//! - Rate limits (requests per second): this limits concurrency.
//!
//! # Redis's configuration
//!
//! The pool's keys in Redis have no expiry, and none of them may go missing on its own. A
//! Redis set to evict keys without an expiry when it is full (`maxmemory` set, with an
//! `allkeys-*` `maxmemory-policy`, as caches often are) may drop one (a limit, a count, a
//! holder), which no process can tell from a key never written: limits may then be exceeded.
//! Use `maxmemory-policy noeviction` (Redis's default: a full Redis then refuses writes, so
//! admissions fail as unavailable, and renewals fail too: running work is presumed lost once
//! none was confirmed for 90% of its lease, as while Redis is unreachable) or a `volatile-*`
//! policy; [`RedisPool::redis_evicts_keys`] says, and a
//! warning is logged, if the Redis a pool is built on evicts. Persistence (`appendonly`, or
//! snapshots) keeps the limits and leases across restarts: see below for what happens without.
//!
//! # Redis restarts and failover
//!
//! Redis is the only place admission is decided: while it is unreachable, nothing is admitted
//! (the error says *unavailable*, never *full*) and the pool reconnects by itself. Work already
//! admitted fails closed: once no renewal has been confirmed for 90% of the lease, the process
//! presumes its leases lost (tasks aborted by default, permits' `lost()` resolves), before the
//! rest of the fleet could reap them; its waiting calls then give up their places and fail
//! as unavailable (the work handed back) if Redis is still unreachable. A restart
//! without persistence (or a failover to a replica that had not received the latest writes)
//! forgets the leases: every process finds out at its next renewal, its spawned tasks are
//! aborted (by default) and its permits report [`lost`](RedisPermit::lost); until then, work
//! admitted before the restart runs uncounted, so the limits may be exceeded for up to a third
//! of a lease (in a process paused across the restart, up to 90% of a lease: its first
//! renewal after it resumes finds out, and its work may take a step before). A process paused
//! for longer than that finds its leases lost as it resumes, before its tasks take another
//! step ([`RedisPermit::is_lost`] checks too); the lease's age is read on the monotonic
//! clock, which stands still while the machine itself is suspended, so after a suspend the
//! next renewal finds out.
//!
//! # Redis loses its data
//!
//! The limits are stored in Redis as well: such a restart (or a `FLUSHALL`) forgets them. A
//! process that has seen them set (by any process: they were there when it built its pool,
//! or it set them, or an admission or a read of a limit or of statistics found them there
//! since) then admits nothing, failing closed: every admission (and every read of a limit or of
//! statistics, which name the limit in force and cannot say "no limit" truthfully; reads of
//! counts alone such as [`RedisPool::len`] go on) fails as unavailable with
//! [`UnavailableError::is_forgotten`] (the work handed back), waiting calls whose places were
//! lost with the data included, until any process of the fleet sets the limits again
//! ([`RedisPool::set_limits`] or another setter; an empty [`LimitChanges`](taskherd::LimitChanges)
//! batch too, to go on without limits). Admitting into the pool without its limits would
//! exceed them: every queued call of the fleet would be admitted at once. So whoever configures
//! the fleet should write the limits again when that happens: a pool built with
//! [`restore_limits`](RedisPoolBuilder::restore_limits) (or
//! [`restore_limits_with`](RedisPoolBuilder::restore_limits_with)) does it itself (at build
//! into a pool without limits, and at the first admission, or read of a limit or of
//! statistics, that finds them lost, which then goes on under them), and so does `taskherd run
//! --redis`.
//!
//! Limits written after a loss, by whichever process, start a new *generation* of the pool's
//! limits (a random number Redis keeps with them). A process that saw an earlier generation
//! and has limits to restore writes each of them where the pool has none before it admits or
//! reads a limit again (a limit written since the loss stays as it was written), so that a
//! process that wrote back only some (one started after the loss and given one limit, say)
//! does not leave the others missing; a process with none to restore goes on under the limits
//! there are ([`RedisPool::fill_limits`] writes the rest where they are missing, for a
//! process that knows more of them). A process that has never seen the limits set (built
//! after the loss, before they were set again, in a pool whose limits nobody had set before
//! either) and has none to restore cannot tell, and admits.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod builder;
mod engine;
mod error;
mod generation;
mod key;
mod lease;
mod life;
mod permit;
mod pool;
mod scripts;
mod wakers;

pub use builder::RedisPoolBuilder;
pub use error::UnavailableError;
pub use key::{RedisKey, encode_segment};
pub use permit::RedisPermit;
pub use pool::RedisPool;
