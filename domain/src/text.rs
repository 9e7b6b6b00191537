//! Free-text fields that users type and that end up in the audit trail.

use serde::{Deserialize, Serialize};

/// Why a description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("description {0}")]
pub struct DescriptionError(pub &'static str);

/// A trimmed, non-empty description of at most [`Description::MAX_CHARS`] characters
/// without control characters (newlines and tabs excepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Description(String);

impl Description {
    /// Longest description accepted, in characters: enough for an invoice reference and a
    /// sentence, short enough that the audit trail stays readable.
    pub const MAX_CHARS: usize = 500;

    /// Trims and checks a description. An empty (or all-whitespace) text gives `None`.
    pub fn parse(raw: &str) -> Result<Option<Self>, DescriptionError> {
        let s = raw.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(DescriptionError("must be at most 500 characters"));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(DescriptionError("must not contain control characters"));
        }
        Ok(Some(Description(s.to_owned())))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Description {
    type Error = DescriptionError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Description::parse(&value)?.ok_or(DescriptionError("must not be empty"))
    }
}

impl From<Description> for String {
    fn from(d: Description) -> Self {
        d.0
    }
}
