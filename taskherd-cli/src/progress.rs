//! Live progress on standard error: jobs done, failed, running and waiting, the busiest groups
//! against their limits, the job running longest, elapsed time and an estimate of the time left.
//!
//! On a terminal it is an indicatif bar that the output writer hides while it writes, so job
//! output is never garbled. With `--progress` when standard error is not a terminal (a CI log),
//! it is a status line every few seconds instead.
//!
//! ```text
//! ⠙ [00:03:14] [===================>] 9999/10000 done, 1 running, 0 waiting | db 1/1 | longest: line 42 (3m12s) | ETA ?
//! taskherd: [3m14s] 9999/10000 done, 1 running, 0 waiting | db 1/1 | longest: line 42 (3m12s) | ETA ?
//! ```
//!
//! # Width
//!
//! The bar is built anew for the terminal's width at every update (a resized terminal is
//! followed), one column short of it so the cursor never wraps; the status line is at most
//! [`LINE_WIDTH`] columns, 100 with the `taskherd: ` before it. Columns are counted as
//! characters. When everything does not fit, parts are left out, the least important first:
//! the second and third busiest groups, the drawn bar (first drawn half as wide), the elapsed
//! time (never left out of the status line: a log needs it), the busiest group, the running and
//! waiting counts, the ETA, the longest-running job, the failures. The jobs done out of the
//! total are always shown, even if the terminal is narrower. A part left out may let a later,
//! shorter one fit. A group name
//! longer than [`NAME_WIDTH`] columns is cut in the middle with `…`, and cut further (to
//! [`NAME_MIN`] at least) when that lets the group fit. Widths are terminal columns: a CJK
//! character takes two.
//!
//! # The longest-running job
//!
//! `longest: line 42 (3m12s)` names the job that has been running longest, by its line in the
//! job file, when it matters: once that job has run [`SLOW_AFTER`] and either no job has ended
//! yet, or it has run [`SLOW_FACTOR`] times the mean time of the jobs that ended, or the ETA is
//! unknown. Short jobs of even length are not worth the room on the line.
//!
//! # The ETA
//!
//! The estimate assumes jobs keep ending at the rate they have so far: elapsed time per job
//! done, times the jobs left. That rate says nothing about a job stuck far past the others: in
//! the issue's case (thousands of jobs done in a second, one running for minutes) it would
//! claim a few hundredths of a second, for minutes on end. So when the estimate is shorter than
//! the time the longest-running job has already run beyond the mean run time, the job is
//! plainly not following the rate, its end cannot be foretold, and the ETA shows as `ETA ?`
//! (with that job named beside it). There is no ETA before the first job ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

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
/// Columns between the brackets of the drawn bar (half as many when space is short).
const BAR_WIDTH: usize = 20;
/// Columns of a group name shown at most.
const NAME_WIDTH: usize = 20;
/// A group name is not cut shorter than this to make room: the group is left out instead.
const NAME_MIN: usize = 8;
/// Columns of a status line at most, without the `taskherd: ` before it.
const LINE_WIDTH: usize = 90;
/// The longest-running job is named once it has run this long, and...
const SLOW_AFTER: Duration = Duration::from_secs(2);
/// ...this many times the mean run time (see the module docs).
const SLOW_FACTOR: u32 = 4;

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
            // The rest of the line is built for the terminal's width: see `update`.
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .expect("the progress template is valid"),
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
        let now = Instant::now();
        let clock = Clock {
            elapsed: now.saturating_duration_since(self.began),
            now,
        };
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                // The spinner and a space before the message, a column left free after it.
                let columns = usize::from(console::Term::stderr().size().1);
                let line = render(counts, &limit, clock, Mode::Bar, columns.saturating_sub(3));
                // Jobs of a streamed job file are counted as they arrive.
                bar.set_length(counts.total.jobs as u64);
                bar.set_position(counts.total.done() as u64);
                bar.set_message(line);
                None
            }
            (None, Mode::Lines) => Some(render(counts, &limit, clock, Mode::Lines, LINE_WIDTH)),
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

/// Where the time stands for a rendering.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Since the run began.
    elapsed: Duration,
    now: Instant,
}

/// `[00:03:12] [====>    ] 812/1000 done, 1 failed, 4 running, 7 waiting | db 1/1 +3, web1 2/2
/// +1 | longest: line 42 (3m12s) | ETA 12.0s`, at most `width` characters (but always with the
/// jobs done); the elapsed time and the drawn bar as in `mode`.
fn render(
    counts: &Snapshot,
    limit: &dyn Fn(&Group) -> Option<usize>,
    clock: Clock,
    mode: Mode,
    width: usize,
) -> String {
    let total = &counts.total;
    let bar = mode == Mode::Bar;
    let mut parts: Vec<Part> = Vec::new();
    let mut add = |rank: u8, cluster: Cluster, options: Vec<String>| {
        parts.push(Part {
            rank,
            cluster,
            options,
        });
    };

    // The status line, printed now and then in a log, always says when it was.
    add(
        if bar { 7 } else { 1 },
        Cluster::Head,
        vec![if bar {
            format!("[{}]", clock_time(clock.elapsed))
        } else {
            format!("[{}]", table::duration(clock.elapsed))
        }],
    );
    if bar {
        let fraction = if total.jobs == 0 {
            1.0
        } else {
            total.done() as f64 / total.jobs as f64
        };
        add(
            8,
            Cluster::Head,
            vec![
                drawn_bar(fraction, BAR_WIDTH),
                drawn_bar(fraction, BAR_WIDTH / 2),
            ],
        );
    }
    add(
        0,
        Cluster::Counts,
        vec![format!("{}/{} done", total.done(), total.jobs)],
    );
    let failed = total.failed + total.killed;
    if failed > 0 {
        add(2, Cluster::Counts, vec![format!("{failed} failed")]);
    }
    add(
        5,
        Cluster::Counts,
        vec![format!(
            "{} running, {} waiting",
            total.running, total.pending
        )],
    );
    for (index, (name, numbers)) in busiest(counts, limit).into_iter().enumerate() {
        // The busiest group ranks above the drawn bar; the others come last.
        let rank = if index == 0 { 6 } else { 8 + index as u8 };
        let columns = name.width();
        let options = (columns.min(NAME_MIN)..=columns.min(NAME_WIDTH))
            .rev()
            .map(|columns| format!("{} {numbers}", cut(&name, columns)))
            .collect();
        add(rank, Cluster::Groups, options);
    }
    let eta = eta(counts, clock);
    if let Some(longest) = counts.longest {
        let ran = clock.now.saturating_duration_since(longest.started);
        let matters = ran >= SLOW_AFTER
            && (counts
                .mean
                .is_none_or(|mean| ran >= mean.saturating_mul(SLOW_FACTOR))
                || eta == Eta::Unknown);
        if matters {
            add(
                3,
                Cluster::Longest,
                vec![format!(
                    "longest: line {} ({})",
                    longest.line,
                    table::duration(ran)
                )],
            );
        }
    }
    match eta {
        Eta::None => {}
        Eta::Unknown => add(4, Cluster::Eta, vec!["ETA ?".to_owned()]),
        Eta::In(left) => add(
            4,
            Cluster::Eta,
            vec![format!("ETA {}", table::duration(left))],
        ),
    }
    fit(&parts, width)
}

/// A piece of the line: `options` from the longest to the shortest, lower `rank` kept first.
#[derive(Debug)]
struct Part {
    rank: u8,
    cluster: Cluster,
    options: Vec<String>,
}

/// Parts in one cluster are joined by `, ` (by a space in the head); clusters by ` | `, but
/// the head by a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cluster {
    Head,
    Counts,
    Groups,
    Longest,
    Eta,
}

/// The parts, in the order given, that fit in `width` columns: each in turn from the lowest
/// rank, in its longest option that fits. The first part is always shown.
fn fit(parts: &[Part], width: usize) -> String {
    let mut chosen: Vec<Option<&str>> = vec![None; parts.len()];
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&index| parts[index].rank);
    for (tried, &index) in order.iter().enumerate() {
        let cluster = parts[index].cluster;
        if cluster == Cluster::Groups
            && index > 0
            && parts[index - 1].cluster == cluster
            && chosen[index - 1].is_none()
        {
            // A group is shown only after the ones busier than it.
            continue;
        }
        for option in &parts[index].options {
            chosen[index] = Some(option);
            if tried == 0 || join(parts, &chosen).width() <= width {
                break;
            }
            chosen[index] = None;
        }
    }
    join(parts, &chosen)
}

/// The chosen parts with their separators.
fn join(parts: &[Part], chosen: &[Option<&str>]) -> String {
    let mut out = String::new();
    let mut previous: Option<Cluster> = None;
    for (part, text) in parts.iter().zip(chosen) {
        let Some(text) = text else { continue };
        if let Some(previous) = previous {
            out.push_str(match (previous, part.cluster) {
                (Cluster::Head, _) => " ",
                (a, b) if a == b => ", ",
                _ => " | ",
            });
        }
        out.push_str(text);
        previous = Some(part.cluster);
    }
    out
}

/// `[=========>          ]`: `inner` columns between the brackets.
fn drawn_bar(fraction: f64, inner: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0) * inner as f64) as usize).min(inner);
    let mut out = String::from("[");
    out.extend(std::iter::repeat_n('=', filled));
    if filled < inner {
        out.push('>');
        out.extend(std::iter::repeat_n(' ', inner - filled - 1));
    }
    out.push(']');
    out
}

/// `00:03:12`: hours, minutes and seconds, steady in width as the bar is redrawn.
fn clock_time(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `name` in at most `columns` terminal columns: cut in the middle, with `…` there, when it is
/// wider. Both ends are kept since names often differ only at the end (`web-frontend-01`,
/// `-02`).
fn cut(name: &str, columns: usize) -> String {
    if name.width() <= columns {
        return name.to_owned();
    }
    let kept = columns.saturating_sub(1);
    let tail_columns = kept / 2;
    let head = take_columns(name.chars(), kept - tail_columns);
    let mut tail = take_columns(name.chars().rev(), tail_columns);
    tail.reverse();
    let mut out: String = head.into_iter().collect();
    out.push('…');
    out.extend(tail);
    out
}

/// The first characters of `chars` that fit in `columns` columns.
fn take_columns(chars: impl Iterator<Item = char>, columns: usize) -> Vec<char> {
    let mut used = 0;
    chars
        .take_while(|c| {
            used += c.width().unwrap_or(0);
            used <= columns
        })
        .collect()
}

/// The groups most in the way: full ones first, then those with the most jobs waiting; each as
/// its name and `running/limit`, with `+N` for N jobs waiting.
fn busiest(counts: &Snapshot, limit: &dyn Fn(&Group) -> Option<usize>) -> Vec<(String, String)> {
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
            let numbers = if c.pending > 0 {
                format!("{}/{limit} +{}", c.running, c.pending)
            } else {
                format!("{}/{limit}", c.running)
            };
            ((*group).to_owned(), numbers)
        })
        .collect()
}

/// The time left, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eta {
    /// Before the first job ends, or after the last.
    None,
    /// A job has run far longer than the rate would have it (see the module docs).
    Unknown,
    In(Duration),
}

/// Time left, assuming jobs keep ending at the rate they have so far, unless the longest-running
/// job shows that they do not.
fn eta(counts: &Snapshot, clock: Clock) -> Eta {
    let total = &counts.total;
    let done = total.done();
    if done == 0 || done >= total.jobs {
        return Eta::None;
    }
    let per_job = clock.elapsed.as_secs_f64() / done as f64;
    let Ok(left) = Duration::try_from_secs_f64(per_job * (total.jobs - done) as f64) else {
        return Eta::Unknown;
    };
    if let Some(longest) = counts.longest {
        let ran = clock.now.saturating_duration_since(longest.started);
        let overdue = ran.saturating_sub(counts.mean.unwrap_or_default());
        if left < overdue {
            return Eta::Unknown;
        }
    }
    Eta::In(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobfile::parse;
    use crate::outcome::Status;
    use crate::tally::Tally;

    /// `elapsed` into a run that began at `began`.
    fn clock(began: Instant, elapsed: Duration) -> Clock {
        Clock {
            elapsed,
            now: began + elapsed,
        }
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Two seconds into a run of five jobs: 1 failed, 2 and 3 running, 4 and 5 waiting (with
    /// the limits of `limit`).
    fn five_jobs() -> (Snapshot, Clock) {
        let jobs = parse(b"db h1 :: a\ndb :: b\nh1 :: c\nh2 :: d\nh1 :: e\n").unwrap();
        let tally = Tally::new(&jobs);
        let began = Instant::now();
        tally.start_at(&jobs[0], began);
        tally.end_at(&jobs[0], &Status::Failed { code: 1 }, true, began + secs(1));
        tally.start_at(&jobs[1], began + secs(1));
        tally.start_at(&jobs[2], began + secs(1));
        (tally.snapshot(), clock(began, secs(2)))
    }

    fn limit(group: &Group) -> Option<usize> {
        match &**group {
            "db" => Some(1),
            "h1" => Some(2),
            _ => None,
        }
    }

    #[test]
    fn status_line_shows_totals_busiest_groups_and_eta() {
        let (counts, at) = five_jobs();
        // The longest job is named only when it matters; a second is not long.
        assert_eq!(
            render(&counts, &limit, at, Mode::Lines, LINE_WIDTH),
            "[2.00s] 1/5 done, 1 failed, 2 running, 2 waiting | db 1/1, h1 1/2 +1 | ETA 8.00s"
        );
        assert_eq!(
            render(&counts, &limit, at, Mode::Bar, 200),
            "[00:00:02] [====>               ] 1/5 done, 1 failed, 2 running, 2 waiting \
             | db 1/1, h1 1/2 +1, h2 0/- +1 | ETA 8.00s"
        );
    }

    #[test]
    fn no_eta_before_the_first_job_ends() {
        let jobs = parse(b"a\n").unwrap();
        let tally = Tally::new(&jobs);
        let began = Instant::now();
        assert_eq!(
            render(
                &tally.snapshot(),
                &|_| None,
                clock(began, secs(1)),
                Mode::Lines,
                LINE_WIDTH
            ),
            "[1.00s] 0/1 done, 0 running, 1 waiting"
        );
    }

    /// The case of issue 11: 4999 jobs of 5000 done within a second, the last running for
    /// three minutes. The rate alone would give 0.04s (192s / 4999); the line says the ETA is
    /// not known and which job holds the run up.
    #[test]
    fn one_job_running_for_minutes_makes_the_eta_unknown_and_is_named() {
        let mut text = String::new();
        for _ in 0..5000 {
            text.push_str("true\n");
        }
        let jobs = parse(text.as_bytes()).unwrap();
        let tally = Tally::new(&jobs);
        let began = Instant::now();
        tally.start_at(&jobs[41], began);
        for job in jobs.iter().filter(|job| job.line != 42) {
            let start = began + Duration::from_micros(job.line as u64 * 100);
            tally.start_at(job, start);
            tally.end_at(
                job,
                &Status::Succeeded,
                true,
                start + Duration::from_millis(5),
            );
        }
        let at = clock(began, secs(192));
        let counts = tally.snapshot();
        assert_eq!(
            render(&counts, &|_| None, at, Mode::Bar, 200),
            "[00:03:12] [===================>] 4999/5000 done, 1 running, 0 waiting \
             | longest: line 42 (3m12s) | ETA ?"
        );
        assert_eq!(
            render(&counts, &|_| None, at, Mode::Lines, LINE_WIDTH),
            "[3m12s] 4999/5000 done, 1 running, 0 waiting | longest: line 42 (3m12s) | ETA ?"
        );
        // At 2 s it has run 400 times the mean: unknown already.
        assert_eq!(eta(&counts, clock(began, secs(2))), Eta::Unknown);
    }

    /// A job as long as the others is no reason to doubt the rate, nor to be named on the bar.
    #[test]
    fn jobs_of_even_length_keep_the_eta_and_do_not_name_the_longest() {
        let jobs = parse(b"a\nb\nc\nd\n").unwrap();
        let tally = Tally::new(&jobs);
        let began = Instant::now();
        tally.start_at(&jobs[0], began);
        tally.end_at(&jobs[0], &Status::Succeeded, true, began + secs(10));
        tally.start_at(&jobs[1], began + secs(10));
        let at = clock(began, secs(15));
        assert_eq!(
            render(&tally.snapshot(), &|_| None, at, Mode::Bar, 200),
            "[00:00:15] [=====>              ] 1/4 done, 1 running, 2 waiting | ETA 45.0s"
        );
        // Four times the mean (40s) and it is named, the ETA still standing.
        let at = clock(began, secs(50));
        assert_eq!(
            render(&tally.snapshot(), &|_| None, at, Mode::Bar, 200),
            "[00:00:50] [=====>              ] 1/4 done, 1 running, 2 waiting \
             | longest: line 2 (40.0s) | ETA 2m30s"
        );
    }

    /// Many groups with long names, a failure, a long job: every width gets a line that fits,
    /// keeping the most important parts.
    #[test]
    fn the_line_fits_the_width() {
        let long = "a-group-name-far-longer-than-any-terminal-would-show-in-full";
        let mut text = String::new();
        for n in 0..40 {
            text.push_str(&format!("{long}-{} ünïcödé-{} :: true\n", n % 4, n % 8));
        }
        let jobs = parse(text.as_bytes()).unwrap();
        let tally = Tally::new(&jobs);
        let began = Instant::now();
        for job in &jobs[..30] {
            tally.start_at(job, began);
        }
        for job in &jobs[1..20] {
            tally.end_at(job, &Status::Failed { code: 1 }, true, began + secs(1));
        }
        let counts = tally.snapshot();
        let limit = |_: &Group| None;
        let at = clock(began, secs(600));
        let render_bar = |width| render(&counts, &limit, at, Mode::Bar, width);
        for width in [40, 80, 120] {
            // The bar's message has the terminal's width less three columns.
            let line = render_bar(width - 3);
            assert!(line.chars().count() <= width - 3, "{width}: {line}");
            assert!(line.contains("19/40 done, 19 failed"), "{width}: {line}");
        }
        let status = render(&counts, &limit, at, Mode::Lines, LINE_WIDTH);
        assert!(status.chars().count() <= LINE_WIDTH, "{status}");
        assert!(status.starts_with("[10m00s] 19/40 done"), "{status}");

        assert_eq!(render_bar(37), "19/40 done, 19 failed | ETA 11m03s");
        assert_eq!(
            render_bar(77),
            "[00:10:00] 19/40 done, 19 failed | longest: line 1 (10m00s) | ETA 11m03s"
        );
        assert_eq!(
            render_bar(117),
            "19/40 done, 19 failed, 11 running, 10 waiting | a-group-na…in-full-2 2/- +3 \
             | longest: line 1 (10m00s) | ETA 11m03s"
        );
        // With room, three groups, the last one's name cut further to fit.
        assert_eq!(
            render_bar(200),
            "[00:10:00] [=========>          ] 19/40 done, 19 failed, 11 running, 10 waiting \
             | a-group-na…in-full-2 2/- +3, a-group-na…in-full-3 2/- +3, a-grou…full-0 4/- +2 \
             | longest: line 1 (10m00s) | ETA 11m03s"
        );
        assert_eq!(
            status,
            "[10m00s] 19/40 done, 19 failed | a-gro…ll-2 2/- +3 | longest: line 1 (10m00s) \
             | ETA 11m03s"
        );
    }

    /// A name of wide characters (CJK: two columns each) is measured and cut in columns, so
    /// that the bar fits the terminal (found by a review: it wrapped onto two lines).
    #[test]
    fn wide_characters_are_measured_in_columns() {
        assert_eq!(cut("データベース", 12), "データベース");
        assert_eq!(cut("データベースサーバー", 9), "デー…バー");
        assert_eq!(cut("データベースサーバー", 9).width(), 9);
        assert_eq!(cut("web-frontend-01", 8), "web-…-01");
        let jobs =
            parse("データベースサーバー一号機 :: a\nデータベースサーバー一号機 :: b\n".as_bytes())
                .unwrap();
        let tally = Tally::new(&jobs);
        let began = Instant::now();
        tally.start_at(&jobs[0], began);
        let at = clock(began, Duration::from_millis(500));
        let counts = tally.snapshot();
        for width in [30, 45, 60, 80] {
            let line = render(&counts, &|_| None, at, Mode::Bar, width);
            assert!(line.width() <= width, "{width}: {line} ({})", line.width());
        }
    }

    #[test]
    fn below_the_narrowest_the_jobs_done_still_show() {
        let (counts, at) = five_jobs();
        assert_eq!(render(&counts, &limit, at, Mode::Bar, 0), "1/5 done");
        assert_eq!(
            render(&counts, &limit, at, Mode::Bar, 20),
            "1/5 done, 1 failed"
        );
    }

    #[test]
    fn the_busiest_group_name_is_cut_to_fit() {
        let jobs = parse(b"big-database :: a\nbig-database :: b\n").unwrap();
        let tally = Tally::new(&jobs);
        let began = Instant::now();
        tally.start_at(&jobs[0], began);
        let at = clock(began, Duration::from_millis(500));
        let counts = tally.snapshot();
        let cut = "0/2 done, 1 running, 1 waiting | big-…ase 1/- +1";
        let width = cut.chars().count();
        assert_eq!(render(&counts, &|_| None, at, Mode::Bar, width), cut);
        // Not shorter than NAME_MIN characters: then the group is left out.
        assert_eq!(
            render(&counts, &|_| None, at, Mode::Bar, width - 1),
            "[00:00:00] 0/2 done, 1 running, 1 waiting"
        );
    }

    #[test]
    fn drawn_bars_and_clock_times() {
        assert_eq!(drawn_bar(0.0, 4), "[>   ]");
        assert_eq!(drawn_bar(0.5, 4), "[==> ]");
        assert_eq!(drawn_bar(1.0, 4), "[====]");
        assert_eq!(clock_time(secs(3 * 3600 + 125)), "03:02:05");
        assert_eq!(cut("abcdef", 4), "ab…f");
        assert_eq!(cut("abcdef", 5), "ab…ef");
        assert_eq!(cut("abcdef", 2), "a…");
        assert_eq!(cut("abcd", 4), "abcd");
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
