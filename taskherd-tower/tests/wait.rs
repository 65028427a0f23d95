//! Wait mode over real HTTP: every request is served, never more than the limit in flight for
//! the tenant, in arrival order; the maximum wait turns into the refusal response.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::{Router, routing::get};
use http::{HeaderMap, StatusCode};
use taskherd::TaskPool;
use taskherd_tower::{Header, LimitLayer};

use support::{Gate, wait_until};

/// What the handler sees: requests in flight now, the most ever, and the order of arrival.
#[derive(Clone, Default)]
struct Seen {
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    order: Arc<Mutex<Vec<String>>>,
    gate: Gate,
}

async fn handler(State(seen): State<Seen>, headers: HeaderMap) -> &'static str {
    // SeqCst everywhere: a test counter, where clarity beats speed.
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most.fetch_max(now, Ordering::SeqCst);
    let id = headers["x-id"].to_str().unwrap().to_owned();
    seen.order.lock().unwrap().push(id);
    seen.gate.pass().await;
    // Overlap with the next requests.
    tokio::time::sleep(Duration::from_millis(10)).await;
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    "done"
}

// One thread: requests granted at the same moment enter the handler in the order they were
// granted (on several threads, two connections granted one after the other may race to it).
#[tokio::test(flavor = "current_thread")]
async fn waiters_are_all_served_in_arrival_order_never_above_the_limit() {
    let pool = TaskPool::<String>::builder().default_limit(2).build();
    let seen = Seen::default();
    let app = Router::new()
        .route("/slow", get(handler))
        .with_state(seen.clone())
        .layer(
            LimitLayer::new(pool.clone(), Header::new("x-tenant")).wait(Duration::from_secs(60)),
        );
    let addr = support::serve(app).await;
    let client = support::client();
    let a = "a".to_owned();

    let mut requests = Vec::new();
    for i in 0..10 {
        let client = client.clone();
        let id = i.to_string();
        requests.push(tokio::spawn(async move {
            support::get(&client, addr, "/slow", &[("x-tenant", "a"), ("x-id", &id)]).await
        }));
        // Send the next one only once this one is in place, so the arrival order is known.
        if i < 2 {
            wait_until("admitted", || pool.task_count(&a) == i + 1).await;
        } else {
            wait_until("queued", || pool.waiting_count(&a) == i - 1).await;
        }
    }
    assert_eq!(pool.stats(&a).running, 2);
    seen.gate.open();

    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "done");
    }
    assert_eq!(
        seen.most.load(Ordering::SeqCst),
        2,
        "never more than 2 in flight, and 2 at once"
    );
    let order = seen.order.lock().unwrap().clone();
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(order, expected, "first come, first served");
    wait_until("every slot is released", || pool.total_stats().running == 0).await;
    assert_eq!(pool.stats(&a).rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maximum_wait_turns_into_the_refusal_response() {
    // One per tenant, two in all; wait at most 50 ms.
    let pool = TaskPool::<String>::builder()
        .default_limit(1)
        .max_tasks(2)
        .build();
    let seen = Seen::default();
    let app = Router::new()
        .route("/slow", get(handler))
        .with_state(seen.clone())
        .layer(
            LimitLayer::new(pool.clone(), Header::new("x-tenant")).wait(Duration::from_millis(50)),
        );
    let addr = support::serve(app).await;
    let client = support::client();
    let (a, b) = ("a".to_owned(), "b".to_owned());

    let held_a = {
        let client = client.clone();
        tokio::spawn(async move {
            support::get(&client, addr, "/slow", &[("x-tenant", "a"), ("x-id", "a")]).await
        })
    };
    wait_until("a admitted", || pool.task_count(&a) == 1).await;

    // Tenant a is full: after the wait, 429.
    let late = support::get(
        &client,
        addr,
        "/slow",
        &[("x-tenant", "a"), ("x-id", "late")],
    )
    .await;
    assert_eq!(late.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(late.headers["retry-after"], "1");
    assert_eq!(
        pool.waiting_count(&a),
        0,
        "the refused request left the queue"
    );

    let held_b = {
        let client = client.clone();
        tokio::spawn(async move {
            support::get(&client, addr, "/slow", &[("x-tenant", "b"), ("x-id", "b")]).await
        })
    };
    wait_until("b admitted", || pool.task_count(&b) == 1).await;

    // Tenant c has room, the total does not: after the wait, 503.
    let busy = support::get(&client, addr, "/slow", &[("x-tenant", "c"), ("x-id", "c")]).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers["retry-after"], "1");
    assert_eq!(pool.waiting_len(), 0);

    seen.gate.open();
    assert_eq!(held_a.await.unwrap().status, StatusCode::OK);
    assert_eq!(held_b.await.unwrap().status, StatusCode::OK);
    assert_eq!(*seen.order.lock().unwrap(), ["a", "b"]);
}

/// A slot granted to a waiting request at the moment its maximum wait ends is used: the
/// docs promise that "if room appeared at that moment, it is served".
mod at_the_deadline {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::Poll;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use taskherd::{Permit, TaskPool};
    use taskherd_tower::{Admit, Groups, Header, LimitLayer, Refused};
    use tower::{Layer, ServiceExt, service_fn};

    type Admission = Pin<Box<dyn Future<Output = Result<Permit<String>, Refused<String>>> + Send>>;

    /// A `TaskPool` whose waiting admission, once armed, drops the holder's permit right
    /// after it returned `Pending`: what a release on another worker thread does at that
    /// instant. The pool grants the freed slot to the waiter at once.
    #[derive(Clone)]
    struct ReleaseWhileWaiting {
        pool: TaskPool<String>,
        holder: Arc<Mutex<Option<Permit<String>>>>,
        armed: Arc<AtomicBool>,
    }

    impl Admit<String> for ReleaseWhileWaiting {
        type Permit = Permit<String>;
        type TryAdmit = <TaskPool<String> as Admit<String>>::TryAdmit;
        type Admit = Admission;

        fn try_admit(&self, groups: Groups<String>) -> Self::TryAdmit {
            self.pool.try_admit(groups)
        }

        fn admit(&self, groups: Groups<String>) -> Admission {
            let mut inner = self.pool.admit(groups);
            let (holder, armed) = (self.holder.clone(), self.armed.clone());
            Box::pin(std::future::poll_fn(move |cx| {
                let polled = inner.as_mut().poll(cx);
                // SeqCst: a test flag, where clarity beats speed.
                if polled.is_pending() && armed.load(Ordering::SeqCst) {
                    drop(holder.lock().unwrap().take());
                }
                polled
            }))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_granted_at_the_deadline_is_used() {
        let a = "a".to_owned();
        let pool = TaskPool::<String>::builder().limit(a.clone(), 1).build();
        let admit = ReleaseWhileWaiting {
            pool: pool.clone(),
            holder: Arc::new(Mutex::new(Some(pool.try_acquire([a.clone()]).unwrap()))),
            armed: Arc::new(AtomicBool::new(false)),
        };
        let service = LimitLayer::new(admit.clone(), Header::new("x-client"))
            .wait(Duration::from_secs(1))
            .layer(service_fn(|_request: Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
            }));
        let request = Request::builder().header("x-client", "a").body(()).unwrap();
        let mut response = tokio_test::task::spawn(service.oneshot(request));
        tokio_test::assert_pending!(response.poll());
        assert_eq!(pool.waiting_count(&a), 1);

        tokio::time::advance(Duration::from_secs(2)).await;
        admit.armed.store(true, Ordering::SeqCst);
        let Poll::Ready(response) = response.poll() else {
            panic!("the wait is over: the request is decided");
        };
        let response = response.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the slot was granted to the request, yet it was refused"
        );
        assert_eq!(pool.waiting_count(&a), 0);
        assert_eq!(pool.task_count(&a), 1, "its body holds the slot");
        drop(response);
        assert_eq!(pool.task_count(&a), 0);
    }
}
