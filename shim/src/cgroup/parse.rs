//! Parsers of cgroup file contents. Pure functions over text: a malformed line is skipped, never
//! an error, so one odd kernel line costs one figure, not the whole answer.

use std::collections::HashMap;

/// A flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`, ...): `key value` lines.
/// Negative values (v1 reports some limits as -1) read as 0, as containerd reads them.
pub fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (key, value) = (f.next()?, f.next()?);
            if f.next().is_some() {
                return None;
            }
            Some((key, number(value)?))
        })
        .collect()
}

/// A single-value file (`memory.current`, `pids.max`, ...). `max` (no limit) reads as `max`:
/// containerd says 0 for it on v1 and u64::MAX on v2.
pub fn single(text: &str, max: u64) -> Option<u64> {
    match text.trim() {
        "max" => Some(max),
        v => number(v),
    }
}

/// A decimal number; a negative one (within i64 or not) is 0.
fn number(v: &str) -> Option<u64> {
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    let digits = v.strip_prefix('-')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(0)
}

/// Space-separated numbers on one line (`cpuacct.usage_percpu`). Any bad token discards the
/// line: a skipped token would shift every later CPU's figure onto the wrong CPU.
pub fn numbers(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .unwrap_or_default()
}

/// One line of a v1 blkio file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkioLine {
    pub major: u64,
    pub minor: u64,
    /// `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total`; empty in files without one
    /// (`blkio.sectors_recursive`).
    pub op: String,
    pub value: u64,
}

/// A v1 blkio file: `MAJ:MIN [OP] VALUE` lines and a final `Total VALUE`, which is dropped.
pub fn blkio(text: &str) -> Vec<BlkioLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dev, op, value) = match f.as_slice() {
                [dev, op, value] => (*dev, *op, *value),
                [dev, value] => (*dev, "", *value),
                _ => return None,
            };
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioLine {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Device names by number from `/proc/partitions` (`major minor #blocks name`, two header
/// lines), as `/dev/NAME`; the first name of a number wins.
pub fn partitions(text: &str) -> HashMap<(u64, u64), String> {
    let mut devices = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [major, minor, _blocks, name] = f.as_slice() else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        devices
            .entry((major, minor))
            .or_insert_with(|| format!("/dev/{name}"));
    }
    devices
}

/// One device's line of a v2 `io.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoLine {
    pub major: u64,
    pub minor: u64,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

/// A v2 `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` lines. Keys
/// this type does not carry (`dbytes`, `dios`, ...) and malformed pairs are ignored.
pub fn io_stat(text: &str) -> Vec<IoLine> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (major, minor) = f.next()?.split_once(':')?;
            let mut io = IoLine {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for (key, value) in f.filter_map(|kv| kv.split_once('=')) {
                let Ok(value) = value.parse() else { continue };
                match key {
                    "rbytes" => io.rbytes = value,
                    "wbytes" => io.wbytes = value,
                    "rios" => io.rios = value,
                    "wios" => io.wios = value,
                    _ => {}
                }
            }
            Some(io)
        })
        .collect()
}

/// One line of a pressure (PSI) file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total: u64,
}

/// A PSI file (`cpu.pressure`, ...): `some avg10=.. avg60=.. avg300=.. total=..` and the same
/// for `full`. Returns (some, full); a line that is absent or malformed gives None.
pub fn pressure(text: &str) -> (Option<Pressure>, Option<Pressure>) {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let slot = match f.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut p = Pressure::default();
        let mut seen = 0;
        for (key, value) in f.filter_map(|kv| kv.split_once('=')) {
            let ok = match key {
                "avg10" => value.parse().map(|v| p.avg10 = v).is_ok(),
                "avg60" => value.parse().map(|v| p.avg60 = v).is_ok(),
                "avg300" => value.parse().map(|v| p.avg300 = v).is_ok(),
                "total" => value.parse().map(|v| p.total = v).is_ok(),
                _ => continue,
            };
            seen += usize::from(ok);
        }
        if seen == 4 {
            *slot = Some(p);
        }
    }
    (some, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_skips_malformed_lines() {
        let m = flat_keyed(
            "a 1\nb\nc 2 3\nd x\ne -1\nf -99999999999999999999\n\ng 18446744073709551615\n",
        );
        let mut got: Vec<_> = m.into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            vec![("a", 1), ("e", 0), ("f", 0), ("g", u64::MAX)],
            "b, c and d are malformed"
        );
    }

    #[test]
    fn single_values() {
        assert_eq!(single("max\n", u64::MAX), Some(u64::MAX));
        assert_eq!(single("max\n", 0), Some(0));
        assert_eq!(single("4096\n", 0), Some(4096));
        assert_eq!(single("-1\n", 0), Some(0));
        assert_eq!(single("", 0), None);
        assert_eq!(single("12 34", 0), None);
        assert_eq!(single("-", 0), None);
        assert_eq!(single("lots", 0), None);
    }

    #[test]
    fn numbers_all_or_nothing() {
        assert_eq!(numbers("1 2 3 \n"), vec![1, 2, 3]);
        assert_eq!(numbers("1 x 3\n"), Vec::<u64>::new());
        assert_eq!(numbers(""), Vec::<u64>::new());
    }

    #[test]
    fn blkio_lines() {
        let got =
            blkio("8:0 Read 10\n8:0 Write 20\nTotal 30\n253:1 5\nbad line here x\n8:x Read 1\n");
        let line = |major, minor, op: &str, value| BlkioLine {
            major,
            minor,
            op: op.to_string(),
            value,
        };
        assert_eq!(
            got,
            vec![
                line(8, 0, "Read", 10),
                line(8, 0, "Write", 20),
                line(253, 1, "", 5)
            ]
        );
    }

    #[test]
    fn partitions_names_devices() {
        let d = partitions(
            "major minor  #blocks  name\n\n 8 0 100 sda\n 8 0 100 dup\n 8 1 50 sda1\nx y z w\n",
        );
        assert_eq!(d.get(&(8, 0)).map(String::as_str), Some("/dev/sda"));
        assert_eq!(d.get(&(8, 1)).map(String::as_str), Some("/dev/sda1"));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn pressure_lines() {
        let (some, full) = pressure(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\nfull avg10=x avg60=0 avg300=0 total=1\n",
        );
        assert_eq!(
            some,
            Some(Pressure {
                avg10: 1.5,
                avg60: 0.25,
                avg300: 0.0,
                total: 12345
            })
        );
        assert_eq!(full, None, "a malformed line is dropped");
        assert_eq!(pressure(""), (None, None));
    }
}
