//! `rediss://` (the `tls` feature) against a real redis-server serving TLS, with certificates
//! made for each test: a certificate authority, the server's certificate (for 127.0.0.1) and a
//! client certificate, since Redis authenticates its TLS clients by certificate by default.
#![cfg(feature = "tls")]

mod support;

#[path = "support/certs.rs"]
mod certs;

use std::time::Duration;

use taskherd_redis::RedisPool;

use certs::Certs;
use support::Server;

/// A redis-server serving TLS with `certs`, and its `rediss://` URL.
fn server(certs: &Certs) -> (Server, String) {
    let (server, port) = Server::start_tls(
        &certs.path("server.pem"),
        &certs.path("server.key"),
        &certs.path("ca.pem"),
    );
    (server, format!("rediss://127.0.0.1:{port}/"))
}

/// Over TLS the pool works as over plain TCP: admissions, refusals, releases, and a waiter
/// woken on the notifier's own (TLS) connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_over_tls_admits_refuses_releases_and_wakes() {
    let certs = Certs::new();
    let (_server, url) = server(&certs);
    let pool: RedisPool<&str> = RedisPool::builder(&url, "tls")
        .lease(Duration::from_secs(5))
        .tls_root_certificates(certs.ca.clone())
        .tls_client_certificate(certs.client.0.clone(), certs.client.1.clone())
        .build()
        .await
        .unwrap();
    pool.set_limit("a", Some(1)).await.unwrap();
    let held = pool.try_acquire(["a"]).await.unwrap();
    assert!(pool.try_acquire(["a"]).await.unwrap_err().is_full());
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire(["a"]).await.map(drop) }
    });
    while pool.waiting_len().await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter was not woken")
        .unwrap()
        .unwrap();
    pool.flush().await;
    assert_eq!(pool.len().await.unwrap(), 0);
    assert_eq!(pool.total_stats().await.unwrap().admitted, 2);
}

/// Fail closed: a server whose certificate does not chain to the roots given, or that wants a
/// client certificate none was given for, is unreachable, and its error shows no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_or_a_missing_client_certificate_is_unreachable() {
    let certs = Certs::new();
    let (_server, url) = server(&certs);
    let untrusted = RedisPool::<&str>::builder(&url, "tls")
        .tls_root_certificates(certs.stranger.clone())
        .tls_client_certificate(certs.client.0.clone(), certs.client.1.clone())
        .build()
        .await
        .unwrap_err();
    let anonymous = RedisPool::<&str>::builder(&url, "tls")
        .tls_root_certificates(certs.ca.clone())
        .build()
        .await
        .unwrap_err();
    for error in [untrusted, anonymous] {
        let text = format!("{error} {error:?}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
    // Certificates that are not PEM: an error, not a panic.
    let garbage = RedisPool::<&str>::builder(&url, "tls")
        .tls_root_certificates("not a certificate")
        .build()
        .await;
    assert!(garbage.is_err());
}
