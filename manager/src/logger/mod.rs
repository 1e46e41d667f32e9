//! The container logger: `tether` started by a shim as a `binary://` logger (containerd's binary
//! logging protocol: the container's stdout and stderr arrive as fds 3 and 4, fd 5 is closed
//! once we are ready). It writes CRI-format records to `container.log` in the container's
//! directory as output arrives, rotating at a size bound.
//!
//! The shim, not the daemon, owns this process: a daemon SIGKILL and restart never touches it,
//! so no line is lost or written twice while the daemon is away. The container's output waits
//! in its pipes if we fall behind.
//!
//! With `stdin PATH` the logger also holds the container's stdin FIFO open for writing until
//! the container's output ends: the shims (ours and containerd's Go shim) close the container's
//! stdin (or its terminal) once the FIFO's last writer goes, and the daemon, which holds it
//! too, may be SIGKILLed; the logger lives with the container. With `flush 1` (a terminal) an
//! unfinished line is written as a partial record as soon as it arrives, so a prompt shows.
//!
//! Shims turn the URI's query into arguments in map order (containerd's Go shim in random
//! order), so every setting is a `key value` pair and the pairs are read in any order.

pub(crate) mod cri_log;

use crate::output::time;
use cri_log::{Stream, MAX_CONTENT};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tether_protocol::time::now_nanos;

/// The query key that marks a logger invocation.
const MARK: &str = "tether-log-driver";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub path: PathBuf,
    pub max_size: u64,
    pub max_files: u32,
    /// The container's stdin FIFO, held open (see above).
    pub stdin: Option<PathBuf>,
    /// Write unfinished lines at once (a terminal's prompt).
    pub flush: bool,
}

/// What the logger does besides writing `dir`'s log file.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    pub stdin: Option<&'a Path>,
    pub flush: bool,
}

/// The `binary://` URI that makes a shim start this binary as the logger of `dir`'s container.
pub(crate) fn uri(exe: &Path, dir: &Path, max_size: u64, max_files: u32, extras: Extras) -> String {
    let mut u = format!(
        "binary://{}?{MARK}=1&path={}&max-size={max_size}&max-files={max_files}",
        exe.display(),
        dir.join(cri_log::FILE_NAME).display()
    );
    if let Some(p) = extras.stdin {
        u.push_str(&format!("&stdin={}", p.display()));
    }
    if extras.flush {
        u.push_str("&flush=1");
    }
    u
}

/// Whether a path can go into the URI unchanged (shims do not agree on percent-decoding).
pub(crate) fn uri_safe(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    })
}

/// The logger's options if `args` (without the program name) are a logger invocation.
pub(crate) fn invocation(args: &[String]) -> Option<Options> {
    if !args.len().is_multiple_of(2) {
        return None;
    }
    let pairs: HashMap<&str, &str> = args
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].as_str()))
        .collect();
    if pairs.get(MARK) != Some(&"1") {
        return None;
    }
    Some(Options {
        path: PathBuf::from(pairs.get("path")?),
        max_size: pairs.get("max-size")?.parse().ok()?,
        max_files: pairs.get("max-files")?.parse().ok()?,
        stdin: pairs.get("stdin").map(PathBuf::from),
        flush: pairs.get("flush") == Some(&"1"),
    })
}

/// The current file and its rotated predecessors (`container.log.1` the newest of them).
struct Writer {
    opts: Options,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Writer {
    fn open(opts: Options) -> std::io::Result<Writer> {
        let file = open_append(&opts.path)?;
        let size = file.metadata()?.len();
        Ok(Writer { opts, file, size })
    }

    /// Moves the current file to `.1` (older ones up, the oldest dropped) and starts a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        let path = &self.opts.path;
        if self.opts.max_files <= 1 {
            std::fs::remove_file(path)?;
        } else {
            for n in (1..self.opts.max_files - 1).rev() {
                match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(path, rotated(path, 1))?;
        }
        self.file = open_append(path)?;
        self.size = 0;
        Ok(())
    }

    /// Writes whole records, rotating before one that would pass the size bound.
    fn write_records(&mut self, records: &[Vec<u8>]) -> std::io::Result<()> {
        let mut batch = Vec::new();
        for r in records {
            let len = r.len() as u64;
            if self.size + (batch.len() as u64) + len > self.opts.max_size
                && self.size + batch.len() as u64 > 0
            {
                self.file.write_all(&batch)?;
                batch.clear();
                self.rotate()?;
            }
            batch.extend_from_slice(r);
        }
        self.file.write_all(&batch)?;
        self.size += batch.len() as u64;
        Ok(())
    }
}

/// One input stream and the part of a line it has not finished.
struct Input {
    file: Option<File>,
    stream: Stream,
    pending: Vec<u8>,
}

impl Input {
    /// Cuts what has arrived into records: whole lines, and `P` parts of over-long ones. At
    /// EOF the unfinished rest is a line of its own.
    /// With `flush`, the unfinished rest is a partial record.
    fn records(&mut self, timestamp: &str, eof: bool, flush: bool, out: &mut Vec<Vec<u8>>) {
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            let (end, partial, skip) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) if i <= MAX_CONTENT => (i, false, 1),
                _ if rest.len() > MAX_CONTENT => (MAX_CONTENT, true, 0),
                _ if eof && !rest.is_empty() => (rest.len(), false, 0),
                _ if flush && !rest.is_empty() => (rest.len(), true, 0),
                _ => break,
            };
            let mut rec = Vec::with_capacity(end + 48);
            cri_log::format(&mut rec, timestamp, self.stream, partial, &rest[..end]);
            out.push(rec);
            start += end + skip;
        }
        self.pending.drain(..start);
    }
}

/// Takes an inherited fd if it is open.
fn inherited(fd: RawFd) -> Option<File> {
    // SAFETY: F_GETFD only asks whether the fd is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the shim gave us this fd and nothing else in this process owns it.
    Some(unsafe { File::from_raw_fd(fd) })
}

/// Runs the logger until both streams end; the exit code for the shim's reaper.
pub(crate) fn run(opts: Options) -> i32 {
    let path = opts.path.clone();
    let ended = path.with_file_name(cri_log::ENDED_NAME);
    let mut writer = match Writer::open(opts) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("tether log driver: open {}: {e}", path.display());
            return 1;
        }
    };
    let _ = std::fs::remove_file(&ended);
    let flush = writer.opts.flush;
    // Held until we return (the container's output ended). O_RDWR: never blocks, and never
    // reads (we do not poll it).
    let _stdin = match writer.opts.stdin.clone() {
        Some(p) => match OpenOptions::new().read(true).write(true).open(&p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("tether log driver: hold {}: {e}", p.display());
                None
            }
        },
        None => None,
    };
    // containerd's Go shim closes the pipes and sends SIGTERM at once when the task is
    // deleted: what is still in the pipes must be written first, and EOF ends us anyway.
    // SAFETY: ignoring a signal installs no handler.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    // Ready: the shim may start the container.
    drop(inherited(5));
    let mut inputs = [
        Input {
            file: inherited(3),
            stream: Stream::Stdout,
            pending: Vec::new(),
        },
        Input {
            file: inherited(4),
            stream: Stream::Stderr,
            pending: Vec::new(),
        },
    ];
    let mut buf = vec![0u8; 64 * 1024];
    let mut failed = false;
    loop {
        let mut fds: Vec<libc::pollfd> = inputs
            .iter()
            .filter_map(|i| i.file.as_ref())
            .map(|f| libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(f),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if fds.is_empty() {
            break;
        }
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!(
                "tether log driver: poll: {}",
                std::io::Error::last_os_error()
            );
            return 1;
        }
        let mut records = Vec::new();
        let timestamp = time(now_nanos());
        for input in inputs.iter_mut() {
            let Some(f) = input.file.as_mut() else {
                continue;
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(f);
            let ready = fds.iter().any(|p| p.fd == fd && p.revents != 0);
            if !ready {
                continue;
            }
            let eof = match f.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    input.pending.extend_from_slice(&buf[..n]);
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                Err(_) => true,
            };
            input.records(&timestamp, eof, flush, &mut records);
            if eof {
                input.file = None;
            }
        }
        if let Err(e) = writer.write_records(&records) {
            // Keep draining so the container never blocks on its output; say it once.
            if !failed {
                eprintln!("tether log driver: write {}: {e}", path.display());
                failed = true;
            }
        }
    }
    if let Err(e) = writer
        .file
        .sync_all()
        .and_then(|()| File::create(&ended).map(drop))
    {
        eprintln!("tether log driver: finish {}: {e}", path.display());
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn invocation_reads_pairs_in_any_order() {
        let want = Options {
            path: "/s/c.log".into(),
            max_size: 10,
            max_files: 2,
            stdin: None,
            flush: false,
        };
        let a = args(&[
            "max-files",
            "2",
            MARK,
            "1",
            "path",
            "/s/c.log",
            "max-size",
            "10",
        ]);
        assert_eq!(invocation(&a), Some(want));
        assert_eq!(invocation(&args(&["run", "-d"])), None);
        assert_eq!(invocation(&args(&[MARK, "1", "path"])), None);
    }

    #[test]
    fn the_uri_query_is_the_invocation() {
        let extras = Extras {
            stdin: Some(Path::new("/s/ns/c/stdin")),
            flush: true,
        };
        let u = uri(Path::new("/bin/tether"), Path::new("/s/ns/c"), 5, 3, extras);
        let (_, q) = u.split_once('?').expect("query");
        let a: Vec<String> = q
            .split('&')
            .flat_map(|p| {
                p.split_once('=')
                    .map(|(k, v)| [k.to_string(), v.to_string()])
            })
            .flatten()
            .collect();
        let o = invocation(&a).expect("an invocation");
        assert_eq!(o.path, Path::new("/s/ns/c/container.log"));
        assert_eq!((o.max_size, o.max_files), (5, 3));
        assert_eq!(o.stdin.as_deref(), Some(Path::new("/s/ns/c/stdin")));
        assert!(o.flush);
    }

    #[test]
    fn lines_become_records() {
        let mut i = Input {
            file: None,
            stream: Stream::Stdout,
            pending: b"a\nbc".to_vec(),
        };
        let mut out = Vec::new();
        i.records("T", false, false, &mut out);
        assert_eq!(out, vec![b"T stdout F a\n".to_vec()]);
        i.pending.extend_from_slice(&vec![b'x'; MAX_CONTENT]);
        out.clear();
        i.records("T", true, false, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with(b"T stdout P bcx"));
        assert_eq!(out[1], b"T stdout F xx\n".to_vec());
        assert!(i.pending.is_empty());
        i.pending.extend_from_slice(b"$ ");
        out.clear();
        i.records("T", false, true, &mut out);
        assert_eq!(out, vec![b"T stdout P $ \n".to_vec()]);
    }

    #[test]
    fn rotation_keeps_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("container.log");
        let mut w = Writer::open(Options {
            path: path.clone(),
            max_size: 100,
            max_files: 3,
            stdin: None,
            flush: false,
        })
        .expect("open");
        for n in 0..50 {
            w.write_records(&[format!("record {n:03} .........................\n").into_bytes()])
                .expect("write");
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(read(p.clone()).len() <= 100, "{}", p.display());
        }
        assert!(!rotated(&path, 3).exists());
        let all = read(rotated(&path, 2)) + &read(rotated(&path, 1)) + &read(path);
        assert!(
            all.ends_with("record 049 .........................\n"),
            "{all}"
        );
        assert!(all.starts_with("record 04"), "{all}");
    }
}
