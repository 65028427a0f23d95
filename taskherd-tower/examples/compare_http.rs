//! Requests per second and p99 latency over loopback for every contender, in one process:
//! no limit, tower's `ConcurrencyLimitLayer`, a hand-rolled `from_fn` + per-key semaphore map,
//! and `LimitLayer` with 1 and 3 groups (limits high enough never to refuse: this measures
//! the cost of admission). Prints each one's throughput relative to the hand-rolled one.
//!
//! ```text
//! cargo run --release -p taskherd-tower --example compare_http [-- SECONDS_PER_ROUND]
//! ```
//!
//! 32 connections send requests back to back; each contender runs 5 rounds (interleaved with
//! the others, each round starting with another contender, so drift in the machine's speed
//! hits all alike) and the median round is shown.

#[path = "support/contenders.rs"]
mod contenders;
#[path = "support/load.rs"]
mod load;

use std::time::{Duration, Instant};

use contenders::Contender;

const CONNECTIONS: usize = 32;
const ROUNDS: usize = 5;

struct Round {
    per_second: f64,
    p99: Duration,
}

async fn round(contender: Contender, length: Duration) -> Round {
    let addr = load::serve(contender.app()).await;
    let uri = format!("http://{addr}/work/hello");
    let client = load::client();
    // Open the connections before measuring: as many at once as the run keeps in flight.
    let warm_up: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move { load::send(&client, &uri, "client-1").await })
        })
        .collect();
    for request in warm_up {
        request.await.unwrap();
    }
    let start = Instant::now();
    let loops: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let who = format!("client-{}", i % 8);
                let mut latencies = Vec::new();
                while start.elapsed() < length {
                    let sent = Instant::now();
                    assert_eq!(load::send(&client, &uri, &who).await, 200);
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in loops {
        latencies.extend(handle.await.unwrap());
    }
    let elapsed = start.elapsed();
    Round {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p99: load::percentile(&mut latencies, 0.99),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map_or(1.0, |s| s.parse().expect("seconds per round"));
    let length = Duration::from_secs_f64(seconds);
    let mut rounds: Vec<Vec<Round>> = Contender::ALL.iter().map(|_| Vec::new()).collect();
    for r in 0..ROUNDS {
        // Each round starts with another contender, so none is always first.
        for k in 0..Contender::ALL.len() {
            let i = (r + k) % Contender::ALL.len();
            rounds[i].push(round(Contender::ALL[i], length).await);
        }
    }
    let median: Vec<Round> = rounds
        .into_iter()
        .map(|mut rounds| {
            rounds.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
            rounds.swap_remove(ROUNDS / 2)
        })
        .collect();
    let hand_rolled = Contender::ALL
        .iter()
        .position(|c| *c == Contender::HandRolled)
        .unwrap();
    let baseline = median[hand_rolled].per_second;
    println!("{CONNECTIONS} connections over loopback, median of {ROUNDS} rounds of {seconds} s");
    println!(
        "{:<34} {:>12} {:>10} {:>15}",
        "contender", "requests/s", "p99", "vs hand-rolled"
    );
    for (contender, round) in Contender::ALL.iter().zip(&median) {
        println!(
            "{:<34} {:>12.0} {:>10} {:>14.2}x",
            contender.name(),
            round.per_second,
            load::ms(round.p99),
            round.per_second / baseline
        );
    }
}
