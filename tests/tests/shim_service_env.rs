//! containerd as a systemd service (`Type=notify`): its environment holds `NOTIFY_SOCKET` and the
//! other variables a service manager sets for its service alone. Handed on to runc,
//! `NOTIFY_SOCKET` makes `runc start` wait for the container to send `READY=1`, so a
//! long-running container never starts. Here containerd gets them all, `NOTIFY_SOCKET` naming a
//! datagram socket the test owns: the container starts, nothing but containerd itself writes to
//! that socket, and neither the shim nor the container holds any of them.

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt::PassCred, ControlMessageOwned, MsgFlags, UnixAddr,
};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use tether_protocol::service_env::SERVICE_MANAGER_VARS;
use tether_tests::containerd::Options;
use tether_tests::shimtest::{finish, sleeper};
use tether_tests::{unique_id, Containerd};

/// The messages on `sock` so far, each with its sender's pid.
fn received(sock: &UnixDatagram) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let msg = match recvmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return out,
            Err(e) => panic!("recvmsg on the notify socket: {e}"),
        };
        let pid = msg
            .cmsgs()
            .expect("control messages")
            .find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                _ => None,
            })
            .expect("the sender's credentials (SO_PASSCRED)");
        let len = msg.bytes;
        out.push((pid, String::from_utf8_lossy(&buf[..len]).into_owned()));
    }
}

/// `/proc/PID/environ`'s variable names.
fn environ_names(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/environ: {e}"));
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=').map_or(&*kv, |(k, _)| k).to_string()
        })
        .collect()
}

#[test]
fn service_manager_variables_reach_neither_runtime_nor_container() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    setsockopt(&sock, PassCred, &true).expect("SO_PASSCRED");
    let mut env: Vec<(String, String)> = SERVICE_MANAGER_VARS
        .iter()
        .map(|v| (v.to_string(), "1".to_string()))
        .collect();
    env.retain(|(k, _)| k != "NOTIFY_SOCKET");
    env.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    let cd = Containerd::start_with(Options {
        env,
        ..Options::default()
    });
    let ctr = cd.ctr(&unique_id("ns"));

    // Before the runtime was shielded, `runc start` waited for READY=1 until the shim's
    // deadline and the container stayed CREATED.
    let id = sleeper(&ctr);
    let task = ctr.task(&id).expect("the task is listed");
    assert_eq!(task.status, "RUNNING", "{task:?}");

    let containerd = cd.pid().expect("containerd's pid");
    let others: Vec<_> = received(&sock)
        .into_iter()
        .filter(|(pid, _)| *pid != containerd)
        .collect();
    assert!(
        others.is_empty(),
        "a process other than containerd wrote to its NOTIFY_SOCKET: {others:?}"
    );
    let shims = cd.shim_pids();
    assert!(!shims.is_empty(), "no shim runs for {id}");
    let init = task.pid as i32;
    for pid in shims.into_iter().chain([init]) {
        let names = environ_names(pid);
        let leaked: Vec<_> = SERVICE_MANAGER_VARS
            .iter()
            .filter(|v| names.iter().any(|n| n == *v))
            .collect();
        assert!(
            leaked.is_empty(),
            "pid {pid} (a shim or the container) has the service's {leaked:?}"
        );
    }
    finish(cd, &[&id]);
}
