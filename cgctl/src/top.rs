//! `cgctl top`: per-cgroup CPU %, throttled %, memory and tasks, from the deltas of
//! two samples an interval apart (like systemd-cgtop).

use std::io::IsTerminal;
use std::time::Instant;

use std::collections::BTreeMap;

use cgctl::cli::{SortKey, TopArgs};
use cgroupkit::{Cgroup, CgroupPath, Controller, CpuStat, Hierarchy, Version};
use probes::iter::{CgroupIter, IterLink};

use crate::cmd::Result;
use crate::show::shown;
use crate::tree::{self, Node};

/// One cgroup's counters at one moment.
#[derive(Clone, Debug, Default)]
struct Sample {
    usage_usec: Option<u64>,
    nr_periods: Option<u64>,
    nr_throttled: Option<u64>,
    memory_bytes: Option<u64>,
    tasks: Option<u64>,
}

/// A row of a frame.
#[derive(Debug)]
struct Row {
    path: String,
    tasks: Option<u64>,
    cpu_pct: Option<f64>,
    throttled_pct: Option<f64>,
    memory_bytes: Option<u64>,
}

/// `cgctl top`.
pub fn top(a: TopArgs) -> Result<()> {
    let h = Hierarchy::detect()?;
    let top = match &a.cgroup {
        Some(n) => CgroupPath::new(n)?,
        None => CgroupPath::root(),
    };
    let wanted = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Pids,
    ];
    let keep = |m: &cgroupkit::Mount| wanted.iter().any(|c| m.controllers.contains(c));
    let tty = std::io::stdout().is_terminal();
    // The fast path: one BPF cgroup iterator walk per hierarchy instead of four files
    // per cgroup; any failure to set it up falls back to the files.
    let fast = if a.no_ebpf {
        Err("--no-ebpf".to_owned())
    } else {
        Fast::new(&h, &top).map_err(|e| errchain::chain(&e))
    };
    let source = match &fast {
        Ok(_) => "source: BPF cgroup iterator".to_owned(),
        Err(why) => format!("source: files (BPF cgroup iterator off: {why})"),
    };
    let sample = |h: &Hierarchy| -> Result<Vec<(String, Sample)>> {
        match &fast {
            Ok(f) => Ok(f.sample(h, &top, a.depth)),
            Err(_) => sample_all(h, &top, a.depth, &keep),
        }
    };
    let mut before = sample(&h)?;
    let mut t0 = Instant::now();
    let mut frame = 0u64;
    loop {
        std::thread::sleep(a.interval);
        let after = sample(&h)?;
        let elapsed_usec = t0.elapsed().as_micros() as f64;
        t0 = Instant::now();
        frame += 1;
        let mut rows: Vec<Row> = after
            .iter()
            .map(|(path, s1)| {
                let s0 = before.iter().find(|(p, _)| p == path).map(|(_, s)| s);
                row(path, s0, s1, elapsed_usec)
            })
            .collect();
        sort(&mut rows, a.sort);
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[H\x1b[2J");
        } else if frame > 1 {
            out.push('\n');
        }
        out.push_str(&format!(
            "cgctl top  frame {frame}  interval {:?}  sorted by {:?}  {source}\n",
            a.interval, a.sort
        ));
        out.push_str(&format!(
            "{:<50} {:>6} {:>7} {:>6} {:>9}\n",
            "CGROUP", "TASKS", "%CPU", "THR%", "MEMORY"
        ));
        for r in &rows {
            out.push_str(&format!(
                "{:<50} {:>6} {:>7} {:>6} {:>9}\n",
                shown(&r.path),
                r.tasks.map_or("-".into(), |t| t.to_string()),
                r.cpu_pct.map_or("-".into(), |c| format!("{c:.1}")),
                r.throttled_pct.map_or("-".into(), |t| format!("{t:.1}")),
                r.memory_bytes.map_or("-".into(), human_bytes),
            ));
        }
        print!("{out}");
        if a.iterations.is_some_and(|n| frame >= n) {
            return Ok(());
        }
        before = after;
    }
}

fn row(path: &str, s0: Option<&Sample>, s1: &Sample, elapsed_usec: f64) -> Row {
    let delta =
        |f: fn(&Sample) -> Option<u64>| -> Option<u64> { Some(f(s1)?.saturating_sub(f(s0?)?)) };
    let cpu_pct = delta(|s| s.usage_usec)
        .filter(|_| elapsed_usec > 0.0)
        .map(|d| d as f64 * 100.0 / elapsed_usec);
    let throttled_pct = match (delta(|s| s.nr_throttled), delta(|s| s.nr_periods)) {
        (Some(t), Some(p)) if p > 0 => Some(t as f64 * 100.0 / p as f64),
        _ => None,
    };
    Row {
        path: path.to_owned(),
        tasks: s1.tasks,
        cpu_pct,
        throttled_pct,
        memory_bytes: s1.memory_bytes,
    }
}

fn sort(rows: &mut [Row], key: SortKey) {
    let k = |r: &Row| -> f64 {
        match key {
            SortKey::Cpu => r.cpu_pct.unwrap_or(-1.0),
            SortKey::Throttled => r.throttled_pct.unwrap_or(-1.0),
            SortKey::Memory => r.memory_bytes.map_or(-1.0, |m| m as f64),
            SortKey::Pids => r.tasks.map_or(-1.0, |t| t as f64),
        }
    };
    rows.sort_by(|a, b| k(b).total_cmp(&k(a)).then_with(|| a.path.cmp(&b.path)));
}

/// The iterator linked to `top` on each hierarchy that serves cpu, cpuacct, memory
/// or pids.
struct Fast {
    it: CgroupIter,
    links: Vec<(IterLink, Version, String)>,
}

impl Fast {
    fn new(h: &Hierarchy, top: &CgroupPath) -> probes::Result<Fast> {
        let it = CgroupIter::from_file(crate::throttle::ebpf_object()).load()?;
        let mut links = Vec::new();
        let mut seen: Vec<&std::path::Path> = Vec::new();
        for c in [
            Controller::Cpu,
            Controller::Cpuacct,
            Controller::Memory,
            Controller::Pids,
        ] {
            let Some(m) = h.mount_for(c) else { continue };
            if seen.contains(&m.mount_point.as_path()) {
                continue;
            }
            seen.push(&m.mount_point);
            let dir = top.under(&m.mount_point);
            if dir.is_dir() {
                let v2_cpu = m.version == Version::V2;
                let mp = m.mount_point.to_string_lossy().into_owned();
                links.push((
                    it.link(&dir)?,
                    m.version,
                    if v2_cpu { mp } else { String::new() },
                ));
            }
        }
        if links.is_empty() {
            return Err(probes::Error::Iter {
                what: "link the iterator",
                reason: format!("{top} exists on no hierarchy"),
            });
        }
        Ok(Fast { it, links })
    }

    /// Every cgroup under `top`, at most `depth` levels down, merged by path. On v2
    /// the CPU usage is the one file read per cgroup (the kernel keeps it in rstat).
    fn sample(&self, h: &Hierarchy, top: &CgroupPath, depth: usize) -> Vec<(String, Sample)> {
        let mut by_path: BTreeMap<String, Sample> = BTreeMap::new();
        for (link, version, v2_mount) in &self.links {
            // A failed walk leaves gaps in this frame, as a removed cgroup does.
            let Ok(walk) = self.it.walk(link) else {
                continue;
            };
            for c in walk {
                let below = if c.path.is_empty() {
                    0
                } else {
                    c.path.split('/').count()
                };
                if below > depth {
                    continue;
                }
                // A hierarchy's root shows no memory.current nor pids.current (v2), or
                // a usage the kernel derives from global counters (v1): its files.
                let root = c.level == 0;
                if root && let Ok(cg) = Cgroup::load(h, &CgroupPath::root()) {
                    let s = by_path.entry("/".to_owned()).or_default();
                    s.memory_bytes = cg.memory_stat().ok().map(|m| m.current_bytes);
                    s.tasks = cg.pids_stat().ok().map(|p| p.current);
                }
                let name = if c.path.is_empty() {
                    top.to_string()
                } else if top.is_root() {
                    c.path.clone()
                } else {
                    format!("{top}/{}", c.path)
                };
                let s = by_path.entry(name).or_default();
                if let Some(bw) = c.bandwidth {
                    s.nr_periods = Some(bw.nr_periods);
                    s.nr_throttled = Some(bw.nr_throttled);
                }
                if let Some(u) = c.cpu_usage {
                    s.usage_usec = Some(u.usage_ns / 1000);
                }
                if let Some(m) = c.memory.filter(|_| !root) {
                    s.memory_bytes = Some(m.usage_bytes);
                }
                if let Some(p) = c.pids.filter(|_| !root) {
                    s.tasks = Some(p);
                }
                if *version == Version::V2 && !v2_mount.is_empty() {
                    let dir = std::path::Path::new(v2_mount)
                        .join(top.as_str())
                        .join(&c.path);
                    s.usage_usec = cgroupkit::reader::read_string(&dir.join("cpu.stat"))
                        .ok()
                        .and_then(|t| CpuStat::parse_v2(&t, &dir).ok())
                        .and_then(|st| st.usage_usec);
                }
            }
        }
        by_path.into_iter().collect()
    }
}

/// What the BPF cgroup iterator read from the kernel's structs for one cgroup on one
/// hierarchy (`cgctl stat --ebpf`).
#[derive(Debug, serde::Serialize)]
pub(crate) struct KernelView {
    /// The hierarchy's mount point.
    pub hierarchy: String,
    /// The cgroup id (inode of its directory there).
    pub id: u64,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
    pub nr_bursts: Option<u64>,
    pub burst_usec: Option<u64>,
    /// `None` also when unlimited (see `period_usec`).
    pub quota_usec: Option<u64>,
    pub period_usec: Option<u64>,
    pub shares: Option<u64>,
    pub usage_usec: Option<u64>,
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// `None` also when unlimited.
    pub memory_limit_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids_current: Option<u64>,
}

/// The iterator's view of `path` on every hierarchy of cpu, cpuacct, memory and pids
/// it exists on: one walk each, of that cgroup only (its first record).
pub(crate) fn kernel_view(h: &Hierarchy, path: &CgroupPath) -> probes::Result<Vec<KernelView>> {
    let f = Fast::new(h, path)?;
    let mut out = Vec::new();
    for (link, _, _) in &f.links {
        let mut first = None;
        f.it.walk_with(link, |c| {
            if first.is_none() {
                first = Some(c);
            }
        })?;
        let Some(c) = first else { continue };
        let bw = c.bandwidth;
        out.push(KernelView {
            hierarchy: link.dir().to_string_lossy().into_owned(),
            id: c.id,
            nr_periods: bw.map(|b| b.nr_periods),
            nr_throttled: bw.map(|b| b.nr_throttled),
            throttled_usec: bw.map(|b| b.throttled_ns / 1000),
            nr_bursts: bw.and_then(|b| b.bursts).map(|b| b.0),
            burst_usec: bw.and_then(|b| b.bursts).map(|b| b.1 / 1000),
            quota_usec: c.cpu_limits.and_then(|l| l.quota_ns).map(|q| q / 1000),
            period_usec: c.cpu_limits.map(|l| l.period_ns / 1000),
            shares: c.cpu_limits.map(|l| l.shares()),
            usage_usec: c.cpu_usage.map(|u| u.usage_ns / 1000),
            user_usec: c.cpu_usage.map(|u| u.user_ns / 1000),
            system_usec: c.cpu_usage.map(|u| u.system_ns / 1000),
            memory_bytes: c.memory.map(|m| m.usage_bytes),
            memory_limit_bytes: c.memory.and_then(|m| m.limit_bytes),
            oom_kills: c.oom_kills,
            pids_current: c.pids,
        });
    }
    Ok(out)
}

/// Samples every cgroup of the merged tree under `top`.
fn sample_all(
    h: &Hierarchy,
    top: &CgroupPath,
    depth: usize,
    keep: &impl Fn(&cgroupkit::Mount) -> bool,
) -> Result<Vec<(String, Sample)>> {
    let tree = tree::merged(h, top, Some(depth), false, keep)?;
    let mut out = Vec::new();
    collect(h, &tree, &mut out);
    Ok(out)
}

fn collect(h: &Hierarchy, n: &Node, out: &mut Vec<(String, Sample)>) {
    let name = if n.path.is_empty() || n.path == "/" {
        "/".to_owned()
    } else {
        n.path.clone()
    };
    let path = if name == "/" {
        Ok(CgroupPath::root())
    } else {
        CgroupPath::new(&n.path)
    };
    // A cgroup removed meanwhile, or a file a controller does not show, is a gap in
    // the row, not an error of the whole frame.
    if let Ok(cg) = path.and_then(|p| Cgroup::load(h, &p)) {
        out.push((name, sample(&cg)));
    }
    for c in n.children.values() {
        collect(h, c, out);
    }
}

fn sample(cg: &Cgroup) -> Sample {
    let cpu = cg.cpu_stat().ok();
    Sample {
        usage_usec: cpu.as_ref().and_then(|c| c.usage_usec),
        nr_periods: cpu.as_ref().map(|c| c.nr_periods),
        nr_throttled: cpu.as_ref().map(|c| c.nr_throttled),
        memory_bytes: cg.memory_stat().ok().map(|m| m.current_bytes),
        tasks: cg.pids_stat().ok().map(|p| p.current),
    }
}

/// 1536 -> `1.5K`, with binary units as the limit flags take them.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_share_and_cpu_from_deltas() {
        let s0 = Sample {
            usage_usec: Some(1_000_000),
            nr_periods: Some(10),
            nr_throttled: Some(5),
            ..Sample::default()
        };
        let s1 = Sample {
            usage_usec: Some(1_200_000),
            nr_periods: Some(20),
            nr_throttled: Some(14),
            ..Sample::default()
        };
        let r = row("x", Some(&s0), &s1, 1_000_000.0);
        assert_eq!(r.cpu_pct, Some(20.0));
        assert_eq!(r.throttled_pct, Some(90.0));
        let r = row("x", None, &s1, 1_000_000.0);
        assert_eq!((r.cpu_pct, r.throttled_pct), (None, None));
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(100), "100B");
    }
}
