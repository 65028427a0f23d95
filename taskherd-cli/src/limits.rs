//! Limits: `--max-jobs`, `--default-limit`, `--limit GROUP=N`, and the limits file.
//!
//! # Limits file
//!
//! One setting per line, `NAME=N`, blanks around `=` allowed, blank lines and `#` comments
//! skipped. `NAME` is a group name, `[total]` (the total, like `--max-jobs`) or `[default]` (like
//! `--default-limit`); brackets cannot occur in a group name, so these never clash with a group.
//! `N` is a number, `0` included (the group's jobs wait until the limit is raised), or `none`: no
//! limit for `[total]` and `[default]`, and for a group, no limit of its own (the default limit
//! applies). A setting in the file overrides the command line; a setting removed from the file
//! goes back to the command line's value.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use taskherd::LimitChanges;

use crate::jobfile::{Group, LineError, check_group_name};

/// The name of the total in a limits file.
pub const TOTAL: &str = "[total]";
/// The name of the default limit in a limits file.
pub const DEFAULT: &str = "[default]";

/// A complete set of limits: what the pool should enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// The total limit (`--max-jobs`, `[total]`); `None`: unlimited.
    pub total: Option<usize>,
    /// The default limit of groups without their own (`--default-limit`, `[default]`).
    pub default: Option<usize>,
    /// Explicit limits per group (`--limit`, `GROUP=N`).
    pub groups: BTreeMap<Group, usize>,
}

/// What a setting of the limits file applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `[total]`
    Total,
    /// `[default]`
    Default,
    /// A group.
    Group(Group),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Total => f.write_str(TOTAL),
            Target::Default => f.write_str(DEFAULT),
            Target::Group(group) => f.write_str(group),
        }
    }
}

/// The settings of a limits file, in file order (a later line for the same name wins).
pub type Settings = Vec<(Target, Option<usize>)>;

/// Parses a positive count given on the command line (`-j`, `-d`, the `N` of `--limit`).
pub fn parse_positive(text: &str) -> Result<usize, String> {
    match parse_count(text.trim()) {
        Ok(0) => Err("a limit must be at least 1 (with 0 no job could ever start)".to_owned()),
        Ok(n) => Ok(n),
        Err(Some(too_large)) => Err(too_large),
        Err(None) => Err(format!("{text:?} is not a whole number")),
    }
}

/// Parses a count: `Err(Some(message))` if it is a whole number too large to use,
/// `Err(None)` if it is not a whole number at all.
fn parse_count(text: &str) -> Result<usize, Option<String>> {
    text.parse::<usize>().map_err(|error| {
        (*error.kind() == std::num::IntErrorKind::PosOverflow)
            .then(|| format!("{text:?} is too large (at most {})", usize::MAX))
    })
}

/// Parses `--limit GROUP=N`.
pub fn parse_limit_arg(text: &str) -> Result<(Group, usize), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("expected GROUP=N, found {text:?}"));
    };
    check_group_name(name.trim())?;
    let limit = parse_positive(value)?;
    Ok((Arc::from(name.trim()), limit))
}

/// Parses a limits file; returns every line error found.
pub fn parse_limits_file(text: &[u8]) -> Result<Settings, Vec<LineError>> {
    let mut settings = Vec::new();
    let mut errors = Vec::new();
    let text = text.strip_prefix(crate::jobfile::UTF8_BOM).unwrap_or(text);
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            errors.push(LineError {
                line,
                message: "line is not valid UTF-8".to_owned(),
            });
            continue;
        };
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        match parse_setting(text) {
            Ok(setting) => settings.push(setting),
            Err(message) => errors.push(LineError { line, message }),
        }
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

fn parse_setting(text: &str) -> Result<(Target, Option<usize>), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "expected NAME=N (a group, {TOTAL} or {DEFAULT}), found {text:?}"
        ));
    };
    let (name, value) = (name.trim(), value.trim());
    let target = match name {
        TOTAL => Target::Total,
        DEFAULT => Target::Default,
        _ => {
            check_group_name(name)?;
            Target::Group(Arc::from(name))
        }
    };
    let value = match value {
        "none" => None,
        _ => Some(parse_count(value).map_err(|too_large| match too_large {
            Some(too_large) => format!("limit of {name}: {too_large}"),
            None => format!("limit of {name}: {value:?} is not a whole number or \"none\""),
        })?),
    };
    Ok((target, value))
}

impl Limits {
    /// Sets (`Some`) or removes (`None`) the explicit limit of `group`.
    pub fn set_group(&mut self, group: Group, limit: Option<usize>) {
        match limit {
            Some(limit) => self.groups.insert(group, limit),
            None => self.groups.remove(&group),
        };
    }

    /// The batch that sets these limits on a pool: each group's, and the total and the default
    /// only if set (so that written to a fleet's pool, a run changes only what it was given).
    pub fn batch(&self) -> LimitChanges<Group> {
        let mut batch = LimitChanges::new();
        if let Some(total) = self.total {
            batch = batch.max_tasks(total);
        }
        if let Some(default) = self.default {
            batch = batch.default_limit(default);
        }
        for (group, &limit) in &self.groups {
            batch = batch.limit(group.clone(), limit);
        }
        batch
    }

    /// [`batch`](Self::batch), and "no limit" for each setting of `settings` that leaves its
    /// target without one (a limits file's explicit `none`, which a run writes to a fleet's
    /// pool at the start as it would write the change during the run).
    pub fn batch_clearing(&self, settings: &Settings) -> LimitChanges<Group> {
        batch_of(self.targets_clearing(settings))
    }

    /// Every limit set here, and "no limit" for each setting of `settings` that leaves its
    /// target without one: what [`batch_clearing`](Self::batch_clearing) writes, as targets.
    pub fn targets_clearing(&self, settings: &Settings) -> Settings {
        let mut targets: Settings = Vec::new();
        targets.extend(self.total.map(|total| (Target::Total, Some(total))));
        targets.extend(self.default.map(|default| (Target::Default, Some(default))));
        for (group, &limit) in &self.groups {
            targets.push((Target::Group(group.clone()), Some(limit)));
        }
        targets.extend(self.clearing(settings));
        targets
    }

    /// The settings of `settings` that leave their target without a limit here, as "no limit".
    fn clearing<'a>(
        &'a self,
        settings: &'a Settings,
    ) -> impl Iterator<Item = (Target, Option<usize>)> + 'a {
        settings.iter().filter_map(|(target, _)| {
            let unset = match target {
                Target::Total => self.total.is_none(),
                Target::Default => self.default.is_none(),
                Target::Group(group) => !self.groups.contains_key(group),
            };
            unset.then(|| (target.clone(), None))
        })
    }

    /// These limits on top of `under`: each one set here, and those of `under` this leaves
    /// unset.
    #[must_use]
    pub fn over(&self, under: &Limits) -> Limits {
        let mut limits = under.clone();
        limits.total = self.total.or(under.total);
        limits.default = self.default.or(under.default);
        limits.groups.extend(
            self.groups
                .iter()
                .map(|(group, &limit)| (group.clone(), limit)),
        );
        limits
    }

    /// These limits with `settings` applied on top.
    #[must_use]
    pub fn overlay(&self, settings: &Settings) -> Limits {
        let mut limits = self.clone();
        for (target, value) in settings {
            match target {
                Target::Total => limits.total = *value,
                Target::Default => limits.default = *value,
                Target::Group(group) => match value {
                    Some(n) => {
                        limits.groups.insert(group.clone(), *n);
                    }
                    None => {
                        limits.groups.remove(group);
                    }
                },
            }
        }
        limits
    }

    /// The changes that turn `self` into `new`, each as the target and its new value.
    #[must_use]
    pub fn changes_to(&self, new: &Limits) -> Vec<(Target, Option<usize>)> {
        let mut changes = Vec::new();
        if self.total != new.total {
            changes.push((Target::Total, new.total));
        }
        if self.default != new.default {
            changes.push((Target::Default, new.default));
        }
        for (group, &limit) in &new.groups {
            if self.groups.get(group) != Some(&limit) {
                changes.push((Target::Group(group.clone()), Some(limit)));
            }
        }
        for group in self.groups.keys() {
            if !new.groups.contains_key(group) {
                changes.push((Target::Group(group.clone()), None));
            }
        }
        changes
    }
}

/// `targets` with their values as one batch of limit changes.
pub fn batch_of(targets: impl IntoIterator<Item = (Target, Option<usize>)>) -> LimitChanges<Group> {
    targets
        .into_iter()
        .fold(LimitChanges::new(), |batch, (target, value)| match target {
            Target::Total => batch.max_tasks(value),
            Target::Default => batch.default_limit(value),
            Target::Group(group) => batch.limit(group, value),
        })
}

/// Shows a limit value as the limits file writes it.
pub struct Value(pub Option<usize>);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> Target {
        Target::Group(Arc::from(name))
    }

    #[test]
    fn limit_arg() {
        assert_eq!(parse_limit_arg("db=2").unwrap(), (Arc::from("db"), 2));
        assert_eq!(parse_limit_arg(" db = 2 ").unwrap(), (Arc::from("db"), 2));
        assert_eq!(
            parse_limit_arg("db").unwrap_err(),
            "expected GROUP=N, found \"db\""
        );
        assert_eq!(parse_limit_arg("=2").unwrap_err(), "empty group name");
        assert_eq!(
            parse_limit_arg("db=x").unwrap_err(),
            "\"x\" is not a whole number"
        );
        assert!(parse_limit_arg("db=0").unwrap_err().contains("at least 1"));
        assert_eq!(
            parse_limit_arg("db=99999999999999999999999").unwrap_err(),
            format!(
                "\"99999999999999999999999\" is too large (at most {})",
                usize::MAX
            )
        );
        assert!(parse_limit_arg("db=-1").is_err());
        assert!(parse_limit_arg("a b=1").unwrap_err().contains("' '"));
    }

    #[test]
    fn limits_file() {
        let text = b"# comment\n\ndb = 2\n[total]=8\n[default]=none\nweb=0\r\nweb = none\n";
        assert_eq!(
            parse_limits_file(text).unwrap(),
            [
                (group("db"), Some(2)),
                (Target::Total, Some(8)),
                (Target::Default, None),
                (group("web"), Some(0)),
                (group("web"), None),
            ]
        );
        // A UTF-8 byte-order mark at the start is skipped.
        assert_eq!(
            parse_limits_file(b"\xEF\xBB\xBFdb=2\n").unwrap(),
            [(group("db"), Some(2))]
        );
    }

    #[test]
    fn limits_file_errors() {
        let errors: Vec<String> = parse_limits_file(b"db\n=1\ndb=many\n[totl]=3\nok=1\n")
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("1: expected NAME=N"));
        assert_eq!(errors[1], "2: empty group name");
        assert_eq!(
            errors[2],
            "3: limit of db: \"many\" is not a whole number or \"none\""
        );
        assert!(errors[3].starts_with("4: group name \"[totl]\" contains '['"));
    }

    #[test]
    fn overlay_and_changes() {
        let base = Limits {
            total: Some(4),
            default: None,
            groups: [(Arc::from("db"), 1), (Arc::from("web"), 2)].into(),
        };
        let file = vec![
            (Target::Total, Some(8)),
            (group("db"), None),
            (group("new"), Some(0)),
            (Target::Default, Some(3)),
        ];
        let new = base.overlay(&file);
        assert_eq!(new.total, Some(8));
        assert_eq!(new.default, Some(3));
        assert_eq!(new.groups.get("db"), None);
        assert_eq!(new.groups.get("web"), Some(&2));
        assert_eq!(new.groups.get("new"), Some(&0));
        assert_eq!(
            base.changes_to(&new),
            [
                (Target::Total, Some(8)),
                (Target::Default, Some(3)),
                (group("new"), Some(0)),
                (group("db"), None),
            ]
        );
        assert_eq!(new.changes_to(&new), []);
        // Removing the file's settings goes back to the base.
        assert_eq!(new.changes_to(&base.overlay(&Vec::new())).len(), 4);
    }
}
