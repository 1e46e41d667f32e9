//! CRI's container log format, one record per line: `TIMESTAMP STREAM TAG CONTENT`, where the
//! timestamp is RFC 3339 with nanoseconds, STREAM is `stdout` or `stderr` and TAG is `F` (the
//! content ends a line) or `P` (a part of a longer line, more follows).

use crate::error::{Error, Result};
use std::time::Duration;

/// The longest content of one record; longer lines are split into `P` records (as containerd's
/// CRI plugin does).
pub const MAX_CONTENT: usize = 16 * 1024;

/// The log file of a container, in its directory.
pub const FILE_NAME: &str = "container.log";
/// Created by the logger once both streams ended and everything is written: followers stop.
pub const ENDED_NAME: &str = "container.log.ended";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed record (`content` without the line's newline).
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: i64,
    pub timestamp: &'a str,
    pub stream: Stream,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Appends one record to `out`.
pub fn format(out: &mut Vec<u8>, timestamp: &str, stream: Stream, partial: bool, content: &[u8]) {
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Parses one line (without its newline); `None` for a line that is not a record.
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    let content = parts.next().unwrap_or_default();
    Some(Record {
        time: parse_rfc3339(timestamp)?,
        timestamp,
        stream,
        partial,
        content,
    })
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch of an RFC 3339 time (`2026-11-29T08:34:08.5Z`, `+01:00`).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (digits(d.next()?)?, digits(d.next()?)?, digits(d.next()?)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':');
    let (h, mi, se) = (digits(t.next()?)?, digits(t.next()?)?, digits(t.next()?)?);
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut nanos = 0;
    if !frac.is_empty() {
        if frac.len() > 9 {
            return None;
        }
        nanos = digits(frac)? * 10i64.pow(9 - frac.len() as u32);
    }
    let offset = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (oh, om) = zone.get(1..)?.split_once(':')?;
            sign * (digits(oh)? * 3600 + digits(om)? * 60)
        }
    };
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// `--since`: an RFC 3339 time, or a duration before `now` (`90s`, `10m`, `2h`, `1h30m`).
pub fn parse_since(s: &str, now: i64) -> Result<i64> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    let bad = || {
        Error::InvalidArgument(format!(
            "--since {s:?}: give an RFC 3339 time (2026-01-02T15:04:05Z) or a duration (10m, 1h30m)"
        ))
    };
    let mut total = Duration::ZERO;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total += Duration::from_secs(n.checked_mul(unit).ok_or_else(bad)?);
        num.clear();
    }
    if !num.is_empty() || total.is_zero() {
        return Err(bad());
    }
    Ok(now.saturating_sub(i64::try_from(total.as_nanos()).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::time;

    #[test]
    fn records_round_trip() {
        let ts = time(1_764_405_248_123_456_789);
        let mut out = Vec::new();
        format(&mut out, &ts, Stream::Stderr, true, b"a b  c");
        assert_eq!(out, format!("{ts} stderr P a b  c\n").into_bytes());
        let r = parse(&out[..out.len() - 1]).expect("a record");
        assert_eq!(
            r,
            Record {
                time: 1_764_405_248_123_456_789,
                timestamp: &ts,
                stream: Stream::Stderr,
                partial: true,
                content: b"a b  c",
            }
        );
        format(&mut out, &ts, Stream::Stdout, false, b"");
        assert_eq!(parse(b"x stdout F y"), None);
        assert_eq!(parse(format!("{ts} stdin F y").as_bytes()), None);
    }

    #[test]
    fn times_parse_as_formatted() {
        for n in [1, 1_764_405_248_123_456_789, 951_782_400_000_000_000] {
            assert_eq!(parse_rfc3339(&time(n)), Some(n), "{}", time(n));
        }
        assert_eq!(
            parse_rfc3339("1970-01-01T01:00:00.5+01:00"),
            Some(500_000_000)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00"), None);
        assert_eq!(parse_rfc3339("1970-13-01T00:00:00Z"), None);
    }

    #[test]
    fn since_takes_times_and_durations() {
        let now = 10_000_000_000_000;
        assert_eq!(
            parse_since("1h30m", now).ok(),
            Some(now - 5400 * 1_000_000_000)
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:01Z", now).ok(),
            Some(1_000_000_000)
        );
        for bad in ["", "5", "5x", "m", "0s"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
