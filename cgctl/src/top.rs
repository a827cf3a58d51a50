//! `cgctl top`: per-cgroup CPU %, throttled %, memory and tasks, from the deltas of
//! two samples an interval apart (like systemd-cgtop).

use std::io::IsTerminal;
use std::time::Instant;

use cgctl::cli::{SortKey, TopArgs};
use cgroupkit::{Cgroup, CgroupPath, Controller, Hierarchy};

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
    let mut before = sample_all(&h, &top, a.depth, &keep)?;
    let mut t0 = Instant::now();
    let mut frame = 0u64;
    loop {
        std::thread::sleep(a.interval);
        let after = sample_all(&h, &top, a.depth, &keep)?;
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
            "cgctl top  frame {frame}  interval {:?}  sorted by {:?}\n",
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
