//! One stack (Go shim via containerd, ours via containerd, ours via the tether daemon): growing it, and each figure measured on it.

use super::*;

impl Stack {
    pub(super) fn containerd(
        label: &'static str,
        runtime: &'static str,
        shim_cost: (u64, u64),
    ) -> Stack {
        let cd = Containerd::start_with(Options {
            // Its start waits for every shim to load: 5 stopped ones cost it 5 s each.
            start_timeout: Some(Duration::from_secs(600)),
            ..Options::default()
        });
        let ctr = cd
            .ctr(&unique_id("scale"))
            .with_timeout(Duration::from_secs(300));
        Stack {
            label,
            kind: Kind::Containerd { cd, ctr, runtime },
            live: Vec::new(),
            shim_cost,
            points: Vec::new(),
            host_per_container_kb: f64::NAN,
        }
    }

    pub(super) fn tether() -> Stack {
        Stack {
            label: "tether shim, tether daemon",
            kind: Kind::Tether {
                d: Daemon::start(),
                ns: unique_id("scale"),
            },
            live: Vec::new(),
            shim_cost: (1024, 1),
            points: Vec::new(),
            host_per_container_kb: f64::NAN,
        }
    }

    /// Starts one idle container; false (with a message) when it fails.
    pub(super) fn start_one(&self, id: &str) -> bool {
        let out = match &self.kind {
            Kind::Containerd { ctr, runtime, .. } => ctr
                .run(id)
                .runtime(runtime)
                .rootfs(busybox_rootfs())
                .detach()
                .args(&["/bin/sleep", "1000000"])
                .output(),
            Kind::Tether { d, ns } => {
                let rootfs = busybox_rootfs().display().to_string();
                let mut c = d.tether();
                c.args(["--namespace", ns, "run", "-d", "--rootfs", &rootfs, id]);
                c.args(["--", "/bin/sleep", "1000000"]);
                match try_run(&mut c, None, Duration::from_secs(300)) {
                    Ok(out) => out,
                    Err(e) => {
                        eprintln!("   {}: start {id}: {e}", self.label);
                        return false;
                    }
                }
            }
        };
        if !out.success() {
            eprintln!("   {}: start {id}: {out}", self.label);
        }
        out.success()
    }

    /// Force-deletes a container (task, shim, bundle); errors ignored: it may be gone.
    pub(super) fn remove(&self, id: &str) {
        match &self.kind {
            Kind::Containerd { ctr, .. } => {
                let _ = ctr.try_call(&["task", "delete", "--force", id]);
                let _ = ctr.try_call(&["container", "delete", id]);
            }
            Kind::Tether { d, ns } => {
                let _ = try_run(
                    d.tether().args(["--namespace", ns, "delete", "-f", id]),
                    None,
                    Duration::from_secs(60),
                );
            }
        }
    }

    /// The list as the daemon answers it, or `None` when it does not (yet).
    pub(super) fn list(&self) -> Option<Vec<Row>> {
        match &self.kind {
            Kind::Containerd { ctr, .. } => {
                let out = ctr.try_call(&["task", "ls"]).ok()?;
                out.success().then(|| {
                    parse_task_ls(&out.stdout)
                        .into_iter()
                        .map(|t| Row {
                            id: t.id,
                            pid: t.pid as i32,
                            status: t.status,
                        })
                        .collect()
                })
            }
            Kind::Tether { d, ns } => {
                let out = try_run(
                    d.tether().args(["--namespace", ns, "ps", "--json"]),
                    None,
                    Duration::from_secs(60),
                )
                .ok()?;
                let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
                Some(
                    rows.iter()
                        .map(|r| Row {
                            id: r["id"].as_str().unwrap_or_default().to_string(),
                            pid: r["pid"].as_i64().unwrap_or(0) as i32,
                            status: r["status"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect(),
                )
            }
        }
    }

    pub(super) fn shim_pids(&self) -> Vec<i32> {
        match &self.kind {
            Kind::Containerd { cd, .. } => cd.shim_pids(),
            Kind::Tether { d, .. } => d.shim_pids(),
        }
    }

    pub(super) fn daemon_pid(&self) -> Option<i32> {
        match &self.kind {
            Kind::Containerd { cd, .. } => cd.pid(),
            Kind::Tether { d, .. } => d.pid(),
        }
    }

    pub(super) fn kill_daemon(&mut self) {
        match &mut self.kind {
            Kind::Containerd { cd, .. } => cd.kill_daemon(libc::SIGKILL),
            Kind::Tether { d, .. } => d.kill9(),
        }
    }

    /// Starts the daemon again; returns once it serves (containerd: after loading its shims).
    pub(super) fn start_daemon(&mut self) {
        match &mut self.kind {
            // The daemon is gone already: its restart only starts it.
            Kind::Containerd { cd, .. } => cd.restart(),
            Kind::Tether { d, .. } => d.restart(),
        }
    }

    /// Subscribes to the daemon's events (returns once subscribed).
    pub(super) fn exits(&self) -> Exits {
        match &self.kind {
            Kind::Containerd { ctr, .. } => Exits::Ctr(Events::start(ctr)),
            Kind::Tether { d, .. } => Exits::Tether(TetherEvents::start(d)),
        }
    }

    /// Grows to `n` live containers: two at a time, then the n-th alone (its time returned).
    pub(super) fn grow(&mut self, n: usize) -> f64 {
        let want = n.saturating_sub(self.live.len());
        if want == 0 {
            return f64::NAN;
        }
        let ids: Vec<String> = (0..want).map(|_| unique_id("s")).collect();
        let used_before = host_used_kb();
        let (bulk, last) = ids.split_at(want - 1);
        let me = &*self;
        let started: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|k| {
                    s.spawn(move || {
                        bulk.iter()
                            .skip(k)
                            .step_by(2)
                            .filter(|id| me.start_one(id))
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        self.live.extend(started);
        let t0 = Instant::now();
        let ok = self.start_one(&last[0]);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if ok {
            self.live.push(last[0].clone());
        }
        // Let the last starts settle (the Go shim's runtime allocates for a while).
        std::thread::sleep(Duration::from_secs(2));
        self.host_per_container_kb =
            host_used_kb().saturating_sub(used_before) as f64 / want as f64;
        assert_eq!(
            self.live.len(),
            n,
            "{}: could not grow to {n} containers",
            self.label
        );
        if ok {
            ms
        } else {
            f64::NAN
        }
    }

    /// Removes `ids` from the stack (two at a time) and from its live list.
    pub(super) fn remove_all(&mut self, ids: &[String]) {
        let me = &*self;
        std::thread::scope(|s| {
            for k in 0..2 {
                s.spawn(move || ids.iter().skip(k).step_by(2).for_each(|id| me.remove(id)));
            }
        });
        self.live.retain(|id| !ids.contains(id));
        procs::reap_orphans();
    }

    /// The live containers' shims (a container's init is its shim's child: shims subreap).
    pub(super) fn shims_of(&self, ids: &[String]) -> Vec<i32> {
        let rows = self.list().unwrap_or_default();
        ids.iter()
            .filter_map(|id| rows.iter().find(|r| &r.id == id))
            .filter_map(|r| procs::stat(r.pid).map(|s| s.ppid))
            .collect()
    }

    /// SIGKILLs the daemon, does `while_down`, starts it again and times until the list shows
    /// every container in `running` RUNNING and none of `gone` RUNNING.
    pub(super) fn timed_restart(
        &mut self,
        running: &[String],
        gone: &[String],
        while_down: impl FnOnce(),
    ) -> f64 {
        self.kill_daemon();
        while_down();
        let log_before = match &self.kind {
            Kind::Tether { d, .. } => d.log().len(),
            Kind::Containerd { .. } => 0,
        };
        let t0 = Instant::now();
        self.start_daemon();
        let resolved = wait_until(Duration::from_secs(300), || {
            let Some(rows) = self.list() else {
                return false;
            };
            let running_ok = running
                .iter()
                .all(|id| rows.iter().any(|r| &r.id == id && r.status == "RUNNING"));
            let gone_ok = !rows
                .iter()
                .any(|r| gone.contains(&r.id) && r.status == "RUNNING");
            running_ok && gone_ok
        });
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if let Kind::Tether { d, .. } = &self.kind {
            // Where the daemon's restart went (its own account of each phase).
            let log = d.log();
            for l in log.get(log_before..).unwrap_or_default().lines() {
                if l.contains("journal:") || l.contains("rediscovery:") {
                    eprintln!("      {l}");
                }
            }
        }
        if resolved {
            ms
        } else {
            eprintln!("   {}: restart did not resolve within 300 s", self.label);
            f64::NAN
        }
    }

    /// Every figure at the current N (the stack has grown to it).
    pub(super) fn measure(&mut self, n: usize, start_ms: f64) -> Point {
        let mut v = vec![f64::NAN; FIGURES.len()];
        v[F_START] = start_ms;
        let shims = self.shim_pids();
        let pss: u64 = shims.iter().map(|&p| footprint(p).0).sum();
        v[F_PSS_TOTAL] = pss as f64 / 1024.0;
        v[F_PSS] = pss as f64 / shims.len().max(1) as f64;
        let mut rss: Vec<f64> = shims.iter().map(|&p| footprint(p).1 as f64).collect();
        v[F_RSS] = median(&mut rss);
        v[F_HOST] = self.host_per_container_kb;
        if let Some(pid) = self.daemon_pid() {
            let (_, rss, threads) = footprint(pid);
            v[F_DRSS] = rss as f64 / 1024.0;
            v[F_DTHREADS] = threads as f64;
        }
        let mut lists: Vec<f64> = (0..3)
            .map(|_| {
                let t0 = Instant::now();
                let ok = self.list().is_some_and(|r| r.len() == n);
                if ok {
                    t0.elapsed().as_secs_f64() * 1000.0
                } else {
                    f64::NAN
                }
            })
            .collect();
        v[F_LIST] = median(&mut lists);
        eprintln!(
            "   {} shims, PSS {:.0} kB/shim, RSS {:.0} kB (median), list {:.0} ms",
            shims.len(),
            v[F_PSS],
            v[F_RSS],
            v[F_LIST]
        );

        let live = self.live.clone();
        v[F_RESTART] = self.timed_restart(&live, &[], || {});
        eprintln!("   restart, all live: {:.0} ms", v[F_RESTART]);

        let dead: Vec<String> = live.iter().take(n * DEAD_PERCENT / 100).cloned().collect();
        let rest: Vec<String> = live[dead.len()..].to_vec();
        let dead_shims = self.shims_of(&dead);
        // A killed shim's socket file outlives it (containerd's Go shim's `delete` leaves it).
        let dead_sockets = procs::unix_socket_paths(&dead_shims);
        v[F_RESTART_DEAD] = self.timed_restart(&rest, &dead, || {
            for &p in &dead_shims {
                procs::signal(p, libc::SIGKILL);
            }
            procs::wait_gone(&dead_shims, Duration::from_secs(10));
            procs::reap_orphans();
        });
        procs::remove_dead_sockets(&dead_sockets);
        eprintln!(
            "   restart, {} shims killed: {:.0} ms",
            dead.len(),
            v[F_RESTART_DEAD]
        );
        self.remove_all(&dead);

        let live = self.live.clone();
        let stopped: Vec<String> = live.iter().take(STOPPED).cloned().collect();
        let rest: Vec<String> = live[stopped.len()..].to_vec();
        let stopped_shims = self.shims_of(&stopped);
        let stopped_sockets = procs::unix_socket_paths(&stopped_shims);
        v[F_RESTART_STOPPED] = self.timed_restart(&rest, &[], || {
            for &p in &stopped_shims {
                procs::signal(p, libc::SIGSTOP);
            }
        });
        for &p in &stopped_shims {
            procs::signal(p, libc::SIGCONT);
        }
        std::thread::sleep(Duration::from_secs(1));
        let rows = self.list().unwrap_or_default();
        v[F_STOPPED_ALIVE] = stopped
            .iter()
            .filter(|id| {
                rows.iter()
                    .any(|r| &r.id == *id && r.status == "RUNNING" && procs::is_alive(r.pid))
            })
            .count() as f64;
        self.remove_all(&stopped);
        // A daemon that gave up on a stopped shim deletes its task but may leave the shim
        // running: count those, and end them (by pid) so the next N measures only live ones.
        std::thread::sleep(Duration::from_millis(500));
        let leaked: Vec<i32> = stopped_shims
            .iter()
            .copied()
            .filter(|&p| procs::is_alive(p))
            .collect();
        v[F_STOPPED_LEAKED] = leaked.len() as f64;
        for &p in &leaked {
            procs::signal(p, libc::SIGKILL);
        }
        procs::wait_gone(&leaked, Duration::from_secs(10));
        procs::reap_orphans();
        procs::remove_dead_sockets(&stopped_sockets);
        eprintln!(
            "   restart, {} shims stopped: {:.0} ms, {} of their containers running after, {} shims leaked",
            stopped.len(),
            v[F_RESTART_STOPPED],
            v[F_STOPPED_ALIVE],
            v[F_STOPPED_LEAKED]
        );

        let victims: Vec<String> = self.live.iter().take(BURST).cloned().collect();
        let burst = self.burst(&victims);
        (
            v[F_BURST_MED],
            v[F_BURST_P99],
            v[F_BURST_MAX],
            v[F_BURST_N],
            v[F_REAP_MED],
            v[F_REAP_MAX],
            v[F_PATH_MAX],
        ) = burst;
        eprintln!(
            "   burst of {}: median {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} arrived; reap median \
             {:.1} max {:.1} ms; reap -> subscriber max {:.1} ms",
            victims.len(),
            burst.0,
            burst.1,
            burst.2,
            burst.3,
            burst.4,
            burst.5,
            burst.6
        );
        self.remove_all(&victims);
        Point { n, v }
    }

    /// SIGKILLs the init of every container in `ids` at once; (median, p99, max, arrived) of
    /// kill -> `/tasks/exit` seen by a subscriber, (median, max) of kill -> its `exited_at`, and
    /// the max of `exited_at` -> seen by the subscriber.
    pub(super) fn burst(&self, ids: &[String]) -> (f64, f64, f64, f64, f64, f64, f64) {
        let rows = self.list().unwrap_or_default();
        let pids: Vec<(String, i32)> = ids
            .iter()
            .filter_map(|id| rows.iter().find(|r| &r.id == id && r.pid > 0))
            .map(|r| (r.id.clone(), r.pid))
            .collect();
        let exits = self.exits();
        // Instants to the wall clock, for the events' `exited_at`.
        let anchor = (Instant::now(), crate::clock::now_epoch());
        let mut killed = Vec::new();
        for (id, pid) in &pids {
            killed.push((id.clone(), Instant::now()));
            procs::signal(*pid, libc::SIGKILL);
        }
        let all = |seen: &[Exit]| {
            killed
                .iter()
                .all(|(id, _)| seen.iter().any(|e| &e.id == id))
        };
        wait_until(Duration::from_secs(60), || all(&exits.seen()));
        let seen = exits.seen();
        let mut lat: Vec<f64> = killed
            .iter()
            .filter_map(|(id, t)| {
                let e = seen.iter().find(|e| &e.id == id)?;
                Some(e.received.saturating_duration_since(*t).as_secs_f64() * 1000.0)
            })
            .collect();
        let mut reaped: Vec<f64> = killed
            .iter()
            .filter_map(|(id, t)| {
                let at = seen.iter().find(|e| &e.id == id)?.exited_at?;
                let kill = anchor.1 + t.saturating_duration_since(anchor.0).as_secs_f64();
                Some((at - kill) * 1000.0)
            })
            .collect();
        let reap_max = reaped.iter().copied().fold(f64::NAN, f64::max);
        let path_max = seen
            .iter()
            .filter(|e| killed.iter().any(|(id, _)| id == &e.id))
            .filter_map(|e| {
                let at = e.exited_at?;
                let received =
                    anchor.1 + e.received.saturating_duration_since(anchor.0).as_secs_f64();
                Some((received - at) * 1000.0)
            })
            .fold(f64::NAN, f64::max);
        lat.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| {
            lat.get(((lat.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let arrived = lat.len() as f64;
        (
            median(&mut lat.clone()),
            pick(0.99),
            pick(1.0),
            arrived,
            median(&mut reaped),
            reap_max,
            path_max,
        )
    }

    /// Stops everything the stack started, quickly: the daemon first (so nothing deletes
    /// tasks one by one), then the harness's drop kills shims and containers by pid, unmounts
    /// and removes state. Returns what was left behind.
    pub(super) fn teardown(mut self) -> Vec<String> {
        self.kill_daemon();
        // The harness would walk /proc once per shim (quadratic at 1,000): one walk here.
        let shims = self.shim_pids();
        let sockets = procs::unix_socket_paths(&shims);
        kill_trees(&shims);
        procs::remove_dead_sockets(&sockets);
        match self.kind {
            Kind::Containerd { cd, ctr, .. } => {
                drop(ctr);
                let check = cd.leak_check();
                drop(cd);
                procs::reap_orphans();
                check.leftovers()
            }
            Kind::Tether { d, ns } => {
                let socket = d.socket().display().to_string();
                drop(d);
                procs::reap_orphans();
                // The namespace's parent cgroups (runc removes only the containers'): the
                // harness removes those of namespaces named through `Daemon::run` only.
                for cg in tether_tests::cgroups::existing(&ns) {
                    let _ = std::fs::remove_dir(cg);
                }
                let mut left: Vec<String> = procs::shim_pids(&socket)
                    .into_iter()
                    .map(|p| format!("shim process: {}", procs::describe(p)))
                    .collect();
                left.extend(
                    tether_tests::cgroups::existing(&ns)
                        .into_iter()
                        .map(|c| format!("cgroup: {}", c.display())),
                );
                left
            }
        }
    }
}
