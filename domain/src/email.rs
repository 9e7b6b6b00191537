//! E-mail addresses, normalised (trimmed, lower-cased) and checked on the way in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a text is not an acceptable e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid email address: {0}")]
pub struct EmailError(pub &'static str);

/// A syntactically plausible, normalised e-mail address (at most 254 bytes).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Trims, lower-cases and checks an address: one `@`, a non-empty local part of at
    /// most 64 bytes, a dotted domain, no whitespace or control characters.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err(EmailError("it is empty"));
        }
        if s.len() > 254 {
            return Err(EmailError("it is longer than 254 characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError("it contains whitespace or control characters"));
        }
        let (local, domain) = s.split_once('@').ok_or(EmailError("it has no '@'"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(EmailError("the part before '@' must be 1 to 64 characters"));
        }
        if domain.contains('@') {
            return Err(EmailError("it has more than one '@'"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || l.len() > 63) {
            return Err(EmailError("the domain must be dotted, like example.com"));
        }
        if labels.iter().any(|l| {
            l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
        }) {
            return Err(EmailError("the domain has invalid characters"));
        }
        Ok(Email(s))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Email::parse(&value)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_accepts_ordinary_addresses() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").map(|e| e.to_string()),
            Ok("alice@example.com".into())
        );
        assert!(Email::parse("a.b+tag@sub.example.co.uk").is_ok());
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a@b@c.com",
            "al ice@example.com",
            "alice@exa_mple.com",
            "alice@-example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }
}
