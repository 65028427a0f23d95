//! taskherd's own messages on standard error, written so that a reader that stopped reading
//! them cannot keep taskherd from acting on a signal.
//!
//! Until [`bound`] is called, a message is written at once: during the run, the messages that
//! could meet a stalled reader go through the output queue (`output`), which never holds up
//! the handling of signals. Standard error may be the same pipe as standard output, though
//! (`2>&1 | reader`), full once its reader stops reading: a message written directly at the
//! end of the run (the summary) would wait for as long as the reader lives, deaf to signals.
//! From [`bound`] on, every message is handed to a thread that writes it, and the caller
//! waits for what [`close`] returns as long as it chooses (until a signal, or a grace period);
//! what the thread has not written when the process exits is dropped.

use std::fmt;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

enum State {
    /// Written at once.
    Direct,
    /// Handed to the writing thread, which sends on `done` once it has written everything
    /// and the channel is closed.
    Bounded {
        messages: mpsc::Sender<String>,
        done: oneshot::Receiver<()>,
    },
    /// After [`close`]: dropped.
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
/// If the thread cannot be started, they are still written at once.
pub fn bound() {
    let mut state = state();
    if !matches!(*state, State::Direct) {
        return;
    }
    let (messages, receiver) = mpsc::channel::<String>();
    let (finished, done) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("taskherd-stderr".to_owned())
        .spawn(move || {
            let mut stderr = std::io::stderr();
            for message in receiver {
                let _ = stderr.write_all(message.as_bytes());
            }
            let _ = finished.send(());
        });
    if spawned.is_ok() {
        *state = State::Bounded { messages, done };
    }
}

/// No more messages (later ones are dropped): returns what resolves once the thread started by
/// [`bound`] has written those handed to it, or `None` if `bound` was not called (everything
/// was written already).
pub fn close() -> Option<oneshot::Receiver<()>> {
    let mut state = state();
    if matches!(*state, State::Direct) {
        return None;
    }
    match std::mem::replace(&mut *state, State::Closed) {
        // Dropping `messages` closes the channel: the thread ends once it has written the rest.
        State::Bounded { done, .. } => Some(done),
        State::Direct | State::Closed => None,
    }
}
