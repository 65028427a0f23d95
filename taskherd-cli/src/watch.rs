//! `--limits-file`: re-reads the limits file when it changes and applies it to the pool.
//!
//! The file is checked every [`POLL`] with `stat` (modification and change time, size, inode):
//! no notification API, no extra dependency. A change is applied once the file has stayed the
//! same for one poll, so a file caught half-written is not applied. A file that cannot be read
//! or parsed is reported and the limits in force are kept.
//!
//! What is applied is always the command-line limits overlaid with the file's settings, so a
//! setting removed from the file goes back to its command-line value. A new version of the file
//! is applied as one batch (`TaskPool::set_limits`), so no job starts under a mix of old and
//! new settings: running jobs are never stopped by a lower limit, waiting jobs start as soon as
//! a higher one leaves room.
//!
//! With `--redis`, the batch is written to the shared pool (the last write wins, for every run
//! of the pool). While Redis is unreachable the change is retried at each poll, and the failure
//! reported once.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::app::unknown_groups;
use crate::fleet::Pool;
use crate::jobfile::Group;
use crate::limits::{self, Limits, Target, Value};
use crate::output::{self, Msg};

/// How often the file is checked.
pub const POLL: Duration = Duration::from_millis(250);

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    modified: (i64, i64),
    changed: (i64, i64),
    len: u64,
    inode: (u64, u64),
}

impl Fingerprint {
    /// The file's fingerprint now, if it can be read.
    pub fn of_path(path: &std::path::Path) -> Option<Fingerprint> {
        std::fs::metadata(path)
            .ok()
            .map(|metadata| Fingerprint::of(&metadata))
    }

    fn of(metadata: &std::fs::Metadata) -> Fingerprint {
        Fingerprint {
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
            len: metadata.len(),
            inode: (metadata.dev(), metadata.ino()),
        }
    }
}

/// Watches the limits file.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    /// The command-line limits.
    base: Limits,
    /// The limits in force.
    current: Limits,
    /// The groups that jobs name, to warn about settings for other groups.
    /// The groups the jobs name, for warnings about others; `None` when not known (a job file
    /// read as it is written).
    named: Option<BTreeSet<Group>>,
    /// The version applied (or found bad) last.
    applied: Option<Fingerprint>,
    /// A new version seen at the last poll, applied if it is still the same at this one.
    pending: Option<Fingerprint>,
    /// The file could not be read at the last poll (reported once).
    missing: bool,
    /// A change could not be written to Redis (reported once; retried at each poll).
    unwritten: bool,
}

impl Watcher {
    /// Watches `path`, whose settings were already applied to make `current`; `applied` is
    /// the file's fingerprint taken *before* those settings were read, so that a change made
    /// since (while the run was starting) is seen at the first polls and applied.
    pub fn new(
        path: PathBuf,
        applied: Option<Fingerprint>,
        base: Limits,
        current: Limits,
        named: Option<BTreeSet<Group>>,
    ) -> Watcher {
        Watcher {
            path,
            base,
            current,
            named,
            applied,
            pending: None,
            missing: false,
            unwritten: false,
        }
    }

    /// Checks the file once; applies a changed file to `pool`. Returns messages to show.
    pub async fn poll(&mut self, pool: &Pool) -> Vec<String> {
        let shown = self.path.display().to_string();
        let fingerprint = match std::fs::metadata(&self.path) {
            Ok(metadata) => Fingerprint::of(&metadata),
            Err(error) => {
                self.pending = None;
                if self.missing {
                    return Vec::new();
                }
                self.missing = true;
                self.applied = None;
                return vec![format!(
                    "warning: cannot read limits file {shown}: {error}; keeping the limits in force"
                )];
            }
        };
        self.missing = false;
        if self.applied == Some(fingerprint) {
            self.pending = None;
            return Vec::new();
        }
        if self.pending != Some(fingerprint) {
            // Changed since the last poll: wait until it holds still.
            self.pending = Some(fingerprint);
            return Vec::new();
        }
        self.pending = None;
        self.applied = Some(fingerprint);

        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(error) => {
                return vec![format!(
                    "warning: cannot read limits file {shown}: {error}; keeping the limits in force"
                )];
            }
        };
        let settings = match limits::parse_limits_file(&text) {
            Ok(settings) => settings,
            Err(errors) => {
                let more = match errors.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                return vec![format!(
                    "warning: limits file {shown}:{}{more}; keeping the limits in force",
                    errors[0]
                )];
            }
        };
        let unknown = match &self.named {
            Some(named) => unknown_groups(&self.path, &settings, &named.iter().collect()),
            None => Vec::new(),
        };
        let mut messages: Vec<String> = unknown
            .into_iter()
            .map(|warning| format!("warning: {warning}"))
            .collect();

        let new = self.base.overlay(&settings);
        let changes = self.current.changes_to(&new);
        // A fleet's pool gets every limit the run was given, as at the start, not only the
        // ones that changed for this run: another run may have written its own since, and for
        // each setting the last write wins (this run's own view unchanged, it wrote nothing,
        // and the other run's value stood).
        let fleet = matches!(pool, Pool::Fleet(_));
        if !changes.is_empty() || fleet {
            let mut described: Vec<String> = changes
                .iter()
                .map(|(target, value)| {
                    let old = described_as(&self.current, target, self.old(target));
                    format!("{target} {old} -> {}", described_as(&new, target, *value))
                })
                .collect();
            if described.is_empty() {
                described.push(
                    "no change to this run's limits; written to the fleet's pool again".into(),
                );
            }
            let mut writes = changes;
            if fleet {
                for (target, value) in new.targets_clearing(&settings) {
                    if !writes.iter().any(|(written, _)| *written == target) {
                        writes.push((target, value));
                    }
                }
            }
            // One batch: no job may start under a mix of the old and the new file.
            if let Err(error) = pool.set_limits(limits::batch_of(writes), &new).await {
                // Applied at the next poll, if Redis is back.
                self.applied = None;
                self.pending = Some(fingerprint);
                if std::mem::replace(&mut self.unwritten, true) {
                    return Vec::new();
                }
                return vec![format!(
                    "warning: limits file {shown} changed, but the change cannot be written: \
                     {error}; trying again"
                )];
            }
            self.unwritten = false;
            messages.push(format!(
                "limits file {shown} changed: {}",
                described.join(", ")
            ));
            self.current = new;
        }
        messages
    }

    fn old(&self, target: &Target) -> Option<usize> {
        match target {
            Target::Total => self.current.total,
            Target::Default => self.current.default,
            Target::Group(group) => self.current.groups.get(group).copied(),
        }
    }

    /// Polls until the task is aborted, sending messages to the output.
    pub async fn run(mut self, pool: Pool, output: output::Sender) {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            for message in self.poll(&pool).await {
                if output.send(Msg::Notice(message)).await == Err(output::Unsent::Closed) {
                    return;
                }
            }
        }
    }
}

/// `value` of `target` as a change reports it: a group without a limit of its own says which
/// default applies under `limits` (`none (default 1)`), as `none` alone reads as unlimited.
fn described_as(limits: &Limits, target: &Target, value: Option<usize>) -> String {
    match (target, value, limits.default) {
        (Target::Group(_), None, Some(default)) => format!("none (default {default})"),
        _ => Value(value).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use taskherd::TaskPool;

    /// Polls once, applying to an in-process pool (which never waits).
    fn poll(watcher: &mut Watcher, pool: &TaskPool<Group>) -> Vec<String> {
        let pool = Pool::Local(pool.clone());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(watcher.poll(&pool)).poll(&mut cx) {
            std::task::Poll::Ready(messages) => messages,
            std::task::Poll::Pending => panic!("applying to an in-process pool waited"),
        }
    }

    fn bump_mtime(path: &std::path::Path, secs: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        let time = std::time::SystemTime::now() + Duration::from_secs(secs);
        file.set_modified(time).unwrap();
    }

    /// A change made while the run starts (after the file was read, before the watcher
    /// starts) is applied: the watcher starts from the fingerprint taken before the read.
    #[test]
    fn a_change_made_while_the_run_starts_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits");
        std::fs::write(&path, "g=1\n").unwrap();
        let fingerprint = Fingerprint::of_path(&path);
        let settings = limits::parse_limits_file(&std::fs::read(&path).unwrap()).unwrap();
        let base = Limits::default();
        let current = base.overlay(&settings);
        let g: Group = Arc::from("g");
        let pool = TaskPool::builder().limit(g.clone(), 1).build();

        std::fs::write(&path, "g=4\n").unwrap();
        bump_mtime(&path, 1);
        let mut watcher = Watcher::new(
            path.clone(),
            fingerprint,
            base,
            current,
            Some([g.clone()].into()),
        );
        assert!(poll(&mut watcher, &pool).is_empty(), "seen, not yet still");
        assert_eq!(
            poll(&mut watcher, &pool),
            [format!("limits file {} changed: g 1 -> 4", path.display())]
        );
        assert_eq!(pool.limit(&g), Some(4));
    }

    #[test]
    fn applies_a_changed_file_once_it_holds_still() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits");
        std::fs::write(&path, "db=1\n").unwrap();
        let base = Limits {
            total: Some(4),
            default: None,
            groups: Default::default(),
        };
        let settings = limits::parse_limits_file(b"db=1\n").unwrap();
        let current = base.overlay(&settings);
        let pool = TaskPool::builder()
            .max_tasks(4)
            .limit(Arc::from("db"), 1)
            .build();
        let named = [Arc::from("db")].into();
        let fingerprint = Fingerprint::of_path(&path);
        let mut watcher = Watcher::new(path.clone(), fingerprint, base, current, Some(named));
        assert!(poll(&mut watcher, &pool).is_empty(), "nothing changed");

        std::fs::write(&path, "db=3\n[total]=none\nweb=2\n").unwrap();
        bump_mtime(&path, 1);
        assert!(
            poll(&mut watcher, &pool).is_empty(),
            "a change is applied once it holds still"
        );
        assert_eq!(pool.limit(&Arc::from("db")), Some(1));
        let messages = poll(&mut watcher, &pool);
        assert_eq!(
            messages,
            [
                format!(
                    "warning: limits file {}: no job names group web",
                    path.display()
                ),
                format!(
                    "limits file {} changed: [total] 4 -> none, db 1 -> 3, web none -> 2",
                    path.display()
                )
            ]
        );
        assert_eq!(pool.limit(&Arc::from("db")), Some(3));
        assert_eq!(pool.max_tasks(), None);
        assert!(poll(&mut watcher, &pool).is_empty());

        // A bad file keeps the limits in force.
        std::fs::write(&path, "db=lots\n").unwrap();
        bump_mtime(&path, 2);
        assert!(poll(&mut watcher, &pool).is_empty());
        let messages = poll(&mut watcher, &pool);
        assert_eq!(messages.len(), 1);
        assert!(
            messages[0].ends_with(
                ":1: limit of db: \"lots\" is not a whole number or \"none\"; keeping the limits in force"
            ),
            "{messages:?}"
        );
        assert_eq!(pool.limit(&Arc::from("db")), Some(3));

        // Settings removed from the file go back to the command line's.
        std::fs::write(&path, "# empty\n").unwrap();
        bump_mtime(&path, 3);
        poll(&mut watcher, &pool);
        let messages = poll(&mut watcher, &pool);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].ends_with("changed: [total] none -> 4, db 3 -> none, web 2 -> none"));
        assert_eq!(pool.limit(&Arc::from("db")), None);
        assert_eq!(pool.max_tasks(), Some(4));

        // A missing file is reported once.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(poll(&mut watcher, &pool).len(), 1);
        assert!(poll(&mut watcher, &pool).is_empty());
    }

    /// Issue 9: a file that raises `[default]` and keeps `g=1` must not let `g`'s waiting jobs
    /// start under the raised default for an instant.
    #[test]
    fn a_new_file_is_applied_as_one_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits");
        std::fs::write(&path, "[default]=1\n").unwrap();
        let base = Limits {
            total: None,
            default: None,
            groups: Default::default(),
        };
        let settings = limits::parse_limits_file(b"[default]=1\n").unwrap();
        let current = base.overlay(&settings);
        let g: Group = Arc::from("g");
        let pool = TaskPool::builder().default_limit(1).build();
        let named = [g.clone()].into();
        let fingerprint = Fingerprint::of_path(&path);
        let mut watcher = Watcher::new(path.clone(), fingerprint, base, current, Some(named));

        let _running = pool.try_acquire([g.clone()]).unwrap();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut waiters: Vec<_> = (0..9)
            .map(|_| Box::pin(pool.acquire([g.clone()])))
            .collect();
        for waiter in &mut waiters {
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
        }
        std::fs::write(&path, "[default]=10\ng=1\n").unwrap();
        bump_mtime(&path, 1);
        poll(&mut watcher, &pool);
        let messages = poll(&mut watcher, &pool);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(pool.effective_limit(&g), Some(1));
        assert_eq!(
            pool.task_count(&g),
            1,
            "no g job started under the raised default"
        );
        assert_eq!(pool.waiting_count(&g), 9);
        for waiter in &mut waiters {
            assert!(waiter.as_mut().poll(&mut cx).is_pending(), "still waiting");
        }
    }
}
