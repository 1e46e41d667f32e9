//! Archives written and unpacked, hostile ones refused.

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
