//! The public types and the futures of the pool's methods can cross threads (tokio::spawn).

use taskherd_redis::{RedisPermit, RedisPool, RedisPoolBuilder, UnavailableError};

fn send_sync<T: Send + Sync>(_: &T) {}
fn send<T: Send>(_: &T) {}

#[allow(dead_code, clippy::let_underscore_future)]
fn futures_are_send(pool: RedisPool<String>, permit: RedisPermit<String>) {
    send_sync(&pool);
    send_sync(&permit);
    send(&pool.try_spawn(["a".to_owned()], async {}));
    send(&pool.try_spawn_with(["a".to_owned()], || async {}));
    send(&pool.spawn(["a".to_owned()], async {}));
    send(&pool.try_acquire(["a".to_owned()]));
    send(&pool.acquire(["a".to_owned()]));
    send(&pool.set_limits(taskherd::LimitChanges::new()));
    send(&pool.stats(&"a".to_owned()));
    send(&pool.flush());
    send(&pool.wait());
    send(&pool.shutdown());
    send(&pool.len());
    send(&pool.effective_limit(&"a".to_owned()));
    send(&pool.waiting_count(&"a".to_owned()));
    send(&pool.waiting_len());
    send(&permit.lost());
    send(&RedisPool::<String>::builder("redis://127.0.0.1/", "p").build());
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<RedisPool<String>>();
    check::<RedisPermit<String>>();
    check::<RedisPoolBuilder<String>>();
    check::<UnavailableError>();
}
