//! Herds of tokio tasks under per-group concurrency limits, admitted atomically across every
//! group they name.
//!
//! A [`TaskPool`] runs tasks that each belong to any number of *groups* (hashable keys: a peer,
//! a tenant, a host, a database) plus the implicit *total* group. Every group can carry a limit
//! that may change at run time, and a task is admitted only if **every** group it names has room
//! — all or nothing, in one critical section. Use it to cap concurrent work per peer, per tenant
//! or per host while keeping a global cap, shedding load fast with
//! [`try_spawn`](TaskPool::try_spawn): a refused task is handed back untouched in a
//! [`TrySpawnError`], which says which [`Group`] was full.
//!
//! When there is no room, [`spawn`](TaskPool::spawn) and [`acquire`](TaskPool::acquire) wait
//! instead, first come first served in every group, cancel safe, and without deadlock whatever
//! the overlap of the groups that waiters name.
//!
//! - [`TaskPool`]: the pool; a cheap, shareable handle. Spawning (`try_spawn`, `spawn`), permits
//!   (`try_acquire`, `acquire`), limits, counts, `close`/`wait`/`shutdown`, `abort_group`, and
//!   statistics.
//! - [`Builder`]: limits and hasher before the pool starts.
//! - [`Permit`]: an admission held by the caller, for work that is not a spawned task.
//! - [`GroupStats`]: a consistent snapshot of one group's counts and history.
//! - [`DefaultHashBuilder`]: the default hasher of group keys (keyed at random, resistant to
//!   attacker-chosen keys).
//! - [`TrySpawnError`], [`TryAcquireError`], [`SpawnError`], [`AcquireError`] and [`Group`]: why
//!   work was refused (which group was full, or that the pool is closed), and the work itself back.
//! - [`backend`]: the task side and the errors, for pools that decide admission elsewhere (a
//!   store shared by a fleet of processes), so that they behave like [`TaskPool`].
//!
//! The design follows the task pool of the Python XMPP library aioxmpp (`aioxmpp.tasks.TaskPool`),
//! whose limits were documented but never enforced upstream.
//!
//! # When not to use it
//!
//! - One global limit and nothing else: a [`Semaphore`](https://docs.rs/tokio/1/tokio/sync/struct.Semaphore.html) is enough.
//! - Tracking tasks without limiting them: use [`tokio::task::JoinSet`] or `tokio_util`'s
//!   `TaskTracker`.
//! - Limits shared between processes or machines: this pool counts only its own process; the
//!   `taskherd-redis` crate shares the same limits across a fleet, on Redis.
//!
//! # Example
//!
//! ```
//! use taskherd::{Group, TaskPool};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // At most 64 requests in total, 4 per peer, and 1 at a time against the slow database.
//! let pool = TaskPool::builder().max_tasks(64).default_limit(4).limit("db", 1).build();
//!
//! let report = pool.try_spawn(["peer-7", "db"], async { "report built" }).unwrap();
//! match pool.try_spawn(["peer-8", "db"], async { "report built" }) {
//!     Ok(_) => unreachable!("db allows one task"),
//!     Err(busy) => assert_eq!(busy.full_group(), Some(&Group::Key("db"))),
//! }
//! assert_eq!(report.await.unwrap(), "report built");
//! assert_eq!(pool.task_count(&"db"), 0);
//! # }
//! ```
//!
//! # Features
//!
//! The crate has no optional features. It depends on tokio with only the `rt` feature.

#![cfg_attr(not(taskherd_lock_hold), forbid(unsafe_code))]
// The lock-hold build reads the time-stamp counter, in one function that allows it.
#![cfg_attr(taskherd_lock_hold, deny(unsafe_code))]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod backend;
mod builder;
mod core;
mod error;
mod group_set;
mod hasher;
mod limits;
mod permit;
mod pool;
mod stats;
mod sync;

#[cfg(taskherd_lock_hold)]
pub use sync::lock_hold;

pub use builder::Builder;
pub use error::{AcquireError, Group, SpawnError, TryAcquireError, TrySpawnError};
pub use hasher::{DefaultHashBuilder, DefaultKeyHasher};
pub use limits::LimitChanges;
pub use permit::Permit;
pub use pool::{Acquire, Spawn, TaskPool};
pub use stats::GroupStats;

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
