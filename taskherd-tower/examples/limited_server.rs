//! An HTTP server with per-client and total limits on requests in flight, to try with curl.
//!
//! ```text
//! cargo run --release -p taskherd-tower --example limited_server -- \
//!     --listen 127.0.0.1:8080 --per-client 2 --total 5 [--wait MS]
//! ```
//!
//! - `GET /slow?ms=N` sleeps N milliseconds and answers `200`. It is limited: at most
//!   `--per-client` requests in flight per client and `--total` in all. Without `--wait`, a
//!   request over a limit is refused at once: `429` when its client is full, `503` when the
//!   total is, both with `Retry-After`. With `--wait MS` it queues (first come, first served)
//!   for at most MS milliseconds, then gets the same refusal.
//! - `GET /stats` answers the pool's statistics as JSON: the total, and each client seen
//!   lately. Not limited.
//! - `POST /limits?per_client=N` or `POST /limits?client=NAME&max=N` changes a limit while the
//!   server runs; the next request sees it. Not limited.
//!
//! The client is the `x-client` header, else the peer IP address. That is for trying the limits
//! with curl from one machine: a real server must not trust a header the client chooses (a
//! client could send a new name per request and escape its limit). Key on the peer address
//! (`PeerIp`, with `trust_proxies` behind a reverse proxy) or on an identity an authentication
//! layer has checked.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use http::{Request, StatusCode};
use taskherd::{GroupStats, TaskPool};
use taskherd_tower::{Classify, ClassifyExt, Header, LimitLayer, PeerIp};

/// The clients seen lately, newest last, for `/stats`.
#[derive(Clone, Default)]
struct Recent(Arc<Mutex<VecDeque<String>>>);

impl Recent {
    const KEEP: usize = 32;

    fn note(&self, client: &str) {
        let mut recent = self.0.lock().unwrap();
        if let Some(at) = recent.iter().position(|seen| seen == client) {
            recent.remove(at);
        } else if recent.len() == Self::KEEP {
            recent.pop_front();
        }
        recent.push_back(client.to_owned());
    }
}

#[derive(Clone)]
struct App {
    pool: TaskPool<String>,
    recent: Recent,
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    let pool = TaskPool::<String>::builder()
        .max_tasks(options.total)
        .default_limit(options.per_client)
        .build();
    let recent = Recent::default();

    // The client: the x-client header, else the peer IP. Noted for /stats.
    let by_client = Header::new("x-client").or(PeerIp::new().map_key(|ip: IpAddr| ip.to_string()));
    let noted = recent.clone();
    let classify = move |request: &Request<Body>| {
        let groups = by_client.classify(request)?;
        groups
            .as_slice()
            .iter()
            .for_each(|client| noted.note(client));
        Ok(groups)
    };
    let mut limit = LimitLayer::new(pool.clone(), classify);
    if let Some(wait) = options.wait {
        limit = limit.wait(wait);
    }

    let app = Router::new()
        // The limit applies to this route only: /stats and /limits stay reachable.
        .route("/slow", get(slow).layer(limit))
        .route("/stats", get(stats))
        .route("/limits", post(limits))
        .with_state(App { pool, recent });

    let listener = tokio::net::TcpListener::bind(options.listen).await.unwrap();
    eprintln!(
        "listening on http://{} ({} per client, {} in all, {})",
        listener.local_addr().unwrap(),
        options.per_client,
        options.total,
        match options.wait {
            Some(wait) => format!("waiting at most {} ms", wait.as_millis()),
            None => "refusing at once".to_owned(),
        }
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .unwrap();
}

async fn slow(Query(query): Query<HashMap<String, String>>) -> String {
    let ms: u64 = query
        .get("ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n")
}

async fn stats(State(app): State<App>) -> ([(&'static str, &'static str); 1], String) {
    let clients: Vec<String> = app.recent.0.lock().unwrap().iter().cloned().collect();
    let clients: Vec<String> = clients
        .iter()
        .map(|client| format!("    {:?}: {}", client, json(&app.pool.stats(client))))
        .collect();
    let body = format!(
        "{{\n  \"total\": {},\n  \"clients\": {{\n{}\n  }}\n}}\n",
        json(&app.pool.total_stats()),
        clients.join(",\n")
    );
    ([("content-type", "application/json")], body)
}

fn json(stats: &GroupStats) -> String {
    let limit = stats
        .limit
        .map_or("null".to_owned(), |limit| limit.to_string());
    format!(
        "{{\"running\": {}, \"waiting\": {}, \"limit\": {limit}, \"admitted\": {}, \"rejected\": {}, \"peak\": {}}}",
        stats.running, stats.waiting, stats.admitted, stats.rejected, stats.peak
    )
}

async fn limits(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let number = |name: &str| {
        query
            .get(name)
            .and_then(|value| value.parse::<usize>().ok())
    };
    match (query.get("client"), number("max"), number("per_client")) {
        (Some(client), Some(max), None) => {
            app.pool.set_limit(client.clone(), max);
            (
                StatusCode::OK,
                format!("client {client:?}: at most {max}\n"),
            )
        }
        (None, None, Some(per_client)) => {
            app.pool.set_default_limit(per_client);
            (
                StatusCode::OK,
                format!("every client: at most {per_client}\n"),
            )
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "use ?per_client=N or ?client=NAME&max=N\n".to_owned(),
        ),
    }
}

struct Options {
    listen: SocketAddr,
    per_client: usize,
    total: usize,
    wait: Option<Duration>,
}

impl Options {
    fn parse() -> Self {
        let mut options = Options {
            listen: "127.0.0.1:8080".parse().unwrap(),
            per_client: 2,
            total: 5,
            wait: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
            match flag.as_str() {
                "--listen" => options.listen = parse(&flag, &value),
                "--per-client" => options.per_client = parse(&flag, &value),
                "--total" => options.total = parse(&flag, &value),
                "--wait" => options.wait = Some(Duration::from_millis(parse(&flag, &value))),
                _ => usage(&format!("unknown option {flag}")),
            }
        }
        options
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| usage(&format!("bad value for {flag}: {value:?}")))
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: limited_server [--listen ADDR] [--per-client N] [--total N] [--wait MS]"
    );
    std::process::exit(2);
}
