//! Live progress on standard error: jobs done, failed, running and waiting, the busiest groups
//! against their limits, elapsed time and an estimate of the time left.
//!
//! On a terminal it is an indicatif bar that the output writer hides while it writes, so job
//! output is never garbled. With `--progress` when standard error is not a terminal (a CI log),
//! it is a status line every few seconds instead.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::jobfile::Group;
use crate::output::Suspend;
use crate::table;
use crate::tally::{Counts, Snapshot};

/// How often the bar is updated.
const BAR_PERIOD: Duration = Duration::from_millis(100);
/// How often a status line is printed when standard error is not a terminal.
const LINE_PERIOD: Duration = Duration::from_secs(2);
/// Groups shown at most.
const BUSIEST: usize = 3;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// A bar redrawn in place (standard error is a terminal).
    Bar,
    /// A status line now and then (standard error is not a terminal).
    Lines,
}

impl Mode {
    /// The mode for `--progress` (`Some(true)`), `--no-progress` (`Some(false)`) or neither.
    pub fn choose(flag: Option<bool>) -> Mode {
        let terminal = std::io::stderr().is_terminal();
        match (flag, terminal) {
            (Some(false), _) | (None, false) => Mode::Off,
            (_, true) => Mode::Bar,
            (Some(true), false) => Mode::Lines,
        }
    }
}

/// The progress display.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    began: Instant,
}

impl Progress {
    /// Starts showing progress for `jobs` jobs.
    pub fn start(mode: Mode, jobs: usize) -> Progress {
        let bar = (mode == Mode::Bar).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(jobs as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:20} {pos}/{len} done, {msg}",
                )
                .expect("the progress template is valid")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(BAR_PERIOD);
            bar
        });
        Progress {
            mode,
            bar,
            began: Instant::now(),
        }
    }

    /// How often [`update`](Self::update) should be called; `None` when progress is off.
    pub fn period(&self) -> Option<Duration> {
        match self.mode {
            Mode::Off => None,
            Mode::Bar => Some(BAR_PERIOD),
            Mode::Lines => Some(LINE_PERIOD),
        }
    }

    /// A hook for the output writer: hides the bar while job output is written.
    pub fn suspend_hook(&self) -> Option<Suspend> {
        let bar = self.bar.clone()?;
        Some(Box::new(move |write: &mut dyn FnMut()| bar.suspend(write)))
    }

    /// Shows the current counts. `limit` gives a group's limit. Returns the status line to
    /// print in [`Mode::Lines`].
    pub fn update(
        &self,
        counts: &Snapshot,
        limit: impl Fn(&Group) -> Option<usize>,
    ) -> Option<String> {
        let elapsed = self.began.elapsed();
        let status = status(counts, &limit, elapsed);
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_position(counts.total.done() as u64);
                bar.set_message(status);
                None
            }
            (None, Mode::Lines) => Some(format!(
                "[{}] {}/{} done, {status}",
                table::duration(elapsed),
                counts.total.done(),
                counts.total.jobs
            )),
            (None, _) => None,
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `1 failed, 4 running, 7 waiting | db 1/1 +3, web1 2/2 +1 | ETA 12s`
fn status(counts: &Snapshot, limit: &dyn Fn(&Group) -> Option<usize>, elapsed: Duration) -> String {
    let total = &counts.total;
    let mut out = String::new();
    let failed = total.failed + total.killed;
    if failed > 0 {
        out.push_str(&format!("{failed} failed, "));
    }
    out.push_str(&format!(
        "{} running, {} waiting",
        total.running, total.pending
    ));

    let busiest = busiest(counts, limit);
    if !busiest.is_empty() {
        out.push_str(" | ");
        out.push_str(&busiest.join(", "));
    }
    if let Some(eta) = eta(total, elapsed) {
        out.push_str(&format!(" | ETA {}", table::duration(eta)));
    }
    out
}

/// The groups most in the way: full ones first, then those with the most jobs waiting;
/// shown as `name running/limit`, with `+N` for N jobs waiting.
fn busiest(counts: &Snapshot, limit: &dyn Fn(&Group) -> Option<usize>) -> Vec<String> {
    let mut active: Vec<(bool, &Counts, &str, Option<usize>)> = counts
        .groups
        .iter()
        .filter(|(_, c)| c.running > 0 || c.pending > 0)
        .map(|(group, c)| {
            let limit = limit(group);
            let full = limit.is_some_and(|limit| c.running >= limit);
            (full, c, &**group, limit)
        })
        .collect();
    active.sort_by(|a, b| {
        (b.0, b.1.pending, b.1.running)
            .cmp(&(a.0, a.1.pending, a.1.running))
            .then_with(|| a.2.cmp(b.2))
    });
    active
        .iter()
        .take(BUSIEST)
        .map(|(_, c, group, limit)| {
            let limit = limit.map_or_else(|| "-".to_owned(), |n| n.to_string());
            if c.pending > 0 {
                format!("{group} {}/{limit} +{}", c.running, c.pending)
            } else {
                format!("{group} {}/{limit}", c.running)
            }
        })
        .collect()
}

/// Time left, assuming jobs keep ending at the rate they have so far.
fn eta(total: &Counts, elapsed: Duration) -> Option<Duration> {
    let done = total.done();
    if done == 0 || done >= total.jobs {
        return None;
    }
    let per_job = elapsed.as_secs_f64() / done as f64;
    Duration::try_from_secs_f64(per_job * (total.jobs - done) as f64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobfile::parse;
    use crate::outcome::Status;
    use crate::tally::Tally;

    #[test]
    fn status_line_shows_totals_busiest_groups_and_eta() {
        let jobs = parse(b"db h1 :: a\ndb :: b\nh1 :: c\nh2 :: d\nh1 :: e\n").unwrap();
        let tally = Tally::new(&jobs);
        tally.start(&jobs[0]);
        tally.end(&jobs[0], &Status::Failed { code: 1 }, true);
        tally.start(&jobs[1]);
        tally.start(&jobs[2]);
        let limit = |group: &Group| match &**group {
            "db" => Some(1),
            "h1" => Some(2),
            _ => None,
        };
        assert_eq!(
            status(&tally.snapshot(), &limit, Duration::from_secs(2)),
            "1 failed, 2 running, 2 waiting | db 1/1, h1 1/2 +1, h2 0/- +1 | ETA 8.00s"
        );
    }

    #[test]
    fn no_eta_before_the_first_job_ends() {
        let jobs = parse(b"a\n").unwrap();
        let tally = Tally::new(&jobs);
        assert_eq!(
            status(&tally.snapshot(), &|_| None, Duration::from_secs(1)),
            "0 running, 1 waiting"
        );
    }

    #[test]
    fn lines_mode_returns_a_line() {
        let jobs = parse(b"a\n").unwrap();
        let progress = Progress::start(Mode::Lines, 1);
        let line = progress.update(&Tally::new(&jobs).snapshot(), |_| None);
        assert!(line.unwrap().ends_with("] 0/1 done, 0 running, 1 waiting"));
        assert_eq!(progress.period(), Some(LINE_PERIOD));
        assert!(progress.suspend_hook().is_none());
    }
}
