//! Container id and namespace validation with containerd's rules (`identifiers.Validate`).
//!
//! An identifier is letters and digits, in runs separated by single `.`, `_` or `-`, and at most
//! 76 characters. Ids become path components and socket names, so nothing else may pass.

use std::fmt;

/// The longest identifier containerd accepts.
pub const MAX_ID_LEN: usize = 76;

const RULE: &str = "letters and digits, separated by single '.', '_' or '-', at most 76 characters";

/// Why an identifier was refused. The message names the value (escaped) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid {kind} {value:?}: must not be empty ({RULE})")]
    Empty { kind: &'static str, value: String },
    #[error("invalid {kind} {value:?}: {len} characters is longer than {MAX_ID_LEN} ({RULE})")]
    TooLong {
        kind: &'static str,
        value: String,
        len: usize,
    },
    #[error("invalid {kind} {value:?}: {what} at byte {pos} ({RULE})")]
    BadChar {
        kind: &'static str,
        value: String,
        what: String,
        pos: usize,
    },
}

/// Validates a container (or exec) id.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    validate("container id", id)
}

/// Validates a namespace name.
pub fn validate_namespace(ns: &str) -> Result<(), IdError> {
    validate("namespace", ns)
}

/// Validates an identifier, naming it `kind` in the error.
pub fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    let err_value = || value.chars().take(100).collect::<String>();
    if value.is_empty() {
        return Err(IdError::Empty {
            kind,
            value: String::new(),
        });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            value: err_value(),
            len: value.chars().count(),
        });
    }
    let bytes = value.as_bytes();
    for (pos, &b) in bytes.iter().enumerate() {
        let bad = |what: String| IdError::BadChar {
            kind,
            value: err_value(),
            what,
            pos,
        };
        if b.is_ascii_alphanumeric() {
            continue;
        }
        if !matches!(b, b'.' | b'_' | b'-') {
            let what = match value[pos..].chars().next() {
                Some(c) if b.is_ascii() => format!("character {}", Printable(c)),
                _ => "non-ASCII character".to_string(),
            };
            return Err(bad(what));
        }
        if pos == 0 || pos + 1 == bytes.len() {
            return Err(bad(format!("separator '{}' at an end", b as char)));
        }
        if !bytes[pos - 1].is_ascii_alphanumeric() {
            return Err(bad("two separators in a row".to_string()));
        }
    }
    Ok(())
}

struct Printable(char);

impl fmt::Display for Printable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_identifiers() {
        for ok in [
            "a",
            "abc",
            "a.b",
            "a_b-c.d",
            "0",
            "busybox-1",
            &"x".repeat(76),
        ] {
            assert_eq!(validate_id(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_identifiers_naming_value_and_rule() {
        let long = "y".repeat(200);
        let table: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("../x", "separator '.' at an end"),
            ("a/b", "character '/'"),
            (&long, "200 characters is longer than 76"),
            ("héllo", "non-ASCII character"),
            ("a..b", "two separators in a row"),
            ("a-", "separator '-' at an end"),
            ("-a", "separator '-' at an end"),
            ("a b", "character ' '"),
            ("a\0b", "character '\\0'"),
        ];
        for (bad, why) in table {
            let err = validate_id(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("at most 76 characters"), "rule missing: {err}");
            assert!(err.starts_with("invalid container id"), "{err}");
        }
        let err = validate_namespace("a/b").unwrap_err().to_string();
        assert!(err.starts_with("invalid namespace \"a/b\""), "{err}");
    }
}
