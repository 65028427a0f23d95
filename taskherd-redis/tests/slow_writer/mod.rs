//! A `tracing` subscriber that stands in for a slow log writer, for the tests of windows
//! between what the engine logs and what it does next (`pause.rs`, `renewal.rs`). Apart from
//! `support` because `taskherd-tower`'s tests share that module and have no `tracing`.

use std::sync::atomic::{AtomicBool, Ordering};

/// Installs, for the whole test binary, a `tracing` subscriber that stands in for a slow log
/// writer: at the first event whose message contains `needle`, it calls `then` on the thread
/// that logs (which may sleep there, stalling that thread in its log call). For tests of
/// windows between what the engine logs and what it does next; a binary of its own each.
pub fn slow_writer(needle: &'static str, then: fn()) {
    tracing::subscriber::set_global_default(SlowWriter {
        needle,
        then,
        done: AtomicBool::new(false),
    })
    .expect("one subscriber per test binary");
}

struct SlowWriter {
    needle: &'static str,
    then: fn(),
    done: AtomicBool,
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for SlowWriter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.contains(self.needle) && !self.done.swap(true, Ordering::SeqCst) {
            (self.then)();
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
