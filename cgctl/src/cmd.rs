//! The subcommands.

use std::fmt;

use cgroupkit::{
    Cgroup, CgroupPath, Controller, Cpu, CpuQuota, Hierarchy, Pid, Procfs, Resources, Written,
};
use clap::Args;
use serde::Serialize;

use crate::units;

/// An error as the user sees it: what failed, why, and what to do.
pub struct Failure {
    msg: String,
    hint: Option<String>,
}

impl Failure {
    fn usage(msg: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            msg: msg.into(),
            hint: Some(hint.into()),
        }
    }
}

impl From<cgroupkit::Error> for Failure {
    fn from(e: cgroupkit::Error) -> Failure {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        Failure {
            msg,
            hint: e.hint().map(str::to_owned),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cgctl: error: {}", self.msg)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

type Result<T> = std::result::Result<T, Failure>;

#[derive(Args)]
pub struct LimitArgs {
    /// CPU limit in CPUs: 0.2 is 20% of one CPU, 1.5 one and a half CPUs.
    #[arg(long, value_name = "CPUS", allow_negative_numbers = true, value_parser = units::parse_cpus)]
    cpu: Option<f64>,
    /// Enforcement period of the CPU limit (100ms, 50000us, 1s; a bare number is us).
    #[arg(long, value_name = "PERIOD", default_value = "100ms", value_parser = units::parse_period_usec)]
    period: u64,
    /// The process to move (all its threads).
    #[arg(long, value_name = "PID", allow_negative_numbers = true, value_parser = units::parse_pid)]
    pid: i64,
    /// The cgroup, relative to the cgroup root [default: cgctl/pid-PID].
    #[arg(long, value_name = "NAME")]
    cgroup: Option<String>,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct LimitReport {
    cgroup: String,
    created: bool,
    layout: cgroupkit::Layout,
    pid: Pid,
    comm: String,
    threads: usize,
    cpu: Option<CpuReport>,
    writes: Vec<Written>,
    dirs: Vec<String>,
}

#[derive(Serialize)]
struct CpuReport {
    cpus: f64,
    quota_usec: u64,
    period_usec: u64,
}

/// `cgctl limit`: validate everything, then create + apply + move, undoing the
/// creation if a later step fails.
pub fn limit(a: LimitArgs) -> Result<()> {
    let mut res = Resources::default();
    if let Some(cpus) = a.cpu {
        res.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(cpus, a.period)?));
    }
    if res.controllers().is_empty() {
        return Err(Failure::usage(
            "no limit given",
            "give at least one limit, e.g. `cgctl limit --cpu 0.2 --pid 398`",
        ));
    }
    let pid = Pid::new(a.pid)?;
    let path = match &a.cgroup {
        Some(name) => CgroupPath::new(name)?,
        None => CgroupPath::new(&format!("cgctl/pid-{pid}"))?,
    };
    let procfs = Procfs::default();
    let proc_stat = procfs.user_process(pid)?;
    let h = Hierarchy::detect()?;

    let mut controllers = res.controllers();
    // Where cpuacct is a hierarchy of its own (v1), join it too so that usage is
    // accounted and `cgctl stat` can show it.
    if controllers.contains(&Controller::Cpu) && h.mount_for(Controller::Cpuacct).is_some() {
        controllers.push(Controller::Cpuacct);
    }
    let mut cg = Cgroup::create(&h, &path, &controllers)?;
    let done = cg.apply(&res).and_then(|w| cg.add_process(pid).map(|()| w));
    let writes = match done {
        Ok(w) => w,
        Err(e) => {
            // Leave nothing half-applied: remove what this call created.
            let _ = cg.rollback();
            return Err(e.into());
        }
    };
    // Report how many threads went along (cgroup.procs moves the thread group).
    let tids = procfs.threads(pid).unwrap_or_default();
    let in_cg = cg.threads().unwrap_or_default();
    let threads = tids
        .iter()
        .filter(|t| in_cg.iter().any(|c| c.as_raw() == **t))
        .count();

    let q = res.cpu.as_ref().and_then(|c| c.quota);
    let report = LimitReport {
        cgroup: path.to_string(),
        created: !cg.created().is_empty(),
        layout: h.layout(),
        pid,
        comm: proc_stat.comm,
        threads,
        cpu: q.map(|q| CpuReport {
            cpus: q.cpus().unwrap_or(0.0),
            quota_usec: q.quota_usec().unwrap_or(0),
            period_usec: q.period_usec(),
        }),
        writes,
        dirs: cg
            .dirs()
            .iter()
            .map(|d| d.path.display().to_string())
            .collect(),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(());
    }
    if let Some(c) = &report.cpu {
        println!(
            "capped pid {} ({}) at {} CPUs: {} us every {} us",
            report.pid, report.comm, c.cpus, c.quota_usec, c.period_usec
        );
    }
    println!(
        "  cgroup  {} ({}, {})",
        report.cgroup,
        if report.created {
            "created"
        } else {
            "existing"
        },
        report.layout
    );
    for w in &report.writes {
        println!("  wrote   {} = {}", w.path.display(), w.value);
    }
    for d in &report.dirs {
        println!(
            "  moved   pid {} ({} thread{}) -> {d}/cgroup.procs",
            report.pid,
            report.threads,
            if report.threads == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct StatArgs {
    /// The cgroup, relative to the cgroup root.
    cgroup: String,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct StatReport {
    cgroup: String,
    layout: cgroupkit::Layout,
    dirs: Vec<String>,
    procs: Vec<Pid>,
    cpu_quota: Option<CpuQuota>,
    cpu: Option<cgroupkit::CpuStat>,
}

/// `cgctl stat`.
pub fn stat(a: StatArgs) -> Result<()> {
    let h = Hierarchy::detect()?;
    let path = CgroupPath::new(&a.cgroup)?;
    let cg = Cgroup::load(&h, &path)?;
    let has_cpu = cg
        .dirs()
        .iter()
        .any(|d| d.controllers.contains(&Controller::Cpu));
    let report = StatReport {
        cgroup: path.to_string(),
        layout: h.layout(),
        dirs: cg
            .dirs()
            .iter()
            .map(|d| d.path.display().to_string())
            .collect(),
        procs: cg.procs()?,
        cpu_quota: if has_cpu { Some(cg.cpu_quota()?) } else { None },
        cpu: if has_cpu { Some(cg.cpu_stat()?) } else { None },
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(());
    }
    println!("cgroup {} ({})", report.cgroup, report.layout);
    for d in &report.dirs {
        println!("  dir           {d}");
    }
    let procs: Vec<String> = report.procs.iter().map(|p| p.to_string()).collect();
    println!(
        "  procs         {}",
        if procs.is_empty() {
            "-".into()
        } else {
            procs.join(" ")
        }
    );
    if let Some(q) = &report.cpu_quota {
        println!("  cpu limit     {q}");
    }
    if let Some(s) = &report.cpu {
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        println!(
            "  usage_usec    {}  (user {}, system {})",
            opt(s.usage_usec),
            opt(s.user_usec),
            opt(s.system_usec)
        );
        println!("  nr_periods    {}", s.nr_periods);
        println!("  nr_throttled  {}", s.nr_throttled);
        println!("  throttled     {} us", s.throttled_usec);
        println!(
            "  nr_bursts     {}  (burst {} us)",
            opt(s.nr_bursts),
            opt(s.burst_usec)
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// The cgroup, relative to the cgroup root.
    cgroup: String,
    /// Move its processes to the parent cgroup first (as cgdelete does).
    #[arg(long)]
    drain: bool,
}

/// `cgctl rm`.
pub fn rm(a: RmArgs) -> Result<()> {
    let h = Hierarchy::detect()?;
    let path = CgroupPath::new(&a.cgroup)?;
    if path.is_root() {
        return Err(Failure::usage(
            "the root cgroup cannot be removed",
            "name a child cgroup",
        ));
    }
    let cg = Cgroup::load(&h, &path)?;
    if a.drain {
        for w in cg.drain_to_parent()? {
            println!("moved   pid {} -> {}", w.value, w.path.display());
        }
    } else {
        let procs = cg.procs()?;
        if !procs.is_empty() {
            let list: Vec<String> = procs.iter().map(|p| p.to_string()).collect();
            return Err(Failure::usage(
                format!("cgroup {path} still holds processes: {}", list.join(" ")),
                "pass --drain to move them to the parent cgroup first",
            ));
        }
    }
    let dirs: Vec<String> = cg
        .dirs()
        .iter()
        .map(|d| d.path.display().to_string())
        .collect();
    cg.delete()?;
    for d in dirs {
        println!("removed {d}");
    }
    Ok(())
}
