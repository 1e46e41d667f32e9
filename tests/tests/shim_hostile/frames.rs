//! Rows about frames and connections: broken frames, floods, idle connections.

use super::*;

/// Writes `bytes` on a fresh connection, half-closes it if `hang_up`, and reports whether the
/// shim closed it.
pub fn send_and_watch(t: &Target, bytes: &[u8], hang_up: bool) -> Got {
    let mut s = rawttrpc::connect(&t.address, T);
    // The shim may close before taking it all; what it does then is the point.
    let _ = s.write_all(bytes);
    if hang_up {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    if rawttrpc::is_closed(&mut s) {
        Closed
    } else {
        Got::Failed(format!("the connection stayed open for {T:?}"))
    }
}

/// Rows about frames and connections.
pub fn frames_and_connections() -> Vec<Row> {
    use Setup::*;
    let row = |name, setup, call, expect| Row {
        name,
        setup,
        call,
        expect,
    };
    vec![
        row(
            "a frame whose payload is not a ttrpc Request",
            Shared,
            |t| {
                let mut s = rawttrpc::connect(&t.address, T);
                let _ = s.write_all(&rawttrpc::frame(1, rawttrpc::REQUEST, 32, &[0xff; 32]));
                match rawttrpc::try_read_response(&mut s) {
                    Ok((_, res)) => Got::Code(res.status.code()),
                    Err(e) => Got::Failed(e),
                }
            },
            &[INVALID],
        ),
        // Go's ttrpc refuses even stream ids: client streams are odd.
        row(
            "a request on an even stream id",
            Shared,
            |t| {
                let mut s = rawttrpc::connect(&t.address, T);
                let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
                let _ = s.write_all(&request_frame(2, TASK_SERVICE_V2, "State", payload, T));
                match rawttrpc::try_read_response(&mut s) {
                    Ok((2, res)) => Got::Code(res.status.code()),
                    Ok((n, _)) => Got::Failed(format!("answered on stream {n}")),
                    Err(e) => Got::Failed(e),
                }
            },
            &[INVALID],
        ),
        row(
            "a frame cut short, then hang up",
            Shared,
            |t| {
                send_and_watch(
                    t,
                    &rawttrpc::frame(1, rawttrpc::REQUEST, 100, &[0u8; 10]),
                    true,
                )
            },
            &[Closed],
        ),
        row(
            "half a header, then hang up",
            Shared,
            |t| send_and_watch(t, &[0, 0, 0], true),
            &[Closed],
        ),
        row(
            "a frame declaring more than 4 MiB",
            Shared,
            |t| {
                send_and_watch(
                    t,
                    &rawttrpc::frame(5, rawttrpc::REQUEST, 0xffff_fff0, &[0u8; 64]),
                    false,
                )
            },
            &[Closed],
        ),
        row(
            "a frame declaring 4 MiB + 1",
            Shared,
            |t| {
                send_and_watch(
                    t,
                    &rawttrpc::frame(5, rawttrpc::REQUEST, (4 << 20) + 1, &[0u8; 64]),
                    false,
                )
            },
            &[Closed],
        ),
        row(
            "4 KiB of noise, then hang up",
            Shared,
            |t| {
                let noise: Vec<u8> = (0..4096u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                send_and_watch(t, &noise, true)
            },
            &[Closed],
        ),
        row(
            "a stray response frame, then a State on the same connection",
            Shared,
            |t| {
                let mut s = rawttrpc::connect(&t.address, T);
                let _ = s.write_all(&rawttrpc::frame(7, rawttrpc::RESPONSE, 4, &[1, 2, 3, 4]));
                let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
                let _ = s.write_all(&request_frame(9, TASK_SERVICE_V2, "State", payload, T));
                match rawttrpc::try_read_response(&mut s) {
                    Ok((9, res)) => Got::Code(res.status.code()),
                    Ok((n, _)) => Got::Failed(format!("answered on stream {n}")),
                    Err(e) => Got::Failed(e),
                }
            },
            &[OK],
        ),
        row(
            "a client that sends 10,000 requests and never reads",
            Running,
            flood,
            &[OK],
        ),
        row(
            "1,000 idle connections, then a State",
            Running,
            idle_connections,
            &[OK, Closed],
        ),
    ]
}

/// The shim's resident set, in KiB.
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How much a shim may grow while a peer never reads its replies.
pub const FLOOD_GROWTH_KIB: u64 = 64 * 1024;

/// 10,000 State requests on one connection that is never read: meanwhile another client's
/// State answers, and the shim's memory stays bounded. `OK` when both hold.
pub fn flood(t: &Target) -> Got {
    let before = vm_rss_kib(t.shim_pid).unwrap_or(0);
    let mut s = rawttrpc::connect(&t.address, T);
    s.set_write_timeout(Some(T)).expect("write timeout");
    let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
    let one = request_frame(1, TASK_SERVICE_V2, "State", payload.clone(), T);
    let mut sent = 0u32;
    for i in 0..10_000u32 {
        let mut f = one.clone();
        f[4..8].copy_from_slice(&(2 * i + 1).to_be_bytes());
        // The shim may stop reading (backpressure) or drop us (an output bound): both are fine.
        if s.write_all(&f).is_err() {
            break;
        }
        sent += 1;
    }
    let other = raw(t, TASK_SERVICE_V2, "State", payload, T);
    let after = vm_rss_kib(t.shim_pid).unwrap_or(u64::MAX);
    drop(s);
    if other != OK {
        return Got::Failed(format!(
            "State on another connection, after {sent} unread requests: {other:?}"
        ));
    }
    let grew = after.saturating_sub(before);
    if grew >= FLOOD_GROWTH_KIB {
        return Got::Failed(format!(
            "VmRSS grew from {before} to {after} KiB over {sent} unread requests"
        ));
    }
    eprintln!("flood: {sent} requests sent, shim VmRSS {before} -> {after} KiB");
    OK
}

/// 1,000 connections that say nothing; then State on the 1,001st answers (`OK`), or the shim
/// refuses that connection cleanly (`Closed`, at its connection bound).
pub fn idle_connections(t: &Target) -> Got {
    // Room for 1,000 sockets (the soft limit may be lower than the hard one).
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let path = tether_protocol::socket::from_address(&t.address).expect("a unix:// address");
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000 {
        match UnixStream::connect(&path) {
            Ok(s) => idle.push(s),
            Err(e) => return Got::Failed(format!("idle connection {i}: {e}")),
        }
    }
    let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
    let mut s = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if e.raw_os_error() == Some(libc::ECONNREFUSED)
                || e.raw_os_error() == Some(libc::EAGAIN) =>
        {
            return Closed
        }
        Err(e) => return Got::Failed(format!("connection 1,001: {e}")),
    };
    s.set_read_timeout(Some(T)).expect("read timeout");
    let got = match s.write_all(&request_frame(1, TASK_SERVICE_V2, "State", payload, T)) {
        Err(_) => Closed,
        Ok(()) => match rawttrpc::try_read_response(&mut s) {
            Ok((1, res)) => Got::Code(res.status.code()),
            Ok((n, _)) => Got::Failed(format!("answered on stream {n}")),
            Err(e) if rawttrpc::is_closed(&mut s) => {
                eprintln!("connection 1,001 refused: {e}");
                Closed
            }
            Err(e) => Got::Failed(e),
        },
    };
    drop(idle);
    got
}
