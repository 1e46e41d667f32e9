//! `tether upgrade`: the daemon moves its running shims to the binary newly installed
//! at their path, in place, through each shim's admin `Upgrade`. Containers run on; shims keep
//! their pids; a binary that cannot take over is refused and the old code serves on; exits,
//! `Wait`s, events and output come through once, with the right codes, across upgrades and a
//! SIGKILL of the daemon.
//!
//! Each test's shim is a private copy, first on the daemon's PATH under its own runtime name
//! (`io.containerd.upgradable.v2`), so installing another binary there touches no other test.

use protobuf::Message;
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether_protocol::api::task::{StateRequest, StateResponse, WaitRequest, WaitResponse};
use tether_protocol::api::ttrpc;
use tether_protocol::task_service::{TaskCaller, TASK_SERVICE_V2};
use tether_tests::manager::{Daemon, RUNC_RUNTIME};
use tether_tests::shimdir::{exe_inode, ShimDir};
use tether_tests::{procs, rawttrpc, unique_id, wait_until};

mod stress;

const T: Duration = Duration::from_secs(60);
const RUNTIME: &str = "io.containerd.upgradable.v2";
const SHIM_NAME: &str = "containerd-shim-upgradable-v2";
/// Prints a line, then on SIGTERM another and exits 7.
const SCRIPT: &str = "trap 'echo after-upgrade; exit 7' TERM; echo before-upgrade; \
                      while true; do sleep 0.1; done";

/// A daemon whose shims run from a private copy of the shim binary in `bin`.
struct Setup {
    d: Daemon,
    bin: ShimDir,
    ns: String,
}

impl Setup {
    fn start() -> Setup {
        let bin = ShimDir::new(SHIM_NAME);
        let d = Daemon::start_env(&[], &[("PATH", &bin.path_env())]);
        Setup {
            d,
            bin,
            ns: unique_id("ns"),
        }
    }

    fn install(&self, contents: &[u8]) -> u64 {
        self.bin.install(contents)
    }

    fn install_shim(&self) -> u64 {
        self.bin.install_shim()
    }

    fn run(&self, id: &str, script: &str) -> i32 {
        self.d
            .run_detached(&self.ns, RUNTIME, id, &["/bin/sh", "-c", script])
    }

    fn tether(&self, args: &[&str]) -> tether_tests::CmdOutput {
        let mut all = vec!["--namespace", &self.ns];
        all.extend_from_slice(args);
        self.d.run(&all)
    }

    fn logs(&self, id: &str) -> String {
        let out = self.tether(&["logs", id]);
        assert!(out.success(), "tether logs {id}: {out}");
        out.stdout
    }

    fn wait_for_output(&self, id: &str, what: &str) {
        assert!(
            wait_until(T, || self.logs(id).contains(what)),
            "{id}: {what:?} never came: {:?}\n{}",
            self.logs(id),
            self.d.log()
        );
    }

    /// The shim process serving container `id`.
    fn shim_of(&self, id: &str) -> i32 {
        self.d
            .shim_pids()
            .into_iter()
            .find(|&p| {
                procs::cmdline(p).is_some_and(|a| a.windows(2).any(|w| w[0] == "-id" && w[1] == id))
            })
            .unwrap_or_else(|| panic!("no shim for {id}\n{}", self.d.log()))
    }

    /// The shim's socket, from the address it left in the container's directory.
    fn socket(&self, id: &str) -> PathBuf {
        let dir = self.d.state().join(&self.ns).join(id);
        let text = ["shim-address", "address"]
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .unwrap_or_else(|| panic!("no address file in {}", dir.display()));
        tether_protocol::socket::from_address(text.trim())
            .unwrap_or_else(|| panic!("not a unix address: {text:?}"))
    }

    fn state(&self, id: &str) -> Value {
        let out = self.tether(&["state", "--json", id]);
        assert!(out.success(), "tether state {id}: {out}");
        serde_json::from_str(&out.stdout).expect("state JSON")
    }

    /// The `/tasks/exit` events of this namespace in the journal: (container, status).
    fn journaled_exits(&self) -> Vec<(String, u32)> {
        tether_tests::manager::journaled_exits(&self.d.journal(), &self.ns)
            .into_iter()
            .map(|(_, e)| (e.container_id, e.exit_status))
            .collect()
    }
}

/// `ID: upgraded (OLD -> NEW, N ms)`: the id and whether the line says so.
fn upgraded_ids(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(": upgraded (") && l.contains(" -> ") && l.ends_with(" ms)"))
        .filter_map(|l| l.split(": ").next().map(str::to_string))
        .collect()
}

/// A `Wait` for the init, sent now on its own connection and answered when it exits.
fn park_wait(socket: &Path, id: &str) -> UnixStream {
    let mut conn = UnixStream::connect(socket).expect("connect to the shim");
    conn.set_read_timeout(Some(Duration::from_secs(180)))
        .expect("read timeout");
    let req = WaitRequest {
        id: id.to_string(),
        ..Default::default()
    };
    let payload = req.write_to_bytes().expect("encode Wait");
    let frame = rawttrpc::request_frame(1, TASK_SERVICE_V2, "Wait", payload, Duration::ZERO);
    std::io::Write::write_all(&mut conn, &frame).expect("send Wait");
    conn
}

/// The exit status a parked `Wait` answers.
fn parked_status(conn: &mut UnixStream) -> u32 {
    let (_, res) = rawttrpc::read_response(conn);
    assert!(
        res.status
            .as_ref()
            .is_none_or(|s| s.code() == ttrpc::Code::OK),
        "Wait: {:?}",
        res.status
    );
    WaitResponse::parse_from_bytes(&res.payload)
        .expect("a WaitResponse")
        .exit_status
}

/// One container and then all of them move to newly installed binaries: same pids, new
/// inodes, output and exit codes intact, each exit journaled once.
#[test]
fn tether_upgrade_moves_one_shim_then_all_in_place() {
    let s = Setup::start();
    let (a, b) = (unique_id("a"), unique_id("b"));
    for id in [&a, &b] {
        s.run(id, SCRIPT);
        s.wait_for_output(id, "before-upgrade");
    }
    let (pa, pb) = (s.shim_of(&a), s.shim_of(&b));
    let old = exe_inode(pa);
    let mut wait_a = park_wait(&s.socket(&a), &a);

    // One: only its shim moves.
    let new = s.install_shim();
    assert_ne!(new, old);
    let out = s.tether(&["upgrade", &a]);
    assert!(out.success(), "{out}\n{}", s.d.log());
    assert_eq!(upgraded_ids(&out.stdout), vec![a.clone()], "{out}");
    assert_eq!(exe_inode(pa), new, "the upgraded shim runs the new binary");
    assert_eq!(exe_inode(pb), old, "the other shim was not asked");

    // All (every namespace: the lines name it).
    let newer = s.install_shim();
    let out = s.d.run(&["upgrade"]);
    assert!(out.success(), "{out}\n{}", s.d.log());
    let mut ids = upgraded_ids(&out.stdout);
    ids.sort();
    let mut want = vec![format!("{}/{a}", s.ns), format!("{}/{b}", s.ns)];
    want.sort();
    assert_eq!(ids, want, "{out}");
    assert_eq!((s.shim_of(&a), s.shim_of(&b)), (pa, pb), "same shim pids");
    assert_eq!((exe_inode(pa), exe_inode(pb)), (newer, newer));

    // The containers exit after the upgrades: the codes, the output, each exit once.
    for id in [&a, &b] {
        assert_eq!(s.state(id)["status"], "RUNNING");
        assert!(s.tether(&["kill", id]).success());
        let w = s.tether(&["wait", id]);
        assert_eq!(w.code, 7, "tether wait {id}: {w}");
        assert_eq!(w.stdout.trim(), "7");
        assert_eq!(
            s.logs(id),
            "before-upgrade\nafter-upgrade\n",
            "each line once"
        );
    }
    assert_eq!(
        parked_status(&mut wait_a),
        7,
        "a Wait parked before both upgrades"
    );
    let mut exits = s.journaled_exits();
    exits.sort();
    let mut want = vec![(a.clone(), 7), (b.clone(), 7)];
    want.sort();
    assert_eq!(exits, want, "each exit journaled once, with its code");
    for id in [&a, &b] {
        assert!(s.tether(&["delete", id]).success());
    }
}

/// A binary that exits 1 is refused (exit 1, the reason named); the old code serves on and
/// the container's exit still reaches `tether wait` and the journal, once.
#[test]
fn a_broken_binary_is_refused_and_the_old_shim_serves_on() {
    let s = Setup::start();
    let id = unique_id("c");
    s.run(&id, SCRIPT);
    s.wait_for_output(&id, "before-upgrade");
    let pid = s.shim_of(&id);
    let old = exe_inode(pid);
    s.install(b"#!/bin/sh\necho 'not a shim'\nexit 1\n");

    let out = s.tether(&["upgrade", &id]);
    assert_eq!(out.code, 1, "{out}");
    let line = out.stdout.trim();
    assert!(
        line.starts_with(&format!("{id}: refused (")) && line.contains("not a shim"),
        "{out}"
    );
    // Also when every shim is asked.
    let out = s.tether(&["upgrade"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains(&format!("{id}: refused (")), "{out}");

    assert_eq!(s.shim_of(&id), pid);
    assert_eq!(exe_inode(pid), old, "still the old binary");
    assert_eq!(s.state(&id)["status"], "RUNNING");
    assert!(s.tether(&["kill", &id]).success());
    let w = s.tether(&["wait", &id]);
    assert_eq!(w.code, 7, "{w}");
    assert_eq!(s.logs(&id), "before-upgrade\nafter-upgrade\n");
    assert_eq!(
        s.journaled_exits(),
        [(id.clone(), 7)],
        "the exit journaled once"
    );
    assert!(s.tether(&["delete", &id]).success());
}

/// An id the daemon does not know is refused by name; the shim of a container that has
/// exited (it serves until the container is deleted) is upgraded, and still answers after.
#[test]
fn unknown_ids_are_refused_and_an_exited_containers_shim_moves_too() {
    let s = Setup::start();
    let done = unique_id("done");
    s.run(&done, "exit 3");
    assert_eq!(s.tether(&["wait", &done]).code, 3);
    let pid = s.shim_of(&done);
    let new = s.install_shim();
    let ghost = unique_id("ghost");
    let out = s.tether(&["upgrade", &ghost, &done]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains(&format!("{ghost}: refused (")) && out.stdout.contains("not found"),
        "{out}"
    );
    assert_eq!(upgraded_ids(&out.stdout), vec![done.clone()], "{out}");
    assert_eq!(exe_inode(pid), new);
    let st = s.state(&done);
    assert_eq!(
        (&st["status"], &st["exit_status"]),
        (&"EXITED".into(), &3.into())
    );
    assert_eq!(
        s.tether(&["wait", &done]).code,
        3,
        "the exit, after the upgrade"
    );
    assert!(s.tether(&["delete", &done]).success());
    assert_eq!(s.journaled_exits(), [(done.clone(), 3)]);
}

/// containerd's own shim has no live upgrade: asked for every shim, `tether upgrade` skips it
/// (and succeeds, ours upgraded); named, it is refused.
#[test]
fn another_runtimes_shim_is_skipped_unless_named() {
    let s = Setup::start();
    let (ours, go) = (unique_id("ours"), unique_id("go"));
    s.run(&ours, SCRIPT);
    s.d.run_detached(&s.ns, RUNC_RUNTIME, &go, &["/bin/sh", "-c", SCRIPT]);
    let new = s.install_shim();

    let out = s.tether(&["upgrade"]);
    assert!(out.success(), "{out}\n{}", s.d.log());
    assert_eq!(upgraded_ids(&out.stdout), vec![ours.clone()], "{out}");
    assert!(
        out.stdout
            .contains(&format!("{go}: skipped (its shim has no live upgrade")),
        "{out}"
    );
    assert_eq!(exe_inode(s.shim_of(&ours)), new);

    let out = s.tether(&["upgrade", &go]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains(&format!("{go}: refused (")), "{out}");
    for id in [&ours, &go] {
        assert!(s.tether(&["kill", id]).success());
        assert_eq!(s.tether(&["wait", id]).code, 7, "{id}");
        assert!(s.tether(&["delete", id]).success());
    }
}
