//! A real `redis-server` per test: a free port on 127.0.0.1, no persistence, a temporary
//! directory; stopped (kill + wait) when dropped. Shared by every test file.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "taskherd-redis-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("cannot make a temporary directory");
    dir
}

impl Server {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (to restart one where the pools expect it).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts a server on a free port with `extra` arguments (`--maxmemory 64mb`, ...).
    pub fn start_args(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
        Self::start_with(free_port(), &extra)
    }

    /// Starts a server on a free port that also serves TLS on another free port, returned,
    /// with the certificate and key in PEM files `cert` and `key`, and clients authenticated
    /// by certificates that chain to `ca` (Redis's default once it serves TLS).
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> (Self, u16) {
        let tls_port = free_port();
        let paths = [cert, key, ca].map(|path| path.to_str().expect("a UTF-8 path").to_owned());
        let args = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &paths[0],
            "--tls-key-file",
            &paths[1],
            "--tls-ca-cert-file",
            &paths[2],
        ]
        .map(str::to_owned);
        (Self::start_with(free_port(), &args), tls_port)
    }

    fn start_with(port: u16, extra: &[String]) -> Self {
        let dir = temp_dir();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed (apt-get install redis-server; .ci/run does it)",
            );
        let server = Self {
            child: Some(child),
            port,
            dir,
        };
        server.wait_ready();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Waits until the server answers PING.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .cmd(&["PING"])
                .is_ok_and(|reply| reply.contains("PONG"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one command with RESP over a plain socket and returns the raw reply.
    pub fn cmd(&self, args: &[&str]) -> std::io::Result<String> {
        cmd_on(self.port, args)
    }

    /// Stops the server now (kill + wait).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// [`Server::cmd`], to the server on `port` (for threads that do not hold the server).
#[allow(dead_code)]
pub fn cmd_on(port: u16, args: &[&str]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A pool named `name` on `server`, with `lease`.
pub async fn pool(
    server: &Server,
    name: &str,
    lease: Duration,
) -> taskherd_redis::RedisPool<&'static str> {
    taskherd_redis::RedisPool::builder(&server.url(), name)
        .lease(lease)
        .build()
        .await
        .expect("the test server is up")
}

/// Polls `call` once (which sends its admission to Redis), with a waker that does nothing.
#[allow(dead_code)]
pub fn poll_once<F: std::future::Future + ?Sized>(
    call: &mut std::pin::Pin<Box<F>>,
) -> std::task::Poll<F::Output> {
    call.as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}
