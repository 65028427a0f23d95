//! End-to-end tests of the `taskherd` binary: each test writes a job file into a temporary
//! directory, runs the binary there and checks its exit status, output, report and the files
//! the jobs left behind.

#![cfg(unix)]

mod support;

mod dry_run;
mod errors;
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
