//! Terminals through our shim: `ctr run -t` and `ctr task exec -t` driven from a real pty the
//! test holds (ctr on its slave as controlling terminal, the test on its master), the window
//! size ctr propagates (at start and on SIGWINCH), and `ResizePty` called directly.

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster, Winsize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tether_protocol::api::task::{
    DeleteRequest, DeleteResponse, ExecProcessRequest, ResizePtyRequest, StartRequest,
    StartResponse, WaitRequest, WaitResponse,
};
use tether_protocol::api::Empty;
use tether_protocol::task_service::TaskCaller;
use tether_tests::shimtest::{detached, Scene};
use tether_tests::shimtest::{finish, rpc_code, shim_client, T};
use tether_tests::{busybox_rootfs, cmd, unique_id, TETHER_RUNTIME};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// A command running with a fresh pty as its controlling terminal and stdio.
struct OnPty {
    child: Child,
    what: String,
    master: Arc<PtyMaster>,
    output: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl OnPty {
    /// Starts `cmd` in a new session on a new pty of `rows` x `cols`.
    fn spawn(mut cmd: Command, rows: u16, cols: u16) -> OnPty {
        let what = cmd::describe(&cmd);
        // Close-on-exec from the start: other tests spawn processes in parallel.
        let master =
            posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).expect("posix_openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname_r(&master).expect("ptsname");
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&name)
            .unwrap_or_else(|e| panic!("open {name}: {e}"))
            .into();
        resize(&master, rows, cols);
        let dup = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty slave"));
        cmd.stdin(dup(&slave))
            .stdout(dup(&slave))
            .stderr(dup(&slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start `{what}`: {e}"));
        // Only the child holds the slave now, so the master sees EOF/EIO once it is gone.
        drop(cmd);
        drop(slave);

        let master = Arc::new(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (master, output, stop) = (master.clone(), output.clone(), stop.clone());
            std::thread::spawn(move || read_master(&master, &output, &stop))
        };
        OnPty {
            child,
            what,
            master,
            output,
            stop,
            reader: Some(reader),
        }
    }

    /// Everything read from the master so far, lossily as text.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits until the output contains `needle`; panics with the output on timeout.
    fn wait_for(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "`{}`: no {needle:?} on the terminal within {timeout:?}; it shows:\n{:?}",
                self.what,
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `text` on the terminal.
    fn type_text(&self, text: &str) {
        let mut f = File::from(
            self.master
                .as_fd()
                .try_clone_to_owned()
                .expect("dup master"),
        );
        f.write_all(text.as_bytes())
            .expect("write to the pty master");
    }

    /// Changes the outer terminal's size (the kernel sends SIGWINCH to ctr).
    fn resize(&self, rows: u16, cols: u16) {
        resize(&self.master, rows, cols);
    }

    /// Waits for the command to exit; returns its exit code and the whole terminal output.
    fn wait(mut self, timeout: Duration) -> (i32, String) {
        let (status, timed_out) =
            cmd::wait_deadline(&mut self.child, Instant::now() + timeout, &self.what);
        // Give the reader what is still buffered in the pty, then stop it.
        let grace = Instant::now() + Duration::from_secs(2);
        while !self.reader.as_ref().is_some_and(JoinHandle::is_finished) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let text = self.text();
        assert!(
            !timed_out,
            "`{}` did not exit within {timeout:?} (killed it); the terminal showed:\n{text:?}",
            self.what
        );
        (cmd::exit_code(status), text)
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        // Only when a test failed half-way: our unreaped child, so its pid is its own.
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.stop.store(true, Ordering::SeqCst);
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
    }
}

fn resize(master: &PtyMaster, rows: u16, cols: u16) {
    let ws = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer.
    unsafe { set_winsize(master.as_raw_fd(), &ws) }.expect("TIOCSWINSZ");
}

/// Copies the master into `output` until EOF/EIO (every slave closed) or `stop`.
fn read_master(master: &PtyMaster, output: &Mutex<Vec<u8>>, stop: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut f = File::from(master.as_fd().try_clone_to_owned().expect("dup master"));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        match f.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return, // EIO: the last slave closed
        }
    }
}

/// A shell line that waits (bounded) until the terminal is `rows` x `cols`, then prints
/// `<tag>:<rows> <cols>`. The echo of the line itself never contains that text.
fn size_line(tag: &str, rows: u16, cols: u16) -> String {
    format!(
        "i=0; while [ \"$(stty size)\" != \"{rows} {cols}\" ] && [ $i -lt 100 ]; do \
         usleep 50000; i=$((i+1)); done; echo \"{tag}:$(stty size)\"\n"
    )
}

/// Asserts the terminal showed the lines `1` to `last` of `seq`, in order, nothing lost.
fn assert_all_numbers(text: &str, last: u32) {
    let clean = text.replace('\r', "");
    let after_hi = clean.split("\nhi\n").nth(1).unwrap_or("");
    let numbers: Vec<&str> = after_hi
        .lines()
        .take_while(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let expected: Vec<String> = (1..=last).map(|n| n.to_string()).collect();
    if numbers != expected {
        let first_bad = numbers
            .iter()
            .zip(&expected)
            .position(|(a, b)| *a != b.as_str())
            .unwrap_or(numbers.len().min(expected.len()));
        panic!(
            "seq 1 {last} came through as {} lines, first difference at line {}: {:?}; tail of \
             the terminal: {:?}",
            numbers.len(),
            first_bad + 1,
            numbers.get(first_bad),
            clean
                .chars()
                .skip(clean.chars().count().saturating_sub(300))
                .collect::<String>()
        );
    }
}

/// ResizePty of process `exec_id` ("" for the init) of task `id` to `rows` x `cols`.
fn resize_pty(
    shim: &TaskCaller,
    id: &str,
    exec_id: &str,
    rows: u32,
    cols: u32,
) -> ttrpc::Result<Empty> {
    let req = ResizePtyRequest {
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        width: cols,
        height: rows,
        ..Default::default()
    };
    shim.call("ResizePty", &req, T)
}

#[test]
fn run_with_terminal_size_resize_and_exit_status() {
    let Scene { cd, ns, ctr } = Scene::start();
    let id = unique_id("c");
    let mut run = ctr.command(&[
        "run",
        "-t",
        "--rm",
        "--runtime",
        TETHER_RUNTIME,
        "--rootfs",
        &busybox_rootfs().display().to_string(),
        &id,
        "/bin/sh",
    ]);
    run.env("TERM", "dumb");
    let term = OnPty::spawn(run, 33, 77);
    term.wait_for("# ", T);

    // The size of the outer terminal reached the container's (ctr's resize at start).
    term.type_text(&size_line("SIZE", 33, 77));
    term.wait_for("SIZE:33 77", T);

    // ResizePty directly on the init process.
    let shim = shim_client(&cd, &ns, &id);
    resize_pty(&shim, &id, "", 21, 61).expect("ResizePty of the init");
    term.type_text("echo \"DIRECT:$(stty size)\"\n");
    term.wait_for("DIRECT:21 61", T);
    drop(shim);

    // The outer terminal changes size: ctr gets SIGWINCH and resizes through the shim.
    term.resize(40, 100);
    term.type_text(&size_line("WINCH", 40, 100));
    term.wait_for("WINCH:40 100", T);

    // Output that outruns the reader, and the shell's exit right after it: all of it arrives
    // (the terminal is drained before the exit), in order.
    term.type_text("echo h\"\"i; /bin/seq 1 20000; exit 4\n");
    let (code, text) = term.wait(T);
    assert!(text.replace('\r', "").contains("\nhi\n"), "{text:?}");
    assert_all_numbers(&text, 20000);
    assert_eq!(
        code, 4,
        "ctr run exits with the shell's status; it showed:\n{text:?}"
    );
    assert!(ctr.containers().is_empty(), "--rm removed the container");
    finish(cd, &[&id]);
}

#[test]
fn exec_with_terminal_on_detached_container() {
    let Scene { cd, ns, ctr } = Scene::start();
    let id = detached(&ctr, &["/bin/sleep", "1000"]);
    let mut exec = ctr.command(&["task", "exec", "-t", "--exec-id", "x", &id, "/bin/sh"]);
    exec.env("TERM", "dumb");
    let term = OnPty::spawn(exec, 33, 77);
    term.wait_for("# ", T);
    term.type_text(&size_line("SIZE", 33, 77));
    term.wait_for("SIZE:33 77", T);

    // ResizePty directly: the exec's terminal changes; the init has none.
    let shim = shim_client(&cd, &ns, &id);
    resize_pty(&shim, &id, "x", 20, 50).expect("ResizePty of exec x");
    term.type_text("echo \"DIRECT:$(stty size)\"\n");
    term.wait_for("DIRECT:20 50", T);
    let shim_files =
        tether_tests::shimtest::open_files(tether_tests::shimtest::serving_shim_pid(&cd, &id));
    assert!(
        shim_files.iter().any(|f| f.contains("ptmx")),
        "the shim holds the exec's pty master: {shim_files:?}"
    );
    // containerd's shim answers OK (its client's `task.Resize` relies on it): nothing to resize.
    resize_pty(&shim, &id, "", 20, 50)
        .expect("ResizePty of an init without a terminal is OK, as with containerd's shim");
    let code = rpc_code(
        resize_pty(&shim, &id, "nosuch", 20, 50),
        "ResizePty of an unknown exec",
    );
    assert_eq!(code, ttrpc::Code::NOT_FOUND);

    // The request decides the terminal, as with containerd's shim: a spec that says
    // `terminal: false` must not make the runtime refuse the console socket.
    let exec = ExecProcessRequest {
        id: id.clone(),
        exec_id: "t".into(),
        terminal: true,
        spec: protobuf::MessageField::some(tether_tests::shimtest::process_spec(
            &["/bin/sh", "-c", "test -t 0 && test -t 1 && exit 5; exit 1"],
            false,
        )),
        ..Default::default()
    };
    shim.call::<_, Empty>("Exec", &exec, T)
        .expect("Exec with a terminal");
    let start = StartRequest {
        id: id.clone(),
        exec_id: "t".into(),
        ..Default::default()
    };
    shim.call::<_, StartResponse>("Start", &start, T)
        .expect("Start of an exec asking for a terminal whose spec says none");
    let wait = WaitRequest {
        id: id.clone(),
        exec_id: "t".into(),
        ..Default::default()
    };
    let waited = shim
        .call::<_, WaitResponse>("Wait", &wait, T)
        .expect("Wait");
    assert_eq!(waited.exit_status, 5, "the exec ran on a terminal");
    let del = DeleteRequest {
        id: id.clone(),
        exec_id: "t".into(),
        ..Default::default()
    };
    shim.call::<_, DeleteResponse>("Delete", &del, T)
        .expect("Delete of exec t");
    drop(shim);

    // Output that outruns the reader, and the shell's exit right after it: all of it arrives
    // (the terminal is drained before the exit), in order.
    term.type_text("echo h\"\"i; /bin/seq 1 20000; exit 4\n");
    let (code, text) = term.wait(T);
    assert!(text.replace('\r', "").contains("\nhi\n"), "{text:?}");
    assert_all_numbers(&text, 20000);
    assert_eq!(
        code, 4,
        "ctr task exec exits with the shell's status:\n{text:?}"
    );
    assert_eq!(
        ctr.task(&id).expect("task listed").status,
        "RUNNING",
        "the init lives on after its exec"
    );
    // The exec is deleted: the shim holds neither its FIFOs nor its terminal.
    let shim = tether_tests::shimtest::serving_shim_pid(&cd, &id);
    let held: Vec<String> = tether_tests::shimtest::open_files(shim)
        .into_iter()
        .filter(|f| f.contains("x-std") || f.contains("ptmx") || f.starts_with("/dev/pts"))
        .collect();
    assert!(held.is_empty(), "the shim still holds: {held:?}");
    finish(cd, &[&id]);
}
