//! The layer, its service, its response future and its body can cross threads, as axum, hyper
//! and tonic require.

use std::convert::Infallible;
use std::net::IpAddr;

use axum::body::Body;
use http::{Request, Response};
use taskherd::{Permit, TaskPool};
use taskherd_tower::{
    Cidr, ForwardedHeader, Groups, Header, LimitLayer, LimitService, LimitedBody, PeerIp, Refusal,
    Refused, ResponseFuture, Unclassified,
};
use tower::util::BoxCloneSyncService;

fn send_sync_clone<T: Send + Sync + Clone>() {}
fn send<T: Send>() {}
fn send_sync<T: Send + Sync>() {}

type Inner = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

#[test]
fn public_types_cross_threads() {
    send_sync_clone::<LimitLayer<TaskPool<IpAddr>, PeerIp>>();
    send_sync_clone::<LimitService<Inner, TaskPool<IpAddr>, PeerIp>>();
    send::<ResponseFuture<Inner, Body, TaskPool<String>, String>>();
    send::<LimitedBody<Body, Permit<String>>>();
    send_sync::<LimitedBody<String, Permit<String>>>();
    send_sync_clone::<Header>();
    send_sync_clone::<PeerIp>();
    send_sync_clone::<Cidr>();
    send_sync_clone::<ForwardedHeader>();
    send_sync_clone::<Groups<String>>();
    send_sync_clone::<Unclassified>();
    send_sync_clone::<Refusal>();
    send_sync_clone::<Refused<String>>();
}
