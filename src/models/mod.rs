//! Domain types. Input is parsed into these once, at the edge; everything past a controller can
//! trust them. No I/O happens here.

mod room;
mod task;
mod user;

pub use room::{Room, RoomCounts, RoomId, RoomName, RoomSummary};
pub use task::{LockVersion, NewTask, Task, TaskChanges, TaskId, TaskNotes, TaskTitle, parse_flag};
pub use user::{DisplayName, User, UserId};

/// Why a piece of user input was refused; the message is shown to the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Trims `raw` and checks it is between `min` and `max` characters with no control characters.
/// `allow_newlines` lets multi-line fields (notes) keep line breaks and tabs.
fn parse_text(
    field: &str,
    raw: &str,
    min: usize,
    max: usize,
    allow_newlines: bool,
) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    let len = trimmed.chars().count();
    if len < min {
        return Err(Invalid(format!("{field} can't be blank")));
    }
    if len > max {
        return Err(Invalid(format!(
            "{field} is too long (maximum is {max} characters)"
        )));
    }
    let allowed = |c: char| allow_newlines && matches!(c, '\n' | '\r' | '\t');
    if trimmed.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(Invalid(format!("{field} contains control characters")));
    }
    // Line breaks are stored as `\n`: CRLF first, then a lone CR, as HTML normalises them. One
    // pass of CRLF alone would leave the CR of `\r\r\n` before the new `\n`.
    Ok(if allow_newlines {
        trimmed.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        trimmed.to_owned()
    })
}

/// Parses a positive database id from a path segment.
fn parse_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(parse_text("Name", "  Ada ", 1, 40, false).unwrap(), "Ada");
        assert!(parse_text("Name", "   ", 1, 40, false).is_err());
        assert!(parse_text("Name", &"x".repeat(41), 1, 40, false).is_err());
        assert_eq!(
            parse_text("Name", &"é".repeat(40), 1, 40, false).unwrap(),
            "é".repeat(40)
        );
    }

    #[test]
    fn control_characters_are_refused_except_line_breaks_in_multiline_fields() {
        assert!(parse_text("Name", "a\u{0007}b", 1, 40, false).is_err());
        assert!(parse_text("Name", "a\nb", 1, 40, false).is_err());
        assert_eq!(
            parse_text("Notes", "a\r\nb\tc", 0, 100, true).unwrap(),
            "a\nb\tc"
        );
        assert_eq!(
            parse_text("Notes", "a\r\r\nb\rc", 0, 100, true).unwrap(),
            "a\n\nb\nc"
        );
        assert!(parse_text("Notes", "a\u{0000}b", 0, 100, true).is_err());
    }

    #[test]
    fn ids_are_positive_decimal_numbers() {
        assert_eq!(parse_id("42"), Some(42));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1e3",
            "abc",
            "99999999999999999999",
            " 1",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
