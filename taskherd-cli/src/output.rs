//! Job output and taskherd's own messages, written by one thread so that lines never mix.
//!
//! Job tasks and the runner send [`Msg`]s through a bounded channel (a slow reader of
//! taskherd's output slows the jobs down instead of filling memory); the writer thread writes
//! them in order, many at a time.

use std::io::{self, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, watch};

/// Messages buffered between the jobs and the writer thread. With no message of job output
/// longer than [`MAX_PIECE`] (plus a line prefix), at most about 64 MiB wait for a slow reader.
const CHANNEL_CAPACITY: usize = 1024;

/// The most bytes of job output in one message: longer lines, and `grouped` output, are cut
/// into pieces of this size, so that what waits in the channel stays bounded in bytes.
pub const MAX_PIECE: usize = 64 << 10;
/// Messages written in one go at most.
const BATCH: usize = 256;

/// Something to write.
#[derive(Debug)]
pub enum Msg {
    /// Bytes for standard output.
    Stdout(Vec<u8>),
    /// Bytes for standard error.
    Stderr(Vec<u8>),
    /// A message of taskherd's own: one line on standard error, prefixed with `taskherd: `.
    Notice(String),
    /// Everything sent before this is written: stop.
    Shutdown,
}

/// A handle to send messages to the writer thread: it waits for room in the channel (the
/// back-pressure of a slow reader) until the run [abandons](Self::abandon) the output.
#[derive(Debug, Clone)]
pub struct Sender {
    channel: mpsc::Sender<Msg>,
    /// Set once a message that finds no room is to be dropped rather than wait.
    abandoned: Arc<watch::Sender<bool>>,
}

/// Why [`Sender::send`] did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The writer is gone (the very end of the run).
    Closed,
    /// No room, and the output was abandoned.
    Dropped,
}

impl Sender {
    /// A channel for `capacity` messages, not abandoned.
    pub fn channel(capacity: usize) -> (Sender, mpsc::Receiver<Msg>) {
        let (channel, receiver) = mpsc::channel(capacity);
        let sender = Sender {
            channel,
            abandoned: Arc::new(watch::Sender::new(false)),
        };
        (sender, receiver)
    }

    /// Queues `msg`, waiting for room; once the output is abandoned, a message that finds no
    /// room is dropped instead. A message that finds room is always queued.
    pub async fn send(&self, msg: Msg) -> Result<(), Unsent> {
        // Room at once (the usual case): no need to watch for the abandonment.
        let msg = match self.channel.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Unsent::Closed),
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        let mut abandoned = self.abandoned.subscribe();
        tokio::select! {
            biased;
            permit = self.channel.reserve() => match permit {
                Ok(permit) => {
                    permit.send(msg);
                    Ok(())
                }
                Err(_) => Err(Unsent::Closed),
            },
            // An error would mean the sender is gone, but this handle holds it.
            _ = abandoned.wait_for(|abandoned| *abandoned) => Err(Unsent::Dropped),
        }
    }

    /// Queues `msg` if there is room, without waiting.
    pub fn try_send(&self, msg: Msg) -> Result<(), mpsc::error::TrySendError<Msg>> {
        self.channel.try_send(msg)
    }

    /// From now on, messages that find no room are dropped instead of waiting: the run is
    /// killing its jobs, and output nobody reads must not hold their ends (and taskherd's exit)
    /// up. Every handle (clone) of this writer is affected.
    pub fn abandon(&self) {
        self.abandoned.send_replace(true);
    }
}

/// The writer thread.
#[derive(Debug)]
pub struct Writer {
    sender: Sender,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread. `suspend` wraps every batch of writes (the progress display
    /// hides itself during them); `None` writes directly. With `jobs_to_stderr`, the jobs'
    /// standard output goes to standard error too (the report has standard output).
    pub fn start(suspend: Option<Suspend>, jobs_to_stderr: bool) -> io::Result<Writer> {
        let (sender, receiver) = Sender::channel(CHANNEL_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("taskherd-output".to_owned())
            .spawn(move || write_loop(receiver, suspend, jobs_to_stderr))?;
        Ok(Writer {
            sender,
            thread: Some(thread),
        })
    }

    /// A handle to send messages.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Writes everything sent so far, then stops the thread.
    pub async fn finish(mut self) {
        // If the thread is gone the send fails, and there is nothing left to wait for. Waits
        // for room even if the output was abandoned: the caller bounds the wait.
        let _ = self.sender.channel.send(Msg::Shutdown).await;
        if let Some(thread) = self.thread.take() {
            // Joining blocks, but only until the last batch is written.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Notices sent without waiting: from the code that handles signals and ends jobs, which must
/// never wait for a slow (or stopped) reader of taskherd's output.
///
/// A relay task passes them on to the writer in order. When even the relay's queue is full,
/// a notice is dropped and counted, and the count is said once the output moves again: a
/// notice may come late or be lost under back-pressure, but its sender never waits.
#[derive(Debug)]
pub struct Notices {
    /// `None` once closed.
    queue: std::sync::Mutex<Option<mpsc::Sender<String>>>,
    /// Notices dropped since the relay last said how many.
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Notices queued for the relay at most.
const NOTICES_QUEUED: usize = 64;

/// The task that passes [`Notices`] on to the writer.
#[derive(Debug)]
pub struct Relay {
    task: tokio::task::JoinHandle<()>,
    /// [`Notices::dropped`].
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Notices {
    /// Starts the relay to `sender`. It ends once [`close`](Self::close) is called (or the
    /// `Notices` dropped), after passing on what was sent.
    pub fn start(sender: Sender) -> (Notices, Relay) {
        use std::sync::atomic::Ordering;

        let (queue, mut receiver) = mpsc::channel::<String>(NOTICES_QUEUED);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&dropped);
        let task = tokio::spawn(async move {
            // Says how many notices were dropped since it last said so; false once the writer
            // is gone.
            let say_dropped = async || {
                // Relaxed: only the count matters.
                let lost = counted.swap(0, Ordering::Relaxed);
                lost == 0 || {
                    let text = format!(
                        "{lost} of taskherd's messages were dropped: its output was not being read"
                    );
                    sender.send(Msg::Notice(text)).await != Err(Unsent::Closed)
                }
            };
            while let Some(text) = receiver.recv().await {
                match sender.send(Msg::Notice(text)).await {
                    Err(Unsent::Closed) => return,
                    // Counted, and said when the output moves again.
                    Err(Unsent::Dropped) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(()) => {}
                }
                if !say_dropped().await {
                    return;
                }
            }
            say_dropped().await;
        });
        let queue = std::sync::Mutex::new(Some(queue));
        let relay = Relay {
            task,
            dropped: std::sync::Arc::clone(&dropped),
        };
        (Notices { queue, dropped }, relay)
    }

    /// Sends a notice without waiting (see [`Notices`]).
    pub fn send(&self, text: String) {
        let queue = self.lock();
        let Some(queue) = queue.as_ref() else {
            debug_assert!(false, "a notice sent after the run ended: {text}");
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(text) {
            // Relaxed: only the count matters.
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// No more notices: the relay ends once it has passed on those sent.
    pub fn close(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<String>>> {
        // The sender is only taken whole; a poisoned lock still holds a consistent value.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Relay {
    /// How many notices were dropped and not said yet (see [`Notices`]), as it changes.
    pub fn dropped(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        std::sync::Arc::clone(&self.dropped)
    }

    /// Waits until every notice sent has reached the writer; call [`Notices::close`] first,
    /// or this waits for ever.
    pub async fn finish(self) {
        // A panic in the relay is not worth surfacing: only notices would be lost.
        let _ = self.task.await;
    }
}

/// Runs a batch of writes with the progress display hidden.
pub type Suspend = Box<dyn Fn(&mut dyn FnMut()) + Send>;

fn write_loop(mut receiver: mpsc::Receiver<Msg>, suspend: Option<Suspend>, jobs_to_stderr: bool) {
    use std::io::IsTerminal;

    // The progress display is on standard error. With standard output elsewhere (a pipe, a
    // file), writing it needs no hiding of the display: hiding it only for standard error
    // keeps a stalled reader of standard output from holding the display (and the progress
    // updates of the loop that handles signals) while a write waits.
    let (suspend, err_suspend) = match io::stdout().is_terminal() {
        true => (suspend, None),
        false => (None, suspend),
    };
    let mut state = WriteState {
        jobs_to_stderr,
        err_suspend,
        ..WriteState::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        let mut shutdown = false;
        let mut write = || shutdown = state.write_batch(&mut batch);
        match &suspend {
            Some(suspend) => suspend(&mut write),
            None => write(),
        }
        if shutdown {
            return;
        }
    }
}

/// Keeps taskherd's notices out of the middle of a job's line: `grouped` output comes in
/// pieces cut anywhere, and a notice on standard error would land inside the line on a
/// terminal that shows both streams. A notice that comes while a job's output stream is in
/// the middle of a line waits until both streams are at the start of one (a job's `grouped`
/// output always ends with a newline), or until the writer stops.
#[derive(Debug, Default)]
struct NoticeHold {
    /// The jobs' standard output, and standard error, last ended mid-line.
    out_mid_line: bool,
    err_mid_line: bool,
    held: Vec<String>,
}

impl NoticeHold {
    /// Passes `msg` on to `emit` now, or holds it (a notice mid-line); after a job's output
    /// that ends a line, passes on the notices held.
    fn pass(&mut self, msg: Msg, mut emit: impl FnMut(Msg)) {
        let msg = match msg {
            Msg::Notice(text) if self.out_mid_line || self.err_mid_line => {
                self.held.push(text);
                return;
            }
            msg => msg,
        };
        match &msg {
            Msg::Stdout(bytes) => self.out_mid_line = ends_mid_line(bytes, self.out_mid_line),
            Msg::Stderr(bytes) => self.err_mid_line = ends_mid_line(bytes, self.err_mid_line),
            Msg::Notice(_) => {}
            Msg::Shutdown => {
                // Nothing more comes: the notices go out whatever the streams' state.
                self.out_mid_line = false;
                self.err_mid_line = false;
                for text in self.held.drain(..) {
                    emit(Msg::Notice(text));
                }
            }
        }
        emit(msg);
        if !self.out_mid_line && !self.err_mid_line {
            for text in self.held.drain(..) {
                emit(Msg::Notice(text));
            }
        }
    }
}

/// Whether a stream is mid-line after `bytes` (an empty piece changes nothing).
fn ends_mid_line(bytes: &[u8], before: bool) -> bool {
    bytes.last().map_or(before, |&last| last != b'\n')
}

#[derive(Default)]
struct WriteState {
    /// Standard output could not be written (a closed pipe): job output is dropped from then on.
    stdout_broken: bool,
    /// Notices held while a job's line is unfinished.
    hold: NoticeHold,
    /// The jobs' standard output goes to standard error (`--report -` has standard output).
    jobs_to_stderr: bool,
    out: Vec<u8>,
    err: Vec<u8>,
    /// Wraps each write to standard error (when standard output is not a terminal: then only
    /// those writes hide the progress display).
    err_suspend: Option<Suspend>,
}

impl WriteState {
    /// Writes and empties `batch`; returns `true` if it held [`Msg::Shutdown`].
    ///
    /// Consecutive messages for the same stream are written with one call; the order between
    /// the streams is kept.
    fn write_batch(&mut self, batch: &mut Vec<Msg>) -> bool {
        let mut shutdown = false;
        let mut ordered = Vec::with_capacity(batch.len());
        for msg in batch.drain(..) {
            self.hold.pass(msg, |msg| ordered.push(msg));
        }
        for msg in ordered {
            match msg {
                Msg::Stdout(bytes) if self.jobs_to_stderr => {
                    self.flush_out();
                    self.err.extend_from_slice(&bytes);
                }
                Msg::Stdout(bytes) => {
                    self.flush_err();
                    self.out.extend_from_slice(&bytes);
                }
                Msg::Stderr(bytes) => {
                    self.flush_out();
                    self.err.extend_from_slice(&bytes);
                }
                Msg::Notice(text) => {
                    self.flush_out();
                    self.err.extend_from_slice(b"taskherd: ");
                    self.err.extend_from_slice(text.as_bytes());
                    self.err.push(b'\n');
                }
                Msg::Shutdown => shutdown = true,
            }
        }
        self.flush_out();
        self.flush_err();
        shutdown
    }

    fn flush_out(&mut self) {
        if self.out.is_empty() {
            return;
        }
        if !self.stdout_broken {
            let mut stdout = io::stdout().lock();
            if let Err(error) = stdout.write_all(&self.out).and_then(|()| stdout.flush()) {
                self.stdout_broken = true;
                self.err.extend_from_slice(
                    format!(
                        "taskherd: cannot write to standard output ({error}); \
                         job output is dropped from now on\n"
                    )
                    .as_bytes(),
                );
            }
        }
        self.out.clear();
    }

    fn flush_err(&mut self) {
        if self.err.is_empty() {
            return;
        }
        let err = &self.err;
        let mut write = || {
            let mut stderr = io::stderr().lock();
            // Nowhere left to complain to if standard error is gone.
            let _ = stderr.write_all(err).and_then(|()| stderr.flush());
        };
        match &self.err_suspend {
            Some(suspend) => suspend(&mut write),
            None => write(),
        }
        self.err.clear();
    }
}

/// Which stream of a job a pipe carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn msg(self, bytes: Vec<u8>) -> Msg {
        match self {
            Stream::Stdout => Msg::Stdout(bytes),
            Stream::Stderr => Msg::Stderr(bytes),
        }
    }
}

/// Tells a job's output readers to stop waiting for the end of its pipes: its processes ended
/// in time, but something outside them (a daemon it started in a session of its own) may hold
/// the pipes open for ever. What was read, and what is in the pipes when it is set (the job's
/// own output, waiting for a slow reader of taskherd's), is still passed on; whatever comes
/// after is not read.
#[derive(Debug, Clone)]
pub struct Drain(Option<watch::Receiver<bool>>);

impl Drain {
    /// Set by `sender` (to `true`).
    pub fn new(sender: &watch::Sender<bool>) -> Drain {
        Drain(Some(sender.subscribe()))
    }

    /// Never set: the pipes are read to their end.
    #[cfg(test)]
    pub fn never() -> Drain {
        Drain(None)
    }

    /// Whether it is set.
    fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|receiver| *receiver.borrow())
    }

    /// Resolves once set (never if its sender is gone unset).
    async fn set(&mut self) {
        if let Some(receiver) = &mut self.0
            && receiver.wait_for(|set| *set).await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }
}

/// A job's pipe, which can say how many bytes wait in it to be read.
pub trait Pipe: AsyncRead + Unpin {
    /// The bytes written to the pipe and not read yet (0 if it cannot tell).
    fn waiting(&self) -> usize;
}

impl Pipe for tokio::process::ChildStdout {
    fn waiting(&self) -> usize {
        waiting_in(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

impl Pipe for tokio::process::ChildStderr {
    fn waiting(&self) -> usize {
        waiting_in(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

/// For tests: all of it waits.
#[cfg(test)]
impl Pipe for &[u8] {
    fn waiting(&self) -> usize {
        self.len()
    }
}

/// The bytes waiting in pipe `fd` (`FIONREAD`); 0 if it cannot tell.
#[allow(unsafe_code)]
fn waiting_in(fd: std::os::fd::RawFd) -> usize {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points to a live local; `fd`
    // is open, borrowed from the pipe for the call.
    let result = unsafe { libc::ioctl(fd, libc::FIONREAD, &raw mut waiting) };
    if result == 0 {
        usize::try_from(waiting).unwrap_or(0)
    } else {
        0
    }
}

/// How much of a pipe is still to be read once its [`Drain`] is set: what waited in it then.
#[derive(Debug, Clone, Copy)]
enum Left {
    /// Not drained: read to the end.
    All,
    /// Drained: this many bytes more (whatever was in the pipe when it was set).
    Bytes(usize),
}

impl Left {
    /// Whether the pipe is still to be read: `false` once drained and nothing is left to
    /// read. Drained since the last call, it counts what waits in `pipe`.
    fn readable(&mut self, drain: &Drain, pipe: &impl Pipe) -> bool {
        if matches!(self, Left::All) && drain.is_set() {
            *self = Left::Bytes(pipe.waiting());
        }
        !matches!(self, Left::Bytes(0))
    }

    /// `read` bytes were read from the pipe.
    fn read(&mut self, read: usize) {
        if let Left::Bytes(left) = self {
            *left = left.saturating_sub(read);
        }
    }
}

/// The longest line forwarded in one piece: a longer one is cut into pieces of this size, each
/// with the prefix, so that a job writing without newlines cannot fill taskherd's memory.
pub const MAX_LINE: usize = MAX_PIECE;

/// Forwards a job's pipe line by line, each line prefixed; a last line without a newline gets
/// one. Returns when the pipe closes (or cannot be read).
pub async fn forward_lines(
    pipe: impl Pipe,
    stream: Stream,
    prefix: &[u8],
    sender: &Sender,
    mut drain: Drain,
) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::from(prefix);
    // The last line sent was cut at its longest: a newline right after it ends that line, it
    // is no blank line of its own.
    let mut cut = false;
    let mut left = Left::All;
    loop {
        // Once drained, what was read and what waited in the pipe then are passed on, and no
        // more is read (a daemon may write for ever).
        let chunk = if reader.buffer().is_empty() {
            if !left.readable(&drain, reader.get_ref()) {
                break;
            }
            let read = match left {
                Left::All => tokio::select! {
                    biased;
                    () = drain.set() => continue,
                    read = reader.fill_buf() => read,
                },
                // It waits in the pipe: the read does not block.
                Left::Bytes(_) => reader.fill_buf().await,
            };
            if let Ok(chunk) = &read {
                left.read(chunk.len());
            }
            read
        } else {
            reader.fill_buf().await
        };
        let chunk = match chunk {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        if std::mem::take(&mut cut) && chunk[0] == b'\n' {
            reader.consume(1);
            continue;
        }
        let room = MAX_LINE + prefix.len() - line.len();
        let (taken, complete) = match chunk.iter().take(room).position(|&b| b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => {
                let taken = chunk.len().min(room);
                cut = taken == room;
                (taken, cut)
            }
        };
        line.extend_from_slice(&chunk[..taken]);
        reader.consume(taken);
        if complete {
            // A cut inside a UTF-8 character moves the character's first bytes to the next
            // piece, so that both pieces stay valid text.
            let carried = if cut {
                let whole = prefix.len() + utf8_complete_len(&line[prefix.len()..]);
                line.split_off(whole)
            } else {
                Vec::new()
            };
            send_line(&mut line, prefix, stream, sender).await;
            if !carried.is_empty() {
                line.extend_from_slice(&carried);
                // The next piece holds the character: a newline after it ends it.
                cut = false;
            }
        }
    }
    if line.len() > prefix.len() {
        send_line(&mut line, prefix, stream, sender).await;
    }
}

/// How many bytes of `bytes` end before a UTF-8 character cut short at its end: all of them
/// unless the last (up to 3) bytes are the start of a character whose rest is missing. Bytes
/// that are not UTF-8 are left as they are.
fn utf8_complete_len(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(4) {
        let byte = bytes[len - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: its character starts further back
        }
        let width = match byte {
            0x00..=0x7F => 1,
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return len,
        };
        return if width > back { len - back } else { len };
    }
    len
}

/// Sends `line` (prefix included) with a newline at its end, and starts the next one.
async fn send_line(line: &mut Vec<u8>, prefix: &[u8], stream: Stream, sender: &Sender) {
    if line.last() != Some(&b'\n') {
        line.push(b'\n');
    }
    let mut next = Vec::with_capacity(prefix.len() + 80);
    next.extend_from_slice(prefix);
    let bytes = std::mem::replace(line, next);
    // A closed channel means taskherd is shutting down: keep draining the pipe so the job does
    // not block on a full pipe.
    let _ = sender.send(stream.msg(bytes)).await;
}

/// How much of one stream of one job `grouped` mode keeps in memory; the rest is spilled to
/// a temporary file.
pub const SPOOL_MEMORY: usize = 1 << 20;

/// One stream of a job's output in `grouped` mode: in memory up to [`SPOOL_MEMORY`] bytes,
/// then in an unnamed temporary file, so that a job printing gigabytes does not take as much
/// memory. The file is removed from its directory as soon as it is made (it lives on while
/// open), so nothing is left behind, even if taskherd is killed.
#[derive(Default)]
pub struct Spool {
    memory: Vec<u8>,
    file: Option<tokio::fs::File>,
    /// The last byte of the output.
    last: Option<u8>,
}

impl Spool {
    /// Reads a job's pipe to its end. If the future is dropped early, what was read so far is
    /// kept; what a read error leaves in the pipe is lost.
    pub async fn fill(&mut self, mut pipe: impl Pipe, mut drain: Drain) {
        let mut buffer = vec![0; 64 * 1024];
        let mut left = Left::All;
        loop {
            // As in `forward_lines`: once drained, what waited in the pipe then, no more.
            if !left.readable(&drain, &pipe) {
                return;
            }
            let read = match left {
                Left::All => tokio::select! {
                    biased;
                    () = drain.set() => continue,
                    read = pipe.read(&mut buffer) => read,
                },
                Left::Bytes(bytes) => {
                    let bytes = bytes.min(buffer.len());
                    pipe.read(&mut buffer[..bytes]).await
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    left.read(read);
                    self.push(&buffer[..read]).await;
                }
            }
        }
    }

    async fn push(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;

        self.last = bytes.last().copied().or(self.last);
        if self.file.is_none() && self.memory.len() + bytes.len() > SPOOL_MEMORY {
            // A file that cannot be made (no room, no temporary directory) keeps the output
            // in memory, as before spilling existed: nothing is lost.
            if let Ok(mut file) = spill_file().await
                && file.write_all(&self.memory).await.is_ok()
            {
                self.memory = Vec::new();
                self.file = Some(file);
            }
        }
        match &mut self.file {
            Some(file) => {
                if file.write_all(bytes).await.is_err() {
                    // The file is full: keep the rest in memory rather than lose it (part of
                    // this piece may then come out twice; none of it is lost).
                    self.memory.extend_from_slice(bytes);
                }
            }
            None => self.memory.extend_from_slice(bytes),
        }
    }

    /// Whether the output went to a temporary file.
    #[cfg(test)]
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Sends the whole output as `stream`, in pieces of at most [`MAX_PIECE`] bytes, with a
    /// newline at its end if it lacks one (as `prefixed` mode does), so it is not glued to
    /// the next job's. The caller keeps other jobs' output out in the meantime.
    pub async fn send(self, stream: Stream, sender: &Sender) {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};

        let Some(last) = self.last else {
            return;
        };
        if let Some(mut file) = self.file {
            // Writes still in flight finish first; then the file is read from its start.
            let rewound = match file.flush().await {
                Ok(()) => file.seek(std::io::SeekFrom::Start(0)).await.is_ok(),
                Err(_) => false,
            };
            if rewound {
                let mut piece = vec![0; MAX_PIECE];
                loop {
                    match file.read(&mut piece).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => {
                            // The rest would be dropped too (or the writer is gone).
                            if sender
                                .send(stream.msg(piece[..read].to_vec()))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            }
        }
        let mut rest = self.memory;
        if last != b'\n' {
            rest.push(b'\n');
        }
        for piece in rest.chunks(MAX_PIECE) {
            if sender.send(stream.msg(piece.to_vec())).await.is_err() {
                return;
            }
        }
    }
}

/// An unnamed temporary file (made, then removed from its directory), readable only by its
/// owner.
async fn spill_file() -> io::Result<tokio::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};

    // Distinct names within this process; `create_new` refuses any name taken by another.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    loop {
        // Relaxed: only uniqueness matters, not ordering with other memory.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("taskherd-{}-{n}.spool", std::process::id()));
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match opened {
            Ok(file) => {
                let _ = std::fs::remove_file(&path);
                return Ok(tokio::fs::File::from_std(file));
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_lines_with_prefix() {
        let (sender, mut receiver) = Sender::channel(16);
        let input: &[u8] = b"one\ntwo\n\nlast without newline";
        forward_lines(input, Stream::Stderr, b"[3] ", &sender, Drain::never()).await;
        drop(sender);
        let mut lines = Vec::new();
        while let Some(msg) = receiver.recv().await {
            match msg {
                Msg::Stderr(bytes) => lines.push(String::from_utf8(bytes).unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            lines,
            [
                "[3] one\n",
                "[3] two\n",
                "[3] \n",
                "[3] last without newline\n"
            ]
        );
    }

    /// A notice that comes while a job's `grouped` output is mid-line (pieces are cut
    /// anywhere) waits for the end of the line; one between lines goes out at once; the
    /// writer's end lets out what is held.
    #[test]
    fn notices_never_land_inside_a_jobs_line() {
        let mut hold = NoticeHold::default();
        let mut out = Vec::new();
        let mut pass = |hold: &mut NoticeHold, msg| hold.pass(msg, |msg| out.push(msg));
        pass(&mut hold, Msg::Stdout(b"1111".to_vec()));
        pass(&mut hold, Msg::Notice("timed out".into()));
        pass(&mut hold, Msg::Stdout(b"2222".to_vec()));
        pass(&mut hold, Msg::Stderr(b"half".to_vec()));
        pass(&mut hold, Msg::Stdout(b"33\n".to_vec()));
        // Standard error is still mid-line.
        pass(&mut hold, Msg::Notice("SIGKILL".into()));
        pass(&mut hold, Msg::Stderr(b" done\n".to_vec()));
        pass(&mut hold, Msg::Notice("between lines".into()));
        pass(&mut hold, Msg::Stdout(b"cut".to_vec()));
        pass(&mut hold, Msg::Notice("held to the end".into()));
        pass(&mut hold, Msg::Shutdown);
        let shown: Vec<String> = out
            .iter()
            .map(|msg| match msg {
                Msg::Stdout(bytes) => format!("out:{}", String::from_utf8_lossy(bytes)),
                Msg::Stderr(bytes) => format!("err:{}", String::from_utf8_lossy(bytes)),
                Msg::Notice(text) => format!("notice:{text}"),
                Msg::Shutdown => "shutdown".to_owned(),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "out:1111",
                "out:2222",
                "err:half",
                "out:33\n",
                "err: done\n",
                "notice:timed out",
                "notice:SIGKILL",
                "notice:between lines",
                "out:cut",
                "notice:held to the end",
                "shutdown",
            ]
        );
    }

    /// Once abandoned, a send that finds no room drops its message instead of waiting (every
    /// clone of the sender, a send already waiting included); one that finds room still queues.
    #[tokio::test]
    async fn an_abandoned_output_drops_what_finds_no_room() {
        let (sender, mut receiver) = Sender::channel(1);
        sender.send(Msg::Notice("queued".into())).await.unwrap();
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(Msg::Notice("waits".into())).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room: it waits");
        sender.abandon();
        assert_eq!(waiting.await.unwrap(), Err(Unsent::Dropped));
        assert_eq!(
            sender.send(Msg::Notice("dropped".into())).await,
            Err(Unsent::Dropped)
        );
        assert!(matches!(receiver.recv().await, Some(Msg::Notice(text)) if text == "queued"));
        sender.send(Msg::Notice("room".into())).await.unwrap();
        assert!(matches!(receiver.recv().await, Some(Msg::Notice(text)) if text == "room"));
        drop(receiver);
        assert_eq!(
            sender.send(Msg::Notice("closed".into())).await,
            Err(Unsent::Closed)
        );
    }

    #[tokio::test]
    async fn notices_never_wait_and_say_what_they_dropped() {
        // The writer's queue is full: nobody reads it yet.
        let (sender, mut receiver) = Sender::channel(1);
        sender.try_send(Msg::Notice("first".into())).unwrap();
        let (notices, relay) = Notices::start(sender);
        for n in 0..NOTICES_QUEUED * 3 {
            notices.send(format!("notice {n}"));
        }
        notices.close();
        let mut got = Vec::new();
        let reading = async {
            while let Some(msg) = receiver.recv().await {
                match msg {
                    Msg::Notice(text) => got.push(text),
                    other => panic!("unexpected {other:?}"),
                }
            }
        };
        tokio::join!(relay.finish(), reading);
        assert_eq!(got[0], "first");
        let (dropped, kept): (Vec<&String>, Vec<&String>) = got[1..]
            .iter()
            .partition(|text| text.ends_with("were dropped: its output was not being read"));
        assert_eq!(dropped.len(), 1, "{got:?}");
        let lost: usize = dropped[0].split(' ').next().unwrap().parse().unwrap();
        let numbers: Vec<usize> = kept
            .iter()
            .map(|text| text.strip_prefix("notice ").unwrap().parse().unwrap())
            .collect();
        assert!(numbers.is_sorted(), "kept in order: {numbers:?}");
        let kept = numbers.len();
        assert_eq!(kept + lost, NOTICES_QUEUED * 3, "each one kept or counted");
    }

    /// Drained while the pipe is held open (a daemon's): what waited in it then is passed
    /// on, and the end of the pipe is not waited for.
    #[tokio::test]
    async fn a_drained_pipe_passes_on_what_waits_in_it_and_no_more() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "printf 'one\\ntwo\\nthree\\n'; exec sleep 30"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stdout.waiting() < 14 {
            assert!(std::time::Instant::now() < deadline, "the lines never came");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (sender, mut receiver) = Sender::channel(16);
        let (drain, set) = {
            let sender = watch::Sender::new(false);
            (Drain::new(&sender), sender)
        };
        set.send_replace(true);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            forward_lines(stdout, Stream::Stdout, b"> ", &sender, drain),
        )
        .await
        .expect("waited for the end of a pipe held open");
        drop(sender);
        let mut lines = Vec::new();
        while let Some(Msg::Stdout(bytes)) = receiver.recv().await {
            lines.push(String::from_utf8(bytes).unwrap());
        }
        assert_eq!(lines, ["> one\n", "> two\n", "> three\n"]);
    }

    #[tokio::test]
    async fn forwarding_keeps_invalid_utf8_bytes() {
        let (sender, mut receiver) = Sender::channel(16);
        let input: &[u8] = b"\xff\xfe\n";
        forward_lines(input, Stream::Stdout, b"> ", &sender, Drain::never()).await;
        match receiver.recv().await {
            Some(Msg::Stdout(bytes)) => assert_eq!(bytes, b"> \xff\xfe\n"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn cuts_overlong_lines() {
        let (sender, mut receiver) = Sender::channel(16);
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.extend_from_slice(b"\nend\n");
        let input: &[u8] = &input;
        forward_lines(input, Stream::Stdout, b"> ", &sender, Drain::never()).await;
        drop(sender);
        let mut lengths = Vec::new();
        while let Some(Msg::Stdout(bytes)) = receiver.recv().await {
            assert!(bytes.starts_with(b"> ") && bytes.ends_with(b"\n"));
            lengths.push(bytes.len() - 3);
        }
        assert_eq!(lengths, [MAX_LINE, MAX_LINE, 10, 3]);
    }

    /// A line cut at its longest inside a UTF-8 character (here `€`, 3 bytes) is cut before
    /// the character: every piece is valid UTF-8 (found by a review: 65,540 and 24,468 bytes
    /// of broken text for a line of 30,000 `€`).
    #[tokio::test]
    async fn cuts_overlong_lines_between_characters() {
        let (sender, mut receiver) = Sender::channel(16);
        let text = "€".repeat(30_000);
        let input = format!("{text}\nend\n");
        forward_lines(
            input.as_bytes(),
            Stream::Stdout,
            b"> ",
            &sender,
            Drain::never(),
        )
        .await;
        drop(sender);
        let mut pieces = Vec::new();
        while let Some(Msg::Stdout(bytes)) = receiver.recv().await {
            let piece = String::from_utf8(bytes).expect("a piece cut inside a character");
            pieces.push(piece);
        }
        assert_eq!(pieces.len(), 3, "two pieces and `end`");
        assert!(pieces[0].len() <= MAX_LINE + 3, "{}", pieces[0].len());
        let joined: String = pieces[..2]
            .iter()
            .map(|piece| &piece[2..piece.len() - 1])
            .collect();
        assert_eq!(joined, text, "nothing lost or doubled");
        assert_eq!(pieces[2], "> end\n");
    }

    #[test]
    fn utf8_complete_len_stops_before_a_character_cut_short() {
        assert_eq!(utf8_complete_len(b"ab"), 2);
        assert_eq!(utf8_complete_len("a€".as_bytes()), 4);
        assert_eq!(utf8_complete_len(&"a€".as_bytes()[..3]), 1);
        assert_eq!(utf8_complete_len(&"a€".as_bytes()[..2]), 1);
        assert_eq!(utf8_complete_len(&"😀".as_bytes()[..3]), 0);
        assert_eq!(
            utf8_complete_len(b"\xff\xfe"),
            2,
            "not UTF-8: left as it is"
        );
        assert_eq!(utf8_complete_len(b"\x80\x80\x80\x80\x80"), 5);
    }

    #[tokio::test]
    async fn what_waits_for_the_writer_is_bounded_in_bytes() {
        // A job writing 4 MiB without a newline: every message is one piece of at most 64 KiB
        // (with its prefix and newline), so a full channel holds at most about 64 MiB.
        let input = vec![b'x'; 4 << 20];
        let (sender, mut receiver) = Sender::channel(CHANNEL_CAPACITY);
        forward_lines(&input[..], Stream::Stdout, b"[7] ", &sender, Drain::never()).await;
        drop(sender);
        let mut total = 0;
        while let Some(Msg::Stdout(bytes)) = receiver.recv().await {
            assert!(
                bytes.len() <= (64 << 10) + 5,
                "a piece of {} bytes",
                bytes.len()
            );
            total += bytes.len() - 5;
        }
        assert_eq!(total, input.len());
    }

    #[tokio::test]
    async fn a_large_grouped_output_spills_to_a_file_and_comes_back_whole() {
        let big: Vec<u8> = (0..3 * SPOOL_MEMORY + 123)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let mut spool = Spool::default();
        spool.fill(&big[..], Drain::never()).await;
        assert!(spool.spilled(), "more than SPOOL_MEMORY goes to a file");
        assert!(spool.memory.len() <= SPOOL_MEMORY);
        let (sender, mut receiver) = Sender::channel(16);
        let sending = tokio::spawn(async move { spool.send(Stream::Stdout, &sender).await });
        let mut got = Vec::new();
        while let Some(msg) = receiver.recv().await {
            match msg {
                Msg::Stdout(bytes) => {
                    assert!(bytes.len() <= MAX_PIECE, "bounded pieces");
                    got.extend_from_slice(&bytes);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        sending.await.unwrap();
        assert_eq!(got.len(), big.len() + 1, "all of it, and a final newline");
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(got.last(), Some(&b'\n'));
    }

    #[tokio::test]
    async fn a_small_grouped_output_stays_in_memory_and_keeps_its_newline() {
        for (input, expected) in [
            (&b"one\ntwo\n"[..], &b"one\ntwo\n"[..]),
            (b"no newline", b"no newline\n"),
        ] {
            let mut spool = Spool::default();
            spool.fill(input, Drain::never()).await;
            assert!(!spool.spilled());
            let (sender, mut receiver) = Sender::channel(4);
            spool.send(Stream::Stderr, &sender).await;
            drop(sender);
            match receiver.recv().await {
                Some(Msg::Stderr(bytes)) => assert_eq!(bytes, expected),
                other => panic!("unexpected {other:?}"),
            }
        }
        let (sender, mut receiver) = Sender::channel(4);
        Spool::default().send(Stream::Stdout, &sender).await;
        drop(sender);
        assert!(receiver.recv().await.is_none(), "no output, nothing sent");
    }
}
