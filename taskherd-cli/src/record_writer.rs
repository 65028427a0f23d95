//! Writing the report's records and the joblog's lines on a thread of their own, with a bound
//! on what waits in memory.
//!
//! A report or joblog nobody reads (`--report -` or a pipe whose reader stalled, a FIFO, a
//! `>(...)`) must hold up no part of the run that acts on signals, so lines are handed to a
//! writing thread and never written by the run's loops. What the thread has not written yet
//! waits in memory, up to [`BOUND`] bytes per file: past it, no new job starts until the
//! reader reads (see [`Backlog::room`]), as a job whose output nobody reads waits for
//! standard output. Jobs already running still end and queue their lines, so the bound can be
//! passed by the lines of the jobs running at that moment.
//!
//! After a failed write nothing more is written (a later line would follow one cut in the
//! middle); the lines queued after it are dropped as they come, so they do not hold back the
//! run.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

/// Bytes of lines queued and not written yet, per file, past which no new job starts.
pub const BOUND: usize = 1 << 20;

/// What one file's writing thread has not written yet.
#[derive(Debug)]
pub struct Backlog {
    /// The file, as notices name it: `report`, `joblog`.
    name: &'static str,
    queued: AtomicUsize,
    /// Notified each time the thread has written (or dropped) a line.
    written: tokio::sync::Notify,
}

impl Backlog {
    fn new(name: &'static str) -> Self {
        Backlog {
            name,
            queued: AtomicUsize::new(0),
            written: tokio::sync::Notify::new(),
        }
    }

    /// Which file this is the backlog of.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether fewer than [`BOUND`] bytes wait to be written.
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < BOUND
    }

    /// Resolves once fewer than [`BOUND`] bytes wait to be written (at once if they do).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn room(&self) {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            // Registered before the check, so that a write between the check and the wait
            // is not missed.
            written.as_mut().enable();
            if self.has_room() {
                return;
            }
            written.await;
        }
    }

    fn done(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        self.written.notify_waiters();
    }
}

/// Lines for one file, written by a thread of their own once [`start`](Self::start)ed.
pub struct RecordWriter {
    /// Until the run starts; then the writing thread has it.
    file: Option<BufWriter<Box<dyn Write + Send>>>,
    /// Once started: the lines for the writing thread.
    lines: Option<mpsc::Sender<Vec<u8>>>,
    backlog: Arc<Backlog>,
    /// The first error writing, until it is said.
    error: Arc<Mutex<Option<io::Error>>>,
    /// Set at the first failed write (and never cleared: the error may have been said).
    failed: Arc<AtomicBool>,
    /// Resolves once the writing thread has written every line sent (or given up).
    written: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordWriter")
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
}

impl RecordWriter {
    /// A writer for `file`, called `name` in notices; nothing is written until
    /// [`start`](Self::start).
    pub fn new(name: &'static str, file: Box<dyn Write + Send>) -> Self {
        RecordWriter {
            file: Some(BufWriter::new(file)),
            lines: None,
            backlog: Arc::new(Backlog::new(name)),
            error: Arc::default(),
            failed: Arc::default(),
            written: None,
        }
    }

    /// The file, before the run starts (to write a header); `None` once started.
    pub fn file(&mut self) -> Option<&mut BufWriter<Box<dyn Write + Send>>> {
        self.file.as_mut()
    }

    /// What waits to be written, for the run to hold back new jobs while it is too much.
    pub fn backlog(&self) -> Arc<Backlog> {
        Arc::clone(&self.backlog)
    }

    /// Starts the thread that writes the lines (`thread` names it).
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn start(&mut self, thread: &str) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let (lines, received) = mpsc::channel::<Vec<u8>>();
        let (done, written) = tokio::sync::oneshot::channel();
        let error = Arc::clone(&self.error);
        let failed_flag = Arc::clone(&self.failed);
        let backlog = Arc::clone(&self.backlog);
        std::thread::Builder::new()
            .name(thread.to_owned())
            .spawn(move || {
                let mut failed = false;
                // Until every sender is gone: after a failure, lines are dropped as they come.
                for line in received {
                    if !failed
                        && let Err(failure) = file.write_all(&line).and_then(|()| file.flush())
                    {
                        failed = true;
                        *error
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(failure);
                        // After the error: whoever sees the flag finds the error.
                        failed_flag.store(true, Ordering::Release);
                    }
                    backlog.done(line.len());
                }
                let _ = done.send(());
            })?;
        self.lines = Some(lines);
        self.written = Some(written);
        Ok(())
    }

    /// Queues `line` for the writing thread (before the run starts: nowhere, as no line is
    /// written then). Never waits.
    ///
    /// # Errors
    ///
    /// An earlier line could not be written (said once; nothing is written after it).
    pub fn send(&mut self, line: Vec<u8>) -> io::Result<()> {
        if let Some(error) = self.take_error() {
            return Err(error);
        }
        if let Some(lines) = &self.lines {
            let bytes = line.len();
            // Counted first: the thread may write it and subtract before `send` returns.
            self.backlog.queued.fetch_add(bytes, Ordering::AcqRel);
            if lines.send(line).is_err() {
                // The thread is gone (it panicked): nothing waits.
                self.backlog.done(bytes);
            }
        }
        Ok(())
    }

    fn take_error(&self) -> Option<io::Error> {
        self.error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Whether a write failed (its error said or not).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Waits until every line queued is written; returns the error writing one, if it was
    /// not said yet. (Never resolves while the reader of a pipe reads nothing: the caller
    /// bounds the wait.)
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped before it resolves, it loses the error.
    pub async fn finish(&mut self) -> Option<io::Error> {
        drop(self.lines.take());
        if let Some(written) = self.written.take() {
            let _ = written.await;
        }
        self.take_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails every write after the first `ok` bytes.
    struct Failing {
        ok: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.ok);
            self.ok -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn lines_are_written_in_order_and_the_backlog_empties() {
        let (reader, writer) = io::pipe().unwrap();
        let mut writer = RecordWriter::new("report", Box::new(writer));
        let backlog = writer.backlog();
        writer.start("test-records").unwrap();
        for i in 0..100 {
            writer.send(format!("{i}\n").into_bytes()).unwrap();
        }
        assert!(writer.finish().await.is_none());
        drop(writer);
        let text = io::read_to_string(reader).unwrap();
        let expected: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expected);
        assert_eq!(backlog.queued.load(Ordering::Acquire), 0);
        assert!(backlog.has_room());
    }

    /// Past the bound, `room` waits until the reader reads; reading makes room again.
    #[tokio::test]
    async fn room_waits_while_the_reader_reads_nothing() {
        let (mut reader, writer) = io::pipe().unwrap();
        let mut writer = RecordWriter::new("report", Box::new(writer));
        let backlog = writer.backlog();
        writer.start("test-records").unwrap();
        // Twice the bound, in lines of 64 KiB: the pipe holds one at most.
        for _ in 0..2 * BOUND / 65_536 {
            writer.send(vec![b'x'; 65_536]).unwrap();
        }
        assert!(!backlog.has_room());
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(200), backlog.room());
        assert!(waiting.await.is_err(), "room while nothing was read");
        let drained = std::thread::spawn(move || {
            let mut sink = Vec::new();
            io::copy(&mut reader, &mut sink).unwrap();
            sink.len()
        });
        tokio::time::timeout(std::time::Duration::from_secs(30), backlog.room())
            .await
            .expect("no room once the reader reads");
        assert!(writer.finish().await.is_none());
        drop(writer);
        assert_eq!(drained.join().unwrap(), 2 * BOUND);
    }

    /// After a failed write, nothing more is written, the error is said once, and the lines
    /// queued after it do not stay in the backlog.
    #[tokio::test]
    async fn a_failed_write_is_said_once_and_frees_the_backlog() {
        let mut writer = RecordWriter::new("joblog", Box::new(Failing { ok: 3 }));
        let backlog = writer.backlog();
        writer.start("test-records").unwrap();
        writer.send(b"first line\n".to_vec()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !writer.failed() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the write did not fail");
        let error = writer.send(b"second\n".to_vec()).unwrap_err();
        assert_eq!(error.to_string(), "disk full");
        writer.send(vec![b'x'; 2 * BOUND]).unwrap();
        assert!(writer.finish().await.is_none(), "said once");
        assert_eq!(backlog.queued.load(Ordering::Acquire), 0);
    }
}
