//! The subcommands that create, change and inspect one cgroup.

use std::fmt;
use std::process::ExitCode;

use cgctl::cli::{CreateArgs, LimitArgs, MoveArgs, NameArgs, RmArgs, StatArgs};
use cgroupkit::{
    Cgroup, CgroupPath, Controller, CpuQuota, Hierarchy, Leftovers, Pid, Procfs, Resources, Written,
};
use serde::Serialize;

use crate::show::{json_shown, shown};

/// An error as the user sees it: what failed, why, and what to do.
pub struct Failure {
    msg: String,
    hint: Option<String>,
    code: u8,
}

/// Exit status of a failed operation.
pub const EXIT_ERROR: u8 = 1;
/// Exit status of a usage error (as clap uses for its own).
pub const EXIT_USAGE: u8 = 2;

impl Failure {
    /// A usage error: the command line asks for something that cannot be done.
    pub fn usage(msg: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            msg: msg.into(),
            hint: Some(hint.into()),
            code: EXIT_USAGE,
        }
    }

    /// An operation that failed, with what to do about it.
    pub fn new(msg: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            msg: msg.into(),
            hint: Some(hint.into()),
            code: EXIT_ERROR,
        }
    }

    /// Replaces the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// Replaces the exit status.
    pub fn with_code(mut self, code: u8) -> Failure {
        self.code = code;
        self
    }

    /// The exit status for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl From<cgroupkit::Error> for Failure {
    fn from(e: cgroupkit::Error) -> Failure {
        let msg = errchain::chain(&e);
        let hint = e.hint().map(str::to_owned).or_else(|| match &e {
            cgroupkit::Error::NotFound { .. } => {
                Some("check the name with `cgctl ls`, or create it with `cgctl create NAME`".into())
            }
            cgroupkit::Error::Unsupported { .. } => {
                Some("leave this flag out on this host, or use a cgroup v2 host".into())
            }
            _ => None,
        });
        // A value refused before anything was written is bad input: a usage error.
        let code = match &e {
            cgroupkit::Error::InvalidResource { .. } => EXIT_USAGE,
            _ => EXIT_ERROR,
        };
        Failure { msg, hint, code }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages carry cgroup names and paths: never raw to the terminal.
        write!(f, "cgctl: error: {}", shown(&self.msg))?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {}", shown(h))?;
        }
        Ok(())
    }
}

/// Result of a subcommand.
pub type Result<T> = std::result::Result<T, Failure>;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(format!("cannot encode JSON: {e}"), "report this as a bug"))?;
    println!("{}", json_shown(s));
    Ok(())
}

/// The controllers a cgroup needs for `res`; where cpuacct is a v1 hierarchy of its
/// own, it is joined too so that CPU usage is accounted (`stat`, `top`).
pub fn controllers_for(h: &Hierarchy, res: &Resources) -> Vec<Controller> {
    let mut c = res.controllers();
    if c.contains(&Controller::Cpu) && h.mount_for(Controller::Cpuacct).is_some() {
        c.push(Controller::Cpuacct);
    }
    c
}

/// Creates (or reuses) `path` on the hierarchies `res` needs, applies `res`, then runs
/// `then` on it; if anything fails, the directories this call created are removed.
pub fn create_apply(
    h: &Hierarchy,
    path: &CgroupPath,
    res: &Resources,
    then: impl FnOnce(&Cgroup) -> cgroupkit::Result<()>,
) -> Result<(Cgroup, Vec<Written>)> {
    let mut cg = Cgroup::create(h, path, &controllers_for(h, res))?;
    match cg.apply(res).and_then(|w| then(&cg).map(|()| w)) {
        Ok(w) => Ok((cg, w)),
        Err(e) => {
            // Leave nothing half-made; the original error is what the user needs.
            let _ = cg.rollback();
            Err(e.into())
        }
    }
}

fn dirs_of(cg: &Cgroup) -> Vec<String> {
    cg.dirs()
        .iter()
        .map(|d| d.path.display().to_string())
        .collect()
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
    resources: Resources,
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
    let res = a.limits.resources()?;
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
    let (cg, writes) = create_apply(&h, &path, &res, |cg| cg.add_process(pid))?;
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
        resources: res,
        writes,
        dirs: dirs_of(&cg),
    };
    if a.json {
        return print_json(&report);
    }
    match &report.cpu {
        Some(c) => println!(
            "capped pid {} ({}) at {} CPUs: {} us every {} us",
            report.pid,
            shown(&report.comm),
            c.cpus,
            c.quota_usec,
            c.period_usec
        ),
        None => println!("limited pid {} ({})", report.pid, shown(&report.comm)),
    }
    print_cgroup_line(&report.cgroup, report.created, report.layout);
    print_writes(&report.writes);
    for d in &report.dirs {
        println!(
            "  moved   pid {} ({} thread{}) -> {}/cgroup.procs",
            report.pid,
            report.threads,
            if report.threads == 1 { "" } else { "s" },
            shown(d)
        );
    }
    Ok(())
}

fn print_cgroup_line(cgroup: &str, created: bool, layout: cgroupkit::Layout) {
    println!(
        "  cgroup  {} ({}, {layout})",
        shown(cgroup),
        if created { "created" } else { "existing" },
    );
}

fn print_writes(writes: &[Written]) {
    for w in writes {
        println!("  wrote   {} = {}", shown(&w.path), shown(&w.value));
    }
}

#[derive(Serialize)]
struct CreateReport {
    cgroup: String,
    created: bool,
    layout: cgroupkit::Layout,
    resources: Resources,
    writes: Vec<Written>,
    dirs: Vec<String>,
}

/// `cgctl create` (`set == false`) and `cgctl set` (the cgroup must exist).
pub fn create_or_set(a: CreateArgs, set: bool) -> Result<()> {
    let res = a.limits.resources()?;
    let path = CgroupPath::new(&a.cgroup)?;
    if path.is_root() {
        return Err(Failure::usage(
            "the root cgroup cannot be created or limited",
            "name a child cgroup, such as `web`",
        ));
    }
    let h = Hierarchy::detect()?;
    if set {
        if res.controllers().is_empty() {
            return Err(Failure::usage(
                "no limit given",
                "give at least one limit, e.g. `cgctl set web --memory 1G`",
            ));
        }
        Cgroup::load(&h, &path).map_err(|e| {
            Failure::from(e).with_hint(format!("create it first: `cgctl create {path} ...`"))
        })?;
    } else if res.controllers().is_empty() && h.layout() == cgroupkit::Layout::V1 {
        return Err(Failure::usage(
            "no limit given",
            "on a cgroup v1 host a cgroup lives in each controller's hierarchy: give the \
             limits it needs, e.g. `cgctl create web --cpu 1`",
        ));
    }
    let (cg, writes) = create_apply(&h, &path, &res, |_| Ok(()))?;
    let report = CreateReport {
        cgroup: path.to_string(),
        created: !cg.created().is_empty(),
        layout: h.layout(),
        resources: res,
        writes,
        dirs: dirs_of(&cg),
    };
    if a.json {
        return print_json(&report);
    }
    println!(
        "{} {}",
        if report.created { "created" } else { "updated" },
        shown(&report.cgroup)
    );
    print_cgroup_line(&report.cgroup, report.created, report.layout);
    print_writes(&report.writes);
    Ok(())
}

/// `cgctl move`.
pub fn move_(a: MoveArgs) -> Result<()> {
    let pid = Pid::new(a.pid)?;
    let path = CgroupPath::new(&a.cgroup)?;
    let h = Hierarchy::detect()?;
    let cg = Cgroup::load(&h, &path)?;
    if a.thread {
        cg.add_thread(pid).map_err(|e| {
            let v2 = h.layout() != cgroupkit::Layout::V1;
            let f = Failure::from(e);
            if v2 {
                f.with_hint(
                    "on cgroup v2 a single thread moves only within a threaded subtree: write \
                     `threaded` to the cgroup's cgroup.type first",
                )
            } else {
                f
            }
        })?;
    } else {
        Procfs::default().user_process(pid)?;
        cg.add_process(pid)?;
    }
    let file = if a.thread { "threads" } else { "cgroup.procs" };
    for d in cg.dirs() {
        println!(
            "moved   {} {pid} -> {}/{}",
            if a.thread { "thread" } else { "pid" },
            shown(&d.path),
            if a.thread && d.version == cgroupkit::Version::V1 {
                "tasks"
            } else if a.thread {
                "cgroup.threads"
            } else {
                file
            }
        );
    }
    Ok(())
}

/// `cgctl freeze`, `thaw` and `kill`.
pub fn freeze(a: NameArgs, what: Lifecycle) -> Result<()> {
    let path = CgroupPath::new(&a.cgroup)?;
    if path.is_root() {
        return Err(Failure::usage(
            "the root cgroup cannot be frozen or killed",
            "name a child cgroup",
        ));
    }
    let h = Hierarchy::detect()?;
    let cg = Cgroup::load(&h, &path)?;
    match what {
        Lifecycle::Freeze => {
            cg.freeze()?;
            println!("frozen  {}", shown(path.as_str()));
        }
        Lifecycle::Thaw => {
            cg.thaw()?;
            println!("thawed  {}", shown(path.as_str()));
        }
        Lifecycle::Kill => {
            let n = cg.all_procs()?.len();
            cg.kill()?;
            println!(
                "killed  {} ({n} process{})",
                shown(path.as_str()),
                if n == 1 { "" } else { "es" }
            );
        }
    }
    Ok(())
}

/// Which of freeze, thaw, kill.
#[derive(Clone, Copy, Debug)]
pub enum Lifecycle {
    /// `cgctl freeze`.
    Freeze,
    /// `cgctl thaw`.
    Thaw,
    /// `cgctl kill`.
    Kill,
}

#[derive(Serialize)]
struct StatReport {
    cgroup: String,
    layout: cgroupkit::Layout,
    dirs: Vec<String>,
    procs: Vec<Pid>,
    cpu_quota: Option<CpuQuota>,
    cpu_settings: Option<cgroupkit::Cpu>,
    cpu: Option<cgroupkit::CpuStat>,
    memory_limits: Option<cgroupkit::Memory>,
    memory: Option<cgroupkit::MemoryStat>,
    pids_max: Option<cgroupkit::PidsLimit>,
    pids: Option<cgroupkit::PidsStat>,
    io_limits: Option<Vec<cgroupkit::DeviceLimit>>,
    /// By `MAJ:MIN` (JSON object keys must be strings).
    io: Option<std::collections::BTreeMap<String, cgroupkit::DeviceIo>>,
    cpuset: Option<cgroupkit::CpusetStat>,
    hugetlb: Option<cgroupkit::HugetlbStat>,
    freezer: Option<cgroupkit::FreezerState>,
    /// With `--ebpf`: the BPF cgroup iterator's reading of the kernel's structs.
    #[serde(skip_serializing_if = "Option::is_none")]
    ebpf: Option<Vec<crate::top::KernelView>>,
}

/// Reads one section of `stat`: `None` where the cgroup does not span the controller
/// or the kernel does not show the file for it (e.g. a v2 controller not enabled).
fn section<T>(
    cg: &Cgroup,
    c: Controller,
    read: impl FnOnce() -> cgroupkit::Result<T>,
) -> Result<Option<T>> {
    if cg.dir_for(c).is_err() {
        return Ok(None);
    }
    match read() {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `cgctl stat`.
pub fn stat(a: StatArgs) -> Result<()> {
    let h = Hierarchy::detect()?;
    let path = CgroupPath::new(&a.cgroup)?;
    let cg = Cgroup::load(&h, &path)?;
    let report = StatReport {
        cgroup: path.to_string(),
        layout: h.layout(),
        dirs: dirs_of(&cg),
        procs: cg.procs()?,
        cpu_quota: section(&cg, Controller::Cpu, || cg.cpu_quota())?,
        cpu_settings: section(&cg, Controller::Cpu, || cg.cpu_settings())?,
        cpu: section(&cg, Controller::Cpu, || cg.cpu_stat())?,
        memory_limits: section(&cg, Controller::Memory, || cg.memory_limits())?,
        memory: section(&cg, Controller::Memory, || cg.memory_stat())?,
        pids_max: section(&cg, Controller::Pids, || cg.pids_max())?,
        pids: section(&cg, Controller::Pids, || cg.pids_stat())?,
        io_limits: section(&cg, Controller::Io, || cg.io_limits())?,
        io: section(&cg, Controller::Io, || cg.io_stat())?.map(|s| {
            s.devices
                .into_iter()
                .map(|(d, v)| (d.to_string(), v))
                .collect()
        }),
        cpuset: section(&cg, Controller::Cpuset, || cg.cpuset_stat())?,
        hugetlb: section(&cg, Controller::Hugetlb, || cg.hugetlb_stat())?
            .filter(|s| !s.sizes.is_empty()),
        freezer: cg.freezer_state().ok(),
        ebpf: if a.ebpf {
            Some(crate::top::kernel_view(&h, &path).map_err(|e| {
                Failure::new(
                    errchain::chain(&e),
                    "--ebpf needs root, kernel BTF (6.1+) and `cargo xtask build-ebpf` \
                     (or PROBES_EBPF_OBJECT)",
                )
            })?)
        } else {
            None
        },
    };
    if a.json {
        return print_json(&report);
    }
    print_stat(&report);
    Ok(())
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |v| v.to_string())
}

fn limit_str(l: Option<cgroupkit::Limit>) -> String {
    l.map_or("-".to_owned(), |l| l.to_string())
}

fn print_stat(r: &StatReport) {
    println!("cgroup {} ({})", shown(&r.cgroup), r.layout);
    for d in &r.dirs {
        println!("  dir           {}", shown(d));
    }
    let procs: Vec<String> = r.procs.iter().map(|p| p.to_string()).collect();
    println!(
        "  procs         {}",
        if procs.is_empty() {
            "-".into()
        } else {
            procs.join(" ")
        }
    );
    if let Some(f) = r.freezer {
        println!("  freezer       {f:?}");
    }
    if let Some(q) = &r.cpu_quota {
        println!("  cpu limit     {q}");
    }
    if let Some(c) = &r.cpu_settings {
        if let Some(w) = c.weight {
            println!(
                "  cpu weight    {} (shares {})",
                w.as_weight(),
                w.as_shares()
            );
        }
        if let Some(b) = c.burst_usec {
            println!("  cpu burst     {b} us");
        }
        if let Some(i) = c.idle {
            println!("  cpu idle      {}", u8::from(i));
        }
    }
    if let Some(s) = &r.cpu {
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
    if let Some(m) = &r.memory_limits {
        println!(
            "  memory max    {}  (high {}, low {}, min {}, swap {})",
            limit_str(m.max),
            limit_str(m.high),
            limit_str(m.low),
            limit_str(m.min),
            limit_str(m.swap_max)
        );
        if let Some(g) = m.oom_group {
            println!("  oom.group     {}", u8::from(g));
        }
    }
    if let Some(m) = &r.memory {
        println!(
            "  memory        {} bytes  (peak {}, anon {}, file {})",
            m.current_bytes,
            opt(m.peak_bytes),
            opt(m.anon_bytes),
            opt(m.file_bytes)
        );
        println!("  oom_kill      {}", opt(m.events.oom_kill));
    }
    if let Some(p) = &r.pids {
        println!(
            "  pids          {} of {}  (peak {}, refused forks {})",
            p.current,
            r.pids_max.map_or("-".to_owned(), |m| m.to_string()),
            opt(p.peak),
            p.events_max
        );
    }
    if let Some(c) = &r.cpuset {
        println!(
            "  cpuset        cpus {} (effective {}), mems {} (effective {})",
            c.cpus, c.cpus_effective, c.mems, c.mems_effective
        );
    }
    if let Some(limits) = &r.io_limits {
        for l in limits {
            if let Some(v) = l.to_v2() {
                println!("  io.max        {v}");
            }
        }
    }
    if let Some(io) = &r.io {
        for (dev, d) in io {
            println!(
                "  io {dev:<9}  read {} B / {} ops, write {} B / {} ops",
                d.rbytes, d.rios, d.wbytes, d.wios
            );
        }
    }
    if let Some(hs) = &r.hugetlb {
        for (size, s) in &hs.sizes {
            println!(
                "  hugetlb {size:<5} {} bytes of {}  (refused {})",
                s.current_bytes,
                limit_str(s.max),
                s.events_max
            );
        }
    }
    for k in r.ebpf.iter().flatten() {
        println!("  ebpf          {} (id {})", shown(&k.hierarchy), k.id);
        if k.nr_periods.is_some() || k.period_usec.is_some() {
            println!(
                "    cpu         periods {}  throttled {}  throttled {} us  bursts {}  burst {} us  quota {} us / {} us  shares {}",
                opt(k.nr_periods),
                opt(k.nr_throttled),
                opt(k.throttled_usec),
                opt(k.nr_bursts),
                opt(k.burst_usec),
                opt(k.quota_usec),
                opt(k.period_usec),
                opt(k.shares)
            );
        }
        if k.usage_usec.is_some() {
            println!(
                "    cpuacct     usage {} us  user {} us  system {} us",
                opt(k.usage_usec),
                opt(k.user_usec),
                opt(k.system_usec)
            );
        }
        if k.memory_bytes.is_some() {
            println!(
                "    memory      {} bytes of {}  oom kills {}",
                opt(k.memory_bytes),
                opt(k.memory_limit_bytes),
                opt(k.oom_kills)
            );
        }
        if let Some(p) = k.pids_current {
            println!("    pids        {p}");
        }
    }
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
    let dirs = dirs_of(&cg);
    if a.recursive {
        let leftovers = if a.kill {
            Leftovers::Kill
        } else if a.drain {
            Leftovers::Drain
        } else {
            Leftovers::Refuse
        };
        let all = cg.all_procs()?;
        if leftovers == Leftovers::Refuse && !all.is_empty() {
            return Err(refuse_populated(&path, &all));
        }
        cg.delete_recursive(leftovers)?;
        if a.kill && !all.is_empty() {
            println!("killed  {} process(es)", all.len());
        }
    } else {
        if a.kill {
            if cg.is_populated()? {
                cg.kill()?;
            }
        } else if a.drain {
            for w in cg.drain_to_parent()? {
                println!("moved   pid {} -> {}", w.value, shown(&w.path));
            }
        } else {
            let procs = cg.procs()?;
            if !procs.is_empty() {
                return Err(refuse_populated(&path, &procs));
            }
        }
        let children = cg.children()?;
        if !children.is_empty() {
            return Err(Failure::new(
                format!("cgroup {path} has child cgroups: {}", children.len()),
                "pass -r to remove the whole subtree",
            ));
        }
        cg.delete()?;
    }
    for d in dirs {
        println!("removed {}", shown(&d));
    }
    Ok(())
}

fn refuse_populated(path: &CgroupPath, procs: &[Pid]) -> Failure {
    let list: Vec<String> = procs.iter().map(|p| p.to_string()).collect();
    Failure::new(
        format!("cgroup {path} still holds processes: {}", list.join(" ")),
        "pass --drain to move them to the parent cgroup first, or --kill to kill them",
    )
}
