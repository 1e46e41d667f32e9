//! Event filters in containerd's syntax: `topic~=/tasks/.+,namespace==bb`.
//!
//! A filter is selectors joined by `,` (AND); a list of filters matches when any one does (OR).
//! A selector is a field path (`topic`, `namespace`, `container_id`, `event.container_id`,
//! `io.stdout`), optionally followed by an operator (`==`, `!=`, `~=` for a regular expression)
//! and a value. A selector without an operator checks that the field is present and not empty.
//! Values are bare (up to the next `,`), or quoted with `"..."` (backslash escapes) or `|...|`
//! (raw, for regular expressions with commas).

use regex::Regex;
use std::fmt;

/// Why a filter did not parse: the filter, the (1-based) character position and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter {filter:?} at position {pos}: {what}")]
pub struct FilterError {
    pub filter: String,
    pub pos: usize,
    pub what: String,
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
    Match(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// One filter: every selector must match.
#[derive(Debug, Clone)]
pub struct Filter {
    selectors: Vec<Selector>,
}

/// Several filters: any one must match; none matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<Filter>);

/// Something filters can look at: a field path's value, if the field exists.
pub trait Fields {
    fn field(&self, path: &[String]) -> Option<String>;
}

impl Filters {
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Filters, FilterError> {
        filters
            .iter()
            .map(|f| Filter::parse(f.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Filters)
    }

    pub fn matches(&self, item: &dyn Fields) -> bool {
        self.0.is_empty() || self.0.iter().any(|f| f.matches(item))
    }
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        Parser {
            text,
            chars: text.chars().collect(),
            i: 0,
        }
        .filter()
    }

    pub fn matches(&self, item: &dyn Fields) -> bool {
        self.selectors.iter().all(|s| {
            let value = item.field(&s.path);
            match (&s.op, value) {
                (Op::Present, v) => v.is_some_and(|v| !v.is_empty()),
                (Op::Eq(want), Some(v)) => &v == want,
                (Op::Eq(_), None) => false,
                (Op::Ne(want), v) => v.as_deref() != Some(want.as_str()),
                (Op::Match(re), Some(v)) => re.is_match(&v),
                (Op::Match(_), None) => false,
            }
        })
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    i: usize,
}

impl Parser<'_> {
    fn err(&self, pos: usize, what: impl fmt::Display) -> FilterError {
        FilterError {
            filter: self.text.to_string(),
            pos: pos + 1,
            what: what.to_string(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    fn filter(mut self) -> Result<Filter, FilterError> {
        let mut selectors = Vec::new();
        loop {
            selectors.push(self.selector()?);
            self.skip_spaces();
            match self.peek() {
                None => break,
                Some(',') => self.i += 1,
                Some(c) => {
                    return Err(self.err(self.i, format!("expected ',' or the end, found {c:?}")))
                }
            }
        }
        Ok(Filter { selectors })
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        self.skip_spaces();
        let mut path = vec![self.field()?];
        while self.peek() == Some('.') {
            self.i += 1;
            path.push(self.field()?);
        }
        self.skip_spaces();
        let op_at = self.i;
        let op = match (self.peek(), self.chars.get(self.i + 1).copied()) {
            (None, _) | (Some(','), _) => {
                return Ok(Selector {
                    path,
                    op: Op::Present,
                })
            }
            (Some('='), Some('=')) => "==",
            (Some('!'), Some('=')) => "!=",
            (Some('~'), Some('=')) => "~=",
            (Some(c), _) => {
                return Err(self.err(
                    op_at,
                    format!("expected an operator (==, != or ~=), found {c:?}"),
                ))
            }
        };
        self.i += 2;
        self.skip_spaces();
        let value_at = self.i;
        let value = self.value()?;
        let op = match op {
            "==" => Op::Eq(value),
            "!=" => Op::Ne(value),
            _ => Op::Match(Regex::new(&value).map_err(|e| {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                self.err(
                    value_at,
                    format!("invalid regular expression {value:?}: {first}"),
                )
            })?),
        };
        Ok(Selector { path, op })
    }

    fn field(&mut self) -> Result<String, FilterError> {
        let start = self.i;
        if self.peek() == Some('"') {
            return self.quoted('"');
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.i += 1;
        }
        if self.i == start || !self.chars[start].is_ascii_alphabetic() {
            return Err(match self.peek() {
                Some(c) if self.i == start => {
                    self.err(start, format!("expected a field name, found {c:?}"))
                }
                None => self.err(start, "expected a field name, found the end"),
                Some(_) => self.err(start, "a field name must start with a letter"),
            });
        }
        Ok(self.chars[start..self.i].iter().collect())
    }

    fn value(&mut self) -> Result<String, FilterError> {
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some('|') => self.quoted('|'),
            None | Some(',') => Err(self.err(self.i, "expected a value after the operator")),
            Some(_) => {
                let start = self.i;
                while self.peek().is_some_and(|c| c != ',') {
                    self.i += 1;
                }
                Ok(self.chars[start..self.i]
                    .iter()
                    .collect::<String>()
                    .trim_end()
                    .to_string())
            }
        }
    }

    /// A quoted string starting at `self.i` (the opening `quote`). `"` takes backslash escapes.
    fn quoted(&mut self, quote: char) -> Result<String, FilterError> {
        let start = self.i;
        self.i += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err(start, format!("unterminated quote {quote}"))),
                Some(c) if c == quote => {
                    self.i += 1;
                    return Ok(out);
                }
                Some('\\') if quote == '"' => {
                    let c = self.chars.get(self.i + 1).copied();
                    let Some(c) = c else {
                        return Err(self.err(self.i, "a backslash at the end"));
                    };
                    out.push(match c {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    self.i += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Ev(HashMap<&'static str, &'static str>);

    impl Fields for Ev {
        fn field(&self, path: &[String]) -> Option<String> {
            let key = path.join(".");
            let key = key.strip_prefix("event.").unwrap_or(&key);
            self.0.get(key).map(|v| v.to_string())
        }
    }

    fn ev(pairs: &[(&'static str, &'static str)]) -> Ev {
        Ev(pairs.iter().copied().collect())
    }

    fn matches(filters: &[&str], e: &Ev) -> bool {
        Filters::parse(filters).expect("parses").matches(e)
    }

    #[test]
    fn and_or_and_operators() {
        let exit = ev(&[
            ("topic", "/tasks/exit"),
            ("namespace", "bb"),
            ("container_id", "c1"),
        ]);
        let other = ev(&[
            ("topic", "/tasks/exit"),
            ("namespace", "aa"),
            ("container_id", "c2"),
        ]);
        assert!(matches(&[], &exit));
        assert!(matches(&["topic~=/tasks/.+,namespace==bb"], &exit));
        assert!(!matches(&["topic~=/tasks/.+,namespace==bb"], &other));
        assert!(
            matches(&["namespace==bb", "container_id==c2"], &other),
            "OR of filters"
        );
        assert!(matches(&["namespace!=bb"], &other));
        assert!(!matches(&["namespace!=bb"], &exit));
        assert!(matches(&["event.container_id==c1"], &exit));
        assert!(matches(&["container_id"], &exit), "presence");
        assert!(!matches(&["exec_id"], &exit));
        assert!(
            matches(&["exec_id!=x"], &exit),
            "!= matches a missing field"
        );
        assert!(!matches(&["topic~=^/tasks/start$"], &exit));
        assert!(
            matches(&[" topic == /tasks/exit , namespace==bb "], &exit),
            "spaces"
        );
        assert!(matches(&["container_id==\"c1\""], &exit));
        assert!(matches(&["topic~=|exit$|"], &exit));
    }

    #[test]
    fn errors_name_the_position() {
        let table: &[(&str, usize, &str)] = &[
            ("topic=~x", 6, "expected an operator"),
            ("==x", 1, "expected a field name"),
            ("topic==", 8, "expected a value"),
            ("topic==x,", 10, "expected a field name, found the end"),
            ("topic~=(", 8, "invalid regular expression"),
            ("topic==\"abc", 8, "unterminated quote"),
            ("topic.==x", 7, "expected a field name"),
            ("1topic==x", 1, "must start with a letter"),
        ];
        for (text, pos, what) in table {
            let e = Filter::parse(text).expect_err(text);
            assert_eq!(e.pos, *pos, "{text}: {e}");
            assert!(e.to_string().contains(what), "{text}: {e}");
            assert!(e.to_string().starts_with("invalid filter"), "{e}");
        }
    }
}
