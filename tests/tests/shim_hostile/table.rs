//! The table itself: what a row is, how its container is set up, how its call is sent and what is checked after it.

use super::*;

/// The deadline of one call or wait.
pub const T: Duration = Duration::from_secs(20);
/// The exec every exec row is about.
pub const EXEC: &str = "e1";

/// What a row's call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// A ttrpc response with this status.
    Code(Code),
    /// The shim closed the connection (after any reply).
    Closed,
    /// Anything else: no answer, a broken reply, a check inside the row that failed.
    Failed(String),
}

pub use Got::Closed;
pub const OK: Got = Got::Code(Code::OK);
pub const NOT_FOUND: Got = Got::Code(Code::NOT_FOUND);
pub const INVALID: Got = Got::Code(Code::INVALID_ARGUMENT);
pub const PRECONDITION: Got = Got::Code(Code::FAILED_PRECONDITION);
pub const EXISTS: Got = Got::Code(Code::ALREADY_EXISTS);
pub const UNIMPLEMENTED: Got = Got::Code(Code::UNIMPLEMENTED);
pub const INTERNAL: Got = Got::Code(Code::INTERNAL);
pub const EXHAUSTED: Got = Got::Code(Code::RESOURCE_EXHAUSTED);
pub const DEADLINE: Got = Got::Code(Code::DEADLINE_EXCEEDED);

/// The state a row's container is put in first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// A running container shared by the rows of one table that cannot change it.
    Shared,
    /// A running container of its own.
    Running,
    /// Running, with exec `e1` added and never started.
    ExecAdded,
    /// Running, with exec `e1` added and its `Start` failed (its binary does not exist).
    ExecStartFailed,
    /// Running, with exec `e1` running (`sleep`).
    ExecRunning,
    /// Running, with exec `e1` started and exited (status 3), not deleted.
    ExecExited,
    /// The init process killed and exited; the task not deleted.
    InitExited,
}

/// One container under our shim, and how to reach the shim.
pub struct Target {
    pub ns: String,
    pub id: String,
    /// The init process (host pid).
    pub pid: u32,
    pub shim_pid: i32,
    pub address: String,
    pub bundle: PathBuf,
}

pub struct Row {
    pub name: &'static str,
    pub setup: Setup,
    pub call: fn(&Target) -> Got,
    /// The right answers (more than one only where a clean refusal is as right as an answer).
    pub expect: &'static [Got],
}

/// One raw request on a fresh connection: its status, or what went wrong.
pub fn raw(t: &Target, service: &str, method: &str, payload: Vec<u8>, deadline: Duration) -> Got {
    let mut s = rawttrpc::connect(&t.address, T);
    if let Err(e) = s.write_all(&request_frame(1, service, method, payload, deadline)) {
        return Got::Failed(format!("write the request: {e}"));
    }
    match rawttrpc::try_read_response(&mut s) {
        Ok((1, res)) => match res.status.as_ref() {
            Some(status) => Got::Code(status.code()),
            None => Got::Failed("a response without a status".into()),
        },
        Ok((other, _)) => Got::Failed(format!("a response on stream {other}, not 1")),
        Err(e) => Got::Failed(e),
    }
}

/// A task API call under the v2 service name (what containerd 1.6 calls).
pub fn rpc<M: Message>(t: &Target, method: &str, req: &M) -> Got {
    let payload = req.write_to_bytes().expect("encode the request");
    raw(t, TASK_SERVICE_V2, method, payload, T)
}

/// A task API call that must succeed, for setting a container up; returns the response.
pub fn must<M: Message, R: Message>(t: &Target, method: &str, req: &M) -> R {
    let socket = tether_protocol::socket::from_address(&t.address).expect("a unix:// address");
    let payload = req.write_to_bytes().expect("encode the request");
    let bytes = tether_protocol::wire::call(&socket, TASK_SERVICE_V2, method, payload, T)
        .unwrap_or_else(|e| panic!("setting up {}: {method}: {e:?}", t.id));
    R::parse_from_bytes(&bytes).unwrap_or_else(|e| panic!("decode the {method} response: {e}"))
}

/// After a row: the shim lives (by pid) and answers State; a running container still runs.
pub fn check_after(t: &Target, setup: Setup) -> Result<(), String> {
    // A dead shim may linger as a zombie (PID 1 here does not reap): that is dead too.
    let alive = matches!(procs::stat(t.shim_pid), Some(s) if s.state != 'Z');
    if !alive {
        return Err(format!("the shim (pid {}) died", t.shim_pid));
    }
    let socket = tether_protocol::socket::from_address(&t.address).expect("a unix:// address");
    let payload = state_req(&t.id, "").write_to_bytes().expect("encode");
    let bytes = tether_protocol::wire::call(&socket, TASK_SERVICE_V2, "State", payload, T)
        .map_err(|e| format!("State: {e:?}"))?;
    let state = StateResponse::parse_from_bytes(&bytes).map_err(|e| format!("State: {e}"))?;
    let want = if setup == Setup::InitExited {
        Status::STOPPED
    } else {
        Status::RUNNING
    };
    if state.status.enum_value() != Ok(want) {
        return Err(format!("State says {:?}, not {want:?}", state.status));
    }
    if want == Status::RUNNING && (state.pid != t.pid || !procs::is_alive(t.pid as i32)) {
        return Err(format!(
            "the container's init (pid {}) is not running: State says pid {}",
            t.pid, state.pid
        ));
    }
    Ok(())
}

/// One containerd and namespace for a table; containers made to order.
pub struct Table {
    pub cd: Containerd,
    pub ns: String,
    pub ctr: Ctr,
    pub shared: Option<Target>,
}

impl Table {
    pub fn new() -> Table {
        tether_tests::shim_binary();
        // A shim that a row kills is adopted here and reaped, not left a zombie of PID 1.
        procs::become_subreaper();
        let Scene { cd, ns, ctr } = Scene::start();
        Table {
            cd,
            ns,
            ctr,
            shared: None,
        }
    }

    /// A running `sleep` container under our shim, put in `setup`'s state.
    pub fn container(&self, setup: Setup) -> Target {
        let id = unique_id("c");
        self.ctr
            .run(&id)
            .runtime(TETHER_RUNTIME)
            .rootfs(busybox_rootfs())
            .flag("--read-only")
            .detach()
            .args(&["/bin/sleep", "1000"])
            .success();
        let task = self.ctr.task(&id).expect("the task is listed");
        assert_eq!(task.status, "RUNNING", "{task:?}");
        let bundle = self.cd.bundle(&self.ns, &id);
        let t = Target {
            ns: self.ns.clone(),
            address: shim::address(&bundle).expect("the bundle has an address file"),
            shim_pid: shim::shim_pid(&self.cd, &self.ns, &id).expect("the shim runs"),
            id,
            pid: task.pid,
            bundle,
        };
        let exec = |args: &[&str]| {
            let spec = Some(process_spec(args, false));
            let _: tether_protocol::api::Empty = must(&t, "Exec", &exec_req(&t.id, EXEC, spec));
        };
        match setup {
            Setup::Shared | Setup::Running => {}
            Setup::ExecAdded => exec(&["/bin/sleep", "1000"]),
            Setup::ExecStartFailed => {
                exec(&["/no/such/binary"]);
                let r = rpc(&t, "Start", &start_req(&t.id, EXEC));
                assert!(
                    matches!(&r, Got::Code(c) if *c != Code::OK),
                    "Start of an exec whose binary does not exist: {r:?}"
                );
            }
            Setup::ExecRunning => {
                exec(&["/bin/sleep", "1000"]);
                let _: StartResponse = must(&t, "Start", &start_req(&t.id, EXEC));
            }
            Setup::ExecExited => {
                exec(&["/bin/sh", "-c", "exit 3"]);
                let _: StartResponse = must(&t, "Start", &start_req(&t.id, EXEC));
                let w: WaitResponse = must(&t, "Wait", &wait_req(&t.id, EXEC));
                assert_eq!(w.exit_status, 3, "{w:?}");
            }
            Setup::InitExited => {
                let _: tether_protocol::api::Empty = must(&t, "Kill", &kill_req(&t.id, ""));
                let w: WaitResponse = must(&t, "Wait", &wait_req(&t.id, ""));
                assert_eq!(w.exit_status, 137, "{w:?}");
            }
        }
        t
    }

    /// Deletes the task and the container through containerd (whatever state the row left).
    pub fn remove(&self, t: &Target) {
        let _ = self.ctr.task_delete_force(&t.id);
        let _ = self.ctr.container_delete(&t.id);
    }

    /// Runs every row; panics at the end listing the rows that went wrong.
    pub fn run(mut self, rows: Vec<Row>) {
        let mut failures = Vec::new();
        let mut lines = Vec::new();
        for row in &rows {
            let t = match row.setup {
                Setup::Shared => self
                    .shared
                    .take()
                    .unwrap_or_else(|| self.container(Setup::Shared)),
                setup => self.container(setup),
            };
            let got = (row.call)(&t);
            let after = check_after(&t, row.setup);
            let right = row.expect.contains(&got);
            lines.push(format!(
                "{} {:<62} want {:<40} got {:?}{}",
                if right && after.is_ok() {
                    "ok  "
                } else {
                    "FAIL"
                },
                row.name,
                format!("{:?}", row.expect),
                got,
                after
                    .as_ref()
                    .err()
                    .map(|e| format!("; after: {e}"))
                    .unwrap_or_default()
            ));
            if !right {
                failures.push(format!(
                    "{}: want one of {:?}, got {got:?}",
                    row.name, row.expect
                ));
            }
            if let Err(e) = &after {
                failures.push(format!("{}: after the call: {e}", row.name));
            }
            // A shared container that is no longer as it was is replaced.
            if row.setup == Setup::Shared && after.is_ok() {
                self.shared = Some(t);
            } else {
                self.remove(&t);
            }
        }
        if let Some(t) = self.shared.take() {
            self.remove(&t);
        }
        eprintln!("{}", lines.join("\n"));
        let check = self.cd.leak_check();
        let report = self.cd.shutdown();
        if !report.problems.is_empty() || !report.killed.is_empty() {
            failures.push(format!("containerd's cleanup: {report:#?}"));
        }
        procs::reap_orphans();
        let left = check.leftovers();
        if !left.is_empty() {
            failures.push(format!("left behind: {left:#?}"));
        }
        assert!(
            failures.is_empty(),
            "{} of {} rows went wrong:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }
}
