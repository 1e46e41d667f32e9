//! The service manager's variables: what systemd (or another supervisor) puts in the environment
//! of the service it starts, and which must not reach the processes that service starts in turn.
//!
//! containerd runs as `containerd.service` (`Type=notify`), so its environment holds
//! `NOTIFY_SOCKET`; a shim inherits it. Handed on to runc, `runc create` proxies a notify socket
//! into the container and `runc start` waits for the container to send `READY=1`: a long-running
//! container never starts (and with Docker's 64-character ids the proxied socket's path passes
//! the unix socket limit). containerd's own shim drops it from every runc command. The socket
//! activation and watchdog variables name fds and pids of the service, not of its children, and
//! `JOURNAL_STREAM` tells a program that its stderr is the journal, which is false for a child
//! given other stdio.

/// Variables a service manager sets for its service alone.
pub const SERVICE_MANAGER_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "MANAGERPID",
    "TRIGGER_UNIT",
    "TRIGGER_TIMESTAMP_REALTIME",
    "TRIGGER_TIMESTAMP_MONOTONIC",
];

/// Removes the service manager's variables from this process's environment, so that no child
/// inherits them, and returns `NOTIFY_SOCKET` as it was (for a service that notifies its own
/// readiness). Call it first in `main`, while the process has one thread: the environment is
/// not safe to change once other threads may read it.
pub fn take() -> Option<std::ffi::OsString> {
    let notify = std::env::var_os("NOTIFY_SOCKET");
    for var in SERVICE_MANAGER_VARS {
        std::env::remove_var(var);
    }
    notify
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_returns_notify_socket_and_clears_every_variable() {
        // One test touches the environment, so no other test of this crate races it.
        for var in SERVICE_MANAGER_VARS {
            std::env::set_var(var, "x");
        }
        std::env::set_var("NOTIFY_SOCKET", "/run/systemd/notify");
        std::env::set_var("TETHER_KEEP_ME", "1");
        assert_eq!(take().as_deref(), Some("/run/systemd/notify".as_ref()));
        for var in SERVICE_MANAGER_VARS {
            assert_eq!(std::env::var_os(var), None, "{var} is still set");
        }
        assert_eq!(std::env::var("TETHER_KEEP_ME").as_deref(), Ok("1"));
        assert_eq!(take(), None);
        std::env::remove_var("TETHER_KEEP_ME");
    }
}
