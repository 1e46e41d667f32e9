//! `tether logs ID [-f] [--tail N] [--since TIME] [--timestamps]`: reads the container's CRI log
//! files (as `crictl logs` does: the daemon names the directory, the CLI reads the files), the
//! rotated ones first, and with `-f` follows the current file across rotations until the
//! logger says it is done. `tether attach` follows the same way from the current end.

use super::client::{Client, CALL_TIMEOUT};
use crate::error::{Error, Result};
use crate::logger::cri_log::{self, Stream};
use clap::Args;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tether_protocol::manager_api::manager as api;
use tether_protocol::{validate_id, validate_namespace};

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub id: String,
    /// Keep printing new output until the container's output ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines (of stdout and stderr together).
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only lines since an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (10m, 1h30m).
    #[arg(long)]
    pub since: Option<String>,
    /// Start each line with the time it arrived (RFC 3339, nanoseconds).
    #[arg(long, short = 't')]
    pub timestamps: bool,
}

/// How often a follower looks for more output.
const POLL: Duration = Duration::from_millis(50);
/// How often a follower asks the daemon whether the container still runs (for a logger that
/// died without saying it is done).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Prints records to our stdout/stderr, applying `--since` and `--timestamps`.
pub struct Printer {
    since: Option<i64>,
    timestamps: bool,
    /// Whether the last stdout/stderr record was partial (then no timestamp before the next).
    in_line: [bool; 2],
}

impl Printer {
    /// Every record as it came, without timestamps.
    pub fn plain() -> Printer {
        Printer {
            since: None,
            timestamps: false,
            in_line: [false; 2],
        }
    }

    pub fn print(&mut self, line: &[u8]) -> Result<()> {
        let Some(r) = cri_log::parse(line) else {
            return Ok(());
        };
        if self.since.is_some_and(|s| r.time < s) {
            return Ok(());
        }
        let idx = usize::from(r.stream == Stream::Stderr);
        let mut out = Vec::with_capacity(r.content.len() + 40);
        if self.timestamps && !self.in_line[idx] {
            out.extend_from_slice(r.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(r.content);
        if !r.partial {
            out.push(b'\n');
        }
        self.in_line[idx] = r.partial;
        let written = match r.stream {
            Stream::Stdout => std::io::stdout().lock().write_all(&out),
            Stream::Stderr => std::io::stderr().lock().write_all(&out),
        };
        written.map_err(Error::io("write the logs"))
    }
}

/// Complete lines of a file read so far; the unfinished end waits for more.
pub struct Lines {
    file: File,
    pending: Vec<u8>,
    /// Started in the middle of a line: what comes before the next newline is dropped.
    skip_first: bool,
}

impl Lines {
    fn new(file: File) -> Lines {
        Lines {
            file,
            pending: Vec::new(),
            skip_first: false,
        }
    }

    /// Only what is appended to `file` from now on.
    pub fn at_end(mut file: File) -> Result<Lines> {
        use std::io::{Seek, SeekFrom};
        let end = file
            .seek(SeekFrom::End(0))
            .map_err(Error::io("seek to the end of the log file"))?;
        let mut skip_first = false;
        if end > 0 {
            // A record being written as we look: skip its rest rather than print half.
            let mut last = [0u8];
            file.seek(SeekFrom::Start(end - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(Error::io("read the log file"))?;
            skip_first = last[0] != b'\n';
        }
        Ok(Lines {
            file,
            pending: Vec::new(),
            skip_first,
        })
    }

    /// Reads to the current end, handing each complete line (without newline) to `f`.
    fn drain(&mut self, f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read the log file")(e)),
            };
            self.pending.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(i) = self.pending[start..].iter().position(|b| *b == b'\n') {
                if !std::mem::take(&mut self.skip_first) {
                    f(&self.pending[start..start + i])?;
                }
                start += i + 1;
            }
            self.pending.drain(..start);
        }
        Ok(())
    }
}

/// The rotated files, oldest first.
fn rotated_files(current: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for n in 1.. {
        let mut s = current.as_os_str().to_owned();
        s.push(format!(".{n}"));
        let p = PathBuf::from(s);
        if !p.exists() {
            break;
        }
        found.push(p);
    }
    found.reverse();
    found
}

pub fn open(p: &Path) -> Result<Option<File>> {
    match File::open(p) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("open {}", p.display()))(e)),
    }
}

pub fn container(client: &Client, ns: &str, id: &str) -> Result<api::Container> {
    let req = api::ContainerRef {
        namespace: ns.into(),
        id: id.into(),
        ..Default::default()
    };
    client.call(CALL_TIMEOUT, |m, ctx| m.state(ctx, &req))
}

pub fn logs(socket: &Path, ns: &str, a: &LogsArgs) -> Result<i32> {
    validate_namespace(ns)?;
    validate_id(&a.id)?;
    let since = a
        .since
        .as_deref()
        .map(|s| cri_log::parse_since(s, tether_protocol::time::now_nanos()))
        .transpose()?;
    let client = Client::connect(socket)?;
    let c = container(&client, ns, &a.id)?;
    let dir = PathBuf::from(&c.bundle);
    let current = dir.join(cri_log::FILE_NAME);
    let mut printer = Printer {
        since,
        timestamps: a.timestamps,
        in_line: [false; 2],
    };
    // The current file is opened first: a rotation meanwhile then shows as a new inode below.
    let Some(file) = open(&current)? else {
        return Err(Error::NotFound(format!(
            "container {}: no logs (a container started attached has none)",
            a.id
        )));
    };
    let mut cur = Lines::new(file);
    let mut tail: Option<VecDeque<Vec<u8>>> = a.tail.map(|n| VecDeque::with_capacity(n.min(4096)));
    let mut emit = |line: &[u8], printer: &mut Printer| -> Result<()> {
        match &mut tail {
            Some(q) => {
                if a.tail != Some(0) {
                    if Some(q.len()) == a.tail {
                        q.pop_front();
                    }
                    q.push_back(line.to_vec());
                }
                Ok(())
            }
            None => printer.print(line),
        }
    };
    for p in rotated_files(&current) {
        if let Some(f) = open(&p)? {
            Lines::new(f).drain(&mut |l| emit(l, &mut printer))?;
        }
    }
    cur.drain(&mut |l| emit(l, &mut printer))?;
    if let Some(q) = tail {
        for l in q {
            printer.print(&l)?;
        }
    }
    if a.follow {
        follow(socket, ns, &a.id, &current, cur, &mut printer, &|| false)?;
    }
    Ok(0)
}

/// Prints what the logger appends until it created its end marker (or the container is gone,
/// or it exited and its log stopped growing, or `stop` says so). The daemon is only asked
/// whether the container still runs: its absence (a restart) changes nothing here.
pub fn follow(
    socket: &Path,
    ns: &str,
    id: &str,
    current: &Path,
    mut cur: Lines,
    printer: &mut Printer,
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    let ended = current.with_file_name(cri_log::ENDED_NAME);
    let mut next_status = Instant::now() + STATUS_EVERY;
    let mut quiet_exited = 0;
    let mut last_len = None;
    // Connected again whenever a call fails: the daemon may have restarted meanwhile.
    let mut client: Option<Client> = None;
    loop {
        // Looked at before reading: everything was written before the marker appeared.
        let done = ended.exists();
        cur.drain(&mut |l| printer.print(l))?;
        let ino = cur.file.metadata().map(|m| m.ino()).ok();
        match std::fs::metadata(current) {
            Ok(m) if Some(m.ino()) != ino => {
                // Rotated: the old file is complete; go on with the new one.
                cur.drain(&mut |l| printer.print(l))?;
                if let Some(f) = open(current)? {
                    cur = Lines::new(f);
                }
                continue;
            }
            Ok(_) => {}
            // The container was deleted with its directory.
            Err(_) if !current.parent().is_some_and(Path::exists) => return Ok(()),
            Err(_) => {}
        }
        if done || stop() {
            return Ok(());
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + STATUS_EVERY;
            let len = cur.file.metadata().map(|m| (m.ino(), m.len())).ok();
            let grew = len != last_len;
            last_len = len;
            if client.is_none() {
                client = Client::connect(socket).ok();
            }
            let Some(c) = client.as_ref() else {
                std::thread::sleep(POLL);
                continue;
            };
            match container(c, ns, id) {
                Ok(c) if c.status == "EXITED" && !grew => {
                    quiet_exited += 1;
                    if quiet_exited >= 3 {
                        return Ok(());
                    }
                }
                Ok(_) => quiet_exited = 0,
                Err(Error::Remote(m)) if m.contains("not found") => return Ok(()),
                Err(_) => client = None,
            }
        }
        std::thread::sleep(POLL);
    }
}
