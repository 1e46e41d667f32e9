//! The system side of a handover: the memfd that carries the record, the close-on-exec flags of
//! the fds it names, and the two `exec`s (the new binary by path; back to the old one by fd).

use super::record::Record;
use crate::error::{Result, ShimError};
use nix::fcntl::{fcntl, AtFlags, FcntlArg, FdFlag, OFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// CLOCK_MONOTONIC in nanoseconds: the same clock before and after `execve`.
pub fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// The running binary, held open: if the file at its path is replaced, this fd still reaches
/// the old inode, which a failed handover executes again.
pub fn open_self_exe() -> Result<OwnedFd> {
    nix::fcntl::open(
        "/proc/self/exe",
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(ShimError::nix("open /proc/self/exe"))
}

/// Sets or clears FD_CLOEXEC on `fds`; the first failure names its fd.
pub fn set_cloexec(fds: &[RawFd], on: bool) -> Result<()> {
    for &fd in fds {
        // SAFETY: the fd is one the record names, open for the whole call.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags =
            fcntl(b, FcntlArg::F_GETFD).map_err(ShimError::nix(format!("fd {fd}: F_GETFD")))?;
        let mut flags = FdFlag::from_bits_truncate(flags);
        flags.set(FdFlag::FD_CLOEXEC, on);
        fcntl(b, FcntlArg::F_SETFD(flags)).map_err(ShimError::nix(format!("fd {fd}: F_SETFD")))?;
    }
    Ok(())
}

/// The record in a fresh memfd (close-on-exec until the handover clears it).
pub fn write_record(record: &Record) -> Result<OwnedFd> {
    let bytes = serde_json::to_vec(record)
        .map_err(|e| ShimError::InvalidArgument(format!("encode the handover record: {e}")))?;
    let fd = memfd_create("tether-handover", MFdFlags::MFD_CLOEXEC)
        .map_err(ShimError::nix("memfd_create"))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(&bytes)
        .map_err(ShimError::io("write the handover record"))?;
    Ok(OwnedFd::from(f))
}

/// Reads the bytes of the record the previous image left in `fd` (taken: closed by the caller
/// when done).
pub fn read_record(fd: RawFd) -> Result<(Vec<u8>, OwnedFd)> {
    // SAFETY: `-resume-from` names the memfd the previous image handed over, owned by nobody else.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_end(&mut bytes))
        .map_err(ShimError::io(format!("read the handover record (fd {fd})")))?;
    Ok((bytes, OwnedFd::from(f)))
}

/// The record, decoded.
pub fn parse_record(bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes)
        .map_err(|e| ShimError::InvalidArgument(format!("handover record: {e}")))
}

/// The old binary's fd from a record this image cannot decode (a later version's, say): all a
/// fallback needs, read from any record that is JSON at all.
pub fn fallback_exe_of(bytes: &[u8]) -> Option<RawFd> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("fallback_exe")?.as_i64()?.try_into().ok()
}

fn cstrings(args: &[String]) -> Result<Vec<CString>> {
    args.iter()
        .map(|a| {
            CString::new(a.as_bytes())
                .map_err(|_| ShimError::InvalidArgument(format!("argument {a:?} holds a NUL")))
        })
        .collect()
}

fn environment() -> Vec<CString> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}

/// Executes the checked binary open as `exe` (from `binary`) with `args` (argv[0] first).
/// Returns only on failure. A script (`#!`) is run by its interpreter through
/// `/proc/self/fd/N`, which needs the fd to survive the exec: only then is close-on-exec
/// cleared (an ELF binary leaves nothing behind).
pub fn exec_checked(exe: &OwnedFd, binary: &Path, args: &[String]) -> ShimError {
    let run = || -> Result<std::convert::Infallible> {
        let argv = cstrings(args)?;
        let env = environment();
        let fd = exe.as_fd();
        match nix::unistd::execveat(fd, c"", &argv, &env, AtFlags::AT_EMPTY_PATH) {
            Err(nix::errno::Errno::ENOENT) => {
                set_cloexec(&[exe.as_raw_fd()], false)?;
                nix::unistd::execveat(fd, c"", &argv, &env, AtFlags::AT_EMPTY_PATH)
            }
            other => other,
        }
        .map_err(ShimError::nix(format!("execveat {}", binary.display())))
    };
    match run() {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// Executes the binary open as `exe` (`execveat(fd, "", AT_EMPTY_PATH)`). Returns only on failure.
pub fn exec_fd(exe: RawFd, args: &[String]) -> ShimError {
    let run = || -> Result<std::convert::Infallible> {
        let argv = cstrings(args)?;
        // SAFETY: `exe` is the O_PATH fd of the old binary the record names, open here.
        let fd = unsafe { BorrowedFd::borrow_raw(exe) };
        nix::unistd::execveat(fd, c"", &argv, &environment(), AtFlags::AT_EMPTY_PATH).map_err(
            ShimError::nix(format!("execveat the old binary (fd {})", fd.as_raw_fd())),
        )
    };
    match run() {
        Err(e) => e,
        Ok(never) => match never {},
    }
}
