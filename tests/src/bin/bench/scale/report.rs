//! The scale report: its table per figure, the chart, how each figure grows and why.

use super::*;

pub(super) const COLOURS: [&str; 3] = [chart::GO, chart::OURS, "#7a3e9d"];

pub(super) fn svg(series: &Measured) -> String {
    let panels: Vec<chart::Panel> = FIGURES
        .iter()
        .enumerate()
        .map(|(i, (title, unit))| chart::Panel {
            title: title.to_string(),
            unit: unit.to_string(),
            series: series
                .iter()
                .zip(COLOURS)
                .map(|((label, pts), colour)| Series {
                    name: label.to_string(),
                    colour,
                    points: pts.iter().map(|p| (p.n as f64, p.v[i])).collect(),
                })
                .collect(),
        })
        .collect();
    chart::by_n("Scale: each figure against N idle containers", &panels)
}

/// How a figure grows from the first N to the last, from the exponent of value ~ N^k.
pub(super) fn growth(pts: &[Point], i: usize) -> String {
    let ok: Vec<(f64, f64)> = pts
        .iter()
        .map(|p| (p.n as f64, p.v[i]))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let (Some(first), Some(last)) = (ok.first(), ok.last()) else {
        return "not measured".into();
    };
    if ok.len() < 2 || first.0 == last.0 {
        return format!("{:.1} at N = {}", first.1, first.0);
    }
    let shape = if first.1 <= 0.0 || last.1 <= 0.0 {
        "flat or zero".to_string()
    } else {
        let k = (last.1 / first.1).ln() / (last.0 / first.0).ln();
        let word = match k {
            k if k < 0.25 => "about constant",
            k if k < 0.75 => "sublinear",
            k if k < 1.3 => "about linear",
            _ => "worse than linear",
        };
        format!("{word}, ~N^{k:.2}")
    };
    format!(
        "{:.1} -> {:.1} from N = {} to {} ({shape})",
        first.1, last.1, first.0, last.0
    )
}

/// What one dead (or stopped) shim adds to a restart at the largest N: the restart with them
/// minus the all-live one, over their number.
pub(super) fn per_shim(series: &Measured, i: usize) -> Option<String> {
    let (what, count): (&str, fn(usize) -> usize) = match i {
        F_RESTART_DEAD => ("dead", |n| n * DEAD_PERCENT / 100),
        F_RESTART_STOPPED => ("stopped", |_| STOPPED),
        _ => return None,
    };
    let parts: Vec<String> = series
        .iter()
        .filter_map(|(label, pts)| {
            let p = pts.last()?;
            let k = count(p.n).max(1) as f64;
            let ms = (p.v[i] - p.v[F_RESTART]) / k;
            ms.is_finite()
                .then(|| format!("{label} {ms:.0} ms at N = {}", p.n))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "What each {what} shim adds to the restart: {}.",
            parts.join("; ")
        )
    })
}

// One explanation per figure, checked when the bench is built.
const _: () = assert!(WHY.len() == FIGURES.len());

/// Why each figure grows as it does, per stack (the measured shape is printed beside it).
pub(super) const WHY: &[&str] = &[
    "Every shim is a process: the total grows with N for each stack, at the per-shim rate below.",
    "Per shim it should be constant: a Go shim carries its runtime's heap and 12 threads' stacks \
     privately; ours one thread and a few small buffers, the binary's pages shared between all.",
    "Per container started, host memory adds the container itself (a `sleep`), its cgroups, \
     mounts and the kernel's per-process structures to its shim's PSS, and the daemon's share: \
     constant if nothing else grows; noisy (other work on the machine moves MemAvailable).",
    "containerd keeps a ttrpc client, its goroutines and metadata per task, so it grows with N; \
     the tether daemon keeps a table entry and one connection per shim.",
    "containerd's goroutines multiplex on a bounded set of threads; the tether daemon runs one \
     event loop plus a small fixed pool.",
    "Starting one more container should not depend on how many run; where it grows, the daemon \
     or the shim's start walks something of size N.",
    "Listing N containers asks each shim its state (containerd: one `State` per task, in \
     sequence); tether answers from its table. Linear in N either way, by a different constant.",
    "A restart reconnects to every shim: linear in N. containerd loads its shims one after the \
     other before it serves at all; the tether daemon probes them concurrently (`Connect` and \
     `State` written together on one connection per shim) while another thread reads its event \
     journal, whose length grows with the history, not with N.",
    "A dead shim's socket refuses at once; the cost is its clean-up (`shim delete`, which runs \
     `runc delete`), one process per dead shim. containerd runs them before it serves; the \
     tether daemon lists such a container UNKNOWN (never RUNNING) and runs the clean-ups in the \
     background once the live shims are resolved, so they cost its restart only the CPU they \
     take from it.",
    "A stopped shim accepts the connection and never answers: the daemon waits out a timeout. \
     containerd waits its 5 s shim-load timeout for each stopped shim, one after the other, \
     before it serves anything; the tether daemon's wait does not add up per shim (its probes \
     time out together), and is the same at every N.",
    "What a daemon does with a shim that did not answer in time: it declares it dead and runs \
     its `delete`, which kills the container; the count here is how many survived.",
    "And the stopped shim itself: once continued, does anything end it? A count of 5 means the \
     daemon deleted the task without stopping the shim process, which lives on, orphaned.",
    "Each exit is reaped by its shim and published to the daemon, which fans it out: the burst \
     queues 100 publications in the daemon, so its spread (p99, max) shows the daemon's \
     per-event cost, independent of N unless the daemon's work per event grows with N. The \
     tether daemon journals every event read in one turn of its loop with one fsync, and writes \
     the containers' records off its loop.",
    "See the median.",
    "See the median.",
    "All 100 must arrive: an exit is never dropped.",
    "The shim's part of the burst: from the kill to the reap it stamps on the event. The rest of \
     the latency above is the path from the shim through the daemon to the subscriber.",
    "See the median.",
    "What the daemon (or containerd) adds: from the reap the shim stamps on the event to the \
     subscriber's line, for the slowest of the burst. The shim's clock and the bench's are the \
     same machine's.",
    "RSS counts every page a shim maps, shared or not (its binary's text, libc): what one shim \
     costs alone, not what each of N costs (that is the PSS).",
];

pub(super) fn render(a: &Args, series: &Measured, notes: &[String], took: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Scale\n");
    let _ = writeln!(
        s,
        "Generated by `make bench-scale` (`bench --scale --scale-n {}`) in {:.0} min: containerd {} \
         + runc, {} cores, {} MB of memory. Three stacks live side by side and grow in turn to \
         each N of idle `sleep` containers: containerd's Go shim and ours, each through its own \
         private containerd, and ours through a private `tether daemon`. Wall-clock figures on \
         a shared machine are noisy; what counts is how each grows, and the ratios in one run.\n",
        a.ns.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        took.as_secs_f64() / 60.0,
        crate::version("containerd"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        crate::meminfo_kb("MemTotal:") / 1024,
    );
    for n in notes {
        let _ = writeln!(s, "**{n}**\n");
    }
    let chart = a
        .out
        .with_extension("svg")
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(s, "![each figure against N, one line per stack]({chart})\n");
    let mut ns: Vec<usize> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.n))
        .collect();
    ns.sort_unstable();
    ns.dedup();
    for (i, (title, unit)) in FIGURES.iter().enumerate() {
        let head = if unit.is_empty() {
            title.to_string()
        } else {
            format!("{title} ({unit})")
        };
        let _ = writeln!(s, "## {head}\n");
        let _ = write!(s, "| N |");
        for (label, _) in series {
            let _ = write!(s, " {label} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(series.len()));
        for n in &ns {
            let _ = write!(s, "| {n} |");
            for (_, pts) in series {
                let v = pts.iter().find(|p| p.n == *n).map_or(f64::NAN, |p| p.v[i]);
                let cell = if v.is_finite() {
                    format!("{v:.1}")
                } else {
                    "-".into()
                };
                let _ = write!(s, " {cell} |");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "\n{}", WHY[i]);
        for (label, pts) in series {
            let _ = writeln!(s, "- {label}: {}", growth(pts, i));
        }
        if let Some(line) = per_shim(series, i) {
            let _ = writeln!(s, "\n{line}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "How each is measured: PSS from `/proc/PID/smaps_rollup` of every shim of the stack; \
         host memory is the growth of MemTotal - MemAvailable over a stack's growth step (2 s after its last start) divided by the containers it started; the daemon's RSS and threads from its `/proc/PID/status`; the N-th start is one `ctr run -d` \
         / `tether run -d` timed alone after the others were started two at a time; a restart is \
         SIGKILL of the daemon, then (for the second and third) SIGKILL of the first {DEAD_PERCENT}% \
         of the shims or SIGSTOP of {STOPPED}, then the time from starting the daemon until its \
         list shows every other container RUNNING (and none of the killed ones); the burst \
         SIGKILLs {BURST} containers' init processes in a loop and times, for each, the kill to \
         its `/tasks/exit` line printed by `ctr events` / `tether events --json`. Containers \
         killed by a figure are removed, and the next N refills them."
    );
    s
}
