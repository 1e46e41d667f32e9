//! Container logs in the CRI format, as containerd's CRI plugin writes them.
//!
//! One record per line: `<RFC 3339 time> <stream> <tag> <content>`, where the stream is
//! `stdout` or `stderr` and the tag `F` (full line) or `P` (partial: the line continues in the
//! stream's next record, written when a line exceeds the plugin's maximum line size).

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: String,
    pub stream: Stream,
    pub partial: bool,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Parses one record; `None` if it is not in the CRI format.
pub fn parse_record(line: &str) -> Option<LogRecord> {
    let mut f = line.splitn(4, ' ');
    let time = f.next()?;
    // `2024-01-01T00:00:00.123456789Z` or with an offset: a date, a `T`, a time.
    if time.len() < 20 || time.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let stream = match f.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match f.next()? {
        "F" => false,
        "P" => true,
        _ => return None,
    };
    Some(LogRecord {
        time: time.to_string(),
        stream,
        partial,
        content: f.next().unwrap_or("").to_string(),
    })
}

/// Parses a whole log file; `Err` names the first line that is not a CRI record.
pub fn parse(text: &str) -> Result<Vec<LogRecord>, String> {
    text.lines()
        .enumerate()
        .map(|(n, l)| parse_record(l).ok_or_else(|| format!("line {}: {l:?}", n + 1)))
        .collect()
}

/// The full lines of one stream, partial records joined.
pub fn lines(records: &[LogRecord], stream: Stream) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for r in records.iter().filter(|r| r.stream == stream) {
        cur.push_str(&r.content);
        if !r.partial {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_partial_records() {
        let text = "2024-01-01T00:00:00.000000001Z stdout F hello world\n\
                    2024-01-01T00:00:00.000000002Z stderr P par\n\
                    2024-01-01T00:00:00.000000003Z stderr F tial\n\
                    2024-01-01T00:00:00.000000004Z stdout F \n";
        let r = parse(text).expect("valid records");
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].stream, Stream::Stdout);
        assert_eq!(r[0].content, "hello world");
        assert!(r[1].partial);
        assert_eq!(lines(&r, Stream::Stderr), ["partial"]);
        assert_eq!(lines(&r, Stream::Stdout), ["hello world", ""]);
    }

    #[test]
    fn rejects_lines_that_are_not_records() {
        assert!(parse_record("hello").is_none());
        assert!(parse_record("2024-01-01T00:00:00Z stdin F x").is_none());
        assert!(parse_record("2024-01-01T00:00:00Z stdout X x").is_none());
        assert!(parse("2024-01-01T00:00:00Z stdout F a\nraw output\n").is_err());
    }
}
