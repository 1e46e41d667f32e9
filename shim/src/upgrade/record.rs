//! The handover record: everything a shim image holds that the next one needs, by fd number
//! (the fds themselves cross `execve` because their FD_CLOEXEC was cleared). Versioned: a new
//! image refuses a record version it does not know (`--handover-check`).

use crate::runtime::RuntimeConfig;
use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Bumped on any change an older or newer image could misread. 2: the event queue and its
/// connection, unclaimed exits, an init exit held, requests deferred during the upgrade.
pub const RECORD_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub record_version: u32,
    /// The version of the image that wrote it.
    pub shim_version: String,
    pub namespace: String,
    /// Who asked for the upgrade (answered by the image that serves next), and when
    /// (CLOCK_MONOTONIC nanoseconds: the clock survives `execve`).
    pub reply: Option<ReplyRecord>,
    pub requested_at: u64,
    /// When the old image committed (started writing this record).
    #[serde(default)]
    pub committed_at: u64,
    /// The old binary, open since its start: the new image falls back to it by `execveat`.
    pub fallback_exe: RawFd,
    pub listener: RawFd,
    pub conns: Vec<ConnRecord>,
    pub next_conn: usize,
    pub waiters: Vec<WaiterRecord>,
    pub containers: Vec<ContainerRecord>,
    pub pumps: Vec<PumpRecord>,
    pub next_pump: usize,
    pub ooms: Vec<OomRecord>,
    pub next_oom: usize,
    /// Events not yet taken by containerd, with their connection.
    pub events: EventsRecord,
    /// Exits reaped and not yet claimed by a process.
    pub unclaimed: Vec<ExitRecord>,
    /// Requests that arrived while the upgrade waited, for the new image to run.
    pub deferred: Vec<DeferredRecord>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ReplyRecord {
    pub token: usize,
    pub stream_id: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnRecord {
    pub token: usize,
    pub fd: RawFd,
    /// Read short of a whole frame.
    pub inbuf: Vec<u8>,
    /// Replies not yet written.
    pub outbuf: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WaiterRecord {
    pub token: usize,
    pub stream_id: u32,
    pub container: String,
    pub exec_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: RuntimeConfig,
    pub rootfs_mounted: bool,
    pub kill_all_on_exit: bool,
    /// The init's exit waits for its execs' exits.
    pub init_exit_held: bool,
    pub restore_from: Option<PathBuf>,
    pub init: ProcessRecord,
    pub execs: Vec<ProcessRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub exec_id: String,
    pub pid: Option<i32>,
    pub state: StateRecord,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// Pump tokens.
    pub io_stdin: Option<usize>,
    pub io_stdout: Option<usize>,
    pub io_stderr: Option<usize>,
    /// The terminal master.
    pub console: Option<RawFd>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum StateRecord {
    Created,
    Running,
    Paused,
    Stopped { status: u32, at: i64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PumpRecord {
    pub token: usize,
    pub src: RawFd,
    pub sink: SinkRecord,
    /// A terminal copy's bytes read and not yet written (None: a splice pump).
    pub pending: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum SinkRecord {
    Fifo {
        w: RawFd,
        keep: Option<RawFd>,
    },
    Pipe(RawFd),
    /// Log files shared by stdout and stderr appear twice with the same fd.
    File(RawFd),
    Tty(RawFd),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OomRecord {
    pub token: usize,
    pub container: String,
    pub fd: RawFd,
    pub dir: PathBuf,
    /// v2: the `oom_kill` count already seen; v1 (eventfd): None.
    pub v2_seen: Option<u64>,
}

/// The event publisher: its queue in order, and the connection with the request in flight
/// (handed over so the reply to it reaches the new image: no event is sent twice).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EventsRecord {
    pub conn: Option<ConnRecord>,
    /// The stream id of the `Forward` in flight (the queue's first event).
    pub in_flight: Option<u32>,
    pub next_stream: u32,
    pub queue: Vec<EventRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventRecord {
    pub topic: String,
    pub keep: bool,
    pub type_url: String,
    pub value: Vec<u8>,
    pub at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: i32,
    pub status: u32,
    pub at: i64,
}

/// A task request taken while the upgrade waited for the shim to be quiet.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeferredRecord {
    pub token: usize,
    pub stream_id: u32,
    pub method: String,
    pub payload: Vec<u8>,
    /// What was left of its deadline at the commit.
    pub deadline_left_micros: u64,
}

impl Record {
    /// Every fd the record names: these, and only these, cross `execve`.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v = vec![self.fallback_exe, self.listener];
        v.extend(self.conns.iter().map(|c| c.fd));
        for c in &self.containers {
            for p in std::iter::once(&c.init).chain(&c.execs) {
                v.extend(p.console);
            }
        }
        for p in &self.pumps {
            v.push(p.src);
            match p.sink {
                SinkRecord::Fifo { w, keep } => v.extend(std::iter::once(w).chain(keep)),
                SinkRecord::Pipe(fd) | SinkRecord::File(fd) | SinkRecord::Tty(fd) => v.push(fd),
            }
        }
        v.extend(self.ooms.iter().map(|o| o.fd));
        v.extend(self.events.conn.as_ref().map(|c| c.fd));
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(console: Option<RawFd>) -> ProcessRecord {
        ProcessRecord {
            exec_id: String::new(),
            pid: Some(42),
            state: StateRecord::Stopped { status: 7, at: 9 },
            stdin: String::new(),
            stdout: "/fifo/out".into(),
            stderr: String::new(),
            terminal: console.is_some(),
            io_stdin: None,
            io_stdout: Some(1 << 20),
            io_stderr: None,
            console,
        }
    }

    #[test]
    fn the_record_names_every_fd_once_and_round_trips() {
        let r = Record {
            record_version: RECORD_VERSION,
            shim_version: "0.1.0".into(),
            namespace: "ns".into(),
            reply: Some(ReplyRecord {
                token: 16,
                stream_id: 3,
            }),
            requested_at: 1,
            committed_at: 2,
            fallback_exe: 5,
            listener: 3,
            conns: vec![ConnRecord {
                token: 16,
                fd: 7,
                inbuf: vec![1, 2],
                outbuf: vec![],
            }],
            next_conn: 17,
            waiters: vec![],
            containers: vec![ContainerRecord {
                id: "c".into(),
                bundle: "/b".into(),
                runtime: serde_json::from_str(
                    r#"{"binary":"runc","root":"/r","systemd_cgroup":false}"#,
                )
                .expect("a runtime config"),
                rootfs_mounted: true,
                kill_all_on_exit: false,
                init_exit_held: true,
                restore_from: None,
                init: process(Some(8)),
                execs: vec![process(None)],
            }],
            pumps: vec![
                PumpRecord {
                    token: 1 << 20,
                    src: 9,
                    sink: SinkRecord::File(11),
                    pending: None,
                },
                PumpRecord {
                    token: (1 << 20) + 2,
                    src: 10,
                    sink: SinkRecord::File(11),
                    pending: None,
                },
                PumpRecord {
                    token: (1 << 20) + 4,
                    src: 12,
                    sink: SinkRecord::Fifo {
                        w: 13,
                        keep: Some(14),
                    },
                    pending: Some(b"x".to_vec()),
                },
            ],
            next_pump: (1 << 20) + 6,
            ooms: vec![OomRecord {
                token: 1 << 19,
                container: "c".into(),
                fd: 15,
                dir: "/sys/fs/cgroup/x".into(),
                v2_seen: Some(2),
            }],
            next_oom: (1 << 19) + 1,
            events: EventsRecord {
                conn: Some(ConnRecord {
                    token: 3,
                    fd: 16,
                    inbuf: vec![],
                    outbuf: vec![9],
                }),
                in_flight: Some(5),
                next_stream: 7,
                queue: vec![EventRecord {
                    topic: "/tasks/exit".into(),
                    keep: true,
                    type_url: "containerd.events.TaskExit".into(),
                    value: vec![1, 2, 3],
                    at: 4,
                }],
            },
            unclaimed: vec![ExitRecord {
                pid: 99,
                status: 137,
                at: 5,
            }],
            deferred: vec![DeferredRecord {
                token: 16,
                stream_id: 5,
                method: "Kill".into(),
                payload: vec![],
                deadline_left_micros: 1000,
            }],
        };
        assert_eq!(r.fds(), vec![3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        let back: Record =
            serde_json::from_slice(&serde_json::to_vec(&r).expect("encode")).expect("decode");
        assert_eq!(back.fds(), r.fds());
        assert!(matches!(
            back.containers[0].init.state,
            StateRecord::Stopped { status: 7, at: 9 }
        ));
        assert_eq!(back.pumps[2].pending.as_deref(), Some(&b"x"[..]));
        assert!(back.containers[0].init_exit_held);
        assert_eq!(back.events.queue[0].value, vec![1, 2, 3]);
        assert_eq!(back.unclaimed[0].status, 137);
        assert_eq!(back.deferred[0].method, "Kill");
    }
}
