//! The records the shim and the manager keep on disk, and the container status state machine.
//!
//! Status is derived from timestamps, as containerd's CRI store does, so there is no second copy
//! that can disagree. Transitions are methods that refuse illegal moves with a typed error.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A container's status, derived from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    Created,
    Running,
    Paused,
    Exited,
    Unknown,
    Deleted,
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Created => "CREATED",
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::Exited => "EXITED",
            Self::Unknown => "UNKNOWN",
            Self::Deleted => "DELETED",
        };
        f.write_str(s)
    }
}

/// An illegal status transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {id}: cannot {action} a container that is {from}")]
pub struct TransitionError {
    pub id: String,
    pub action: &'static str,
    pub from: ContainerStatus,
}

/// What the manager knows of one container. Times are nanoseconds since the epoch; 0 = not yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub namespace: String,
    pub id: String,
    pub runtime: String,
    pub bundle: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub paused_at: i64,
    #[serde(default)]
    pub finished_at: i64,
    #[serde(default)]
    pub deleted_at: i64,
    #[serde(default)]
    pub exit_status: u32,
    /// Set when the shim cannot be reached after a restart and nothing on disk says how it ended.
    #[serde(default)]
    pub unknown: bool,
    /// Why the container ended as it did, when it was not a plain exit (e.g. its shim died).
    #[serde(default)]
    pub reason: String,
}

impl ContainerRecord {
    pub fn new(namespace: &str, id: &str, runtime: &str, bundle: &str, created_at: i64) -> Self {
        Self {
            namespace: namespace.into(),
            id: id.into(),
            runtime: runtime.into(),
            bundle: bundle.into(),
            created_at,
            ..Default::default()
        }
    }

    pub fn status(&self) -> ContainerStatus {
        if self.deleted_at != 0 {
            ContainerStatus::Deleted
        } else if self.finished_at != 0 {
            ContainerStatus::Exited
        } else if self.unknown || self.created_at == 0 {
            ContainerStatus::Unknown
        } else if self.started_at != 0 && self.paused_at != 0 {
            ContainerStatus::Paused
        } else if self.started_at != 0 {
            ContainerStatus::Running
        } else {
            ContainerStatus::Created
        }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError {
            id: self.id.clone(),
            action,
            from: self.status(),
        }
    }

    pub fn start(&mut self, pid: u32, at: i64) -> Result<(), TransitionError> {
        match self.status() {
            ContainerStatus::Created => {
                self.pid = pid;
                self.started_at = at;
                Ok(())
            }
            _ => Err(self.refuse("start")),
        }
    }

    pub fn pause(&mut self, at: i64) -> Result<(), TransitionError> {
        match self.status() {
            ContainerStatus::Running => {
                self.paused_at = at;
                Ok(())
            }
            _ => Err(self.refuse("pause")),
        }
    }

    pub fn resume(&mut self) -> Result<(), TransitionError> {
        match self.status() {
            ContainerStatus::Paused => {
                self.paused_at = 0;
                Ok(())
            }
            _ => Err(self.refuse("resume")),
        }
    }

    /// Records the exit. A created container can exit too (it was killed before it started),
    /// and so can one whose shim was unreachable, once its exit is known.
    pub fn exit(&mut self, status: u32, at: i64, reason: &str) -> Result<(), TransitionError> {
        match self.status() {
            ContainerStatus::Created
            | ContainerStatus::Running
            | ContainerStatus::Paused
            | ContainerStatus::Unknown => {
                self.exit_status = status;
                self.finished_at = at.max(1);
                self.paused_at = 0;
                self.unknown = false;
                self.reason = reason.into();
                Ok(())
            }
            _ => Err(self.refuse("record the exit of")),
        }
    }

    pub fn mark_unknown(&mut self, reason: &str) -> Result<(), TransitionError> {
        match self.status() {
            ContainerStatus::Exited | ContainerStatus::Deleted => Err(self.refuse("lose track of")),
            _ => {
                self.unknown = true;
                self.reason = reason.into();
                Ok(())
            }
        }
    }

    pub fn delete(&mut self, at: i64) -> Result<(), TransitionError> {
        match self.status() {
            ContainerStatus::Deleted => Err(self.refuse("delete")),
            _ => {
                self.deleted_at = at.max(1);
                Ok(())
            }
        }
    }
}

/// The exit of one process, persisted by the shim when it reaps it, before the exit event is
/// published: `shim delete` and a restarted manager read the real status from here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub id: String,
    #[serde(default)]
    pub exec_id: String,
    pub pid: u32,
    pub exit_status: u32,
    /// Nanoseconds since the epoch.
    pub exited_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerStatus::*;

    #[test]
    fn life_cycle_is_derived_from_timestamps() {
        let mut r = ContainerRecord::new("default", "c1", "io.containerd.tether.v2", "/b", 10);
        assert_eq!(r.status(), Created);
        r.start(42, 20).unwrap();
        assert_eq!((r.status(), r.pid), (Running, 42));
        r.pause(30).unwrap();
        assert_eq!(r.status(), Paused);
        assert_eq!(r.start(1, 1).unwrap_err().from, Paused);
        r.resume().unwrap();
        assert_eq!(r.status(), Running);
        r.exit(137, 40, "").unwrap();
        assert_eq!((r.status(), r.exit_status), (Exited, 137));
        let e = r.exit(0, 50, "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "container c1: cannot record the exit of a container that is EXITED"
        );
        assert_eq!(r.finished_at, 40, "a refused transition changes nothing");
        r.delete(60).unwrap();
        assert_eq!(r.status(), Deleted);
        assert!(r.delete(70).is_err());
    }

    #[test]
    fn unknown_until_the_exit_is_known() {
        let mut r = ContainerRecord::new("ns", "c2", "rt", "/b", 10);
        r.start(5, 11).unwrap();
        r.mark_unknown("shim unreachable").unwrap();
        assert_eq!(r.status(), Unknown);
        assert!(r.pause(12).is_err());
        r.exit(3, 13, "recovered").unwrap();
        assert_eq!(r.status(), Exited);
        assert!(r.mark_unknown("x").is_err());
    }

    mod props {
        use super::super::*;
        use crate::store::{decode, encode};
        use proptest::prelude::*;
        use std::path::Path;

        fn record() -> impl Strategy<Value = ContainerRecord> {
            (
                (".{0,20}", ".{0,20}", ".{0,20}", ".{0,40}", any::<u32>()),
                (
                    any::<i64>(),
                    any::<i64>(),
                    any::<i64>(),
                    any::<i64>(),
                    any::<i64>(),
                ),
                (any::<u32>(), any::<bool>(), ".{0,40}"),
            )
                .prop_map(
                    |((namespace, id, runtime, bundle, pid), t, (status, unknown, reason))| {
                        ContainerRecord {
                            namespace,
                            id,
                            runtime,
                            bundle,
                            pid,
                            created_at: t.0,
                            started_at: t.1,
                            paused_at: t.2,
                            finished_at: t.3,
                            deleted_at: t.4,
                            exit_status: status,
                            unknown,
                            reason,
                        }
                    },
                )
        }

        /// JSON-ish noise: fragments of real records glued with arbitrary text.
        fn noise() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..512),
                proptest::collection::vec(
                    prop_oneof![
                        Just("{".to_string()),
                        Just("}".to_string()),
                        Just("\"version\":\"v1\",".to_string()),
                        Just("\"version\":\"v9\",".to_string()),
                        Just("\"id\":\"a\",".to_string()),
                        Just("\"pid\":-1,".to_string()),
                        Just("\"exit_status\":1e400,".to_string()),
                        Just("null".to_string()),
                        Just("[".to_string()),
                        ".{0,8}",
                    ],
                    0..24,
                )
                .prop_map(|parts| parts.concat().into_bytes()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Bytes on disk are not trusted: decoding answers a record or an error naming
            /// the file, never a panic.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in noise()) {
                let path = Path::new("/state/c.json");
                if let Err(e) = decode::<ContainerRecord>(path, &bytes) {
                    prop_assert!(e.to_string().starts_with("/state/c.json"), "{e}");
                }
                let _ = decode::<ExitRecord>(path, &bytes);
            }

            /// Any record round-trips through the codec, and so does its derived status.
            #[test]
            fn records_round_trip(r in record()) {
                let bytes = encode(&r).expect("encode");
                let back: ContainerRecord = decode(Path::new("c.json"), &bytes).expect("decode");
                prop_assert_eq!(back.status(), r.status());
                prop_assert_eq!(back, r);
            }

            #[test]
            fn exit_records_round_trip(
                id in ".{0,20}", exec_id in ".{0,20}",
                pid in any::<u32>(), exit_status in any::<u32>(), exited_at in any::<i64>(),
            ) {
                let r = ExitRecord { id, exec_id, pid, exit_status, exited_at };
                let bytes = encode(&r).expect("encode");
                let back: ExitRecord = decode(Path::new("exit.json"), &bytes).expect("decode");
                prop_assert_eq!(back, r);
            }
        }
    }

    #[test]
    fn records_round_trip_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        let mut r = ContainerRecord::new("ns", "c3", "rt", "/b", 10);
        r.start(9, 12).unwrap();
        crate::store::write(&p, &r).unwrap();
        let back: ContainerRecord = crate::store::read(&p).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.status(), Running);
    }
}
