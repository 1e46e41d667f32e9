//! Task API requests, built once for the rows.

use super::*;

pub fn state_req(id: &str, exec_id: &str) -> StateRequest {
    StateRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

pub fn kill_req(id: &str, exec_id: &str) -> KillRequest {
    KillRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        signal: 9,
        ..Default::default()
    }
}

pub fn start_req(id: &str, exec_id: &str) -> StartRequest {
    StartRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

pub fn delete_req(id: &str, exec_id: &str) -> DeleteRequest {
    DeleteRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

pub fn resize_req(id: &str, exec_id: &str) -> ResizePtyRequest {
    ResizePtyRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        width: 80,
        height: 25,
        ..Default::default()
    }
}

pub fn close_io_req(id: &str, exec_id: &str) -> CloseIORequest {
    CloseIORequest {
        id: id.into(),
        exec_id: exec_id.into(),
        stdin: true,
        ..Default::default()
    }
}

pub fn wait_req(id: &str, exec_id: &str) -> WaitRequest {
    WaitRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    }
}

pub fn exec_req(id: &str, exec_id: &str, spec: Option<Any>) -> ExecProcessRequest {
    ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: spec.into(),
        ..Default::default()
    }
}

pub fn sleeper() -> Option<Any> {
    Some(process_spec(&["/bin/sleep", "1000"], false))
}

pub fn update_req(id: &str, resources: Option<&[u8]>) -> UpdateTaskRequest {
    UpdateTaskRequest {
        id: id.into(),
        resources: resources
            .map(|json| Any {
                type_url: "opencontainers/runtime-spec/1/LinuxResources".into(),
                value: json.to_vec(),
                ..Default::default()
            })
            .into(),
        ..Default::default()
    }
}

/// A bundle with a `rootfs/` and a `config.json`, so that what a Create refuses is the rest.
pub fn bundle_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp bundle");
    std::fs::create_dir(dir.path().join("rootfs")).expect("mkdir rootfs");
    std::fs::write(dir.path().join("config.json"), b"{}").expect("write config.json");
    dir
}

pub fn create_req(id: &str, bundle: &tempfile::TempDir, options: Option<Any>) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.path().display().to_string(),
        options: options.into(),
        ..Default::default()
    }
}

pub fn unknown() -> String {
    unique_id("nope")
}
