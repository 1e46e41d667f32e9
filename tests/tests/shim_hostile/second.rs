//! A second container in a row's shim, made from the first one's config.json with changes: the
//! rows about what a container's own config and options can make the shim do.

use super::*;

/// A second container's bundle in `dir`, from `t`'s config.json changed by `edit`.
pub fn bundle_like(
    t: &Target,
    dir: &std::path::Path,
    id: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir(&bundle).expect("mkdir bundle");
    let config_path = t.bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&config_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", config_path.display())),
    )
    .expect("config.json is JSON");
    config["root"] = serde_json::json!({"path": busybox_rootfs(), "readonly": true});
    config["process"]["args"] = serde_json::json!(["/bin/sleep", "1000"]);
    config["process"]["terminal"] = false.into();
    config["hostname"] = id.into();
    config["linux"]["cgroupsPath"] = format!("/{}/{id}", t.ns).into();
    edit(&mut config);
    std::fs::write(bundle.join("config.json"), config.to_string()).expect("write config.json");
    bundle
}

/// The Create request of a second container.
pub fn create_second_req(
    id: &str,
    bundle: &std::path::Path,
    opts: Option<Options>,
) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.display().to_string(),
        options: opts.map(|o| pack_any(&o).expect("pack options")).into(),
        ..Default::default()
    }
}

/// Kills, waits for and deletes a second container that was created; the problems, if any.
pub fn remove_second(t: &Target, id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (method, payload) in [
        ("Kill", kill_req(id, "").write_to_bytes()),
        ("Wait", wait_req(id, "").write_to_bytes()),
        ("Delete", delete_req(id, "").write_to_bytes()),
    ] {
        let r = raw(t, TASK_SERVICE_V2, method, payload.expect("encode"), T);
        if r != OK {
            problems.push(format!("cleaning up {id}: {method}: {r:?}"));
        }
    }
    problems
}

/// The socket inode (`socket:[N]`) an fd of a process is, if it is one.
fn socket_of(pid: i32, fd: i32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = target.to_string_lossy().into_owned();
    s.starts_with("socket:").then_some(s)
}

/// A second container created through a runtime wrapper that lists its own open fds, then runs
/// runc: none may be the shim's listening socket (runc passes what it inherits on to hooks,
/// and a hook that daemonizes would keep the socket alive past the shim).
pub fn runtime_inherits_no_listener(t: &Target) -> Got {
    let Some(listener) = socket_of(t.shim_pid, 3) else {
        return Got::Failed(format!(
            "the shim's fd 3 is not a socket (pid {})",
            t.shim_pid
        ));
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("runtime-fds");
    let runc = tether_tests::cmd::which("runc").expect("runc on PATH");
    let wrapper = dir.path().join("listing-runc");
    let text = format!(
        "#!/bin/sh\nfor f in /proc/$$/fd/*; do echo \"$1 ${{f##*/}} $(readlink $f)\"; done >> '{}'\nexec '{}' \"$@\"\n",
        out.display(),
        runc.display()
    );
    tether_tests::cmd::write_executable(&wrapper, text.as_bytes());
    let id = unique_id("fds");
    let bundle = bundle_like(t, dir.path(), &id, |_| {});
    let opts = Options {
        binary_name: wrapper.display().to_string(),
        ..Default::default()
    };
    let created = rpc(t, "Create", &create_second_req(&id, &bundle, Some(opts)));
    if created != OK {
        return Got::Failed(format!("Create through the wrapper: {created:?}"));
    }
    let mut problems = remove_second(t, &id);
    match std::fs::read_to_string(&out) {
        Err(e) => problems.push(format!("the wrapper wrote nothing ({e})")),
        Ok(fds) => {
            if let Some(line) = fds.lines().find(|l| l.ends_with(&format!(" {listener}"))) {
                problems.push(format!(
                    "the runtime holds the shim's listening socket {listener} (fd {line})"
                ));
            }
        }
    }
    if problems.is_empty() {
        OK
    } else {
        Got::Failed(problems.join("; "))
    }
}

/// A second container whose stdout is `file://` a FIFO nobody reads: refused at once, while
/// the shim goes on serving the first (a blocking open would hold the loop until a reader came).
pub fn log_file_is_a_fifo(t: &Target) -> Got {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("log-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let id = unique_id("logfifo");
    let bundle = bundle_like(t, dir.path(), &id, |_| {});
    let mut req = create_second_req(&id, &bundle, None);
    req.stdout = format!("file://{}", fifo.display());
    let got = rpc(t, "Create", &req);
    if got == OK {
        let problems = remove_second(t, &id);
        return Got::Failed(format!("Create succeeded; {}", problems.join("; ")));
    }
    got
}

/// A second container whose runtime config file (`config_path`) is a FIFO or `/dev/zero`:
/// refused at once.
pub fn config_path_is_not_a_file(t: &Target) -> Got {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("options.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mut codes = Vec::new();
    for path in [fifo.clone(), "/dev/zero".into()] {
        let id = unique_id("cfgpath");
        let sub = dir.path().join(&id);
        std::fs::create_dir(&sub).expect("mkdir");
        let bundle = bundle_like(t, &sub, &id, |_| {});
        let mut req = create_second_req(&id, &bundle, None);
        req.options = Some(config_path_any(&path)).into();
        let got = rpc(t, "Create", &req);
        if got == OK {
            let problems = remove_second(t, &id);
            return Got::Failed(format!("Create succeeded; {}", problems.join("; ")));
        }
        codes.push(got);
    }
    codes.dedup();
    match codes.as_slice() {
        [one] => one.clone(),
        _ => Got::Failed(format!("{codes:?}")),
    }
}

/// Runtime options that name `path` as their TOML file.
fn config_path_any(path: &std::path::Path) -> Any {
    tether_protocol::runtime_options::RuntimeOptions {
        type_url: "io.containerd.runc.v2".into(),
        config_path: path.display().to_string(),
        ..Default::default()
    }
    .to_any()
    .expect("encode the options")
}

/// How many execs one container may hold at once (the shim's bound).
pub const MAX_EXECS: usize = 1024;

/// Execs added to one container until the shim refuses one: the refusal comes exactly past the
/// bound, with ResourceExhausted, and every exec added is deleted again.
pub fn execs_are_bounded(t: &Target) -> Got {
    let mut added = Vec::new();
    let mut got = OK;
    for i in 0..=MAX_EXECS {
        let exec_id = format!("many-{i}");
        got = rpc(t, "Exec", &exec_req(&t.id, &exec_id, sleeper()));
        if got != OK {
            break;
        }
        added.push(exec_id);
    }
    let mut problems = Vec::new();
    for exec_id in &added {
        let r = rpc(t, "Delete", &delete_req(&t.id, exec_id));
        if r != OK {
            problems.push(format!("Delete exec {exec_id}: {r:?}"));
            break;
        }
    }
    if added.len() != MAX_EXECS {
        problems.push(format!("{} execs added before {got:?}", added.len()));
    }
    if problems.is_empty() {
        got
    } else {
        Got::Failed(problems.join("; "))
    }
}

/// A second container whose options name the runtime, CRIU or the runtime's root by a
/// relative path: each refused (a relative path resolves against the shim's working
/// directory, a bundle holding a container's rootfs), and nothing there is run.
pub fn relative_option_paths(t: &Target) -> Got {
    // The shim's working directory: where a relative name would lead.
    let cwd = match std::fs::read_link(format!("/proc/{}/cwd", t.shim_pid)) {
        Ok(c) => c,
        Err(e) => return Got::Failed(format!("the shim's cwd: {e}")),
    };
    let bin_dir = cwd.join(unique_id("hostile-bin"));
    std::fs::create_dir(&bin_dir).expect("mkdir in the shim's cwd");
    let marker = bin_dir.join("ran");
    let script = bin_dir.join("x");
    tether_tests::cmd::write_executable(
        &script,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    );
    let relative = format!(
        "{}/x",
        bin_dir.file_name().expect("a name").to_string_lossy()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut codes = Vec::new();
    let mut problems = Vec::new();
    let cases: [(&str, Options); 3] = [
        (
            "BinaryName",
            Options {
                binary_name: relative.clone(),
                ..Default::default()
            },
        ),
        ("Root", {
            Options {
                root: "relative-runc-root".into(),
                ..Default::default()
            }
        }),
        ("CriuPath", {
            let mut o = Options::default();
            // criu_path (field 8) is unknown to these protos: sent as containerd 1.6/1.7 do.
            o.mut_unknown_fields()
                .add_length_delimited(8, relative.as_bytes().to_vec());
            o
        }),
    ];
    for (what, opts) in cases {
        let id = unique_id("relopt");
        let sub = dir.path().join(&id);
        std::fs::create_dir(&sub).expect("mkdir");
        let bundle = bundle_like(t, &sub, &id, |_| {});
        let got = rpc(t, "Create", &create_second_req(&id, &bundle, Some(opts)));
        if got == OK {
            problems.push(format!("{what} relative: Create succeeded"));
            problems.extend(remove_second(t, &id));
        }
        codes.push(got);
    }
    if marker.exists() {
        problems.push(format!("{} ran", script.display()));
    }
    let _ = std::fs::remove_dir_all(&bin_dir);
    codes.dedup();
    match (codes.as_slice(), problems.is_empty()) {
        ([one], true) => one.clone(),
        _ => Got::Failed(format!("{codes:?}; {}", problems.join("; "))),
    }
}
