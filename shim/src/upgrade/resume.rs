//! The new image's side of a live upgrade: the record read back, every fd checked, the loop
//! rebuilt around them (fresh epoll, same tokens), the reaper re-armed, and the upgrade
//! answered. An image that cannot resume goes back to the old binary with the same record.

use super::exec;
use super::record::{Record, RECORD_VERSION};
use crate::cli::Flags;
use crate::error::{Result, ShimError};
use crate::events::Publisher;
use crate::reaper::Reaper;
use crate::server::{self, Server};
use crate::signals::Signals;
use crate::stdio::Pumps;
use crate::task::{Exported, ReplyTo, Service};
use crate::wire::Conn;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use tether_protocol::admin::UpgradeResponse;

/// Set in a new image's environment, it refuses to resume (the tests' way to exercise the
/// fallback to the old binary); the old image never reads it.
pub const FAIL_RESUME_ENV: &str = "TETHER_SHIM_TEST_FAIL_RESUME";
/// Set to a directory in a new image's environment, it stops before its first reap (making
/// `DIR/resume-paused`) until `DIR/resume-go` exists, at most `TEST_PAUSE_MAX`: the tests'
/// way to make a container exit during the handover. The old image never reads it.
pub const PAUSE_RESUME_ENV: &str = "TETHER_SHIM_TEST_PAUSE_RESUME";
const TEST_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Set to a field name in a new image's environment, it drops that field from the record
/// before decoding it (as a newer binary expecting a field the old one never wrote would
/// find it missing): the tests' way to exercise a record this image cannot read. The old
/// image never reads it.
pub const DROP_RECORD_FIELD_ENV: &str = "TETHER_SHIM_TEST_DROP_RECORD_FIELD";

/// `-resume-from FD`: serve on from the record, or fall back to the old binary.
pub fn resume(flags: &Flags, fd: i32) -> Result<()> {
    let (bytes, memfd) = exec::read_record(fd)?;
    let record = match decode(&bytes, flags) {
        Ok(r) => r,
        // Undecodable: the old binary's fd is all a fallback needs, and the fds the record
        // names are still inheritable (nothing here touched them).
        Err(why) => {
            let Some(exe) = exec::fallback_exe_of(&bytes) else {
                return Err(why);
            };
            return Err(fall_back(exe, &[], &memfd, flags, why));
        }
    };
    if let Err(why) = check(&record, flags) {
        return Err(fall_back(
            record.fallback_exe,
            &record.fds(),
            &memfd,
            flags,
            why,
        ));
    }
    // They crossed `execve` inheritable; the commands this image runs must not get them.
    let mut fds = record.fds();
    fds.push(memfd.as_raw_fd());
    exec::set_cloexec(&fds, true)?;
    let server = build(record, flags)?;
    drop(memfd);
    log::info!("shim resumed after an upgrade (pid {})", std::process::id());
    server.run()
}

/// The record, decoded (`DROP_RECORD_FIELD_ENV` first, for the tests).
fn decode(bytes: &[u8], flags: &Flags) -> Result<Record> {
    let test_drop = std::env::var(DROP_RECORD_FIELD_ENV).ok();
    match test_drop.filter(|_| flags.fallback_reason.is_none()) {
        Some(field) => {
            let mut v: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| ShimError::InvalidArgument(format!("handover record: {e}")))?;
            if let Some(o) = v.as_object_mut() {
                o.remove(&field);
            }
            let bytes = serde_json::to_vec(&v)
                .map_err(|e| ShimError::InvalidArgument(format!("handover record: {e}")))?;
            exec::parse_record(&bytes)
        }
        None => exec::parse_record(bytes),
    }
}

/// What must hold before any fd is taken: past this point a failure cannot go back.
fn check(record: &Record, flags: &Flags) -> Result<()> {
    if record.record_version != RECORD_VERSION {
        return Err(ShimError::InvalidArgument(format!(
            "record version {} (this binary reads {RECORD_VERSION})",
            record.record_version
        )));
    }
    if flags.fallback_reason.is_none() && std::env::var_os(FAIL_RESUME_ENV).is_some() {
        return Err(ShimError::FailedPrecondition(format!(
            "{FAIL_RESUME_ENV} is set"
        )));
    }
    for fd in record.fds() {
        // SAFETY: only asks whether the fd is open.
        fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_GETFD).map_err(ShimError::nix(
            format!("fd {fd} named by the handover record"),
        ))?;
    }
    Ok(())
}

/// Executes the old binary again with the same record; returns only if that fails too (or
/// this already is the old binary coming back).
fn fall_back(
    fallback_exe: i32,
    record_fds: &[i32],
    memfd: &OwnedFd,
    flags: &Flags,
    why: ShimError,
) -> ShimError {
    if let Some(first) = &flags.fallback_reason {
        return ShimError::FailedPrecondition(format!(
            "cannot resume ({why}) after the new image failed ({first})"
        ));
    }
    log::error!("upgrade: cannot resume ({why}): back to the old binary");
    let mut fds = record_fds.to_vec();
    fds.push(memfd.as_raw_fd());
    if let Err(e) = exec::set_cloexec(&fds, false) {
        return e;
    }
    std::env::remove_var(FAIL_RESUME_ENV);
    std::env::remove_var(DROP_RECORD_FIELD_ENV);
    let mut argv = vec!["containerd-shim-tether-v2".to_string()];
    argv.extend(flags.serve_args());
    argv.extend([
        "-resume-from".to_string(),
        memfd.as_raw_fd().to_string(),
        "-fallback-reason".to_string(),
        why.to_string(),
    ]);
    exec::exec_fd(fallback_exe, &argv)
}

/// `PAUSE_RESUME_ENV`: a test holds this image before its first reap.
fn test_pause() {
    let Some(dir) = std::env::var_os(PAUSE_RESUME_ENV).map(std::path::PathBuf::from) else {
        return;
    };
    std::env::remove_var(PAUSE_RESUME_ENV);
    if let Err(e) = std::fs::write(dir.join("resume-paused"), b"") {
        log::warn!("{PAUSE_RESUME_ENV}: {e}");
        return;
    }
    let until = std::time::Instant::now() + TEST_PAUSE_MAX;
    while !dir.join("resume-go").exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The loop around the handed-over fds. The fds are taken here: an error leaves the shim
/// unable to serve (it exits; its containers keep running, as after any shim death).
fn build(record: Record, flags: &Flags) -> Result<Server> {
    server::raise_nofile();
    let poll = Poll::new().map_err(ShimError::io("epoll_create"))?;
    let registry = poll.registry();
    // SAFETY: the record names the listening socket the old image served on; ours alone now.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(record.listener) };
    let mut listener = mio::net::UnixListener::from_std(std_listener);
    registry
        .register(&mut listener, server::LISTENER, Interest::READABLE)
        .map_err(ShimError::io("register listener"))?;
    let signals = Signals::catch(&[Signal::SIGTERM, Signal::SIGINT])?;
    registry
        .register(
            &mut SourceFd(&signals.fd()),
            server::SIGNALS,
            Interest::READABLE,
        )
        .map_err(ShimError::io("register signals"))?;
    let reaper = Reaper::new()?;
    registry
        .register(
            &mut SourceFd(&reaper.fd()),
            server::SIGCHLD,
            Interest::READABLE,
        )
        .map_err(ShimError::io("register SIGCHLD"))?;
    let clone = || registry.try_clone().map_err(ShimError::io("dup epoll fd"));
    let pumps = Pumps::import(clone()?, record.pumps, record.next_pump)?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").ok();
    let mut publisher = Publisher::new(ttrpc_address.as_deref(), &record.namespace, server::EVENTS);
    publisher.import(record.events, registry)?;
    let mut service = Service::new(&record.namespace, reaper, pumps, publisher, clone()?);
    service.import(Exported {
        containers: record.containers,
        waiters: record.waiters,
        ooms: record.ooms,
        next_oom: record.next_oom,
        unclaimed: record.unclaimed,
        deferred: record.deferred,
    })?;
    let mut conns = HashMap::new();
    for c in record.conns {
        // SAFETY: the record names a client connection the old image held; ours alone now.
        let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(c.fd) };
        let mut stream = mio::net::UnixStream::from_std(std_stream);
        registry
            .register(
                &mut stream,
                Token(c.token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(ShimError::io(format!("re-register connection fd {}", c.fd)))?;
        let mut conn = Conn::with_buffers(stream, c.inbuf, c.outbuf);
        conn.flush();
        conns.insert(Token(c.token), conn);
    }
    let binary = server::installed_binary()?;
    let self_exe = exec::open_self_exe()?;
    // The binary we came from: kept open only until we serve.
    // SAFETY: the record names the old image's O_PATH fd of its binary.
    drop(unsafe { OwnedFd::from_raw_fd(record.fallback_exe) });
    let to = record.reply.map(|r| ReplyTo {
        token: Token(r.token),
        stream_id: r.stream_id,
    });
    let answer = match &flags.fallback_reason {
        Some(why) => Err(ShimError::FailedPrecondition(format!(
            "upgrade refused: the new image failed after execve ({why}); the old one serves on"
        ))),
        None => Ok(tether_protocol::admin::encode(&UpgradeResponse {
            pid: std::process::id(),
            old_version: record.shim_version,
            new_version: env!("CARGO_PKG_VERSION").to_string(),
            binary: binary.to_string_lossy().into_owned(),
            took_micros: exec::monotonic_nanos().saturating_sub(record.requested_at) / 1000,
            handover_micros: exec::monotonic_nanos().saturating_sub(record.committed_at) / 1000,
        })),
    };
    service.answer_upgrade(to, answer);
    if flags.fallback_reason.is_none() {
        test_pause();
    }
    // Exits that came during the handover: their processes waited as zombies for us.
    service.reaper.reap();
    service.handle_exits();
    // Requests the old image deferred while it waited to be quiet, in their order.
    service.run_deferred();
    let socket_path = (!flags.socket.is_empty()).then(|| std::path::PathBuf::from(&flags.socket));
    Ok(Server {
        binary,
        self_exe,
        args: flags.serve_args(),
        poll,
        listener,
        socket_path,
        signals,
        conns,
        next_conn: record.next_conn,
        service,
    })
}
