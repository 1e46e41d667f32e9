//! Creating a container: its directory and record, its shim, its stdio (log file, `-i` FIFOs),
//! and the undo of a create that failed half-way.

use super::*;

impl Containers {
    /// Creates a container: bundle, shim start, shim `Create`.
    pub fn create(&self, req: api::CreateRequest) -> Result<api::Container> {
        let key = check_key(&req.namespace, &req.id)?;
        let runtime = if req.runtime.is_empty() {
            crate::names::DEFAULT_RUNTIME.to_string()
        } else {
            req.runtime.clone()
        };
        let binary = launcher::find_shim(&runtime)?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&req.spec)
            .map_err(|e| Error::InvalidArgument(format!("the OCI spec is not valid: {e}")))?;
        crate::bundle::check_root(&spec)?;

        let dir = self.cfg.state.join(&key.0).join(&key.1);
        let events = self.events_socket();
        let c = Arc::new(Container {
            key: key.clone(),
            dir: dir.clone(),
            record: Mutex::new(ContainerRecord::new(
                &key.0,
                &key.1,
                &runtime,
                &dir.display().to_string(),
                0,
            )),
            exited: Condvar::new(),
            shim: Mutex::new(None),
            stdin: Mutex::new(None),
            logger: Mutex::new(None),
            cleaning: Mutex::new(false),
            cleaned: Condvar::new(),
        });
        {
            let mut table = lock(&self.table);
            if table.contains_key(&key) {
                return Err(Error::AlreadyExists(format!(
                    "container {:?} already exists in namespace {:?}",
                    key.1, key.0
                )));
            }
            table.insert(key.clone(), c.clone());
        }
        let cmd = ShimCommand {
            binary,
            namespace: key.0.clone(),
            id: key.1.clone(),
            bundle: dir.clone(),
            address: self.cfg.socket.display().to_string(),
            ttrpc_address: events.display().to_string(),
            debug: self.cfg.debug,
        };
        match self.create_task(&c, &cmd, &spec, &req) {
            Ok(info) => Ok(info),
            Err(e) => {
                self.discard(&c);
                Err(e)
            }
        }
    }

    fn create_task(
        &self,
        c: &Arc<Container>,
        cmd: &ShimCommand,
        spec: &oci_spec::runtime::Spec,
        req: &api::CreateRequest,
    ) -> Result<api::Container> {
        let dir = &c.dir;
        if dir.exists() {
            // Leftovers of a container of the same name this daemon no longer knows.
            remove_dir(dir)?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(Error::io(format!("create bundle {}", dir.display())))?;
        let spec_json = serde_json::to_vec_pretty(spec)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode the spec: {e}")))?;
        std::fs::write(dir.join("config.json"), spec_json)
            .map_err(Error::io(format!("write {}/config.json", dir.display())))?;
        // Not created yet (created_at 0): a restart that finds this cleans the attempt up.
        store::write(&c.record_path(), &*lock(&c.record))?;
        self.open_log(c)?;

        // The runtime root under the daemon's root (and our CRIU), as containerd passes
        // options: on `start`'s stdin and in `Create`.
        let options = crate::daemon::checkpoint::runtime_options(&self.cfg)?;
        let options_bytes = options
            .write_to_bytes()
            .map_err(|e| Error::Shim(format!("encode the runtime options: {e}")))?;
        let address = cmd.start(&options_bytes)?;
        store::write_bytes(
            &dir.join("shim-address"),
            address.as_bytes(),
            store::Durability::Durable,
        )?;
        let (task, connected) = TaskCaller::connect_per_call(&address, CALL_TIMEOUT)
            .map_err(|e| Error::shim(&format!("connect to the shim at {address}"), e))?;
        let shim = Arc::new(ShimConn {
            task,
            pid: connected.shim_pid,
            command: cmd.clone(),
        });
        *lock(&c.shim) = Some(shim.clone());
        if let Some(m) = self.monitor() {
            m.watch_shim(c.key.clone(), shim.pid);
        }
        let stdio = match req.stdio.clone().into_option() {
            Some(s) => s,
            None if req.open_stdin => self.interactive_stdio(c, spec)?,
            None => self.log_stdio(dir, spec),
        };
        let creq = task::CreateTaskRequest {
            id: c.key.1.clone(),
            bundle: dir.display().to_string(),
            terminal: stdio.terminal,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            options: MessageField::some(options),
            checkpoint: req.checkpoint.clone(),
            ..Default::default()
        };
        let resp: task::CreateTaskResponse = shim
            .task
            .call("Create", &creq, CREATE_TIMEOUT)
            .map_err(|e| Error::shim(&format!("create container {}", c.key.1), e))?;
        let rec = c.update(|r| {
            r.created_at = now_nanos();
            r.pid = resp.pid;
            Ok(())
        })?;
        Ok(to_api(&rec))
    }

    /// A `-i` container's stdio: FIFOs, its stdin FIFO held open by us (so the shim never sees
    /// its end while nobody is attached) and by the logger we start (which lives on while we
    /// restart); see `fifo_logger`.
    fn interactive_stdio(
        &self,
        c: &Container,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<api::Stdio> {
        let dir = &c.dir;
        let fifo = dir.join(crate::names::STDIN_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::io(format!("mkfifo {}", fifo.display()))(e.into()))?;
        *lock(&c.stdin) = Some(hold_stdin(dir)?);
        let exe = std::env::current_exe()
            .map_err(Error::io("find our own binary (the logger)".to_string()))?;
        let (stdio, pid) = crate::daemon::containers::fifo_logger::start(
            &exe,
            dir,
            spec_terminal(spec),
            self.cfg.log_max_size,
            self.cfg.log_max_files,
        )?;
        *lock(&c.logger) = Some(pid);
        Ok(stdio)
    }

    /// A detached container's stdio: no stdin, and stdout and stderr (or its terminal, as
    /// containerd's Go shim does with binary://) to our logger, which writes the container's
    /// log file in its directory.
    fn log_stdio(&self, dir: &Path, spec: &oci_spec::runtime::Spec) -> api::Stdio {
        let terminal = spec_terminal(spec);
        let exe = std::env::current_exe();
        let uri = match exe {
            Ok(exe) if crate::logger::uri_safe(&exe) && crate::logger::uri_safe(dir) => {
                let extras = crate::logger::Extras {
                    stdin: None,
                    flush: terminal,
                };
                crate::logger::uri(
                    &exe,
                    dir,
                    self.cfg.log_max_size,
                    self.cfg.log_max_files,
                    extras,
                )
            }
            other => {
                log::warn!(
                    "no log file for {}: the paths of {other:?} and {} cannot go into a binary:// URI",
                    dir.display(),
                    dir.display()
                );
                String::new()
            }
        };
        api::Stdio {
            stdout: uri.clone(),
            // A terminal has one output (the Go shim ignores stderr then; ours wants none).
            stderr: if terminal { String::new() } else { uri },
            terminal,
            ..Default::default()
        }
    }

    /// Creates the bundle's `log` FIFO and hands its read end to the monitor.
    fn open_log(&self, c: &Container) -> Result<()> {
        let fifo = c.dir.join("log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o700))
            .map_err(|e| Error::io(format!("mkfifo {}", fifo.display()))(e.into()))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .map_err(Error::io(format!("open {}", fifo.display())))?;
        if let Some(m) = self.monitor() {
            m.drain_log(c.key.clone(), file, c.dir.join("shim.log"));
        }
        Ok(())
    }

    /// Undoes a failed create: stops the shim, cleans up, forgets the container.
    fn discard(&self, c: &Arc<Container>) {
        if let Some(pid) = lock(&c.logger).take() {
            // Its FIFOs never got a writer: it would wait forever. Reaped as an orphan.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        lock(&c.stdin).take();
        if let Some(m) = self.monitor() {
            m.forget_shim(c.key.clone());
        }
        let shim = lock(&c.shim).take();
        if let Some(shim) = shim {
            // Never acknowledged: nothing its shim says of it is reported.
            self.mute_events(&c.key);
            self.stop_aborted_shim(&c.key, &shim.task, shim.pid, CALL_TIMEOUT);
            if let Err(e) = shim.command.delete() {
                log::warn!("container {}/{}: shim delete: {e}", c.key.0, c.key.1);
            }
        }
        if let Some(m) = self.monitor() {
            m.stop_log(c.key.clone());
        }
        if let Err(e) = remove_dir(&c.dir) {
            log::warn!("{e}");
        }
        self.unmute_events(&c.key);
        lock(&self.table).remove(&c.key);
    }
}

/// Removes a container directory, refusing if anything is still mounted below it (removing
/// would delete the mounted files).
fn spec_terminal(spec: &oci_spec::runtime::Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

/// Opens a container's stdin FIFO for writing without waiting for a reader (O_RDWR).
pub(super) fn hold_stdin(dir: &Path) -> Result<std::fs::File> {
    let fifo = dir.join(crate::names::STDIN_FIFO);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .map_err(Error::io(format!("open {}", fifo.display())))
}
