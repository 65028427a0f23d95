//! Graceful shutdown of a server whose work runs in a [`TaskPool`].
//!
//! A simulated server accepts jobs from five peers under limits: at most 8 jobs in total, 3 per
//! peer, and 2 at a time against the database. Four peers are impatient: a job that does not
//! fit is refused at once (`try_spawn`) and shed. One peer sends batch work that queues until it
//! fits (`spawn(..).await`). One of the impatient peers sometimes sends a job that would run for
//! half a minute.
//!
//! After 600 ms a shutdown signal arrives (simulated with a timer; a real server would also
//! listen to `tokio::signal::ctrl_c()`, which needs tokio's `signal` feature). The server then:
//!
//! 1. closes the pool ([`TaskPool::close`]): new requests are refused with `is_closed()`, and
//!    batch jobs still queued get their job back unrun;
//! 2. gives running jobs a grace period to finish (`timeout(grace, pool.wait())`);
//! 3. aborts the stragglers ([`TaskPool::abort_all`]) and waits again until the pool is empty.
//!
//! It prints the statistics of the total and of a few groups before and after, and checks that
//! every admitted job either completed or was aborted, and that the pool ends empty. It takes
//! about one second.
//!
//! Run it with:
//!
//!     cargo run -p taskherd --example graceful_shutdown

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskherd::{Group, TaskPool};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// The groups a job can count in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Peer(u8),
    Db,
}

const IMPATIENT_PEERS: u8 = 4;
/// The peer whose jobs queue instead of being shed.
const BATCH_PEER: u8 = IMPATIENT_PEERS;
/// The impatient peer that sometimes sends a job that would take 30 s.
const SLOW_PEER: u8 = 3;

const RUN_FOR: Duration = Duration::from_millis(600);
const GRACE: Duration = Duration::from_millis(400);

/// What happened to the requests; jobs' own outcomes are read from their `JoinHandle`s.
#[derive(Default)]
struct Tally {
    shed: AtomicU64,
    refused_closed: AtomicU64,
    returned_unrun: AtomicU64,
    /// The handles of every admitted job.
    jobs: Mutex<Vec<JoinHandle<()>>>,
}

/// A simulated job: holds its groups for `duration`.
fn job(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
    sleep(duration)
}

/// A tiny deterministic pseudo-random sequence (xorshift), so runs look alike.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// An impatient peer: sends a job every 10–40 ms; a job that does not fit is shed. Stops when
/// the server refuses because it is shutting down.
async fn impatient_peer(pool: TaskPool<Key>, peer: u8, tally: Arc<Tally>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(peer + 1));
    for n in 0u64.. {
        sleep(Duration::from_millis(10 + rng.below(30))).await;
        let slow = peer == SLOW_PEER && n % 5 == 0;
        let duration = if slow {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(30 + rng.below(220))
        };
        let mut groups = vec![Key::Peer(peer)];
        if !slow && rng.below(3) == 0 {
            groups.push(Key::Db);
        }
        match pool.try_spawn(groups, job(duration)) {
            Ok(handle) => tally.jobs.lock().unwrap().push(handle),
            Err(refused) if refused.is_closed() => {
                tally.refused_closed.fetch_add(1, Ordering::Relaxed);
                return; // "503: shutting down"; this peer goes away
            }
            Err(refused) => {
                if refused.full_group() == Some(&Group::Total) {
                    // A real server would answer "busy, retry later".
                }
                tally.shed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The batch peer: every job waits for room instead of being shed. When the pool closes, the
/// queued job is handed back unrun, and the peer stops.
async fn batch_peer(pool: TaskPool<Key>, tally: Arc<Tally>) {
    loop {
        let work = job(Duration::from_millis(120));
        match pool.spawn([Key::Peer(BATCH_PEER), Key::Db], work).await {
            Ok(handle) => tally.jobs.lock().unwrap().push(handle),
            Err(closed) => {
                // Never polled: a real server could persist it and run it after a restart.
                let _unrun = closed.into_inner();
                tally.returned_unrun.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
}

fn print_stats(when: &str, pool: &TaskPool<Key>) {
    println!("{when}: {pool:?}");
    println!(
        "  {:<8} {:>7} {:>7} {:>6} {:>8} {:>8} {:>5}",
        "group", "running", "waiting", "limit", "admitted", "rejected", "peak"
    );
    let rows = [
        ("total".to_owned(), pool.total_stats()),
        ("db".to_owned(), pool.stats(&Key::Db)),
    ]
    .into_iter()
    .chain((0..=BATCH_PEER).map(|peer| (format!("peer {peer}"), pool.stats(&Key::Peer(peer)))));
    for (name, stats) in rows {
        let limit = stats
            .limit
            .map_or("-".to_owned(), |limit| limit.to_string());
        println!(
            "  {:<8} {:>7} {:>7} {:>6} {:>8} {:>8} {:>5}",
            name, stats.running, stats.waiting, limit, stats.admitted, stats.rejected, stats.peak
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let started = Instant::now();
    // The database keeps an explicit limit, so its statistics survive while it is idle.
    let pool = TaskPool::builder()
        .max_tasks(8)
        .default_limit(3)
        .limit(Key::Db, 2)
        .build();
    let tally = Arc::new(Tally::default());

    let mut peers = Vec::new();
    for peer in 0..IMPATIENT_PEERS {
        peers.push(tokio::spawn(impatient_peer(
            pool.clone(),
            peer,
            Arc::clone(&tally),
        )));
    }
    peers.push(tokio::spawn(batch_peer(pool.clone(), Arc::clone(&tally))));

    // The shutdown signal.
    sleep(RUN_FOR).await;
    println!("shutdown signal after {:?}", started.elapsed());
    print_stats("before shutdown", &pool);

    // 1. Stop admitting.
    assert!(pool.close(), "this call closes the pool");
    let late = pool.try_spawn([Key::Peer(9)], async {});
    assert!(late.is_err_and(|refused| refused.is_closed()));
    println!("closed: {} running, new requests are refused", pool.len());

    // 2. Give running jobs a grace period.
    match timeout(GRACE, pool.wait()).await {
        Ok(()) => println!("every job finished within the grace period"),
        Err(_) => {
            // 3. Abort the stragglers; each releases its slots as its future is dropped.
            let stragglers = pool.abort_all();
            println!(
                "grace period of {GRACE:?} over: aborting {stragglers} straggler(s) still running"
            );
            timeout(Duration::from_secs(2), pool.wait())
                .await
                .expect("aborted jobs end at their next scheduling point");
        }
    }

    // The peers notice the shutdown at their next request.
    for peer in peers {
        timeout(Duration::from_secs(2), peer)
            .await
            .expect("every peer stops once the pool is closed")
            .expect("a peer panicked");
    }

    // Every job has ended: its JoinHandle says how.
    let (mut completed, mut aborted) = (0u64, 0u64);
    let jobs = std::mem::take(&mut *tally.jobs.lock().unwrap());
    for handle in jobs {
        assert!(handle.is_finished(), "a job outlived the shutdown");
        match handle.await {
            Ok(()) => completed += 1,
            Err(error) if error.is_cancelled() => aborted += 1,
            Err(error) => panic!("a job failed: {error}"),
        }
    }

    print_stats("after shutdown", &pool);
    println!(
        "  (peers have no explicit limit: their statistics went with them when they went idle; \
         db and the total keep theirs)"
    );
    let total = pool.total_stats();
    println!(
        "jobs: {} admitted = {completed} completed + {aborted} aborted; {} shed while busy; \
         {} refused while shutting down; {} batch job(s) handed back unrun",
        total.admitted,
        tally.shed.load(Ordering::Relaxed),
        tally.refused_closed.load(Ordering::Relaxed),
        tally.returned_unrun.load(Ordering::Relaxed),
    );
    println!("finished in {:?}", started.elapsed());

    assert!(pool.is_closed() && pool.is_empty(), "the pool ends empty");
    assert_eq!(pool.waiting_len(), 0);
    assert_eq!((total.running, total.waiting), (0, 0));
    assert_eq!(
        completed + aborted,
        total.admitted,
        "every job is accounted for"
    );
}
