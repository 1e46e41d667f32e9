//! The end of a test: stopping containerd and everything it started, and the leak check that
//! proves nothing was left.

use super::*;

/// What [`Containerd::shutdown`] had to do.
#[derive(Debug, Clone, Default)]
pub struct Cleanup {
    /// `namespace/id` of tasks still there, force-deleted through ctr.
    pub deleted_tasks: Vec<String>,
    /// Processes killed after the daemon stopped (shims and their containers), described.
    pub killed: Vec<String>,
    /// Shim sockets left behind and removed.
    pub removed_sockets: Vec<PathBuf>,
    /// ctr's FIFO directories of tasks that were never deleted (`/run/containerd/fifo/N`).
    pub removed_fifos: Vec<PathBuf>,
    pub unmounted: Vec<PathBuf>,
    pub removed_cgroups: Vec<PathBuf>,
    /// `namespace/id` of containers runc still kept in its state root, force-deleted.
    pub runc_deleted: Vec<String>,
    /// What could not be cleaned.
    pub problems: Vec<String>,
}

impl Containerd {
    /// What to look at after this instance is gone to prove it left nothing: take it just before
    /// dropping, then call [`LeakCheck::assert_clean`].
    pub fn leak_check(&self) -> LeakCheck {
        let mut pids = Vec::new();
        for shim in self.shim_pids() {
            for p in std::iter::once(shim).chain(procs::descendants(shim)) {
                if let Some(args) = procs::cmdline(p) {
                    pids.push((p, args));
                }
            }
        }
        LeakCheck {
            address: self.address().display().to_string(),
            config: self.config_path().display().to_string(),
            dir: self.dir.clone(),
            pids,
            cgroups: self
                .task_namespaces()
                .iter()
                .flat_map(|ns| cgroups::existing(ns))
                .collect(),
            ids: self
                .task_namespaces()
                .iter()
                .flat_map(|ns| dir_names(&self.state().join(TASK_STATE_DIR).join(ns)))
                .collect(),
            runc_roots: self
                .task_namespaces()
                .iter()
                .map(|ns| {
                    let ids = dir_names(&self.state().join(TASK_STATE_DIR).join(ns));
                    (Path::new(crate::shim::RUNC_ROOT).join(ns), ids)
                })
                .collect(),
        }
    }

    /// Stops everything and cleans up (see the module docs), reporting what it had to do.
    pub fn shutdown(mut self) -> Cleanup {
        self.cleanup()
    }

    pub(super) fn cleanup(&mut self) -> Cleanup {
        self.done = true;
        let mut report = Cleanup::default();
        if self.is_running() {
            self.delete_tasks(&mut report);
            // A deleted task's shim exits a moment after the delete returns: that is stopping
            // by itself, not a leftover to kill.
            if !report.deleted_tasks.is_empty() {
                crate::wait_until(Duration::from_secs(10), || self.shim_pids().is_empty());
            }
        }
        self.kill_daemon(libc::SIGTERM);

        // Bundles left: their shims' sockets and their cgroups.
        let mut bundles = Vec::new();
        for ns in self.task_namespaces() {
            for id in dir_names(&self.state().join(TASK_STATE_DIR).join(&ns)) {
                bundles.push((ns.clone(), id));
            }
        }
        self.kill_leftovers(&bundles, &mut report);
        for (ns, id) in &bundles {
            let file = self.bundle(ns, id).join("address");
            let Ok(addr) = fs::read_to_string(&file) else {
                continue;
            };
            let sock = PathBuf::from(addr.trim().trim_start_matches("unix://"));
            if fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket())
                && fs::remove_file(&sock).is_ok()
            {
                report.removed_sockets.push(sock);
            }
        }

        let ids: Vec<&str> = bundles.iter().map(|(_, id)| id.as_str()).collect();
        report.removed_fifos = remove_fifo_dirs(Path::new(CTR_FIFO_DIR), &ids);

        match mounts::unmount_under(&self.dir) {
            Ok(done) => report.unmounted = done,
            Err(e) => report.problems.push(e),
        }
        // A container whose shim was killed with containerd down keeps its (stopped) runc state;
        // runc forgets it only when told.
        for (ns, id) in &bundles {
            let root = Path::new(crate::shim::RUNC_ROOT).join(ns);
            if root.join(id).exists() {
                let out = cmd::run(
                    Command::new("runc")
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force", id]),
                    None,
                    Duration::from_secs(10),
                );
                if out.success() {
                    report.runc_deleted.push(format!("{ns}/{id}"));
                } else {
                    report
                        .problems
                        .push(format!("runc delete --force {ns}/{id}: {out}"));
                }
            }
        }
        for ns in self.task_namespaces() {
            // runc keeps its state root per namespace and never removes it; empty, it is ours.
            let _ = fs::remove_dir(Path::new(crate::shim::RUNC_ROOT).join(&ns));
            for cg in cgroups::existing(&ns) {
                match cgroups::remove_tree(&cg, Duration::from_secs(2)) {
                    Ok(()) => report.removed_cgroups.push(cg),
                    Err(e) => report.problems.push(e.to_string()),
                }
            }
        }
        if mounts::mounts_under(&self.dir).is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                report
                    .problems
                    .push(format!("removing {}: {e}", self.dir.display()));
            }
        } else {
            report.problems.push(format!(
                "left {} in place: mounts remain under it",
                self.dir.display()
            ));
        }
        report
    }

    /// Force-deletes every task through ctr; gives up at the first call that hangs.
    fn delete_tasks(&self, report: &mut Cleanup) {
        let quick = |ns: &str| self.ctr(ns).with_timeout(Duration::from_secs(5));
        let Ok(out) = quick("default").try_call(&["namespaces", "ls", "-q"]) else {
            report.problems.push("`ctr namespaces ls` hung".into());
            return;
        };
        for ns in out.stdout.split_whitespace() {
            let ctr = quick(ns);
            let Ok(tasks) = ctr.try_call(&["task", "ls"]) else {
                report.problems.push(format!("`ctr -n {ns} task ls` hung"));
                return;
            };
            for t in parse_task_ls(&tasks.stdout) {
                match ctr.try_call(&["task", "delete", "--force", &t.id]) {
                    Ok(_) => report.deleted_tasks.push(format!("{ns}/{}", t.id)),
                    Err(e) => {
                        report.problems.push(e.to_string());
                        return;
                    }
                }
            }
        }
    }

    /// SIGKILLs the shims, their descendants and the processes in the bundles' cgroups.
    fn kill_leftovers(&self, bundles: &[(String, String)], report: &mut Cleanup) {
        let mut victims = Vec::new();
        for shim in self.shim_pids() {
            victims.extend(procs::descendants(shim));
            victims.push(shim);
        }
        for (ns, id) in bundles {
            for cg in cgroups::existing(&format!("{ns}/{id}")) {
                victims.extend(cgroups::procs(&cg));
            }
        }
        victims.sort_unstable();
        victims.dedup();
        for &p in &victims {
            report.killed.push(describe(p));
        }
        for (ns, id) in bundles {
            for cg in cgroups::existing(&format!("{ns}/{id}")) {
                cgroups::kill_all(&cg);
            }
        }
        for &p in &victims {
            procs::signal(p, libc::SIGKILL);
        }
        let alive = procs::wait_gone(&victims, Duration::from_secs(5));
        for p in alive {
            report
                .problems
                .push(format!("still alive after SIGKILL: {}", describe(p)));
        }
    }
}

/// A record of what a [`Containerd`] had running, to check after it is gone.
#[derive(Debug, Clone)]
pub struct LeakCheck {
    address: String,
    config: String,
    dir: PathBuf,
    /// Shims and their descendants, with their command lines (to tell pid reuse apart).
    pids: Vec<(i32, Vec<String>)>,
    cgroups: Vec<PathBuf>,
    /// Ids of the containers that had bundles.
    ids: Vec<String>,
    /// runc's state root of each namespace that had tasks (`/run/containerd/runc/<ns>`), and
    /// the ids of the tasks it had there.
    runc_roots: Vec<(PathBuf, Vec<String>)>,
}

impl LeakCheck {
    /// The shims and their descendants that were running when the check was taken.
    pub fn pids(&self) -> Vec<i32> {
        self.pids.iter().map(|(p, _)| *p).collect()
    }

    /// Everything left behind, described; empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for p in procs::pids_with_cmdline(&self.config) {
            left.push(format!("containerd process: {}", describe(p)));
        }
        for p in procs::shim_pids(&self.address) {
            left.push(format!("shim process: {}", describe(p)));
        }
        for (p, args) in &self.pids {
            if procs::is_alive(*p) && procs::cmdline(*p).as_ref() == Some(args) {
                left.push(format!("process: {}", describe(*p)));
            }
        }
        for m in mounts::mounts_under(&self.dir) {
            left.push(format!("mount: {}", m.display()));
        }
        if self.dir.exists() {
            left.push(format!("directory: {}", self.dir.display()));
        }
        // A container runc still keeps; and a test's own (unique) namespace's runc root, which
        // runc never removes itself. CRI's `k8s.io` is shared by parallel tests.
        for (root, ids) in &self.runc_roots {
            for id in ids.iter().filter(|id| root.join(id).exists()) {
                left.push(format!("runc state: {}", root.join(id).display()));
            }
            let shared = root.ends_with(crate::cri::CRI_NAMESPACE) || root.ends_with("default");
            if !shared && root.exists() {
                left.push(format!("runc namespace root: {}", root.display()));
            }
        }
        for cg in &self.cgroups {
            if cg.exists() {
                left.push(format!("cgroup: {}", cg.display()));
            }
        }
        for d in fs::read_dir(CTR_FIFO_DIR).into_iter().flatten().flatten() {
            for f in fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if self
                    .ids
                    .iter()
                    .any(|id| name.starts_with(&format!("{id}-std")))
                {
                    left.push(format!("ctr FIFO: {}", f.path().display()));
                }
            }
        }
        left
    }

    /// Panics listing whatever was left behind.
    pub fn assert_clean(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    }
}

/// Removes the FIFO directories under `fifo_dir` that hold only FIFOs of the containers `ids`
/// (`<id>-stdin`, `<id>-stdout`, `<id>-stderr`). The client removes them when it deletes a task;
/// a task that was never deleted (its daemon died) leaves them.
fn remove_fifo_dirs(fifo_dir: &Path, ids: &[&str]) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if ids.is_empty() {
        return removed;
    }
    let Ok(rd) = fs::read_dir(fifo_dir) else {
        return removed;
    };
    for d in rd.flatten().map(|e| e.path()) {
        let Ok(files) = fs::read_dir(&d) else {
            continue;
        };
        let names: Vec<String> = files
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .collect();
        let ours = |n: &String| {
            ids.iter().any(|id| {
                n.strip_prefix(id)
                    .is_some_and(|rest| ["-stdin", "-stdout", "-stderr"].contains(&rest))
            })
        };
        if !names.is_empty() && names.iter().all(ours) && fs::remove_dir_all(&d).is_ok() {
            removed.push(d);
        }
    }
    removed
}
