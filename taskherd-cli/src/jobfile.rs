//! The job file: one job per line, `GROUP GROUP … :: COMMAND`.
//!
//! # Format
//!
//! - A line is split at its first `::` that stands alone as a word (whitespace or the line's start
//!   before it, whitespace or the line's end after it). The words before it are the job's groups,
//!   the rest of the line (leading whitespace removed) is the command, run with `sh -c`.
//!   `echo a::b` has no such `::`: it is a command without groups. A command that contains a
//!   lone `::` and has no groups is written with an empty group list: `:: echo a :: b`.
//! - A line without a lone `::` is a command without groups.
//! - Among the words before the `::`, `timeout=DURATION` (or `timeout=none`) and `retries=N`
//!   are settings of the job, overriding `--timeout` and `--retries` for it; they are not
//!   groups (a group name cannot contain `=`). Any other `NAME=VALUE` word is an error.
//! - Blank lines, and lines whose first non-blank character is `#`, are skipped.
//! - Line endings may be `\n` or `\r\n`; a UTF-8 byte-order mark at the start is skipped.
//! - A command may hold any bytes but NUL: it is passed to `sh -c` as it is, so commands in a
//!   legacy encoding work. Group names must be UTF-8.
//!
//! Every line is checked before anything runs; [`parse`] returns every problem it finds, each
//! with its line number.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::duration::parse_duration;

/// A group name, shared by every job that names it.
pub type Group = Arc<str>;

/// One job of the job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// 1-based line number in the job file.
    pub line: usize,
    /// The job's groups in the order written, each named once.
    pub groups: Vec<Group>,
    /// The shell command, run with `sh -c`: any bytes but NUL (not necessarily UTF-8).
    pub command: Vec<u8>,
    /// The line has a `::` standing alone (possibly with no group before it).
    pub separated: bool,
    /// `timeout=` on the line: `Some(None)` for `timeout=none`; `None` if the line has no
    /// `timeout=` (then `--timeout` applies).
    pub timeout: Option<Option<Duration>>,
    /// `retries=N` on the line; `None` if the line has none (then `--retries` applies).
    pub retries: Option<u32>,
    /// With `--resume` or `--resume-failed`: the failure (`failed`, `killed`, `timed_out`,
    /// `error`) of the earlier record this job was matched to, which is why it runs again. Its report record
    /// keeps it as `previous_status`, so that a job this run does not start (a halt, Ctrl-C, a
    /// line of a pipe never read) is still a failure to a later `--resume-failed`.
    pub resumed: Option<&'static str>,
}

impl Job {
    /// A warning if this job looks like a typo for a job with groups: it names no group and
    /// among its command's leading words that could be group names, one ends in `:`
    /// (`web1:: cmd`, `web1 db: cmd`: the groups glued to a `::` that does not stand alone, or
    /// written with a single `:`), or the next one starts with `::` (`web1 ::cmd`: the `::`
    /// glued to the command).
    #[must_use]
    ///
    /// Only the leading words that could be group names are looked at (`echo a: b` warns too;
    /// write `:: echo a: b` to say there is no group on purpose, which never warns).
    pub fn typo_warning(&self) -> Option<String> {
        if self.separated {
            return None;
        }
        let command = String::from_utf8_lossy(&self.command);
        let mut suspect = None;
        for word in command.split_ascii_whitespace() {
            if word.len() > 2 && word.starts_with("::") {
                suspect = Some((word, "a \"::\" glued to the command"));
                break;
            }
            if check_group_name(word.trim_end_matches(':')).is_err() {
                break;
            }
            if word.ends_with(':') {
                suspect = Some((word, "a group list's end"));
                break;
            }
        }
        let (suspect, looks_like) = suspect?;
        Some(format!(
            "{}: {suspect:?} looks like {looks_like}, but the line has no \" :: \" \
             standing alone, so it runs as a command without groups; write \"GROUP ... :: \
             COMMAND\" (or \":: COMMAND\" to say there is no group)",
            self.line
        ))
    }
}

/// A problem with one line of the job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, as a sentence fragment without the location.
    pub message: String,
}

impl LineError {
    /// A job on a last line without its newline, read from a pipe: most likely cut off (its
    /// writer died), so the piece may be another command than the one meant; it does not run.
    pub fn cut_off(line: usize) -> LineError {
        LineError {
            line,
            message: "the input ended in the middle of this line (no newline at its end), so it \
                      does not run; end every line with a newline"
                .to_owned(),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

/// The characters a group name may contain besides letters and digits.
pub const GROUP_PUNCTUATION: &str = "_-.:/@+%";

/// Checks a group name; returns what is wrong with it, if anything.
///
/// A group name is one or more letters, digits or characters of [`GROUP_PUNCTUATION`], and does
/// not contain `::`. Everything else (whitespace, `=`, `#`, quotes, brackets, `*`, `,`, control
/// characters) could not be written in a job line, a `--limit` or a limits file without
/// ambiguity, so it is refused everywhere.
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty group name".to_owned());
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || GROUP_PUNCTUATION.contains(c)))
    {
        return Err(format!(
            "group name {name:?} contains {bad:?}; a group name may contain only letters, \
             digits and the characters {GROUP_PUNCTUATION}"
        ));
    }
    if name.contains("::") {
        return Err(format!(
            "group name {name:?} contains \"::\", the separator between groups and command \
             (put spaces around it)"
        ));
    }
    Ok(())
}

/// Parses a whole job file. Returns the jobs in file order, or every line error found.
#[cfg(test)]
pub fn parse(text: &[u8]) -> Result<Vec<Job>, Vec<LineError>> {
    let mut reader = Reader::new(text);
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    while let Some(next) = reader.next_job() {
        match next {
            Ok(Ok(job)) => jobs.push(job),
            Ok(Err(mut line_errors)) => errors.append(&mut line_errors),
            Err(_) => unreachable!("reading from a byte slice cannot fail"),
        }
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(errors)
    }
}

/// The UTF-8 byte-order mark, skipped at the start of a job file or limits file.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The longest line a job file may have. (A longer command could not be passed to the shell
/// anyway: Linux limits one argument to 128 KiB, and every system all of them to `ARG_MAX`.)
pub const MAX_LINE: usize = 4 << 20;

/// Reads a job file line by line, each job parsed and checked as it comes: for a job file
/// that is read as it is written (a pipe), and so that a large file never sits in memory
/// whole.
#[derive(Debug)]
pub struct Reader<R> {
    input: R,
    /// Lines read so far.
    line: usize,
    buffer: Vec<u8>,
    /// Each group name once, shared by every job that names it.
    interned: HashMap<Box<str>, Group>,
}

impl<R: std::io::BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Reader {
            input,
            line: 0,
            buffer: Vec::new(),
            interned: HashMap::new(),
        }
    }

    /// The next job, or the errors of the next bad line; `None` at the end of the input.
    /// Blank and comment lines are skipped.
    pub fn next_job(&mut self) -> Option<std::io::Result<Result<Job, Vec<LineError>>>> {
        loop {
            self.line += 1;
            let line = self.line;
            match self.read_line() {
                Err(error) => return Some(Err(error)),
                Ok(None) => return None,
                Ok(Some(false)) => {
                    return Some(Ok(Err(vec![LineError {
                        line,
                        message: format!(
                            "line longer than {} MiB (put a long command in a script)",
                            MAX_LINE >> 20
                        ),
                    }])));
                }
                Ok(Some(true)) => {}
            }
            let raw = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            // A UTF-8 byte-order mark (some Windows editors write one) is not part of the job.
            let raw = match line {
                1 => raw.strip_prefix(UTF8_BOM).unwrap_or(raw),
                _ => raw,
            };
            match parse_line(raw) {
                Ok(None) => continue,
                Ok(Some(parsed)) => return Some(Ok(build(line, parsed, &mut self.interned))),
                Err(message) => return Some(Ok(Err(vec![LineError { line, message }]))),
            }
        }
    }

    /// Whether the line of the job last returned ended with a newline (the last line of the
    /// input may not).
    pub fn line_complete(&self) -> bool {
        self.buffer.ends_with(b"\n")
    }

    /// Reads the next line into the buffer, with its `\n`. `Ok(None)` at the end of the input,
    /// `Ok(Some(false))` for a line over [`MAX_LINE`] (read to its end, kept in part only).
    fn read_line(&mut self) -> std::io::Result<Option<bool>> {
        self.buffer.clear();
        // Read to the end of the line; kept while it and its ending fit.
        let mut kept = true;
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                // The end of the input: a last line without '\n' is still a line.
                return Ok((!self.buffer.is_empty() || !kept).then(|| kept && self.fits()));
            }
            let (piece, done) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..=at], true),
                None => (available, false),
            };
            let used = piece.len();
            // The longest line, and its "\r\n".
            if kept && self.buffer.len() + used <= MAX_LINE + 2 {
                self.buffer.extend_from_slice(piece);
            } else {
                kept = false;
            }
            self.input.consume(used);
            if done {
                return Ok(Some(kept && self.fits()));
            }
        }
    }

    /// Whether the line in the buffer, without its ending ('\n', '\r' as `next_job` strips
    /// them), is at most [`MAX_LINE`] long.
    fn fits(&self) -> bool {
        let text = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        text.len() <= MAX_LINE
    }
}

/// Builds the job of one parsed line, or says what is wrong with its groups and settings.
fn build(
    line: usize,
    (groups, command, separated): Parsed<'_>,
    interned: &mut HashMap<Box<str>, Group>,
) -> Result<Job, Vec<LineError>> {
    let mut job_groups: Vec<Group> = Vec::with_capacity(groups.len());
    // The names taken, for a line of many groups (a line may hold hundreds of thousands: the
    // list alone made checking it quadratic).
    let mut taken: Option<std::collections::HashSet<&str>> =
        (groups.len() > 16).then(std::collections::HashSet::new);
    let mut errors = Vec::new();
    let mut settings = Settings::default();
    for name in groups {
        if let Some((key, value)) = name.split_once('=') {
            if let Err(message) = settings.set(key, value) {
                errors.push(LineError { line, message });
            }
            continue;
        }
        if let Err(message) = check_group_name(name) {
            errors.push(LineError { line, message });
            continue;
        }
        // The pool counts a group named twice once; keep the job's list the same.
        let new = match &mut taken {
            Some(taken) => taken.insert(name),
            None => !job_groups.iter().any(|group| **group == *name),
        };
        if new {
            let group = interned
                .entry(name.into())
                .or_insert_with(|| Arc::from(name))
                .clone();
            job_groups.push(group);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    job_groups.shrink_to_fit();
    Ok(Job {
        line,
        groups: job_groups,
        command: command.to_vec(),
        separated,
        timeout: settings.timeout,
        retries: settings.retries,
        resumed: None,
    })
}

/// The `NAME=VALUE` settings of one job line.
#[derive(Debug, Default)]
struct Settings {
    timeout: Option<Option<Duration>>,
    retries: Option<u32>,
}

/// The most retries a job may have.
pub const MAX_RETRIES: u32 = 1000;

impl Settings {
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let twice = || format!("{key}= is given twice");
        match key {
            "timeout" => {
                let timeout = match value {
                    "none" => None,
                    _ => Some(
                        parse_duration(value).map_err(|why| format!("timeout={value}: {why}"))?,
                    ),
                };
                self.timeout
                    .replace(timeout)
                    .map_or(Ok(()), |_| Err(twice()))
            }
            "retries" => {
                let retries =
                    parse_retries(value).map_err(|why| format!("retries={value}: {why}"))?;
                self.retries
                    .replace(retries)
                    .map_or(Ok(()), |_| Err(twice()))
            }
            _ => Err(format!(
                "unknown setting {key:?} in {key}={value}; a job line knows timeout=DURATION \
                 and retries=N (a group name cannot contain '=')"
            )),
        }
    }
}

/// Parses a number of retries: 0 to [`MAX_RETRIES`].
pub fn parse_retries(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n <= MAX_RETRIES => Ok(n),
        Ok(_) => Err(format!("{text} is too large (at most {MAX_RETRIES})")),
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{text} is too large (at most {MAX_RETRIES})"))
        }
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// One job line split up: its group names, its command, and whether it has a lone `::`.
type Parsed<'a> = (Vec<&'a str>, &'a [u8], bool);

/// Splits one line into group names and command; `None` for a blank or comment line.
fn parse_line(text: &[u8]) -> Result<Option<Parsed<'_>>, String> {
    let trimmed = text.trim_ascii();
    if trimmed.is_empty() || trimmed.starts_with(b"#") {
        return Ok(None);
    }
    let (groups, command, separated) = match find_separator(text) {
        Some(at) => {
            let groups = std::str::from_utf8(&text[..at])
                .map_err(|_| "group names are not valid UTF-8".to_owned())?;
            (
                // ASCII whitespace only, as around the `::`: a name holding other whitespace
                // (a no-break space) is refused by the name check, not split in two.
                groups.split_ascii_whitespace().collect(),
                text[at + 2..].trim_ascii_start(),
                true,
            )
        }
        None => (Vec::new(), text.trim_ascii_start(), false),
    };
    if command.trim_ascii().is_empty() {
        return Err("empty command after \"::\"".to_owned());
    }
    if command.contains(&0) {
        return Err("command contains a NUL character".to_owned());
    }
    Ok(Some((groups, command, separated)))
}

/// The byte offset of the first `::` that stands alone as a word (ASCII whitespace or the
/// line's ends around it).
fn find_separator(text: &[u8]) -> Option<usize> {
    text.windows(2)
        .enumerate()
        .filter(|(_, pair)| *pair == b"::")
        .map(|(at, _)| at)
        .find(|&at| {
            let before = at.checked_sub(1).map(|i| text[i]);
            let after = text.get(at + 2).copied();
            before.is_none_or(|b| b.is_ascii_whitespace())
                && after.is_none_or(|b| b.is_ascii_whitespace())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(text: &str) -> Vec<(usize, Vec<String>, String)> {
        parse(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|job| {
                let groups = job.groups.iter().map(|g| g.to_string()).collect();
                (job.line, groups, String::from_utf8(job.command).unwrap())
            })
            .collect()
    }

    fn errors(text: &[u8]) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn owned(groups: &[&str]) -> Vec<String> {
        groups.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn groups_and_command() {
        assert_eq!(
            jobs("web1 db :: pg_dump -h web1 > out\n"),
            [(
                1,
                owned(&["web1", "db"]),
                "pg_dump -h web1 > out".to_owned()
            )]
        );
    }

    #[test]
    fn line_without_separator_has_no_groups() {
        assert_eq!(
            jobs("echo hello world"),
            [(1, owned(&[]), "echo hello world".to_owned())]
        );
    }

    #[test]
    fn separator_must_stand_alone() {
        assert_eq!(
            jobs("echo a::b\nhost:22 :: ssh x"),
            [
                (1, owned(&[]), "echo a::b".to_owned()),
                (2, owned(&["host:22"]), "ssh x".to_owned()),
            ]
        );
    }

    #[test]
    fn first_separator_wins() {
        assert_eq!(
            jobs("g :: echo :: x\n:: echo :: y\n\t::\techo tab"),
            [
                (1, owned(&["g"]), "echo :: x".to_owned()),
                (2, owned(&[]), "echo :: y".to_owned()),
                (3, owned(&[]), "echo tab".to_owned()),
            ]
        );
    }

    /// A group named twice counts once, in the order first named, on a short line and on a
    /// line of many groups (checked through a set there: the list alone was quadratic).
    #[test]
    fn a_group_named_twice_counts_once() {
        assert_eq!(
            jobs("b a b a :: x\n"),
            [(1, owned(&["b", "a"]), "x".to_owned())]
        );
        let names: Vec<String> = (0..40).map(|i| format!("g{}", i % 25)).collect();
        let line = format!("{} :: x\n", names.join(" "));
        let expected: Vec<String> = (0..25).map(|i| format!("g{i}")).collect();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_eq!(jobs(&line), [(1, owned(&expected), "x".to_owned())]);
    }

    /// A UTF-8 byte-order mark at the start (some Windows editors write one) is skipped: a
    /// first line that is a comment stays one (it ran as a command), and a first job's groups
    /// are its own. Elsewhere it is part of the line.
    #[test]
    fn a_byte_order_mark_at_the_start_is_skipped() {
        let text = "\u{feff}# nightly jobs\r\na :: echo one\r\n";
        assert_eq!(jobs(text), [(2, owned(&["a"]), "echo one".to_owned())]);
        let text = "\u{feff}a :: echo one\n\u{feff}x\n";
        assert_eq!(
            jobs(text),
            [
                (1, owned(&["a"]), "echo one".to_owned()),
                (2, owned(&[]), "\u{feff}x".to_owned()),
            ]
        );
    }

    #[test]
    fn blank_and_comment_lines_are_skipped_and_lines_keep_their_numbers() {
        let text = "# header\n\n   \n  # indented comment\na :: true\r\n\nb :: false\n";
        assert_eq!(
            jobs(text),
            [
                (5, owned(&["a"]), "true".to_owned()),
                (7, owned(&["b"]), "false".to_owned()),
            ]
        );
    }

    #[test]
    fn duplicate_groups_count_once_and_names_are_shared() {
        let parsed = parse(b"a b a :: x\nb :: y").unwrap();
        assert_eq!(parsed[0].groups.len(), 2);
        assert!(Arc::ptr_eq(&parsed[0].groups[1], &parsed[1].groups[0]));
    }

    #[test]
    fn unicode_and_punctuation_in_group_names() {
        assert_eq!(
            jobs("bücher.example.org user@host 10.0.0.1:5432 a/b+c%d_e-f :: x"),
            [(
                1,
                owned(&[
                    "bücher.example.org",
                    "user@host",
                    "10.0.0.1:5432",
                    "a/b+c%d_e-f"
                ]),
                "x".to_owned()
            )]
        );
    }

    #[test]
    fn empty_command() {
        assert_eq!(
            errors(b"ok :: true\nweb1 ::\nweb2 ::   \n::"),
            [
                "2: empty command after \"::\"",
                "3: empty command after \"::\"",
                "4: empty command after \"::\"",
            ]
        );
    }

    #[test]
    fn settings_on_a_line() {
        let parsed = parse(b"db timeout=10m retries=2 :: x\ntimeout=none :: y\nz\n").unwrap();
        assert_eq!(parsed[0].groups.len(), 1, "settings are not groups");
        assert_eq!(parsed[0].timeout, Some(Some(Duration::from_secs(600))));
        assert_eq!(parsed[0].retries, Some(2));
        assert_eq!(parsed[1].timeout, Some(None));
        assert_eq!(parsed[1].retries, None);
        assert_eq!(parsed[2].timeout, None);
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let found = errors(
            b"timeout=0 :: a\nretries=-1 :: b\nretries=1001 :: c\nfoo=1 :: d\ntimeout=1 timeout=2 :: e\n",
        );
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].starts_with("1: timeout=0: "), "{found:?}");
        assert!(found[1].starts_with("2: retries=-1: \"-1\" is not a whole number"));
        assert!(found[2].starts_with("3: retries=1001: 1001 is too large (at most 1000)"));
        assert!(found[3].starts_with("4: unknown setting \"foo\""));
        assert_eq!(found[4], "5: timeout= is given twice");
    }

    #[test]
    fn bad_group_names_are_all_reported() {
        let found = errors(b"a*b :: x\nok :: y\nc,d e* :: z\n\"\" :: w");
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].starts_with("1: group name \"a*b\" contains '*'"));
        assert!(found[1].starts_with("3: group name \"c,d\" contains ','"));
        assert!(found[2].starts_with("3: group name \"e*\" contains '*'"));
        assert!(found[3].starts_with("4: group name \"\\\"\\\"\" contains '\"'"));
    }

    #[test]
    fn group_name_with_double_colon() {
        let found = errors(b"a::b :: x");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("1: group name \"a::b\" contains \"::\""));
    }

    #[test]
    fn invalid_utf8_in_group_names_and_nul() {
        assert_eq!(
            errors(b"g\xff :: echo\ng :: echo \0"),
            [
                "1: group names are not valid UTF-8",
                "2: command contains a NUL character"
            ]
        );
    }

    #[test]
    fn commands_may_hold_any_bytes_but_nul() {
        let jobs = parse(b"g :: echo \xff\xfe caf\xe9\n\xe9t\xe9 :: x\n").unwrap_err();
        assert_eq!(
            jobs.len(),
            1,
            "only the line with a non-UTF-8 group name is refused"
        );
        let ok = parse(b"g :: echo \xff\xfe caf\xe9\necho \xe9t\xe9\n").unwrap();
        assert_eq!(ok[0].command, b"echo \xff\xfe caf\xe9");
        assert_eq!(ok[1].command, b"echo \xe9t\xe9");
        assert!(ok[1].groups.is_empty());
    }

    #[test]
    fn non_ascii_whitespace_in_a_group_name_is_an_error_not_a_split() {
        let errors = parse("web1\u{a0}db :: echo x\n".as_bytes()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 1);
        assert!(
            errors[0].message.contains("contains '\\u{a0}'"),
            "{:?}",
            errors[0].message
        );
        let jobs = parse(b"web1\tdb :: echo x\n").unwrap();
        assert_eq!(jobs[0].groups, [Group::from("web1"), Group::from("db")]);
    }

    #[test]
    fn check_group_name_cases() {
        assert!(check_group_name("db-1").is_ok());
        assert_eq!(check_group_name("").unwrap_err(), "empty group name");
        assert!(check_group_name("[total]").is_err());
        assert!(check_group_name("a b").is_err());
        assert!(check_group_name("a#b").is_err());
    }

    #[test]
    fn a_line_of_exactly_4_mib_is_not_too_long_whatever_its_ending() {
        for ending in [&b"\n"[..], b"\r\n", b""] {
            let mut text = b"#".to_vec();
            text.extend(std::iter::repeat_n(b'y', MAX_LINE - 1));
            text.extend(ending);
            let jobs = parse(&text).unwrap_or_else(|errors| panic!("{ending:?}: {errors:?}"));
            assert!(jobs.is_empty());
            text.extend(b"a :: x\n");
            if !ending.is_empty() {
                assert_eq!(parse(&text).unwrap().len(), 1);
            }
        }
    }

    #[test]
    fn a_line_too_long_is_an_error_and_the_next_line_still_counts() {
        let mut text = b"a :: x\n".to_vec();
        text.extend(std::iter::repeat_n(b'y', MAX_LINE + 1));
        text.extend(b"\nb :: z");
        let found = errors(&text);
        assert_eq!(
            found,
            ["2: line longer than 4 MiB (put a long command in a script)"]
        );
        let mut reader = Reader::new(&text[..]);
        let lines: Vec<usize> = std::iter::from_fn(|| reader.next_job())
            .map(|next| match next.unwrap() {
                Ok(job) => job.line,
                Err(errors) => errors[0].line,
            })
            .collect();
        assert_eq!(lines, [1, 2, 3]);
    }

    #[test]
    fn reading_in_small_pieces_gives_the_same_jobs() {
        let text = b"# c\nweb1 db :: a\r\n\nb\nlast :: no newline";
        let whole = parse(text).unwrap();
        let small = std::io::BufReader::with_capacity(3, &text[..]);
        let mut reader = Reader::new(small);
        let pieces: Vec<Job> = std::iter::from_fn(|| reader.next_job())
            .map(|next| next.unwrap().unwrap())
            .collect();
        assert_eq!(pieces, whole);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[2].command, b"no newline");
    }

    #[test]
    fn empty_file() {
        assert_eq!(parse(b"").unwrap(), []);
        assert_eq!(parse(b"\n# only a comment\n").unwrap(), []);
    }

    #[test]
    fn typos_for_the_separator_are_warned_about() {
        let warned: Vec<usize> = parse(
            b"web1:: a\nweb1 db: b\n10.0.0.7:5432:: c\n:: d: e\necho a::b\nweb1 :: f:\nls -l\n\
              web1 ::echo z\nweb1 db ::echo w\n::echo v\necho ::x\n",
        )
        .unwrap()
        .iter()
        .filter_map(|job| job.typo_warning().map(|_| job.line))
        .collect();
        // `echo ::x` too: its first word could be a group's name.
        assert_eq!(warned, [1, 2, 3, 8, 9, 10, 11]);
    }
}
