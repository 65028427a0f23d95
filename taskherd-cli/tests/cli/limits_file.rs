//! `--limits-file`: limits changed while jobs run take effect; a bad file keeps the old ones.

use crate::support::{Scratch, intervals, logged_job, max_overlap};

/// A job that replaces the limits file (atomically, as the docs advise) and then runs a while.
fn rewriting_job(text: &str) -> String {
    logged_job("first", "g", "0.9").replacen(
        ":: ",
        &format!(":: printf '{text}' > limits.new && mv limits.new limits.txt; "),
        1,
    )
}

#[test]
fn raising_limits_while_running_lets_waiting_jobs_start() {
    let scratch = Scratch::new();
    scratch.write("limits.txt", "g=1\n");
    let mut jobs = vec![rewriting_job("g=3\\n[total]=3\\n")];
    jobs.extend((0..3).map(|i| logged_job(&format!("w{i}"), "g", "0.6")));
    scratch.write("jobs.txt", &jobs.join("\n"));
    let run = scratch.run(&["run", "-j", "1", "--limits-file", "limits.txt", "jobs.txt"]);
    run.assert_code(0).assert_stderr_contains(
        "taskherd: limits file limits.txt changed: [total] 1 -> 3, g 1 -> 3",
    );
    let ran = intervals(&scratch);
    assert_eq!(ran.len(), 4);
    // Under the old limits the jobs could only run one by one.
    assert_eq!(max_overlap(ran.values()), 3, "{ran:?}");
    assert!(
        ran["w0"].start < ran["first"].end,
        "w0 waited for the first job"
    );
}

#[test]
fn a_bad_limits_file_at_run_time_keeps_the_limits_in_force() {
    let scratch = Scratch::new();
    scratch.write("limits.txt", "g=1\n");
    let mut jobs = vec![rewriting_job("g=lots\\n")];
    jobs.extend((0..2).map(|i| logged_job(&format!("w{i}"), "g", "0.2")));
    scratch.write("jobs.txt", &jobs.join("\n"));
    let run = scratch.run(&["run", "-j", "4", "--limits-file", "limits.txt", "jobs.txt"]);
    run.assert_code(0).assert_stderr_contains(
        "taskherd: warning: limits file limits.txt:1: limit of g: \"lots\" is not a whole \
         number or \"none\"; keeping the limits in force",
    );
    let ran = intervals(&scratch);
    assert_eq!(ran.len(), 3);
    assert_eq!(max_overlap(ran.values()), 1);
}

#[test]
fn a_limit_of_zero_in_the_file_holds_a_group_back_until_raised() {
    let scratch = Scratch::new();
    scratch.write("limits.txt", "paused=0\n");
    // The free job unpauses the group after a while.
    scratch.write(
        "jobs.txt",
        "paused :: touch ran-paused\n\
         sleep 0.6; test ! -e ran-paused && touch was-held && printf 'paused=1\\n' > limits.new && mv limits.new limits.txt\n",
    );
    scratch
        .run(&["run", "--limits-file", "limits.txt", "jobs.txt"])
        .assert_code(0)
        .assert_stderr_contains("changed: paused 0 -> 1");
    assert!(scratch.exists("was-held") && scratch.exists("ran-paused"));
}

/// A new version of the file takes effect as one change (issue 9, item 4; issue 11, item 1):
/// raising `[default]` while pinning `g` at its old value must not let `g`'s waiting jobs start
/// under the raised default for an instant. Applied one setting at a time, the default went
/// first and every waiting `g` job started at once.
#[test]
fn a_new_limits_file_takes_effect_as_one_change() {
    let scratch = Scratch::new();
    scratch.write("limits.txt", "[default]=1\n");
    let mut jobs = vec![rewriting_job("[default]=10\\ng=1\\n")];
    jobs.extend((0..6).map(|i| logged_job(&format!("w{i}"), "g", "0.15")));
    // Another group, to see the raised default take effect.
    jobs.extend((0..3).map(|i| logged_job(&format!("o{i}"), "other", "0.6")));
    scratch.write("jobs.txt", &jobs.join("\n"));
    let run = scratch.run(&["run", "-j", "16", "--limits-file", "limits.txt", "jobs.txt"]);
    run.assert_code(0).assert_stderr_contains(
        "taskherd: limits file limits.txt changed: [default] 1 -> 10, g none (default 1) -> 1",
    );
    let ran = intervals(&scratch);
    assert_eq!(ran.len(), 10);
    let in_g = ran
        .iter()
        .filter(|(id, _)| *id == "first" || id.starts_with('w'))
        .map(|(_, interval)| interval);
    assert_eq!(max_overlap(in_g), 1, "g ran past its limit of 1: {ran:?}");
    // The summary agrees: g's peak is 1 against a limit of 1.
    let g_row: Vec<&str> = run
        .stderr
        .lines()
        .find(|line| line.starts_with("g "))
        .unwrap_or_else(|| panic!("no summary row for g: {run:#?}"))
        .split_whitespace()
        .collect();
    assert_eq!(g_row[g_row.len() - 2..], ["1", "1"], "{run:#?}");
}

/// A group's own limit removed by the file falls back to the default: the change says which
/// limit applies, not just `none`, which reads as "no limit" (found by a review: `g 3 -> none`
/// was reported while `-d 1` held the group at 1).
#[test]
fn a_change_to_a_group_without_its_own_limit_names_the_default_that_applies() {
    let scratch = Scratch::new();
    scratch.write("limits.txt", "g=3\n");
    let mut jobs = vec![rewriting_job("\\n")];
    jobs.extend((0..3).map(|i| logged_job(&format!("w{i}"), "g", "0.3")));
    scratch.write("jobs.txt", &jobs.join("\n"));
    let run = scratch.run(&[
        "run",
        "-j",
        "8",
        "-d",
        "1",
        "--limits-file",
        "limits.txt",
        "jobs.txt",
    ]);
    run.assert_code(0).assert_stderr_contains(
        "taskherd: limits file limits.txt changed: g 3 -> none (default 1)",
    );
}

/// A run whose waiting jobs are all held back by a limit of 0, nothing running, says so (once)
/// rather than sit there silently (found by a review); raised, they run. Here the limit is
/// raised by a process the free job left behind (its output its own, so it does not hold the
/// job's slot).
#[test]
fn a_run_held_back_by_a_limit_of_zero_says_so() {
    let scratch = Scratch::new();
    scratch.write("limits.txt", "paused=0\n");
    scratch.write(
        "jobs.txt",
        "paused :: touch ran-paused\n\
         paused :: touch ran-paused-too\n\
         setsid sh -c 'sleep 3.5; printf \"paused=1\\n\" > limits.new && mv limits.new limits.txt' \
         >/dev/null 2>&1 &\n",
    );
    let run = scratch.run(&["run", "--limits-file", "limits.txt", "jobs.txt"]);
    run.assert_code(0)
        .assert_stderr_contains(
            "taskherd: nothing runs: jobs wait in groups held back by a limit of 0 (paused: 2 \
             waiting); raise it to let them run\n",
        )
        .assert_stderr_contains("changed: paused 0 -> 1");
    assert_eq!(
        run.stderr.matches("nothing runs").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(scratch.exists("ran-paused") && scratch.exists("ran-paused-too"));
}
