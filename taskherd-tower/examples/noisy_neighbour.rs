//! One client floods a server while four others send normal traffic: the well-behaved clients'
//! latency and success rate without the layer, then with per-client and total limits.
//!
//! ```text
//! cargo run --release -p taskherd-tower --example noisy_neighbour
//! ```
//!
//! The server's handler needs one of 8 backend workers (a database connection pool, say) for
//! 20 ms. The noisy client keeps 128 requests in flight; each well-behaved client keeps 2,
//! and gives up on a request after 250 ms (a failure). Without the layer, the noisy client's
//! requests queue for the backend ahead of everybody else's. With the layer (4 in flight per
//! client, 16 in all, refusing at once), the noisy client gets `429` for most of its requests
//! and the others are served as if it were not there. Each run lasts 2 seconds; a refused
//! noisy request is retried after 5 ms (a flood, not a polite client). In the percentiles, a
//! well-behaved request that timed out counts as taking the timeout.

#[path = "support/load.rs"]
mod load;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use taskherd::TaskPool;
use taskherd_tower::{ClassifyExt, Header, LimitLayer, PeerIp};
use tokio::sync::Semaphore;

const BACKEND_WORKERS: usize = 8;
const WORK: Duration = Duration::from_millis(20);
const RUN: Duration = Duration::from_secs(2);
const NOISY_IN_FLIGHT: usize = 128;
const GOOD_CLIENTS: usize = 4;
const GOOD_IN_FLIGHT: usize = 2;
const GOOD_TIMEOUT: Duration = Duration::from_millis(250);

fn app(limited: bool) -> Router {
    let backend = Arc::new(Semaphore::new(BACKEND_WORKERS));
    let app = Router::new().route(
        "/work",
        get(move || async move {
            let _worker = backend.acquire().await.unwrap();
            tokio::time::sleep(WORK).await;
            "done"
        }),
    );
    if !limited {
        return app;
    }
    let pool = TaskPool::builder().default_limit(4).max_tasks(16).build();
    let classify = Header::new("x-client").or(PeerIp::new().map_key(|ip: IpAddr| ip.to_string()));
    app.layer(LimitLayer::new(pool, classify))
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    ok: usize,
    refused: usize,
    timed_out: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.refused += other.refused;
        self.timed_out += other.timed_out;
    }

    fn attempts(&self) -> usize {
        self.ok + self.refused + self.timed_out
    }
}

/// One client loop: requests back to back until the run ends.
async fn client_loop(
    client: load::HttpClient,
    uri: String,
    who: String,
    start: Instant,
    noisy: bool,
) -> Tally {
    let mut tally = Tally::default();
    while start.elapsed() < RUN {
        let sent = Instant::now();
        let send = load::send(&client, &uri, &who);
        let status = if noisy {
            Some(send.await)
        } else {
            tokio::time::timeout(GOOD_TIMEOUT, send).await.ok()
        };
        match status {
            Some(200) => {
                tally.ok += 1;
                tally.latencies.push(sent.elapsed());
            }
            Some(_) => {
                tally.refused += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            None => {
                // Counted at the timeout in the percentiles: the client waited that long.
                tally.timed_out += 1;
                tally.latencies.push(GOOD_TIMEOUT);
            }
        }
    }
    tally
}

async fn run(limited: bool) -> (Tally, Tally) {
    let addr = load::serve(app(limited)).await;
    let uri = format!("http://{addr}/work");
    let client = load::client();
    let start = Instant::now();
    let spawn = |who: String, noisy: bool| {
        tokio::spawn(client_loop(client.clone(), uri.clone(), who, start, noisy))
    };
    let noisy: Vec<_> = (0..NOISY_IN_FLIGHT)
        .map(|_| spawn("noisy".to_owned(), true))
        .collect();
    let good: Vec<_> = (0..GOOD_CLIENTS * GOOD_IN_FLIGHT)
        .map(|i| spawn(format!("good-{}", i % GOOD_CLIENTS), false))
        .collect();
    let (mut noisy_tally, mut good_tally) = (Tally::default(), Tally::default());
    for handle in noisy {
        noisy_tally.add(handle.await.unwrap());
    }
    for handle in good {
        good_tally.add(handle.await.unwrap());
    }
    (good_tally, noisy_tally)
}

/// A percentile of the good clients' latencies; a timed-out request counts as the timeout.
fn latency(percentile: Duration) -> String {
    if percentile >= GOOD_TIMEOUT {
        format!("> {} ms", GOOD_TIMEOUT.as_millis())
    } else {
        load::ms(percentile)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "{GOOD_CLIENTS} well-behaved clients ({GOOD_IN_FLIGHT} in flight each, {} ms timeout) and 1 noisy client ({NOISY_IN_FLIGHT} in flight),",
        GOOD_TIMEOUT.as_millis()
    );
    println!(
        "{BACKEND_WORKERS} backend workers, {} ms per request, {} s per run\n",
        WORK.as_millis(),
        RUN.as_secs()
    );
    println!(
        "{:<36} {:>9} {:>9} {:>8}   {:>13} {:>8}",
        "", "good p50", "good p99", "good ok", "noisy served", "refused"
    );
    for (label, limited) in [
        ("without the layer", false),
        ("with LimitLayer (4/client, 16 total)", true),
    ] {
        let (mut good, noisy) = run(limited).await;
        let success = 100.0 * good.ok as f64 / good.attempts().max(1) as f64;
        println!(
            "{label:<36} {:>9} {:>9} {:>7.1}%   {:>13} {:>8}",
            latency(load::percentile(&mut good.latencies, 0.50)),
            latency(load::percentile(&mut good.latencies, 0.99)),
            success,
            noisy.ok,
            noisy.refused,
        );
    }
}
