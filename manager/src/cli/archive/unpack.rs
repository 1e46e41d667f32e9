//! Reading an archive entry by entry with the format's checks (see `mod.rs`): every write stays
//! under the target directory, within the byte bound.

use super::{io, ArchiveError};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// `p` as plain relative components, or why not.
fn clean(p: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path contains \"..\"".into()),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("its path is empty".into());
    }
    Ok(out)
}

/// `.`, `./` or `././`: a path naming the directory it is relative to.
fn is_current_dir(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| c == Component::CurDir)
}

/// Unpacks `archive` into `target` (an existing, empty directory) with the checks above,
/// writing at most `limit` bytes of file data.
pub fn unpack(archive: &Path, target: &Path, limit: u64) -> Result<(), ArchiveError> {
    let name = archive.display().to_string();
    let mut file = File::open(archive).map_err(io(format!("open {name}")))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(io(format!("read {name}")))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        return Err(ArchiveError::Corrupt {
            archive: name,
            why: "it is gzip-compressed; a checkpoint archive is a plain tar".into(),
        });
    }
    let file = File::open(archive).map_err(io(format!("open {name}")))?;
    unpack_from(&name, file, target, limit)
}

fn unpack_from(
    name: &str,
    input: impl Read,
    target: &Path,
    limit: u64,
) -> Result<(), ArchiveError> {
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt {
        archive: name.to_string(),
        why: format!("not a readable tar archive: {e}"),
    };
    let mut ar = tar::Archive::new(input);
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut total: u64 = 0;
    let mut seen = 0usize;
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        seen += 1;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let refuse = |why: String| ArchiveError::Refused {
            archive: name.to_string(),
            entry: raw.display().to_string(),
            why,
        };
        let kind = entry.header().entry_type();
        // `tar -C DIR -cf A.tar .` starts with `./`: the target directory itself.
        if kind == tar::EntryType::Directory && is_current_dir(&raw) {
            continue;
        }
        let rel = clean(&raw).map_err(refuse)?;
        let dest = target.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                make_parents(target, &rel, &refuse)?;
                match std::fs::create_dir(&dest) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let md = std::fs::symlink_metadata(&dest)
                            .map_err(io(format!("stat {}", dest.display())))?;
                        if !md.is_dir() {
                            return Err(refuse("a directory over a non-directory".into()));
                        }
                    }
                    Err(e) => return Err(io(format!("create {}", dest.display()))(e)),
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(corrupt)?;
                total = total.saturating_add(size);
                if total > limit {
                    return Err(refuse(format!(
                        "the archive unpacks to more than {limit} bytes"
                    )));
                }
                make_parents(target, &rel, &refuse)?;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .map_err(|e| refuse(format!("cannot create it: {e}")))?;
                // Never more than the header said, whatever the stream holds.
                let copied =
                    std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(corrupt)?;
                if copied != size {
                    return Err(refuse(format!("truncated: {copied} of {size} bytes")));
                }
                out.flush()
                    .map_err(io(format!("write {}", dest.display())))?;
                files.insert(rel);
            }
            tar::EntryType::Symlink => {
                // A checkpoint holds none (containerd's CRI writes none, nor do we), and a
                // link checked as text can climb out through the links before it.
                return Err(refuse(
                    "a symbolic link is not allowed in a checkpoint archive".into(),
                ));
            }
            tar::EntryType::Link => {
                let to = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| refuse("a hard link without a target".into()))?
                    .into_owned();
                let to = clean(&to)
                    .ok()
                    .filter(|t| files.contains(t))
                    .ok_or_else(|| {
                        refuse(format!(
                            "a hard link to {}, which is not a file unpacked before it",
                            to.display()
                        ))
                    })?;
                make_parents(target, &rel, &refuse)?;
                std::fs::hard_link(target.join(&to), &dest)
                    .map_err(|e| refuse(format!("cannot create it: {e}")))?;
                files.insert(rel);
            }
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(refuse(format!(
                    "a {} is not allowed",
                    match other {
                        tar::EntryType::Char => "character device".to_string(),
                        tar::EntryType::Block => "block device".to_string(),
                        tar::EntryType::Fifo => "FIFO".to_string(),
                        o => format!("{o:?} entry"),
                    }
                )))
            }
        }
    }
    if seen == 0 {
        return Err(ArchiveError::Corrupt {
            archive: name.to_string(),
            why: "it holds no entries".into(),
        });
    }
    Ok(())
}

/// Creates `rel`'s parent directories under `target`, refusing to pass anything but a
/// directory (a symlink already there is never followed).
fn make_parents(
    target: &Path,
    rel: &Path,
    refuse: &dyn Fn(String) -> ArchiveError,
) -> Result<(), ArchiveError> {
    let mut at = target.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => return Err(refuse(format!("{} is not a directory", at.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(io(format!("create {}", at.display())))?
            }
            Err(e) => return Err(io(format!("stat {}", at.display()))(e)),
        }
    }
    Ok(())
}
