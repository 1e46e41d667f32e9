//! The state store: versioned JSON records written atomically and durably.
//!
//! Every record is a JSON object with `"version": "v1"` beside its fields. A write goes to a temp
//! file in the same directory, is fsync'd, renamed over the target and the directory fsync'd, so
//! a reader sees the old record or the new one, never a part, even if the writer is SIGKILLed.
//! Delete is rename-then-remove and idempotent. Reads name the file and what was wrong.

use serde::{de::DeserializeOwned, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The record version this build writes and reads.
pub const VERSION: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: no such record", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: corrupt record: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: unknown record version {version:?} (this build reads {VERSION:?})", path.display())]
    UnknownVersion { path: PathBuf, version: String },
}

impl StoreError {
    fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A sibling of `path` no other writer uses: `.<name>.<pid>.<seq>.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{seq}.{suffix}", std::process::id()))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir, "fsync directory"))
}

/// Encodes `value` (which must serialize to a JSON object) with the version field.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut v = serde_json::to_value(value)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("version".into(), VERSION.into());
    }
    serde_json::to_vec(&v)
}

/// Decodes a record read from `path`, checking its version first.
pub fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| corrupt("not a JSON object".into()))?;
    match obj.remove("version") {
        Some(serde_json::Value::String(s)) if s == VERSION => {}
        Some(serde_json::Value::String(s)) => {
            return Err(StoreError::UnknownVersion {
                path: path.to_path_buf(),
                version: s,
            })
        }
        Some(other) => return Err(corrupt(format!("\"version\" is not a string: {other}"))),
        None => return Err(corrupt("no \"version\" field".into())),
    }
    serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
}

/// How much a write promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Atomic and durable: survives a crash of the machine (fsync of file and directory).
    Durable,
    /// Atomic only: readers never see a partial record and a killed writer leaves the old one,
    /// but a power loss may lose it. For runtime state under `/run`, which a reboot clears
    /// anyway, and where an fsync would sit between a process's exit and its event.
    Atomic,
}

/// Writes `value` to `path` atomically and durably.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    write_with(path, value, Durability::Durable)
}

/// Writes `value` to `path` atomically, with the durability asked for.
pub fn write_with<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), StoreError> {
    let bytes = encode(value).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot encode: {e}"),
    })?;
    write_bytes(path, &bytes, durability)
}

/// Writes raw bytes to `path` atomically (also used for the shim's `address` file).
pub fn write_bytes(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), StoreError> {
    let tmp = sibling(path, "tmp");
    let durable = durability == Durability::Durable;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(StoreError::io(&tmp, "create temp file"))?;
        f.write_all(bytes).map_err(StoreError::io(&tmp, "write"))?;
        if durable {
            f.sync_all().map_err(StoreError::io(&tmp, "fsync"))?;
        }
        fs::rename(&tmp, path).map_err(StoreError::io(path, "rename temp file over"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if durable {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// Reads the record at `path`.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StoreError::NotFound {
            path: path.to_path_buf(),
        },
        _ => StoreError::Io {
            path: path.to_path_buf(),
            op: "read",
            source: e,
        },
    })?;
    decode(path, &bytes)
}

/// Removes the record at `path`; removing one that is not there succeeds.
pub fn remove(path: &Path) -> Result<(), StoreError> {
    let grave = sibling(path, "del");
    match fs::rename(path, &grave) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(path, "rename for removal")(e)),
    }
    fs::remove_file(&grave).map_err(StoreError::io(&grave, "remove"))?;
    sync_dir(parent(path))
}

/// Whether a directory entry is a store leftover (temp or grave file) rather than a record.
pub fn is_leftover(name: &str) -> bool {
    name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".del"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct R {
        id: String,
        n: u64,
    }

    #[test]
    fn round_trip_and_idempotent_delete() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        let r = R {
            id: "a".into(),
            n: 7,
        };
        write(&p, &r).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"version\":\"v1\""), "{text}");
        assert_eq!(read::<R>(&p).unwrap(), r);
        remove(&p).unwrap();
        assert!(read::<R>(&p).unwrap_err().is_not_found());
        remove(&p).unwrap();
        // Nothing but the record ever lands in the directory.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_and_unknown_version_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        let cases: &[(&str, &str)] = &[
            ("{\"version\":\"v1\",\"id\":", "corrupt record: not JSON"),
            ("[1,2]", "not a JSON object"),
            ("{\"id\":\"a\",\"n\":1}", "no \"version\" field"),
            (
                "{\"version\":2,\"id\":\"a\",\"n\":1}",
                "\"version\" is not a string",
            ),
            ("{\"version\":\"v1\",\"id\":\"a\"}", "missing field `n`"),
            (
                "{\"version\":\"v9\",\"id\":\"a\",\"n\":1}",
                "unknown record version \"v9\"",
            ),
        ];
        for (text, want) in cases {
            fs::write(&p, text).unwrap();
            let err = read::<R>(&p).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.starts_with(&p.display().to_string()), "{err}");
        }
    }
}
