//! Rows about processes in the wrong state.

use super::*;

/// Rows about processes in the wrong state: each gets a container of its own.
pub fn wrong_states() -> Vec<Row> {
    use Setup::*;
    let row = |name, setup, call, expect| Row {
        name,
        setup,
        call,
        expect,
    };
    vec![
        // An exec added and never started has no pid: a signal to "pid 0" would reach the
        // shim's own process group.
        row(
            "Kill of an exec never started",
            ExecAdded,
            |t| rpc(t, "Kill", &kill_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "ResizePty of an exec never started",
            ExecAdded,
            |t| rpc(t, "ResizePty", &resize_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "CloseIO of an exec never started",
            ExecAdded,
            |t| rpc(t, "CloseIO", &close_io_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Exec of an exec id added before",
            ExecAdded,
            |t| rpc(t, "Exec", &exec_req(&t.id, EXEC, sleeper())),
            &[EXISTS],
        ),
        row(
            "Delete of an exec never started",
            ExecAdded,
            |t| rpc(t, "Delete", &delete_req(&t.id, EXEC)),
            &[OK],
        ),
        row(
            "Kill of an exec whose Start failed",
            ExecStartFailed,
            |t| rpc(t, "Kill", &kill_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "ResizePty of an exec whose Start failed",
            ExecStartFailed,
            |t| rpc(t, "ResizePty", &resize_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "CloseIO of an exec whose Start failed",
            ExecStartFailed,
            |t| rpc(t, "CloseIO", &close_io_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Start of a running exec",
            ExecRunning,
            |t| rpc(t, "Start", &start_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Delete of a running exec",
            ExecRunning,
            |t| rpc(t, "Delete", &delete_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Exec of a running exec's id",
            ExecRunning,
            |t| rpc(t, "Exec", &exec_req(&t.id, EXEC, sleeper())),
            &[EXISTS],
        ),
        row(
            "Kill of an exited exec",
            ExecExited,
            |t| rpc(t, "Kill", &kill_req(&t.id, EXEC)),
            &[NOT_FOUND],
        ),
        row(
            "Start of an exited exec",
            ExecExited,
            |t| rpc(t, "Start", &start_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "ResizePty of an exited exec",
            ExecExited,
            |t| rpc(t, "ResizePty", &resize_req(&t.id, EXEC)),
            &[PRECONDITION],
        ),
        row(
            "Exec of an exited exec's id",
            ExecExited,
            |t| rpc(t, "Exec", &exec_req(&t.id, EXEC, sleeper())),
            &[EXISTS],
        ),
        row(
            "Delete of an exited exec",
            ExecExited,
            |t| rpc(t, "Delete", &delete_req(&t.id, EXEC)),
            &[OK],
        ),
        row(
            "Exec after the init exited",
            InitExited,
            |t| rpc(t, "Exec", &exec_req(&t.id, EXEC, sleeper())),
            &[PRECONDITION],
        ),
        row(
            "Start of an exited init",
            InitExited,
            |t| rpc(t, "Start", &start_req(&t.id, "")),
            &[PRECONDITION],
        ),
        row(
            "Kill of an exited init",
            InitExited,
            |t| rpc(t, "Kill", &kill_req(&t.id, "")),
            &[NOT_FOUND],
        ),
        row(
            "Pause of an exited init",
            InitExited,
            |t| {
                rpc(
                    t,
                    "Pause",
                    &PauseRequest {
                        id: t.id.clone(),
                        ..Default::default()
                    },
                )
            },
            &[PRECONDITION],
        ),
        row(
            "Delete of a running init",
            Running,
            |t| rpc(t, "Delete", &delete_req(&t.id, "")),
            &[PRECONDITION],
        ),
    ]
}
