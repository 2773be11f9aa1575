use serde::{Deserialize, Serialize};

use super::{Invalid, parse_text};

/// A person's display name: trimmed, 1-40 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX: usize = 40;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        parse_text("Name", raw, 1, Self::MAX, false).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's identity for the life of their session: random, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub u64);

impl UserId {
    pub fn random() -> Self {
        // Kept below 2^53 so JavaScript clients read it exactly.
        Self(rand::random::<u64>() >> 11)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Someone who has signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: DisplayName,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_trimmed_and_limited_to_forty_characters() {
        assert_eq!(DisplayName::parse(" Grace ").unwrap().as_str(), "Grace");
        assert!(DisplayName::parse("").is_err());
        assert!(DisplayName::parse(&"a".repeat(41)).is_err());
        assert!(DisplayName::parse("tab\there").is_err());
    }

    #[test]
    fn user_ids_fit_in_a_javascript_number() {
        for _ in 0..100 {
            assert!(UserId::random().0 < (1 << 53));
        }
    }
}
