//! The plan printed by `--dry-run`: how many jobs each group has, and its limit.

use std::collections::BTreeMap;

use crate::jobfile::{Group, Job};
use crate::limits::Limits;
use crate::table;

/// What a plan shows of the jobs: how many there are, and how many name each group.
#[derive(Debug, Default)]
pub struct Counts {
    pub jobs: usize,
    /// Jobs naming no group.
    pub ungrouped: usize,
    /// The number of jobs naming each group, by group name.
    pub per_group: BTreeMap<Group, usize>,
}

impl Counts {
    /// The counts of `jobs`.
    pub fn of(jobs: &[Job]) -> Counts {
        let mut counts = Counts::default();
        for job in jobs {
            counts.add(job);
        }
        counts
    }

    /// Counts one more job.
    pub fn add(&mut self, job: &Job) {
        self.jobs += 1;
        if job.groups.is_empty() {
            self.ungrouped += 1;
        }
        for group in &job.groups {
            match self.per_group.get_mut(group) {
                Some(count) => *count += 1,
                None => {
                    self.per_group.insert(group.clone(), 1);
                }
            }
        }
    }
}

/// Shows the limit of a group: its own, the default (marked), or `none`.
pub fn limit_cell(limits: &Limits, group: &str) -> String {
    match (limits.groups.get(group), limits.default) {
        (Some(limit), _) => limit.to_string(),
        (None, Some(default)) => format!("{default} (default)"),
        (None, None) => "none".to_owned(),
    }
}

/// Shows an optional limit.
pub fn optional(limit: Option<usize>) -> String {
    limit.map_or_else(|| "none".to_owned(), |n| n.to_string())
}

/// Renders the plan of a dry run.
pub fn render(source: &str, counts: &Counts, limits: &Limits) -> String {
    let Counts {
        jobs,
        ungrouped,
        per_group,
    } = counts;
    let mut rows = vec![vec![
        "[total]".to_owned(),
        jobs.to_string(),
        optional(limits.total),
    ]];
    for (group, count) in per_group {
        rows.push(vec![
            group.to_string(),
            count.to_string(),
            limit_cell(limits, group),
        ]);
    }
    if *ungrouped > 0 {
        rows.push(vec![
            "(no group)".to_owned(),
            ungrouped.to_string(),
            String::new(),
        ]);
    }
    format!(
        "{source}: {} in {}; dry run, nothing was run\n{}",
        table::count(*jobs, "job"),
        table::count(per_group.len(), "group"),
        table::render(&["group", "jobs", "limit"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobfile::parse;
    use std::sync::Arc;

    #[test]
    fn plan_counts_jobs_per_group() {
        let jobs = parse(b"web1 db :: a\nweb1 :: b\nweb2 db :: c\nd\n").unwrap();
        let limits = Limits {
            total: Some(4),
            default: Some(2),
            groups: [(Arc::from("db"), 1)].into(),
        };
        assert_eq!(
            render("jobs.txt", &Counts::of(&jobs), &limits),
            "jobs.txt: 4 jobs in 3 groups; dry run, nothing was run\n\
             group       jobs        limit\n\
             [total]        4            4\n\
             db             2            1\n\
             web1           2  2 (default)\n\
             web2           1  2 (default)\n\
             (no group)     1\n"
        );
    }
}
