//! The `start` action: launch the long-lived shim and print its address.
//!
//! containerd reads our stdout and stderr together until EOF and takes the trimmed text as the
//! address, so nothing else may be printed and the shim must not inherit them.

use crate::bootstrap::{self, StartInput};
use crate::cli::Flags;
use crate::error::{Result, ShimError};
use crate::pid::Pid;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tether_protocol::socket::{shim_socket_path, to_address, DEFAULT_SOCKET_DIR};
use tether_protocol::{store, validate_id, validate_namespace};

/// The most read from stdin, as containerd's own shims bound it.
const MAX_STDIN: u64 = 10 << 20;

/// The fd the listening socket is handed to the shim on.
pub const LISTENER_FD: i32 = 3;

/// Where shim sockets go: `TETHER_SHIM_SOCKET_DIR` or `/run/tether/s`.
pub fn socket_dir() -> PathBuf {
    std::env::var_os("TETHER_SHIM_SOCKET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR))
}

/// Pods share one shim: containerd's CRI plugin marks containers with their sandbox id.
fn grouping_id(bundle: &Path, id: &str) -> String {
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    spec.as_ref()
        .and_then(|s| s.get("annotations"))
        .and_then(|a| a.get("io.kubernetes.cri.sandbox-id"))
        .and_then(|v| v.as_str())
        .filter(|g| validate_id(g).is_ok())
        .unwrap_or(id)
        .to_string()
}

/// Starts (or finds) the shim; returns what to print, in the form containerd asked for.
pub fn start(cli_flags: &Flags) -> Result<Vec<u8>> {
    // stdin: containerd 2.3+'s BootstrapParams, or before it the runtime options (Create
    // carries them too; here only `ShimCgroup` matters).
    let mut raw = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN)
        .read_to_end(&mut raw)
        .map_err(ShimError::io("read stdin"))?;
    let input = bootstrap::read(&raw, cli_flags)?;
    let address = launch(&input)?;
    bootstrap::answer(input.protocol, &address)
}

fn launch(input: &StartInput) -> Result<String> {
    let flags = &input.flags;
    validate_namespace(&flags.namespace)?;
    validate_id(&flags.id)?;
    let shim_cgroup = &input.options.shim_cgroup;

    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(ShimError::io("getcwd"))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let group = grouping_id(&bundle, &flags.id);
    // Our own setting wins; else a directory containerd's operator chose; else ours.
    let dir = match (
        &input.socket_dir,
        std::env::var_os("TETHER_SHIM_SOCKET_DIR"),
    ) {
        (Some(chosen), None) => chosen.clone(),
        _ => socket_dir(),
    };
    std::fs::create_dir_all(&dir).map_err(ShimError::io(format!("create {}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(ShimError::io(format!("chmod 0700 {}", dir.display())))?;
    let path = shim_socket_path(&dir, &flags.address, &flags.namespace, &group);
    let address = to_address(&path);

    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(&path).is_ok() {
                // A live shim serves this group already: share it.
                write_address(&bundle, &address)?;
                return Ok(address);
            }
            std::fs::remove_file(&path).map_err(ShimError::io(format!(
                "remove stale socket {}",
                path.display()
            )))?;
            UnixListener::bind(&path).map_err(ShimError::io(format!("bind {}", path.display())))?
        }
        Err(e) => return Err(ShimError::io(format!("bind {}", path.display()))(e)),
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(ShimError::io(format!("chmod 0600 {}", path.display())))?;

    let pid = match spawn_shim(input, &bundle, OwnedFd::from(listener), &path) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    // Best effort, as a score is no reason to refuse a container: raising works without
    // CAP_SYS_RESOURCE, and the shim starts with containerd's score, one below the target.
    let _ = crate::oom_score::adjust(pid);
    if !shim_cgroup.is_empty() {
        // As containerd's shim: the shim lives in the cgroup it was given, or does not start.
        if let Err(e) = crate::cgroup::join::join(shim_cgroup, pid.as_u32()) {
            let _ = pid.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    }
    write_address(&bundle, &address)?;
    Ok(address)
}

fn write_address(bundle: &Path, address: &str) -> Result<()> {
    store::write_bytes(
        &bundle.join("address"),
        address.as_bytes(),
        store::Durability::Atomic,
    )?;
    Ok(())
}

fn spawn_shim(input: &StartInput, bundle: &Path, listener: OwnedFd, path: &Path) -> Result<Pid> {
    let flags = &input.flags;
    let exe = std::env::current_exe().map_err(ShimError::io("find own executable"))?;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(flags.daemon_args())
        .arg("-socket")
        .arg(path)
        .current_dir(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let (Some(a), None) = (&input.ttrpc_address, std::env::var_os("TTRPC_ADDRESS")) {
        // Where the events go, when containerd said it in BootstrapParams alone.
        cmd.env("TTRPC_ADDRESS", a);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == LISTENER_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, LISTENER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Not waited for: the shim outlives `start` and is adopted by a subreaper or init.
    let child = cmd.spawn().map_err(ShimError::io("spawn the shim"))?;
    drop(listener);
    Pid::new(child.id() as i64)
        .ok_or_else(|| ShimError::Runtime(format!("the shim got pid {}", child.id())))
}
