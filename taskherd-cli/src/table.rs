//! Plain-text tables for the plan and the summary.

use unicode_width::UnicodeWidthStr;

/// Renders rows under a header: the first column left-aligned, the others right-aligned, two
/// spaces apart, each line ending in `\n` and without trailing blanks. Cells are measured in
/// terminal columns (a CJK character takes two), so that columns line up.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            let pad = width - cell.width();
            if column == 0 {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.push_str("  ");
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `1 job`, `2 jobs`: a count with its noun, plural when it is not 1.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration for people: `0.42s`, `12.3s`, `4m05s`, `2h03m`.
pub fn duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2}s")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = duration.as_secs();
        if whole < 3600 {
            format!("{}m{:02}s", whole / 60, whole % 60)
        } else {
            format!("{}h{:02}m", whole / 3600, whole / 60 % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cells of wide characters (two columns each) line up with the others.
    #[test]
    fn wide_characters_line_up() {
        let out = render(
            &["group", "jobs"],
            &[
                vec!["データ".to_owned(), "1".to_owned()],
                vec!["web".to_owned(), "12".to_owned()],
            ],
        );
        assert_eq!(out, "group   jobs\nデータ     1\nweb       12\n");
    }

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["db".to_owned(), "12".to_owned(), "1".to_owned()],
            vec!["bücher".to_owned(), "3".to_owned(), "none".to_owned()],
        ];
        assert_eq!(
            render(&["group", "jobs", "limit"], &rows),
            "group   jobs  limit\n\
             db        12      1\n\
             bücher     3   none\n"
        );
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(duration(Duration::from_millis(420)), "0.42s");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(duration(Duration::from_secs(7380)), "2h03m");
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "job"), "1 job");
        assert_eq!(count(0, "job"), "0 jobs");
    }
}
