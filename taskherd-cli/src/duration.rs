//! Durations as people write them on a command line: `90`, `1.5s`, `500ms`, `10m`, `2h`.

use std::time::Duration;

/// The longest duration taken: a year (longer ones are typos, and adding them to a clock could
/// overflow).
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration: a number of seconds, or a number followed by `ms`, `s`, `m` or `h`, at
/// most [`MAX`]. Zero, negative and non-finite values are refused; the message says what was
/// expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(text)?;
    if duration.is_zero() {
        return Err(format!(
            "{text:?} is no time at all; give a duration above 0"
        ));
    }
    Ok(duration)
}

/// Like [`parse_duration`], but `0` is allowed.
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(expected(text)),
    };
    let value: f64 = number.parse().map_err(|_| expected(text))?;
    let too_large = || {
        let days = MAX.as_secs() / 86_400;
        format!("{text:?} is too large (at most {days} days)")
    };
    let duration = Duration::try_from_secs_f64(value * scale).map_err(|_| too_large())?;
    if duration > MAX {
        return Err(too_large());
    }
    Ok(duration)
}

fn expected(text: &str) -> String {
    format!(
        "{text:?} is not a duration; write a number of seconds, or a number followed by ms, s, \
         m or h (as in 90, 1.5s, 500ms, 10m)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(".25"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn refusals() {
        for bad in ["", "s", "-1", "1x", "1 s", "1.2.3", "inf", "NaN", "1e3"] {
            assert!(
                parse_duration(bad)
                    .unwrap_err()
                    .contains("is not a duration"),
                "{bad:?}"
            );
        }
        assert!(parse_duration("0").unwrap_err().contains("above 0"));
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        for huge in ["99999999999999999999999h", "36600000", "8761h"] {
            assert!(
                parse_duration(huge)
                    .unwrap_err()
                    .contains("too large (at most 365 days)"),
                "{huge:?}"
            );
        }
        assert_eq!(parse_duration("8760h"), Ok(MAX));
        assert!(parse_duration("0ms").unwrap_err().contains("above 0"));
    }
}
