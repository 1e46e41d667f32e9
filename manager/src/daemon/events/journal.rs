//! The durable event journal: every event the daemon accepts, one versioned JSON record per
//! line (`{"version":"v1","seq":N,...}`), appended and fsync'd before the event is acknowledged.
//!
//! Retention is bounded: past `2 * keep` lines the file is rewritten (temp, fsync, rename) with
//! the newest `keep`. On open, a torn last line (the daemon was killed mid-append) is truncated
//! with a warning; a bad line elsewhere is reported (file and line) and skipped, leaving a hole in
//! the sequence that readers step over (`Bus::poll` searches by number). Nothing in the
//! file can stop the daemon from starting.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tether_protocol::store;

/// One journaled event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub timestamp: i64,
    pub namespace: String,
    pub topic: String,
    pub type_url: String,
    /// The event's protobuf bytes, in hex.
    pub value: String,
    /// Learned after a restart (the exit happened while the daemon was down).
    #[serde(default)]
    pub recovered: bool,
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

pub struct Journal {
    path: PathBuf,
    file: File,
    keep: usize,
    /// Records in the file.
    lines: usize,
    /// The file's length after its last good record: a failed append is cut back to it.
    len: u64,
    /// Why appends are refused for good: an fsync failed (what reached the disk is unknown,
    /// and a later fsync may report success for data already lost) or a failed append could
    /// not be cut back. Events are then never acknowledged: the shims keep them and retry.
    broken: Option<String>,
}

/// What opening found: the retained entries (oldest first) and what was wrong with the file.
pub struct Opened {
    pub journal: Journal,
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
}

fn io_err(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(format!("{what} journal {}", path.display()))
}

impl Journal {
    /// Opens (or creates) the journal at `path`, keeping at least the newest `keep` events.
    pub fn open(path: &Path, keep: usize) -> Result<Opened> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(path, "read")(e)),
        };
        let Parsed {
            mut entries,
            good_len,
            warnings,
        } = parse(path, &bytes);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path, "open"))?;
        if good_len < bytes.len() {
            file.set_len(good_len as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err(path, "truncate"))?;
        }
        if bytes.is_empty() {
            file.sync_all().map_err(io_err(path, "fsync"))?;
            sync_parent(path)?;
        }
        let lines = entries.len();
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            keep: keep.max(1),
            lines,
            len: good_len as u64,
            broken: None,
        };
        if entries.len() > journal.keep {
            entries.drain(..entries.len() - journal.keep);
            journal.compact(&entries)?;
        }
        Ok(Opened {
            journal,
            entries,
            warnings,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Appends `entries` and fsyncs them: when this returns Ok they survive a crash.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            let line = store::encode(e).map_err(|e| {
                Error::InvalidArgument(format!("cannot encode a journal record: {e}"))
            })?;
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        if let Some(why) = &self.broken {
            return Err(Error::Io {
                what: format!("journal {} refuses appends", self.path.display()),
                source: std::io::Error::other(why.clone()),
            });
        }
        if let Err(e) = self.file.write_all(&buf) {
            // A part written stays invisible only if cut off: the next record would otherwise
            // be glued to it, and both lost as one bad line.
            if let Err(cut) = self.file.set_len(self.len) {
                self.broken = Some(format!(
                    "an append failed ({e}) and could not be cut back ({cut})"
                ));
            }
            return Err(io_err(&self.path, "append to")(e));
        }
        if let Err(e) = self.file.sync_data() {
            let _ = self.file.set_len(self.len);
            self.broken = Some(format!("fsync failed ({e})"));
            log::error!(
                "journal {}: fsync failed ({e}): no event is acknowledged from now on",
                self.path.display()
            );
            return Err(io_err(&self.path, "fsync")(e));
        }
        self.len += buf.len() as u64;
        self.lines += entries.len();
        Ok(())
    }

    /// Whether the file holds enough dropped events to be worth rewriting.
    pub fn wants_compaction(&self) -> bool {
        self.lines > 2 * self.keep
    }

    /// Rewrites the file with `retained` only (the newest events), atomically.
    pub fn compact(&mut self, retained: &[Entry]) -> Result<()> {
        let tmp = self.path.with_extension("compact.tmp");
        let write = || -> std::io::Result<File> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut buf = Vec::new();
            for e in retained {
                if let Ok(line) = store::encode(e) {
                    buf.extend_from_slice(&line);
                    buf.push(b'\n');
                }
            }
            f.write_all(&buf)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            OpenOptions::new().append(true).open(&self.path)
        };
        match write() {
            Ok(f) => {
                self.len = f.metadata().map(|m| m.len()).unwrap_or(self.len);
                self.file = f;
                self.lines = retained.len();
                sync_parent(&self.path)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(io_err(&self.path, "compact")(e))
            }
        }
    }
}

/// What the bytes of a journal file hold: its good records, how long the good prefix is (a torn
/// tail is cut there) and what was wrong. The bytes come from disk and are not trusted.
struct Parsed {
    entries: Vec<Entry>,
    good_len: usize,
    warnings: Vec<String>,
}

fn parse(path: &Path, bytes: &[u8]) -> Parsed {
    let mut warnings = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    // The length of the good prefix: a torn tail is cut off there.
    let mut good_len = 0usize;
    let mut at = 0usize;
    let mut line_no = 0usize;
    while at < bytes.len() {
        line_no += 1;
        let (line, next, complete) = match bytes[at..].iter().position(|&b| b == b'\n') {
            Some(n) => (&bytes[at..at + n], at + n + 1, true),
            None => (&bytes[at..], bytes.len(), false),
        };
        let is_last = next >= bytes.len();
        match store::decode::<Entry>(path, line) {
            // A record without its newline was never acknowledged: cut it off too.
            _ if !complete => warnings.push(format!(
                "{}: line {line_no}: torn record at the end (the daemon was killed while \
                 writing it); truncated",
                path.display()
            )),
            Err(e) if is_last => warnings.push(format!(
                "{e} (line {line_no}, the last: torn while written); truncated"
            )),
            Err(e) => {
                warnings.push(format!("{e} (line {line_no}); skipped"));
                good_len = next;
            }
            Ok(e) if entries.last().is_some_and(|l| e.seq <= l.seq) => {
                warnings.push(format!(
                    "{}: line {line_no}: sequence number {} is not after {}; skipped",
                    path.display(),
                    e.seq,
                    entries.last().map(|l| l.seq).unwrap_or_default()
                ));
                good_len = next;
            }
            Ok(e) => {
                entries.push(e);
                good_len = next;
            }
        }
        at = next;
    }
    Parsed {
        entries,
        good_len,
        warnings,
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("fsync directory {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            timestamp: seq as i64,
            namespace: "ns".into(),
            topic: "/tasks/exit".into(),
            type_url: "containerd.events.TaskExit".into(),
            value: to_hex(&[seq as u8, 0xab]),
            recovered: seq.is_multiple_of(2),
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&b)).expect("hex"), b);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn appended_entries_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("events.journal");
        let mut o = Journal::open(&p, 100).expect("open");
        assert!(o.entries.is_empty() && o.warnings.is_empty());
        o.journal.append(&[entry(1), entry(2)]).expect("append");
        o.journal.append(&[entry(3)]).expect("append");
        drop(o);
        let o = Journal::open(&p, 100).expect("reopen");
        assert_eq!(o.entries, vec![entry(1), entry(2), entry(3)]);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    }

    /// A small tmpfs mounted on a fresh directory, unmounted when dropped.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn new(size: &str) -> Tmpfs {
            let dir = tempfile::tempdir().expect("tempdir");
            nix::mount::mount(
                Some("tmpfs"),
                dir.path(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={size},mode=0700").as_str()),
            )
            .expect("mount a tmpfs");
            Tmpfs(dir)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// Fills the filesystem of `dir` with a file `filler`, until ENOSPC.
    fn fill(dir: &Path) -> PathBuf {
        let filler = dir.join("filler");
        let mut f = File::create(&filler).expect("create filler");
        let chunk = vec![0u8; 1024];
        while f.write_all(&chunk).is_ok() {}
        filler
    }

    #[test]
    fn a_failed_append_leaves_no_part_that_eats_the_next_event() {
        let fs = Tmpfs::new("64k");
        let p = fs.0.path().join("events.journal");
        let mut o = Journal::open(&p, 100).expect("open");
        o.journal.append(&[entry(1)]).expect("append");
        let filler = fill(fs.0.path());
        // Larger than the journal's last page can hold: written in part, then ENOSPC.
        let mut big = entry(2);
        big.value = to_hex(&vec![0x5a; 16 << 10]);
        o.journal.append(&[big]).expect_err("the disk is full");
        std::fs::remove_file(&filler).expect("free the space");
        o.journal
            .append(&[entry(3)])
            .expect("append after space came back");
        drop(o);
        let o = Journal::open(&p, 100).expect("reopen");
        assert_eq!(o.entries, vec![entry(1), entry(3)], "{:?}", o.warnings);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    }

    #[test]
    fn a_torn_last_line_is_truncated_and_bad_lines_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("events.journal");
        let mut o = Journal::open(&p, 100).expect("open");
        o.journal.append(&[entry(1), entry(2)]).expect("append");
        drop(o);
        let good = std::fs::read(&p).expect("read");
        // A garbage line in the middle, then a record cut off mid-write.
        let mut text = good.clone();
        text.extend_from_slice(b"{not json}\n");
        let mut third = store::encode(&entry(3)).expect("encode");
        third.push(b'\n');
        text.extend_from_slice(&third);
        let fourth = store::encode(&entry(4)).expect("encode");
        text.extend_from_slice(&fourth[..fourth.len() / 2]);
        std::fs::write(&p, &text).expect("write");
        let mut o = Journal::open(&p, 100).expect("reopen");
        assert_eq!(o.entries, vec![entry(1), entry(2), entry(3)]);
        assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("line 3"), "{:?}", o.warnings);
        assert!(o.warnings[1].contains("truncated"), "{:?}", o.warnings);
        // The torn tail is gone: the next append starts on a fresh line.
        o.journal.append(&[entry(4)]).expect("append");
        drop(o);
        let o = Journal::open(&p, 100).expect("reopen");
        assert_eq!(o.entries.last(), Some(&entry(4)));
        assert_eq!(
            o.warnings.len(),
            1,
            "only the garbage line: {:?}",
            o.warnings
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn entry() -> impl Strategy<Value = Entry> {
            (
                any::<i64>(),
                ".{0,12}",
                ".{0,20}",
                ".{0,30}",
                proptest::collection::vec(any::<u8>(), 0..40),
                any::<bool>(),
            )
                .prop_map(
                    |(timestamp, namespace, topic, type_url, value, recovered)| Entry {
                        seq: 0,
                        timestamp,
                        namespace,
                        topic,
                        type_url,
                        value: to_hex(&value),
                        recovered,
                    },
                )
        }

        /// Journal lines as they are written, for entries numbered from 1.
        fn lines(entries: &mut [Entry]) -> Vec<u8> {
            let mut out = Vec::new();
            for (i, e) in entries.iter_mut().enumerate() {
                e.seq = i as u64 + 1;
                out.extend_from_slice(&store::encode(e).expect("encode"));
                out.push(b'\n');
            }
            out
        }

        fn check_invariants(bytes: &[u8], p: &Parsed) -> Result<(), TestCaseError> {
            prop_assert!(p.good_len <= bytes.len());
            prop_assert!(p.good_len == 0 || bytes[p.good_len - 1] == b'\n');
            prop_assert!(p.entries.windows(2).all(|w| w[0].seq < w[1].seq));
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever is in the file, parsing answers (never a panic), keeps only a prefix
            /// that ends on a line, and returns entries in strictly increasing order.
            #[test]
            fn arbitrary_bytes_never_panic(
                mut good in proptest::collection::vec(entry(), 0..4),
                noise in proptest::collection::vec(any::<u8>(), 0..1024),
                at in any::<usize>(),
            ) {
                let path = Path::new("/state/events.journal");
                let p = parse(path, &noise);
                check_invariants(&noise, &p)?;
                // Noise spliced into real records, anywhere.
                let mut bytes = lines(&mut good);
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, noise.iter().copied());
                let p = parse(path, &bytes);
                check_invariants(&bytes, &p)?;
                // What survives parses again to the same entries. (A bad line that was skipped
                // becomes the last one once the tail is cut: the next open cuts it too.)
                let again = parse(path, &bytes[..p.good_len]);
                prop_assert_eq!(&again.entries, &p.entries);
                prop_assert!(again.good_len <= p.good_len);
            }

            /// Good records come back as written, and a torn tail (no newline) is cut off.
            #[test]
            fn records_round_trip_and_torn_tails_are_cut(
                mut good in proptest::collection::vec(entry(), 0..8),
                tail in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200),
            ) {
                let mut bytes = lines(&mut good);
                let good_len = bytes.len();
                bytes.extend_from_slice(&tail);
                let p = parse(Path::new("events.journal"), &bytes);
                prop_assert_eq!(&p.entries, &good);
                prop_assert_eq!(p.good_len, good_len);
                prop_assert_eq!(p.warnings.len(), usize::from(!tail.is_empty()), "{:?}", p.warnings);
            }
        }
    }

    #[test]
    fn retention_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("events.journal");
        let mut o = Journal::open(&p, 3).expect("open");
        let all: Vec<Entry> = (1..=7).map(entry).collect();
        o.journal.append(&all).expect("append");
        assert!(o.journal.wants_compaction());
        o.journal.compact(&all[4..]).expect("compact");
        assert!(!o.journal.wants_compaction());
        o.journal.append(&[entry(8)]).expect("append");
        drop(o);
        let o = Journal::open(&p, 3).expect("reopen");
        assert_eq!(
            o.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![6, 7, 8]
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
