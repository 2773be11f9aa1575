use serde::{Deserialize, Serialize};

use super::{Invalid, Task, parse_id, parse_text};

/// A room's primary key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct RoomId(pub i64);

impl RoomId {
    /// Parses a path segment; `None` for anything that is not a positive id.
    pub fn parse(raw: &str) -> Option<Self> {
        parse_id(raw).map(Self)
    }
}

impl std::fmt::Display for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A room's name: trimmed, 1-80 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

impl RoomName {
    pub const MAX: usize = 80;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        parse_text("Name", raw, 1, Self::MAX, false).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Room {
    pub id: RoomId,
    pub name: String,
}

/// How many tasks a room holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RoomCounts {
    pub open: i64,
    pub done: i64,
}

impl RoomCounts {
    pub fn total(&self) -> i64 {
        self.open + self.done
    }

    /// The counts of a room holding `tasks`.
    pub fn of(tasks: &[Task]) -> Self {
        let done = tasks.iter().filter(|t| t.done).count();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        Self {
            open: count(tasks.len() - done),
            done: count(done),
        }
    }
}

/// A room with its counts, as listed on the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RoomSummary {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub room: Room,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub counts: RoomCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_trimmed_and_limited_to_eighty_characters() {
        assert_eq!(RoomName::parse(" Launch ").unwrap().as_str(), "Launch");
        assert!(RoomName::parse(" ").is_err());
        assert!(RoomName::parse(&"r".repeat(80)).is_ok());
        assert!(RoomName::parse(&"r".repeat(81)).is_err());
    }
}
