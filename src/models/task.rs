use serde::Serialize;

use super::{Invalid, RoomId, parse_id, parse_text};

/// A task's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct TaskId(pub i64);

impl TaskId {
    /// Parses a path segment; `None` for anything that is not a positive id.
    pub fn parse(raw: &str) -> Option<Self> {
        parse_id(raw).map(Self)
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The optimistic-locking counter every task carries; bumped by each change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct LockVersion(pub i64);

impl LockVersion {
    /// Parses the `task[lock_version]` form field.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        raw.parse().ok().map(Self)
    }
}

/// A task's title: trimmed, 1-200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TaskTitle(String);

impl TaskTitle {
    pub const MAX: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        parse_text("Title", raw, 1, Self::MAX, false).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task's notes: optional, up to 10,000 characters, line breaks allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TaskNotes(String);

impl TaskNotes {
    pub const MAX: usize = 10_000;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        parse_text("Notes", raw, 0, Self::MAX, true).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Task {
    pub id: TaskId,
    pub room_id: RoomId,
    pub title: String,
    pub notes: String,
    pub done: bool,
    pub lock_version: LockVersion,
    /// Display name of whoever made the latest change.
    pub updated_by: String,
}

/// A task about to be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub title: TaskTitle,
    pub notes: TaskNotes,
}

/// An edit or a toggle: only the fields present change, and only if `lock_version` still matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskChanges {
    pub title: Option<TaskTitle>,
    pub notes: Option<TaskNotes>,
    /// The target state; a toggle says where it wants to end up, never "flip".
    pub done: Option<bool>,
    pub lock_version: LockVersion,
}

impl TaskChanges {
    /// Whether `task` already looks the way these changes would leave it.
    pub fn already_applied_to(&self, task: &Task) -> bool {
        self.title.as_ref().is_none_or(|t| t.as_str() == task.title)
            && self.notes.as_ref().is_none_or(|n| n.as_str() == task.notes)
            && self.done.is_none_or(|d| d == task.done)
    }
}

/// Parses a boolean form value the way Rails check boxes and our toggle buttons send it.
pub fn parse_flag(raw: &str) -> Option<bool> {
    match raw.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            id: TaskId(1),
            room_id: RoomId(1),
            title: "Ship".into(),
            notes: String::new(),
            done: true,
            lock_version: LockVersion(3),
            updated_by: "Ada".into(),
        }
    }

    #[test]
    fn titles_are_one_to_two_hundred_characters() {
        assert!(TaskTitle::parse("").is_err());
        assert!(TaskTitle::parse(&"t".repeat(200)).is_ok());
        assert!(TaskTitle::parse(&"t".repeat(201)).is_err());
    }

    #[test]
    fn notes_may_be_empty_and_hold_up_to_ten_thousand_characters() {
        assert_eq!(TaskNotes::parse("  ").unwrap().as_str(), "");
        assert!(TaskNotes::parse(&"n".repeat(10_000)).is_ok());
        assert!(TaskNotes::parse(&"n".repeat(10_001)).is_err());
    }

    #[test]
    fn lock_versions_are_non_negative_integers() {
        assert_eq!(LockVersion::parse("0"), Some(LockVersion(0)));
        assert_eq!(LockVersion::parse("12"), Some(LockVersion(12)));
        for bad in ["", "-1", "1.5", "x", "9999999999999999999999"] {
            assert_eq!(LockVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn flags_accept_rails_and_plain_booleans_only() {
        assert_eq!(parse_flag("true"), Some(true));
        assert_eq!(parse_flag("1"), Some(true));
        assert_eq!(parse_flag("false"), Some(false));
        assert_eq!(parse_flag("0"), Some(false));
        assert_eq!(parse_flag("yes"), None);
    }

    #[test]
    fn a_change_is_already_applied_when_every_given_field_matches() {
        let done = TaskChanges {
            title: None,
            notes: None,
            done: Some(true),
            lock_version: LockVersion(1),
        };
        assert!(done.already_applied_to(&task()));
        let renamed = TaskChanges {
            title: Some(TaskTitle::parse("Other").unwrap()),
            ..done
        };
        assert!(!renamed.already_applied_to(&task()));
    }
}
