//! Checkpoint archives: CRI's layout (`checkpoint/` with the CRIU images, `config.dump`,
//! `spec.dump`, `rootfs-diff.tar`, `status.dump`) as a plain tar, written whole or not at all,
//! and read entry by entry with our own checks, because an archive is someone else's input:
//! no absolute paths, no `..`, no symbolic links, hard links only to files unpacked before, no
//! device nodes or FIFOs, and a bound on the bytes unpacked. Every write stays under the
//! target directory; a refused archive leaves nothing behind but what the caller removes.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// What a restore unpacks at most by default: CRIU images hold the container's memory.
pub const DEFAULT_LIMIT: u64 = 16 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive {archive}: entry {entry:?} refused: {why}")]
    Refused {
        archive: String,
        entry: String,
        why: String,
    },
    #[error("archive {archive}: {why}")]
    Corrupt { archive: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Io { what, source }
}

/// Writes the archive to `out` (through a temporary file beside it, renamed at the end, so a
/// failure leaves no partial archive): `files` at the top, `image_dir`'s files under
/// `checkpoint/`.
pub fn write(out: &Path, image_dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), ArchiveError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
        let mut b = tar::Builder::new(file);
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Deterministic);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data.as_slice())
                .map_err(io(format!("add {name} to {}", tmp.display())))?;
        }
        b.append_dir_all("checkpoint", image_dir)
            .map_err(io(format!(
                "add {} to {}",
                image_dir.display(),
                tmp.display()
            )))?;
        let file = b
            .into_inner()
            .map_err(io(format!("finish {}", tmp.display())))?;
        file.sync_all()
            .map_err(io(format!("sync {}", tmp.display())))?;
        std::fs::rename(&tmp, out).map_err(io(format!("rename to {}", out.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

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

/// An archive the CLI cannot read is the user's input: refused as an invalid argument.
impl From<ArchiveError> for crate::error::Error {
    fn from(e: ArchiveError) -> crate::error::Error {
        crate::error::Error::InvalidArgument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry with a raw name (the tar crate refuses to write hostile names itself).
    struct Raw {
        name: &'static str,
        kind: tar::EntryType,
        link: Option<&'static str>,
        data: Vec<u8>,
    }

    fn entry(name: &'static str, data: &[u8]) -> Raw {
        Raw {
            name,
            kind: tar::EntryType::Regular,
            link: None,
            data: data.to_vec(),
        }
    }

    fn link(name: &'static str, kind: tar::EntryType, to: &'static str) -> Raw {
        Raw {
            name,
            kind,
            link: Some(to),
            data: Vec::new(),
        }
    }

    fn build(entries: &[Raw]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_old();
            let name = &mut h.as_old_mut().name;
            name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            if let Some(to) = e.link {
                let l = &mut h.as_old_mut().linkname;
                l[..to.len()].copy_from_slice(to.as_bytes());
            }
            h.set_entry_type(e.kind);
            h.set_mode(0o644);
            h.set_size(e.data.len() as u64);
            h.set_cksum();
            b.append(&h, e.data.as_slice()).expect("append");
        }
        b.into_inner().expect("finish")
    }

    /// Unpacks `bytes` into `<tmp>/target`; returns the error and the names in `<tmp>`
    /// besides `target` and the archive (which must be none).
    fn refused(bytes: &[u8], limit: u64) -> (String, Vec<String>) {
        let base = tempfile::tempdir().expect("tempdir");
        let target = base.path().join("target");
        std::fs::create_dir(&target).expect("target");
        let ar = base.path().join("a.tar");
        std::fs::write(&ar, bytes).expect("write");
        let err = unpack(&ar, &target, limit).expect_err("must be refused");
        let mut others: Vec<String> = std::fs::read_dir(base.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "target" && n != "a.tar")
            .collect();
        others.sort();
        (err.to_string(), others)
    }

    #[test]
    fn hostile_archives_are_refused_naming_the_entry_and_nothing_escapes() {
        let abs = tempfile::tempdir().expect("tempdir");
        let abs_name: &'static str =
            Box::leak(format!("{}/evil", abs.path().display()).into_boxed_str());
        let cases: Vec<(&str, Vec<Raw>, &str, &str)> = vec![
            (
                "absolute path",
                vec![entry(abs_name, b"x")],
                abs_name,
                "absolute",
            ),
            ("dot-dot", vec![entry("../evil", b"x")], "../evil", "\"..\""),
            (
                "dot-dot inside",
                vec![entry("checkpoint/../../evil", b"x")],
                "checkpoint/../../evil",
                "\"..\"",
            ),
            (
                "symlink out",
                vec![link("checkpoint", tar::EntryType::Symlink, "../..")],
                "checkpoint",
                "symbolic link",
            ),
            (
                "absolute symlink",
                vec![link("l", tar::EntryType::Symlink, "/etc")],
                "\"l\"",
                "symbolic link",
            ),
            (
                "write through a symlink",
                vec![link("d", tar::EntryType::Symlink, "."), entry("d/x", b"x")],
                "\"d\"",
                "symbolic link",
            ),
            (
                "a link through a link the archive made",
                vec![
                    link("a/b", tar::EntryType::Symlink, ".."),
                    link(
                        "spec.dump",
                        tar::EntryType::Symlink,
                        "a/b/a/b/../../../etc/shadow",
                    ),
                ],
                "\"a/b\"",
                "symbolic link",
            ),
            (
                "a symlink inside",
                vec![entry("f", b"1"), link("s", tar::EntryType::Symlink, "f")],
                "\"s\"",
                "symbolic link",
            ),
            (
                "hard link out",
                vec![link("h", tar::EntryType::Link, "/etc/passwd")],
                "\"h\"",
                "hard link",
            ),
            (
                "hard link up",
                vec![link("h", tar::EntryType::Link, "../a.tar")],
                "\"h\"",
                "hard link",
            ),
            (
                "char device",
                vec![Raw {
                    name: "dev",
                    kind: tar::EntryType::Char,
                    link: None,
                    data: Vec::new(),
                }],
                "\"dev\"",
                "character device",
            ),
            (
                "block device",
                vec![Raw {
                    name: "blk",
                    kind: tar::EntryType::Block,
                    link: None,
                    data: Vec::new(),
                }],
                "\"blk\"",
                "block device",
            ),
            (
                "fifo",
                vec![Raw {
                    name: "f",
                    kind: tar::EntryType::Fifo,
                    link: None,
                    data: Vec::new(),
                }],
                "\"f\"",
                "FIFO",
            ),
            (
                "oversize",
                vec![entry("a", &[0u8; 600]), entry("b", &[0u8; 600])],
                "\"b\"",
                "more than 1000 bytes",
            ),
        ];
        for (what, entries, names, why) in cases {
            let (err, others) = refused(&build(&entries), 1000);
            assert!(err.contains(names) && err.contains(why), "{what}: {err}");
            assert!(others.is_empty(), "{what}: written outside: {others:?}");
        }
        assert!(
            !abs.path().join("evil").exists(),
            "the absolute path was written"
        );
    }

    /// `tar -C DIR -cf A.tar .` (the usual way to pack a directory) names its entries `./`,
    /// `./spec.dump`, `./checkpoint/...`: unpacked as the same files; `./..` is still refused.
    #[test]
    fn dot_slash_archives_from_tar_unpack() {
        let base = tempfile::tempdir().expect("tempdir");
        let src = base.path().join("src");
        std::fs::create_dir_all(src.join("checkpoint")).expect("mkdir");
        std::fs::write(src.join("spec.dump"), b"{}").expect("write");
        std::fs::write(src.join("checkpoint/core-1.img"), b"core").expect("write");
        let ar = base.path().join("a.tar");
        let st = std::process::Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&ar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(st.success(), "tar: {st}");
        let target = base.path().join("t");
        std::fs::create_dir(&target).expect("target");
        unpack(&ar, &target, 1 << 20).expect("a ./-prefixed archive unpacks");
        assert_eq!(
            std::fs::read(target.join("spec.dump")).expect("spec"),
            b"{}"
        );
        assert_eq!(
            std::fs::read(target.join("checkpoint/core-1.img")).expect("img"),
            b"core"
        );
        let (err, others) = refused(&build(&[entry("./../evil", b"x")]), 1000);
        assert!(err.contains("\"..\""), "{err}");
        assert!(others.is_empty(), "{others:?}");
    }

    #[test]
    fn corrupt_archives_are_refused() {
        let good = build(&[entry("a", b"hello")]);
        let mut bad_sum = good.clone();
        bad_sum[0] ^= 0x55; // the name changes, the checksum does not
        let truncated = good[..512 + 2].to_vec();
        let gzip = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
        for (what, bytes, why) in [
            ("bad checksum", bad_sum, "not a readable tar"),
            ("truncated", truncated, "a.tar"),
            ("gzip", gzip.to_vec(), "gzip"),
            ("empty", Vec::new(), "no entries"),
        ] {
            let (err, others) = refused(&bytes, 1 << 20);
            assert!(err.contains(why) && err.contains("a.tar"), "{what}: {err}");
            assert!(others.is_empty(), "{what}: {others:?}");
        }
    }

    #[test]
    fn written_archives_unpack_to_the_same_files() {
        let base = tempfile::tempdir().expect("tempdir");
        let images = base.path().join("images");
        std::fs::create_dir_all(images.join("sub")).expect("images");
        std::fs::write(images.join("core-1.img"), b"core").expect("img");
        std::fs::write(images.join("sub/x.img"), b"x").expect("img");
        let out = base.path().join("cp.tar");
        write(&out, &images, &[("spec.dump", b"{}".to_vec())]).expect("write");
        let target = base.path().join("t");
        std::fs::create_dir(&target).expect("target");
        unpack(&out, &target, DEFAULT_LIMIT).expect("unpack");
        let read = |p: &str| std::fs::read(target.join(p)).expect(p);
        assert_eq!(read("spec.dump"), b"{}");
        assert_eq!(read("checkpoint/core-1.img"), b"core");
        assert_eq!(read("checkpoint/sub/x.img"), b"x");
        // A hard link to a file unpacked before it is fine.
        let ok = build(&[entry("f", b"1"), link("h", tar::EntryType::Link, "f")]);
        let t2 = base.path().join("t2");
        std::fs::create_dir(&t2).expect("t2");
        std::fs::write(base.path().join("ok.tar"), ok).expect("write");
        unpack(&base.path().join("ok.tar"), &t2, 100).expect("inside links");
        assert_eq!(std::fs::read(t2.join("h")).expect("h"), b"1");
    }
}
