//! Load shedding per peer, per tenant and in total.
//!
//! This example simulates a server that receives a two-second burst of requests from six
//! peers, two of them greedy. Every request is handled in its own task, admitted by a
//! [`TaskPool`] only if it fits every group it names:
//!
//! - the total: at most 12 requests in flight (`max_tasks`);
//! - `Peer(id)`: at most 4 per peer (`default_limit`). A simulated operator lowers greedy
//!   peer 1 to 1 while the burst runs, and later raises it to 6 (`set_limit`);
//! - `Tenant(name)`, for write requests only: tenant "acme"'s database takes at most 2
//!   writers at a time (an explicit limit); "globex" gets the default of 4.
//!
//! A request that does not fit is refused at once (`try_spawn`). The pool hands the handler
//! back unpolled (`into_inner`); the server retries it once 25 ms later and sheds it if it is
//! refused again. Handlers record the concurrency they observe. At the end the example
//! prints a table, checks that no group ever ran more tasks than its limit allowed, and
//! checks that the pool is empty as soon as the last handler's `JoinHandle` resolves.
//!
//! Run it with:
//!
//!     cargo run --release -p taskherd --example peer_server
//!
//! Set `TASKHERD_TRACE=1` to also print taskherd's debug events (refusals, limit changes) to
//! stderr.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use taskherd::{Group, TaskPool};
use tokio::time::{self, Instant};

/// The groups a request can belong to, besides the implicit total.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Peer(u32),
    Tenant(&'static str),
}

const MAX_TASKS: usize = 12;
const PER_PEER: usize = 4;
const ACME_WRITERS: usize = 2;
/// What the operator sets greedy peer 1 to, and when.
const THROTTLED: usize = 1;
const THROTTLE_AT: Duration = Duration::from_millis(500);
const RAISED: usize = 6;
const RAISE_AT: Duration = Duration::from_millis(1300);

const TICK: Duration = Duration::from_millis(5);
const BURST: Duration = Duration::from_secs(2);
const RETRY_AFTER: Duration = Duration::from_millis(25);

/// A peer of the server: its tenant, and how often it sends requests.
struct PeerSpec {
    id: u32,
    tenant: &'static str,
    /// One arrival every `every` ticks...
    every: u32,
    /// ...of this many requests.
    per_arrival: u32,
}

#[rustfmt::skip]
const PEERS: [PeerSpec; 6] = [
    PeerSpec { id: 1, tenant: "acme",   every: 1, per_arrival: 2 }, // greedy
    PeerSpec { id: 2, tenant: "globex", every: 1, per_arrival: 1 }, // greedy
    PeerSpec { id: 3, tenant: "acme",   every: 4, per_arrival: 1 },
    PeerSpec { id: 4, tenant: "acme",   every: 5, per_arrival: 1 },
    PeerSpec { id: 5, tenant: "globex", every: 4, per_arrival: 1 },
    PeerSpec { id: 6, tenant: "globex", every: 6, per_arrival: 1 },
];
const TENANTS: [&str; 2] = ["acme", "globex"];

/// One simulated request. Every third request of a peer writes to its tenant's database and
/// is therefore also limited by the tenant's group.
#[derive(Debug, Clone, Copy)]
struct Request {
    peer: usize,
    write: bool,
    work: Duration,
}

impl Request {
    fn new(peer: usize, seq: u32) -> Self {
        // Deterministic "random" service times between 10 and 40 ms.
        let ms = 10 + (seq * 7 + PEERS[peer].id * 13) % 31;
        Request {
            peer,
            write: seq % 3 == 2,
            work: Duration::from_millis(ms.into()),
        }
    }

    fn tenant(&self) -> &'static str {
        PEERS[self.peer].tenant
    }

    /// The groups the request's handler runs in: its peer, plus its tenant for writes.
    fn groups(&self) -> impl Iterator<Item = Key> {
        let peer = Key::Peer(PEERS[self.peer].id);
        let tenant = self.write.then(|| Key::Tenant(self.tenant()));
        std::iter::once(peer).chain(tenant)
    }
}

/// Concurrency as the handlers themselves observe it.
///
/// A handler enters its gauges after the pool admitted it and leaves them before the pool
/// releases it, so a gauge never reads more than the pool's own count for that group.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) -> (Inflight<'_>, usize) {
        // Relaxed: each gauge is one counter on its own; the pool's admission and release
        // order the handlers' enter and leave calls.
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        (Inflight(self), now)
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Leaves its gauge when the handler finishes (or is dropped).
struct Inflight<'a>(&'a Gauge);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `Gauges::phase` is 0 until the operator's change to peer 1 has taken full effect,
/// `SETTLED` while peer 1's limit is 1 and the requests admitted before the change have
/// drained, and `RAISING` from just before the limit is raised again.
const SETTLED: u8 = 1;
const RAISING: u8 = 2;

#[derive(Default)]
struct Gauges {
    total: Gauge,
    peers: [Gauge; PEERS.len()],
    tenants: [Gauge; TENANTS.len()],
    phase: AtomicU8,
    /// Peer 1's peak while `phase` was `SETTLED`.
    throttled_peak: AtomicUsize,
}

/// The request handler: pretend to work for a few milliseconds.
async fn handle(req: Request, gauges: Arc<Gauges>) {
    let (_total, _) = gauges.total.enter();
    // SeqCst for `phase`: if it reads SETTLED both before and after this handler entered
    // its peer gauge, the entry happened while peer 1's limit was 1 and the peer had
    // drained, so the gauge must read at most 1 (checked at the end).
    let before = gauges.phase.load(Ordering::SeqCst);
    let (_peer, now) = gauges.peers[req.peer].enter();
    let after = gauges.phase.load(Ordering::SeqCst);
    if req.peer == 0 && before == SETTLED && after == SETTLED {
        gauges.throttled_peak.fetch_max(now, Ordering::Relaxed);
    }
    let _tenant = req.write.then(|| {
        let tenant = TENANTS.iter().position(|&t| t == req.tenant()).unwrap();
        gauges.tenants[tenant].enter()
    });
    time::sleep(req.work).await;
}

/// What happened to one peer's requests.
#[derive(Default)]
struct PeerStats {
    sent: usize,
    admitted: usize,
    admitted_on_retry: usize,
    shed: usize,
}

/// Which group was full when a request was refused.
#[derive(Default)]
struct Refusals {
    total: usize,
    peer: usize,
    tenant: usize,
}

impl Refusals {
    fn count(&mut self, full: Option<&Group<Key>>) {
        match full {
            Some(Group::Total) => self.total += 1,
            Some(Group::Key(Key::Peer(_))) => self.peer += 1,
            Some(Group::Key(Key::Tenant(_))) => self.tenant += 1,
            None => unreachable!("the pool is never closed in this example"),
        }
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os("TASKHERD_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with_writer(std::io::stderr)
            .init();
    }

    let pool = TaskPool::<Key>::builder()
        .max_tasks(MAX_TASKS)
        .default_limit(PER_PEER)
        .limit(Key::Tenant("acme"), ACME_WRITERS)
        .log_keys()
        .build();
    let gauges = Arc::new(Gauges::default());
    let start = Instant::now();
    let ms = move || start.elapsed().as_millis();

    println!(
        "{} peers, {} ms burst: max_tasks {MAX_TASKS}, {PER_PEER} per peer (default), \
         acme writers {}, globex writers {}",
        PEERS.len(),
        BURST.as_millis(),
        pool.limit(&Key::Tenant("acme")).unwrap(),
        pool.effective_limit(&Key::Tenant("globex")).unwrap(),
    );

    // The operator throttles greedy peer 1, then gives it more room than the default.
    let operator = tokio::spawn({
        let pool = pool.clone();
        let gauges = gauges.clone();
        async move {
            let peer1 = Key::Peer(1);
            time::sleep_until(start + THROTTLE_AT).await;
            println!(
                "[{:>4} ms] operator: peer 1 is greedy, limit {} -> {THROTTLED} ({} running)",
                ms(),
                pool.effective_limit(&peer1).unwrap(),
                pool.task_count(&peer1),
            );
            pool.set_limit(peer1.clone(), THROTTLED);
            // Running handlers are not cancelled: the peer is refused until it drains.
            while pool.task_count(&peer1) > THROTTLED {
                time::sleep(Duration::from_millis(1)).await;
            }
            gauges.phase.store(SETTLED, Ordering::SeqCst);
            println!("[{:>4} ms] operator: peer 1 drained to {THROTTLED}", ms());

            time::sleep_until(start + RAISE_AT).await;
            gauges.phase.store(RAISING, Ordering::SeqCst);
            pool.set_limit(peer1.clone(), RAISED);
            println!(
                "[{:>4} ms] operator: peer 1 limit {THROTTLED} -> {RAISED}",
                ms()
            );
        }
    });

    let mut stats: Vec<PeerStats> = PEERS.iter().map(|_| PeerStats::default()).collect();
    let mut refusals = Refusals::default();
    let mut handles = Vec::new();
    let mut retries = VecDeque::new();
    let mut seqs = [0u32; PEERS.len()];
    let mut ticks = time::interval(TICK);

    for tick in 0u32.. {
        let now = ticks.tick().await;
        let arriving = now < start + BURST;
        if !arriving && retries.is_empty() {
            break;
        }

        // Retry, once, the requests refused a little while ago.
        while retries.front().is_some_and(|&(due, _, _)| due <= now) {
            let (_, req, handler): (_, Request, _) = retries.pop_front().unwrap();
            match pool.try_spawn(req.groups(), handler) {
                Ok(handle) => {
                    stats[req.peer].admitted_on_retry += 1;
                    handles.push(handle);
                }
                Err(refused) => {
                    refusals.count(refused.full_group());
                    stats[req.peer].shed += 1;
                    // Dropping the handler sheds the request; it never ran.
                    drop(refused.into_inner());
                }
            }
        }

        if !arriving {
            continue;
        }
        for (peer, spec) in PEERS.iter().enumerate() {
            if tick % spec.every != 0 {
                continue;
            }
            for _ in 0..spec.per_arrival {
                let req = Request::new(peer, seqs[peer]);
                seqs[peer] += 1;
                stats[peer].sent += 1;
                match pool.try_spawn(req.groups(), handle(req, gauges.clone())) {
                    Ok(handle) => {
                        stats[peer].admitted += 1;
                        handles.push(handle);
                    }
                    Err(refused) => {
                        refusals.count(refused.full_group());
                        // The handler comes back unpolled: keep it for one retry.
                        retries.push_back((now + RETRY_AFTER, req, refused.into_inner()));
                    }
                }
            }
        }
    }

    operator.await.expect("the operator task panicked");
    for handle in handles {
        handle.await.expect("a request handler panicked");
    }
    // Counts drop before a JoinHandle resolves: nothing to wait for.
    let drained = pool.len();
    let elapsed = ms();

    println!();
    println!("peer  tenant  sent  admitted  on retry  shed  peak  limit");
    let mut ok = true;
    for (peer, spec) in PEERS.iter().enumerate() {
        let s = &stats[peer];
        let peak = gauges.peers[peer].peak();
        let (allowed, history) = if spec.id == 1 {
            (
                PER_PEER.max(RAISED),
                format!("{PER_PEER} -> {THROTTLED} -> {RAISED}"),
            )
        } else {
            (PER_PEER, PER_PEER.to_string())
        };
        ok &= peak <= allowed;
        println!(
            "{:>4}  {:<6}  {:>4}  {:>8}  {:>8}  {:>4}  {:>4}  {history}",
            spec.id, spec.tenant, s.sent, s.admitted, s.admitted_on_retry, s.shed, peak,
        );
    }
    let throttled_peak = gauges.throttled_peak.load(Ordering::Relaxed);
    ok &= throttled_peak <= THROTTLED;
    println!("peer 1 while throttled (after draining): peak {throttled_peak}, limit {THROTTLED}");
    for (tenant, name) in TENANTS.iter().enumerate() {
        let peak = gauges.tenants[tenant].peak();
        let limit = pool.effective_limit(&Key::Tenant(name)).unwrap();
        ok &= peak <= limit;
        println!("tenant {name:<6} writers: peak {peak}, limit {limit}");
    }
    let total_peak = gauges.total.peak();
    ok &= total_peak <= MAX_TASKS;
    println!("total: peak {total_peak}, max_tasks {MAX_TASKS}");

    let sent: usize = stats.iter().map(|s| s.sent).sum();
    let served: usize = stats.iter().map(|s| s.admitted + s.admitted_on_retry).sum();
    let shed: usize = stats.iter().map(|s| s.shed).sum();
    println!(
        "{sent} requests: {served} served, {shed} shed; refusals (first tries and retries) \
         by full group: total {}, peer {}, tenant {}",
        refusals.total, refusals.peer, refusals.tenant,
    );
    println!("pool.len() after the last handler finished: {drained} ({elapsed} ms)");

    assert!(
        ok,
        "a group ran more handlers than its limit allowed (see the table above)"
    );
    assert_eq!(
        served + shed,
        sent,
        "every request is either served or shed"
    );
    assert_eq!(
        drained, 0,
        "the pool must be empty once every JoinHandle has resolved"
    );
    assert!(pool.is_empty());
}
