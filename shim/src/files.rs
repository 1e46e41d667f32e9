//! Files a request names (a runtime config, a `file://` log) or a runtime writes (runc's
//! `log.json`), opened and read without letting them stall the loop: `O_NONBLOCK` (a FIFO with
//! no peer would block `open(2)` forever), regular files only (a FIFO, a device or a socket is
//! refused; a log may also be /dev/null), and reads bounded (`/dev/zero` or a huge log cannot
//! eat the shim's memory).

use crate::error::{Result, ShimError};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` without blocking and checks it is a regular file.
fn open_regular(path: &Path, opts: &mut std::fs::OpenOptions, what: &str) -> Result<File> {
    open_checked(path, opts, what, false)
}

/// The null device (character device 1:3), whatever its path: writes to it never block.
fn is_null_device(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3)
}

/// Opens `path` without blocking and checks it is a regular file (or, with `null_ok`, the
/// null device).
fn open_checked(
    path: &Path,
    opts: &mut std::fs::OpenOptions,
    what: &str,
    null_ok: bool,
) -> Result<File> {
    let f = opts
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(ShimError::io(format!("open {what} {}", path.display())))?;
    let meta = f
        .metadata()
        .map_err(ShimError::io(format!("stat {what} {}", path.display())))?;
    if !(meta.file_type().is_file() || null_ok && is_null_device(&meta)) {
        return Err(ShimError::InvalidArgument(format!(
            "{what} {} is not a regular file{}",
            path.display(),
            if null_ok { " or /dev/null" } else { "" }
        )));
    }
    Ok(f)
}

/// The whole of a regular file at most `max` bytes long; a longer one is refused.
pub fn read_regular(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let f = open_regular(path, std::fs::OpenOptions::new().read(true), what)?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ShimError::io(format!("read {what} {}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(ShimError::InvalidArgument(format!(
            "{what} {} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A regular file opened (created if need be) for writing at its end, or the null device
/// (`file:///dev/null` throws the output away, as containerd's shim lets it).
pub fn open_append(path: &Path, what: &str) -> Result<File> {
    let mut f = open_checked(
        path,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false),
        what,
        true,
    )?;
    f.seek(SeekFrom::End(0))
        .map_err(ShimError::io(format!("seek {what} {}", path.display())))?;
    Ok(f)
}

/// The last `max` bytes of a regular file (all of it when shorter), from a line start when
/// the cut falls inside a line.
pub fn read_tail(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut f = open_regular(path, std::fs::OpenOptions::new().read(true), what)?;
    let len = f
        .metadata()
        .map_err(ShimError::io(format!("stat {what} {}", path.display())))?
        .len();
    let from = len.saturating_sub(max);
    f.seek(SeekFrom::Start(from))
        .map_err(ShimError::io(format!("seek {what} {}", path.display())))?;
    let mut bytes = Vec::new();
    f.take(max)
        .read_to_end(&mut bytes)
        .map_err(ShimError::io(format!("read {what} {}", path.display())))?;
    if from > 0 {
        let start = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..start);
    }
    Ok(bytes)
}

/// For tests: calls that must return at once although a FIFO has no peer.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on a thread; a call still blocked after 5 s fails the test (after `unblock`
    /// released the thread).
    pub fn must_not_block<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
        unblock: impl FnOnce(),
    ) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(v) => v,
            Err(_) => {
                unblock();
                panic!("the call blocked");
            }
        }
    }

    /// A FIFO named `name` in `dir`.
    pub fn fifo(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        p
    }

    /// Opens the other end of `fifo` (non-blocking), which releases a blocked open.
    pub fn open_peer(fifo: &Path, write: bool) -> impl FnOnce() {
        use std::os::unix::fs::OpenOptionsExt;
        let p = fifo.to_path_buf();
        move || {
            let f = std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .custom_flags(libc::O_NONBLOCK)
                .open(&p);
            // Held a moment so the blocked side sees its peer.
            std::thread::sleep(Duration::from_millis(100));
            drop(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn a_fifo_with_no_peer_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = fifo(dir.path(), "fifo");
        let q = p.clone();
        let r = must_not_block(
            move || read_regular(&q, 1024, "config").map(|_| ()),
            open_peer(&p, true),
        );
        let e = r.expect_err("a FIFO is not a config file");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let q = p.clone();
        let r = must_not_block(
            move || open_append(&q, "log file").map(|_| ()),
            open_peer(&p, false),
        );
        assert!(r.is_err(), "a FIFO is not a log file");
    }

    #[test]
    fn devices_and_long_files_are_refused() {
        let e = read_regular(Path::new("/dev/zero"), 1024, "config").expect_err("/dev/zero");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 2000]).expect("write");
        let e = read_regular(&p, 1024, "config").expect_err("too long");
        assert!(e.to_string().contains("larger than 1024"), "{e}");
        assert_eq!(read_regular(&p, 2000, "config").expect("fits").len(), 2000);
    }

    #[test]
    fn a_log_may_be_the_null_device_and_no_other() {
        open_append(Path::new("/dev/null"), "log file").expect("/dev/null takes output");
        let e = open_append(Path::new("/dev/zero"), "log file").expect_err("/dev/zero");
        assert!(
            e.to_string().contains("not a regular file or /dev/null"),
            "{e}"
        );
        let e = read_regular(Path::new("/dev/null"), 1024, "config").expect_err("config");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn the_tail_starts_at_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log.json");
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&p, &text).expect("write");
        let tail = String::from_utf8(read_tail(&p, 64, "log").expect("tail")).expect("utf8");
        assert!(tail.ends_with("line 999\n"), "{tail}");
        assert!(tail.starts_with("line "), "{tail}");
        assert!(tail.len() <= 64);
        let all = read_tail(&p, 1 << 20, "log").expect("all");
        assert_eq!(all, text.as_bytes());
    }
}
