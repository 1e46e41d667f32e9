//! CRI CheckpointContainer and the restore of its archive.

use super::*;

/// A shell printing 0, 1, 2, ... on stdout, one number a tenth of a second.
/// Counts to its stdout (the CRI log) and into `/count` in its own rootfs.
pub const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while :; do echo $i; echo $i >> /count; i=$((i+1)); sleep 0.1; done",
];

/// The numbers in `/count` of container `id`, read with ExecSync.
pub fn counted_in_rootfs(cri: &Cri, id: &str) -> Vec<u64> {
    let out = cri
        .client()
        .exec_sync(id, &["cat", "/count"], 10)
        .unwrap_or_else(|e| panic!("ExecSync cat /count in {id}: {e:?}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The numbers container `id` has printed so far, from its CRI log.
pub fn counted(cri: &Cri, id: &str) -> Vec<u64> {
    let path = cri.client().container_status(id).expect("status").log_path;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    // The last line may be half written: keep only complete records.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let records = log::parse(complete).unwrap_or_else(|e| panic!("not CRI format: {e}\n{text}"));
    log::lines(&records, log::Stream::Stdout)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The entries of tar archive `path`, without a leading `./`, with their types.
pub fn tar_entries(path: &std::path::Path) -> Vec<(String, tar::EntryType)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries()
        .unwrap_or_else(|e| panic!("{} is not a tar archive: {e}", path.display()));
    entries
        .map(|e| {
            let e = e.unwrap_or_else(|e| panic!("corrupt entry in {}: {e}", path.display()));
            let name = e.path().expect("entry path").display().to_string();
            let name = name
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            (name, e.header().entry_type())
        })
        .collect()
}

/// One JSON file of a tar archive, parsed.
pub fn tar_json(path: &std::path::Path, name: &str) -> serde_json::Value {
    let file = std::fs::File::open(path).expect("open the archive");
    let mut archive = tar::Archive::new(file);
    for e in archive.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let p = e.path().expect("entry path").display().to_string();
        if p.trim_start_matches("./") == name {
            return serde_json::from_reader(&mut e)
                .unwrap_or_else(|err| panic!("{name} in the archive is not JSON: {err}"));
        }
    }
    panic!("no {name} in {}", path.display())
}

/// CRI `CheckpointContainer` (the kubelet's forensic checkpoint): on containerd 2.x it pauses
/// the running container, dumps it through the handler's shim with CRIU while it keeps running,
/// and writes the archive `location`: CRIU's images under `checkpoint/`, `config.dump` (naming
/// the container and the runtime that dumped it) and `spec.dump` (its OCI spec). The container
/// counts on afterwards. Then the archive is restored as the kubelet restores one (CreateContainer
/// whose image is the archive, StartContainer): containerd 2.x first pulls the checkpoint's base
/// image by the repository digest the archive names, so the container runs an image pulled from
/// a registry on the loopback ([`Registry`]); the restored container counts on from its dump.
/// containerd 1.6/1.7's CRI plugin does not implement checkpoints: it must answer
/// Unimplemented, not hang or half-do it.
pub fn checkpoint_container_archive_restores(handler: &str) {
    let version = flavor().version;
    let dir = tempfile::tempdir().expect("tempdir for the archive");
    let archive = dir.path().join("checkpoint.tar");
    if version.major < 2 {
        let cri = Cri::start();
        let pod = run_pod(&cri, handler, NamespaceMode::Container);
        let id = cri.run_container(&pod, "counter", COUNTER);
        cri.wait_state(&id, ContainerState::ContainerRunning);
        let err = cri
            .client()
            .checkpoint_container(&id, &archive, 30)
            .expect_err("CheckpointContainer on containerd 1.x");
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
        assert!(!archive.exists(), "no archive is written");
        cri.client().stop_container(&id, 0).expect("StopContainer");
        finish(cri, &[&pod]);
        return;
    }

    // CRI finds `criu` on containerd's PATH to check its version; our shim is also told
    // where it is through the handler's runtime options (sent to it as its config body).
    let criu = working_criu();
    let drop_in_path = tether_tests::cri::drop_in(version.config_version());
    let drop_in = std::fs::read_to_string(&drop_in_path).expect("read the drop-in");
    let options = format!(
        "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.tether.options]\n  CriuPath = {:?}\n",
        criu.display().to_string()
    );
    let cri = Cri::start_with_path(
        CriConfig::new(&format!("{}\n{options}", tables_of(&drop_in))),
        vec![working_criu_dir()],
    );
    // Restoring needs the checkpoint's base image pulled from a registry (see below).
    let registry = Registry::serve(&tether_tests::busybox_image().path);
    registry.declare_in(&cri.registry_config_path());
    let image = format!("{}/tether-busybox:test", registry.host());
    let pulled = cri
        .client()
        .pull_image(&image)
        .unwrap_or_else(|e| panic!("PullImage {image}: {e:?}\n{}", cri.log_excerpt()));
    let pod = run_pod(&cri, handler, NamespaceMode::Container);
    let mut config = cri.container_config(&pod, "counter", 0, COUNTER);
    config.image = Some(ImageSpec {
        image: image.clone(),
        ..Default::default()
    });
    let id = cri.start_container(&pod, &config);
    cri.wait_state(&id, ContainerState::ContainerRunning);
    assert!(
        wait_until(Duration::from_secs(20), || counted(&cri, &id).len() >= 3),
        "the counter never counted: {:?}",
        counted(&cri, &id)
    );

    let before_checkpoint = counted_in_rootfs(&cri, &id).len() as u64;
    cri.client()
        .checkpoint_container(&id, &archive, 60)
        .unwrap_or_else(|e| {
            panic!(
                "CheckpointContainer ({handler}): {e:?}\n{}",
                cri.log_excerpt()
            )
        });
    let at_checkpoint = counted(&cri, &id).last().copied().expect("a number");

    let entries = tar_entries(&archive);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        entries
            .iter()
            .any(|(n, t)| n == "checkpoint" && *t == tar::EntryType::Directory),
        "a checkpoint/ directory: {names:?}"
    );
    let images: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("checkpoint/") && n.ends_with(".img"))
        .collect();
    // CRIU's images of the processes: their core, memory pages and the inventory.
    for want in ["checkpoint/inventory.img", "checkpoint/pstree.img"] {
        assert!(images.contains(&want), "{want} in {names:?}");
    }
    assert!(
        images.iter().any(|n| n.starts_with("checkpoint/pages-")),
        "memory pages in {names:?}"
    );
    for want in ["config.dump", "spec.dump", "status.dump", "rootfs-diff.tar"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let config = tar_json(&archive, "config.dump");
    assert_eq!(config["id"], serde_json::json!(id), "{config}");
    let runtime = match handler {
        TETHER_HANDLER => "io.containerd.tether.v2",
        _ => "io.containerd.runc.v2",
    };
    assert_eq!(config["runtime"], serde_json::json!(runtime), "{config}");
    let spec = tar_json(&archive, "spec.dump");
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(COUNTER),
        "{spec}"
    );

    // The forensic checkpoint leaves the container running: it counts on.
    let st = cri.client().container_status(&id).expect("status");
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    assert!(
        wait_until(Duration::from_secs(20), || counted(&cri, &id)
            .last()
            .is_some_and(|&n| n >= at_checkpoint + 3)),
        "the counter stopped at {at_checkpoint} after the checkpoint: {:?}",
        counted(&cri, &id)
    );
    cri.client().stop_container(&id, 0).expect("StopContainer");
    cri.wait_state(&id, ContainerState::ContainerExited);
    cri.client().remove_container(&id).expect("RemoveContainer");

    // Restore, as the kubelet does: CreateContainer whose image is the archive, then
    // StartContainer. containerd pulls the base image again (by the digest the archive
    // names, from the registry above) and restores the container through the handler's shim.
    let mut restore = cri.container_config(&pod, "counter", 1, COUNTER);
    restore.command.clear();
    restore.image = Some(ImageSpec {
        image: archive.display().to_string(),
        ..Default::default()
    });
    let restored = cri.start_container(&pod, &restore);
    let st = cri.wait_state(&restored, ContainerState::ContainerRunning);
    assert_eq!(
        st.annotations.get("restored").map(String::as_str),
        Some("true"),
        "{st:?}"
    );
    assert!(
        st.image_ref
            .starts_with(&format!("{}/tether-busybox@sha256:", registry.host())),
        "the base image, pulled by digest: {st:?} (pulled as {pulled})"
    );
    // Its rootfs changes came back (`/count` up to the number the dump caught) and the process
    // counts on from its memory: one unbroken run from 0. A fresh start would write 0 again;
    // a restore without the rootfs changes would start the file in the middle.
    let mut seen = counted_in_rootfs(&cri, &restored);
    let at_restore = seen.len();
    assert!(
        wait_until(Duration::from_secs(20), || {
            seen = counted_in_rootfs(&cri, &restored);
            seen.len() >= at_restore + 3
        }),
        "the restored counter does not count on: {seen:?}\n{}",
        cri.log_excerpt()
    );
    let expected: Vec<u64> = (0..seen.len() as u64).collect();
    assert_eq!(seen, expected, "restored from the dump, rootfs and memory");
    assert!(
        at_restore as u64 >= before_checkpoint,
        "the file holds what was counted before the checkpoint ({before_checkpoint}): {seen:?}"
    );
    cri.client()
        .stop_container(&restored, 0)
        .expect("StopContainer");
    finish(cri, &[&pod]);
}
