//! Rows about ids, payloads and methods.

use super::*;

/// Rows about ids, payloads and methods: none can change a container, so they share one.
pub fn ids_and_payloads() -> Vec<Row> {
    use Setup::Shared as S;
    let row = |name, call, expect| Row {
        name,
        setup: S,
        call,
        expect,
    };
    vec![
        // Unknown container ids, every method that takes one.
        row(
            "State of an unknown id",
            |t| rpc(t, "State", &state_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Kill of an unknown id",
            |t| rpc(t, "Kill", &kill_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Start of an unknown id",
            |t| rpc(t, "Start", &start_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Delete of an unknown id",
            |t| rpc(t, "Delete", &delete_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "ResizePty of an unknown id",
            |t| rpc(t, "ResizePty", &resize_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "CloseIO of an unknown id",
            |t| rpc(t, "CloseIO", &close_io_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Wait of an unknown id",
            |t| rpc(t, "Wait", &wait_req(&unknown(), "")),
            &[NOT_FOUND],
        ),
        row(
            "Exec into an unknown id",
            |t| rpc(t, "Exec", &exec_req(&unknown(), EXEC, sleeper())),
            &[NOT_FOUND],
        ),
        row(
            "Pids of an unknown id",
            |t| {
                rpc(
                    t,
                    "Pids",
                    &PidsRequest {
                        id: unknown(),
                        ..Default::default()
                    },
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Pause of an unknown id",
            |t| {
                rpc(
                    t,
                    "Pause",
                    &PauseRequest {
                        id: unknown(),
                        ..Default::default()
                    },
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Resume of an unknown id",
            |t| {
                rpc(
                    t,
                    "Resume",
                    &ResumeRequest {
                        id: unknown(),
                        ..Default::default()
                    },
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Stats of an unknown id",
            |t| {
                rpc(
                    t,
                    "Stats",
                    &StatsRequest {
                        id: unknown(),
                        ..Default::default()
                    },
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Update of an unknown id",
            |t| {
                rpc(
                    t,
                    "Update",
                    &update_req(&unknown(), Some(br#"{"pids":{"limit":50}}"#)),
                )
            },
            &[NOT_FOUND],
        ),
        row(
            "Checkpoint of an unknown id",
            |t| {
                let req = CheckpointTaskRequest {
                    id: unknown(),
                    path: std::env::temp_dir().join(unknown()).display().to_string(),
                    ..Default::default()
                };
                rpc(t, "Checkpoint", &req)
            },
            &[NOT_FOUND],
        ),
        // Ids that are not ids.
        row(
            "State of id ../x",
            |t| rpc(t, "State", &state_req("../x", "")),
            &[INVALID],
        ),
        row(
            "Kill of an empty id",
            |t| rpc(t, "Kill", &kill_req("", "")),
            &[INVALID],
        ),
        row(
            "Delete of a 300-character id",
            |t| rpc(t, "Delete", &delete_req(&"a".repeat(300), "")),
            &[INVALID],
        ),
        row(
            "Start of id a/b",
            |t| rpc(t, "Start", &start_req("a/b", "")),
            &[INVALID],
        ),
        row(
            "State of exec id ../x",
            |t| rpc(t, "State", &state_req(&t.id, "../x")),
            &[INVALID],
        ),
        row(
            "Exec with an empty exec id",
            |t| rpc(t, "Exec", &exec_req(&t.id, "", sleeper())),
            &[INVALID],
        ),
        // Unknown exec ids of a real container.
        row(
            "State of an unknown exec",
            |t| rpc(t, "State", &state_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "Kill of an unknown exec",
            |t| rpc(t, "Kill", &kill_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "Start of an unknown exec",
            |t| rpc(t, "Start", &start_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "Delete of an unknown exec",
            |t| rpc(t, "Delete", &delete_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "ResizePty of an unknown exec",
            |t| rpc(t, "ResizePty", &resize_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "CloseIO of an unknown exec",
            |t| rpc(t, "CloseIO", &close_io_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        row(
            "Wait of an unknown exec",
            |t| rpc(t, "Wait", &wait_req(&t.id, &unknown())),
            &[NOT_FOUND],
        ),
        // Malformed protobuf, JSON and Any.
        row(
            "Create with a garbage payload",
            |t| raw(t, TASK_SERVICE_V2, "Create", vec![0xff; 32], T),
            &[INVALID],
        ),
        row(
            "Kill with a garbage payload",
            |t| {
                raw(
                    t,
                    TASK_SERVICE_V2,
                    "Kill",
                    vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    T,
                )
            },
            &[INVALID],
        ),
        row(
            "State with a truncated payload",
            |t| {
                let mut p = state_req(&t.id, "").write_to_bytes().expect("encode");
                p.truncate(p.len() / 2);
                raw(t, TASK_SERVICE_V2, "State", p, T)
            },
            &[INVALID],
        ),
        row(
            "Exec whose spec is not JSON",
            |t| {
                let spec = Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: b"{\"args\": [".to_vec(),
                    ..Default::default()
                };
                rpc(t, "Exec", &exec_req(&t.id, &unknown(), Some(spec)))
            },
            &[INVALID],
        ),
        row(
            "Exec whose spec is JSON but no process",
            |t| {
                let spec = Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: b"[1, 2]".to_vec(),
                    ..Default::default()
                };
                rpc(t, "Exec", &exec_req(&t.id, &unknown(), Some(spec)))
            },
            &[INVALID],
        ),
        row(
            "Exec without a spec",
            |t| rpc(t, "Exec", &exec_req(&t.id, &unknown(), None)),
            &[INVALID],
        ),
        row(
            "Update whose resources are not JSON",
            |t| rpc(t, "Update", &update_req(&t.id, Some(b"not json"))),
            &[INVALID],
        ),
        row(
            "Update without resources",
            |t| rpc(t, "Update", &update_req(&t.id, None)),
            &[INVALID],
        ),
        row(
            "Create with options of a wrong type URL",
            |t| {
                let opts = Any {
                    type_url: "containerd.runc.v1.CheckpointOptions".into(),
                    value: Vec::new(),
                    ..Default::default()
                };
                rpc(
                    t,
                    "Create",
                    &create_req(&unknown(), &bundle_dir(), Some(opts)),
                )
            },
            &[INVALID],
        ),
        row(
            "Create with runc options that do not parse",
            |t| {
                let opts = Any {
                    type_url: "containerd.runc.v1.Options".into(),
                    value: vec![0xff; 16],
                    ..Default::default()
                };
                rpc(
                    t,
                    "Create",
                    &create_req(&unknown(), &bundle_dir(), Some(opts)),
                )
            },
            &[INVALID],
        ),
        row(
            "Checkpoint with options of a wrong type URL",
            |t| {
                let req = CheckpointTaskRequest {
                    id: t.id.clone(),
                    path: std::env::temp_dir().join(unknown()).display().to_string(),
                    options: Some(pack_any(&Options::default()).expect("pack")).into(),
                    ..Default::default()
                };
                rpc(t, "Checkpoint", &req)
            },
            &[INVALID],
        ),
        row(
            "Create of an id that exists",
            |t| rpc(t, "Create", &create_req(&t.id, &bundle_dir(), None)),
            &[EXISTS],
        ),
        // Methods and services nobody serves (Go's ttrpc: Unimplemented; Rust's says NotFound).
        row(
            "an unknown method",
            |t| raw(t, TASK_SERVICE_V2, "NoSuchMethod", Vec::new(), T),
            &[UNIMPLEMENTED],
        ),
        row(
            "an unknown service",
            |t| raw(t, "containerd.task.v9.Nope", "State", Vec::new(), T),
            &[UNIMPLEMENTED],
        ),
        // Wrong states of the running init that change nothing when refused.
        row(
            "Resume of a running container",
            |t| {
                rpc(
                    t,
                    "Resume",
                    &ResumeRequest {
                        id: t.id.clone(),
                        ..Default::default()
                    },
                )
            },
            &[PRECONDITION],
        ),
        row(
            "Start of a running init",
            |t| rpc(t, "Start", &start_req(&t.id, "")),
            &[PRECONDITION],
        ),
        // containerd's Go shim answers OK for a process without a terminal.
        row(
            "ResizePty of an init without a terminal",
            |t| rpc(t, "ResizePty", &resize_req(&t.id, "")),
            &[OK],
        ),
    ]
}
