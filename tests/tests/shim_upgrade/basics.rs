//! One upgrade in place, refusals, the fallback after execve, ten upgrades in a row.

use super::*;

#[test]
fn a_running_containers_shim_moves_to_the_new_binary_in_place() {
    let s = Setup::start();
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let inheritable = inheritable_fds(pid);
    let wait = s.park_wait();
    let new = s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    assert_ne!(old, new, "a new inode at the shim's path");

    let r = s
        .upgrade()
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}\n{}", s.cd.log_excerpt()));
    eprintln!(
        "upgrade {} -> {} took {} µs, the handover {} µs",
        r.old_version, r.new_version, r.took_micros, r.handover_micros
    );
    assert_eq!(r.pid as i32, pid, "{r:?}");
    assert_eq!(r.binary, s.binary().display().to_string());
    assert_eq!(s.shim_pid(), pid, "the same shim process serves");
    assert_eq!(exe_inode(pid), new, "the shim runs the new binary");
    let after = inheritable_fds(pid);
    assert!(
        after.iter().all(|fd| inheritable.contains(fd)),
        "the handed-over fds are close-on-exec again in the new image: {after:?}, \
         before {inheritable:?}"
    );
    s.assert_running();
    // A second upgrade, from the upgraded image and through the command line, works as well.
    let out = s.upgrade_cli();
    assert_eq!(out.code, 0, "{out}");
    let line = format!("{}: upgraded (0.1.0 -> 0.1.0, ", s.socket().display());
    assert!(out.stdout.starts_with(&line), "{out}");
    assert!(
        out.stdout.trim_end().ends_with(&format!("pid {pid})")),
        "{out}"
    );
    assert_eq!(s.shim_pid(), pid);
    s.assert_running();
    s.finish(wait);
}

#[test]
fn a_binary_that_cannot_take_over_is_refused_and_the_old_code_serves_on() {
    let s = Setup::start();
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let wait = s.park_wait();
    let real = std::fs::read(s.binary()).expect("read the installed binary");
    s.install(b"#!/bin/sh\necho 'not a shim' >&2\nexit 1\n");

    let e = s
        .upgrade()
        .expect_err("a binary that exits 1 cannot take over");
    let status = rawttrpc::rpc_status("upgrade to a broken binary", Err::<(), _>(e));
    assert_eq!(
        status.code(),
        ttrpc::Code::FAILED_PRECONDITION,
        "{status:?}"
    );
    assert!(status.message().contains("cannot take over"), "{status:?}");
    let out = s.upgrade_cli();
    assert_eq!(out.code, 1, "a refusal fails the command: {out}");
    assert!(
        out.stdout
            .starts_with(&format!("{}: refused (", s.socket().display()))
            && out.stdout.contains("cannot take over"),
        "{out}"
    );
    assert_eq!(s.shim_pid(), pid);
    assert_eq!(exe_inode(pid), old, "the old image serves on");
    s.assert_running();
    // A working binary again, for containerd's own clean-up.
    s.install(&real);
    s.finish(wait);
}

#[test]
fn a_new_image_that_fails_after_execve_goes_back_to_the_old_binary() {
    let s = Setup::start();
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let wait = s.park_wait();
    // Passes the check, then refuses to resume (the shim's test hook): the fallback path.
    let real = s.dir.dir().join("real-shim");
    std::fs::copy(shim_binary(), &real).expect("copy the shim binary");
    s.install(
        format!(
            "#!/bin/sh\n{}=1 exec {} \"$@\"\n",
            "TETHER_SHIM_TEST_FAIL_RESUME",
            real.display()
        )
        .as_bytes(),
    );

    let e = s.upgrade().expect_err("the new image fails after execve");
    let status = rawttrpc::rpc_status("upgrade that fails after execve", Err::<(), _>(e));
    assert_eq!(
        status.code(),
        ttrpc::Code::FAILED_PRECONDITION,
        "{status:?}"
    );
    assert!(
        status.message().contains("failed after execve"),
        "{status:?}"
    );
    assert_eq!(s.shim_pid(), pid);
    assert_eq!(exe_inode(pid), old, "back on the old binary");
    s.assert_running();
    s.install(&std::fs::read(&real).expect("read the real binary"));
    s.finish(wait);
}

/// A new image that cannot decode the record (a field it expects is missing, as when a newer
/// binary added one): it goes back to the old binary with the same record, and the container
/// runs on under the same shim.
#[test]
fn a_record_the_new_image_cannot_read_goes_back_to_the_old_binary() {
    let s = Setup::start();
    let pid = s.shim_pid();
    let old = exe_inode(pid);
    let wait = s.park_wait();
    let real = s.dir.dir().join("real-shim");
    std::fs::copy(shim_binary(), &real).expect("copy the shim binary");
    s.install(
        format!(
            "#!/bin/sh\n{}=containers exec {} \"$@\"\n",
            "TETHER_SHIM_TEST_DROP_RECORD_FIELD",
            real.display()
        )
        .as_bytes(),
    );

    let e = s
        .upgrade()
        .expect_err("the new image cannot read the record");
    let status = rawttrpc::rpc_status("upgrade with an unreadable record", Err::<(), _>(e));
    assert_eq!(
        status.code(),
        ttrpc::Code::FAILED_PRECONDITION,
        "{status:?}"
    );
    assert!(
        status.message().contains("failed after execve") && status.message().contains("containers"),
        "{status:?}"
    );
    assert_eq!(s.shim_pid(), pid);
    assert_eq!(exe_inode(pid), old, "back on the old binary");
    s.assert_running();
    s.install(&std::fs::read(&real).expect("read the real binary"));
    s.finish(wait);
}

/// A container writing numbered lines without pause while its shim is upgraded ten times in a
/// row, `ctr task ls` asked between each: every line arrives once and in order.
#[test]
fn numbered_lines_survive_ten_upgrades_in_a_row() {
    let s = Setup::start_with(
        "trap 'echo end; exit 3' TERM; i=0; while true; do echo $i; i=$((i+1)); usleep 500; done",
        "\n",
        None,
    );
    let pid = s.shim_pid();
    let wait = s.park_wait();
    let new = s.install(&std::fs::read(shim_binary()).expect("read the shim binary"));
    let mut handovers = Vec::new();
    for n in 0..10 {
        let r = s
            .upgrade()
            .unwrap_or_else(|e| panic!("upgrade {n} refused: {e:?}\n{}", s.cd.log_excerpt()));
        assert_eq!(r.pid as i32, pid);
        handovers.push((r.handover_micros, r.took_micros));
        s.assert_running();
    }
    eprintln!("10 upgrades, (handover, total) µs: {handovers:?}");
    assert_eq!(exe_inode(pid), new);
    s.finish_with(wait, 3, |text| {
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.pop(), Some("end"), "the last line");
        assert!(
            lines.len() > 10,
            "lines written across the upgrades: {}",
            lines.len()
        );
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, i.to_string(), "line {i} (each number once, in order)");
        }
    });
}
