//! End-to-end tests of the `taskherd` binary: each test writes a job file into a temporary
//! directory, runs the binary there and checks its exit status, output, report and the files
//! the jobs left behind.

#![cfg(unix)]

mod support;

// The redis-server harness of taskherd-redis's tests, shared rather than copied: a real server
// per test, on 127.0.0.1 on a free port, with no persistence, stopped when dropped.
#[path = "../../../taskherd-redis/tests/support/mod.rs"]
mod redis_server;
// Its certificates for `rediss://`.
#[path = "../../../taskherd-redis/tests/support/certs.rs"]
mod certs;

mod dry_run;
mod errors;
mod fleet;
mod interrupt;
mod joblog;
mod limits;
mod limits_file;
mod outcomes;
mod output;
mod processes;
mod resume;
mod retries;
mod streaming;
mod timeouts;
