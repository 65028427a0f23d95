//! How a group key becomes a Redis key segment.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

/// A group key that can name a group of a [`RedisPool`](crate::RedisPool).
///
/// Every process of the fleet must turn the same key into the same *segment*: the text that
/// names the group inside Redis (in the key of its queue, `taskherd:{<pool>}:q:<segment>`, and
/// in hash fields such as `g:<segment>`). The encoding is a small escaping codec, so that every
/// key is representable and two different keys never share a segment:
///
/// - `%` becomes `%25`;
/// - control characters (`U+0000`–`U+001F`, `U+007F`, including `\n`, which separates the
///   groups of a holder in Redis) and the braces `{` `}` (which delimit a Redis Cluster hash tag)
///   become `%XX`, their byte in upper-case hexadecimal;
/// - every other character stands for itself;
/// - the empty string becomes a lone `%` (which no other text encodes to: every other `%` is
///   followed by two hexadecimal digits), so that no segment is empty.
///
/// Decoding undoes exactly this, so the encoding is injective: no key is invalid, and there is
/// no error case. Integers are written in decimal (they never need escaping).
///
/// Implemented for `String`, `&'static str`, `Arc<str>`, `Box<str>` and the integer types.
/// Implement it for your own key types by writing a segment that is unique to each key (for
/// example by encoding a string form of the key with [`encode_segment`]).
///
/// # Errors
///
/// A segment must not be empty nor contain a control character (`U+0000`–`U+001F`,
/// `U+007F`): Redis stores a holder's groups as one string separated by `\n`. Every segment
/// [`encode_segment`] makes qualifies. A call given a key whose segment does not is refused
/// with an [`UnavailableError`](crate::UnavailableError) whose
/// [`is_invalid_key`](crate::UnavailableError::is_invalid_key) is `true` (an admission hands
/// the work back): nothing is admitted and nothing is changed in Redis.
///
/// # Examples
///
/// ```
/// use taskherd_redis::RedisKey;
///
/// assert_eq!("db-7".segment(), "db-7");
/// assert_eq!("50%\n".segment(), "50%25%0A");
/// assert_eq!("".segment(), "%");
/// assert_eq!(42u16.segment(), "42");
/// ```
pub trait RedisKey {
    /// This key's segment (see the trait's docs for the encoding).
    fn segment(&self) -> Cow<'_, str>;
}

/// Encodes `text` as a segment with the codec of [`RedisKey`]: `%`, control characters and
/// braces are escaped as `%XX`, and the empty string becomes `%`. Borrows when nothing needs
/// escaping.
///
/// # Examples
///
/// ```
/// use taskherd_redis::encode_segment;
///
/// assert_eq!(encode_segment("tenant:{a}"), "tenant:%7Ba%7D");
/// assert_eq!(encode_segment(""), "%");
/// ```
#[must_use]
pub fn encode_segment(text: &str) -> Cow<'_, str> {
    if text.is_empty() {
        // Never empty: the scripts keep a holder's segments joined by "\n". A lone `%` is no
        // other text's segment (every escape is `%` and two hexadecimal digits).
        return Cow::Borrowed("%");
    }
    let escaped = |c: char| c == '%' || c == '{' || c == '}' || c.is_ascii_control();
    if !text.contains(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            // ASCII only: one byte, two hex digits.
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

impl RedisKey for String {
    fn segment(&self) -> Cow<'_, str> {
        encode_segment(self)
    }
}

impl RedisKey for &'static str {
    fn segment(&self) -> Cow<'_, str> {
        encode_segment(self)
    }
}

impl RedisKey for Arc<str> {
    fn segment(&self) -> Cow<'_, str> {
        encode_segment(self)
    }
}

impl RedisKey for Box<str> {
    fn segment(&self) -> Cow<'_, str> {
        encode_segment(self)
    }
}

/// A key's segment, checked: never empty, no control character (see [`RedisKey`]'s
/// `# Errors`). Only a custom [`RedisKey`] implementation can fail this.
pub(crate) fn checked_segment<K: RedisKey + ?Sized>(key: &K) -> Result<String, InvalidKey> {
    let segment = key.segment().into_owned();
    if segment.is_empty() {
        return Err(InvalidKey("RedisKey::segment returned an empty segment"));
    }
    if segment.contains(|c: char| c.is_ascii_control()) {
        return Err(InvalidKey(
            "RedisKey::segment returned a segment with a control character",
        ));
    }
    Ok(segment)
}

/// Why a custom [`RedisKey`]'s segment cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidKey(pub(crate) &'static str);

macro_rules! integer_keys {
    ($($t:ty),*) => {$(
        impl RedisKey for $t {
            fn segment(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}

integer_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a segment (the inverse of the codec), to check that it is injective.
    fn decode(segment: &str) -> String {
        if segment == "%" {
            return String::new();
        }
        let bytes = segment.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_codec_round_trips_and_never_leaves_a_separator_or_a_brace() {
        for text in [
            "",
            "a",
            "%",
            "%25",
            "a\nb",
            "{x}",
            "\u{7f}\u{0}",
            "é%\t",
            "t",
        ] {
            let segment = encode_segment(text);
            assert_eq!(decode(&segment), text);
            assert!(!segment.contains(['\n', '{', '}']), "{segment:?}");
            assert_eq!(checked_segment(&text), Ok(segment.into_owned()));
        }
        assert_ne!(encode_segment("%25"), encode_segment("%"));
        assert_ne!(encode_segment(""), encode_segment("%"));
    }
}
