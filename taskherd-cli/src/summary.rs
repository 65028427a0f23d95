//! The summary printed at the end of a run: what became of the jobs, and per group how many ran
//! at once at the peak against the limit.

use std::time::Duration;

use crate::outcome::Reason;
use crate::plan::optional;
use crate::table;
use crate::tally::{Counts, Snapshot};

/// Groups shown at most; the ones with the most jobs are kept.
const MAX_GROUPS: usize = 20;

/// Renders the summary. `limit` gives the limit in force for a group (`None`: the total).
pub fn render(
    counts: &Snapshot,
    stopped: Option<Reason>,
    elapsed: Duration,
    limit: impl Fn(Option<&str>) -> Option<usize>,
) -> String {
    let total = &counts.total;
    let mut parts = vec![format!("{} succeeded", total.succeeded)];
    for (n, what) in [
        (total.failed, "failed"),
        (total.killed, "killed"),
        (total.timed_out, "timed out"),
        (total.not_run, "not started"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let mut out = format!(
        "{} in {}: {}",
        table::count(total.jobs, "job"),
        table::duration(elapsed),
        parts.join(", ")
    );
    match stopped {
        Some(Reason::HaltOnError) => out.push_str(" (halted after a failure)"),
        Some(Reason::Interrupted) => out.push_str(" (interrupted)"),
        Some(Reason::BadInput) => out.push_str(" (stopped by a bad line)"),
        // A job's reason, never the run's.
        Some(Reason::LeaseLost) | None => {}
    }
    out.push('\n');

    let mut groups: Vec<_> = counts.groups.iter().collect();
    let hidden = groups.len().saturating_sub(MAX_GROUPS);
    if hidden > 0 {
        groups.sort_by(|a, b| b.1.jobs.cmp(&a.1.jobs).then_with(|| a.0.cmp(&b.0)));
        groups.truncate(MAX_GROUPS);
        groups.sort_by(|a, b| a.0.cmp(&b.0));
    }
    // The "timed out" column only when a job timed out: most runs set no timeout.
    let timeouts = total.timed_out > 0;
    // A peak above the limit shown: the limit was higher earlier (changed during the run).
    let mut above = false;
    let mut row_of = |name: &str, counts: &Counts, limit: Option<usize>| {
        let marked = limit.is_some_and(|limit| counts.peak > limit);
        above |= marked;
        row(name, counts, limit, timeouts, marked)
    };
    let mut rows = vec![row_of("[total]", total, limit(None))];
    for (group, group_counts) in groups {
        rows.push(row_of(group, group_counts, limit(Some(group))));
    }
    let mut header = vec!["group", "jobs", "succeeded", "failed", "killed"];
    if timeouts {
        header.push("timed out");
    }
    header.extend(["not run", "peak", "limit"]);
    out.push_str(&table::render(&header, &rows));
    if above {
        out.push_str(
            "* the limit at the end of the run, lower than the peak: it was higher earlier \
             (changed during the run)\n",
        );
    }
    if hidden > 0 {
        out.push_str(&format!(
            "... and {} (fewer jobs each)\n",
            table::count(hidden, "more group")
        ));
    }
    out
}

fn row(
    name: &str,
    counts: &Counts,
    limit: Option<usize>,
    timeouts: bool,
    marked: bool,
) -> Vec<String> {
    let mut row = vec![
        name.to_owned(),
        counts.jobs.to_string(),
        counts.succeeded.to_string(),
        counts.failed.to_string(),
        counts.killed.to_string(),
    ];
    if timeouts {
        row.push(counts.timed_out.to_string());
    }
    row.extend([
        counts.not_run.to_string(),
        counts.peak.to_string(),
        optional(limit) + if marked { "*" } else { "" },
    ]);
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobfile::parse;
    use crate::outcome::Status;
    use crate::tally::Tally;

    #[test]
    fn summary_table() {
        let jobs = parse(b"db web :: a\nweb :: b\nc\n").unwrap();
        let tally = Tally::new(&jobs);
        tally.start(&jobs[0]);
        tally.start(&jobs[1]);
        tally.end(&jobs[0], &Status::Succeeded, true);
        tally.end(&jobs[1], &Status::Failed { code: 1 }, true);
        tally.end(&jobs[2], &Status::NotStarted, false);
        let limit = |group: Option<&str>| match group {
            None => Some(4),
            Some("db") => Some(1),
            Some(_) => None,
        };
        assert_eq!(
            render(
                &tally.snapshot(),
                Some(Reason::HaltOnError),
                Duration::from_millis(1500),
                limit
            ),
            "3 jobs in 1.50s: 1 succeeded, 1 failed, 1 not started (halted after a failure)\n\
             group    jobs  succeeded  failed  killed  not run  peak  limit\n\
             [total]     3          1       1       0        1     2      4\n\
             db          1          1       0       0        0     1      1\n\
             web         2          1       1       0        0     2   none\n"
        );
    }

    /// A peak above the limit at the end (lowered during the run) is marked, and said why
    /// (found by a review: `web0 peak 3 limit 1` read as a violation).
    #[test]
    fn a_peak_above_the_final_limit_is_explained() {
        let jobs = parse(b"db :: a\ndb :: b\n").unwrap();
        let tally = Tally::new(&jobs);
        tally.start(&jobs[0]);
        tally.start(&jobs[1]);
        tally.end(&jobs[0], &Status::Succeeded, true);
        tally.end(&jobs[1], &Status::Succeeded, true);
        let limit = |group: Option<&str>| match group {
            None => Some(8),
            Some(_) => Some(1),
        };
        assert_eq!(
            render(&tally.snapshot(), None, Duration::from_secs(1), limit),
            "2 jobs in 1.00s: 2 succeeded\n\
             group    jobs  succeeded  failed  killed  not run  peak  limit\n\
             [total]     2          2       0       0        0     2      8\n\
             db          2          2       0       0        0     2     1*\n\
             * the limit at the end of the run, lower than the peak: it was higher earlier \
             (changed during the run)\n"
        );
    }

    #[test]
    fn many_groups_are_cut() {
        let text: String = (0..25)
            .map(|i| format!("g{i:02} :: x\n"))
            .chain(std::iter::once("g24 :: y\n".to_owned()))
            .collect();
        let jobs = parse(text.as_bytes()).unwrap();
        let tally = Tally::new(&jobs);
        let out = render(&tally.snapshot(), None, Duration::ZERO, |_| None);
        assert!(out.contains("\ng24 "), "{out}");
        assert!(
            out.ends_with("... and 5 more groups (fewer jobs each)\n"),
            "{out}"
        );
        assert_eq!(out.lines().count(), 1 + 1 + 1 + 20 + 1);
    }
}
