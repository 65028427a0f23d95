//! taskherd's own messages on standard error, written so that a reader that stopped reading
//! them cannot keep taskherd from exiting.
//!
//! Until [`bound`] is called, a message is written at once: during the run, the messages that
//! could meet a stalled reader go through the output queue (`output`), which the run gives up
//! on when it has to. Standard error may be the same pipe as standard output, though
//! (`2>&1 | reader`): once the run has given up its output at its end, that pipe may be full,
//! and a message written then would wait for as long as its reader lives. From [`bound`] on,
//! every message is handed to a thread that writes it, and [`finish`] waits for that thread
//! for a bounded time; what it has not written then is dropped as the process exits.

use std::fmt;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

enum State {
    /// Written at once.
    Direct,
    /// Handed to the writing thread; `done` says when it has written everything.
    Bounded {
        messages: mpsc::Sender<String>,
        done: mpsc::Receiver<()>,
    },
    /// After [`finish`]: dropped.
    Closed,
}

static STATE: Mutex<State> = Mutex::new(State::Direct);

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a message (the crate's `eprint!` and `eprintln!`); a write that fails (a reader gone)
/// drops it: it had nowhere to go.
pub fn write(args: fmt::Arguments<'_>) {
    let state = state();
    match &*state {
        State::Direct => {
            // Unlocked while writing: it may wait for the reader.
            drop(state);
            let _ = std::io::stderr().write_fmt(args);
        }
        State::Bounded { messages, .. } => {
            let _ = messages.send(args.to_string());
        }
        State::Closed => {}
    }
}

/// From now on, messages are written by a thread of their own (see the module documentation).
pub fn bound() {
    let mut state = state();
    if !matches!(*state, State::Direct) {
        return;
    }
    let (messages, receiver) = mpsc::channel::<String>();
    let (finished, done) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("taskherd-stderr".to_owned())
        .spawn(move || {
            let mut stderr = std::io::stderr();
            for message in receiver {
                let _ = stderr.write_all(message.as_bytes());
            }
            let _ = finished.send(());
        });
    *state = match spawned {
        Ok(_) => State::Bounded { messages, done },
        // Without the thread, a message could wait forever: dropped instead.
        Err(_) => State::Closed,
    };
}

/// Waits at most `within` for the messages handed over since [`bound`] to be written (returns
/// at once if `bound` was not called); later ones are dropped.
pub fn finish(within: Duration) {
    let mut state = state();
    if matches!(*state, State::Direct) {
        return;
    }
    let previous = std::mem::replace(&mut *state, State::Closed);
    drop(state);
    if let State::Bounded { messages, done } = previous {
        // Closing the channel ends the thread once it has written the rest.
        drop(messages);
        let _ = done.recv_timeout(within);
    }
}
