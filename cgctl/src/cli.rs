//! The command-line definition: every subcommand, its flags and its examples.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use cgroupkit::cpu::CpuWeight;
use cgroupkit::{
    Cpu, CpuQuota, Cpuset, DeviceLimit, Hugetlb, IdSet, Io, Limit, Memory, PageSize, Pids,
    PidsLimit, Resources,
};

use crate::units;

const EXAMPLES: &str = "\
Examples:
  cgctl limit --cpu 0.2 --pid 398          cap process 398 at 20% of one CPU
  cgctl run --memory 512M --pids 100 -- make -j4
  cgctl create web --cpu 1.5 --memory 2G   then `cgctl move web --pid 398`
  cgctl ls                                 the cgroup tree with its processes
  cgctl top --sort throttled               live CPU, throttling, memory, tasks
  cgctl stat cgctl/pid-398 --json          limits, usage and counters
  cgctl rm -r --kill web                   kill everything in web, remove the tree

Exit status: 0 done, 1 error, 2 usage error; `run` exits as its command did.";

/// cgctl: create, limit, run and inspect cgroups on cgroup v1, v2 and hybrid hosts.
#[derive(Debug, Parser)]
#[command(
    name = "cgctl",
    version,
    about = "Create, limit, run and inspect cgroups (v1, v2 and hybrid hosts)",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Cap a running process: create (or reuse) its cgroup, set the limits, move the
    /// whole process (every thread) in.
    #[command(after_help = LIMIT_EXAMPLES)]
    Limit(LimitArgs),
    /// Create a cgroup (or reuse an existing one) and set limits on it.
    #[command(after_help = CREATE_EXAMPLES)]
    Create(CreateArgs),
    /// Change the limits of an existing cgroup.
    #[command(after_help = SET_EXAMPLES)]
    Set(CreateArgs),
    /// Run a command inside a cgroup (it is there before it execs), relay its exit
    /// status, remove the cgroup afterwards.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Move a process (all its threads), or one thread, into a cgroup.
    #[command(name = "move", after_help = MOVE_EXAMPLES)]
    Move(MoveArgs),
    /// Freeze every process of a cgroup and its descendants.
    #[command(after_help = FREEZE_EXAMPLES)]
    Freeze(NameArgs),
    /// Thaw a frozen cgroup.
    #[command(after_help = FREEZE_EXAMPLES)]
    Thaw(NameArgs),
    /// SIGKILL every process of a cgroup and its descendants (cgroup.kill, or freeze +
    /// SIGKILL + thaw so that nothing escapes by forking); waits until it is empty.
    #[command(after_help = KILL_EXAMPLES)]
    Kill(NameArgs),
    /// Remove a cgroup (with -r, its whole subtree).
    #[command(after_help = RM_EXAMPLES)]
    Rm(RmArgs),
    /// Show a cgroup's limits, processes and the statistics of every controller it
    /// spans (cpu, memory, pids, io, cpuset, hugetlb).
    #[command(after_help = STAT_EXAMPLES)]
    Stat(StatArgs),
    /// Show the cgroup tree with each cgroup's processes (like systemd-cgls); on v1
    /// and hybrid hosts the hierarchies are merged by path.
    #[command(after_help = LS_EXAMPLES)]
    Ls(LsArgs),
    /// Live per-cgroup CPU %, throttled %, memory and tasks (like systemd-cgtop).
    #[command(after_help = TOP_EXAMPLES)]
    Top(TopArgs),
    /// Stream a cgroup's events, one line each: populated/frozen changes, memory
    /// events (OOM kills, limit hits), refused forks, removal.
    #[command(after_help = EVENTS_EXAMPLES)]
    Events(EventsArgs),
    /// Live CPU-throttling view from the eBPF probe: per cgroup the throttle events,
    /// the throttled time and a histogram of throttle durations. Root; build the probe
    /// first with `cargo xtask build-ebpf`.
    #[command(after_help = THROTTLE_EXAMPLES)]
    Throttle(ThrottleArgs),
}

const THROTTLE_EXAMPLES: &str = "\
Examples:
  cgctl throttle                       throttling of every cgroup over 5 s
  cgctl throttle --duration 30s --json one JSON object per cgroup
  cgctl throttle --strategy fentry     only fentry/fexit (default: fentry, else sched_switch)";

/// `cgctl throttle`.
#[derive(Debug, Args)]
pub struct ThrottleArgs {
    /// How long to watch.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = units::parse_interval)]
    pub duration: Duration,
    /// One JSON object per cgroup: `path`, `events`, `throttled_ns`, `histogram`.
    #[arg(long)]
    pub json: bool,
    /// Attach strategy: `fentry` or `sched_switch` [default: what the kernel accepts].
    #[arg(long, value_name = "STRATEGY")]
    pub strategy: Option<String>,
}

const EVENTS_EXAMPLES: &str = "\
Examples:
  cgctl events web                     until web is removed (or ^C)
  cgctl events web --json --count 1    wait for the next event, print it as JSON";

/// `cgctl events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The cgroup, relative to the cgroup root.
    #[arg(value_name = "NAME")]
    pub cgroup: String,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many events [default: until the cgroup is removed].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

const LIMIT_EXAMPLES: &str = "\
Examples:
  cgctl limit --cpu 0.2 --pid 398                 20% of one CPU, in cgctl/pid-398
  cgctl limit --cpu 1.5 --period 50ms --pid 398 --cgroup web/api
  cgctl limit --memory 512M --pids 64 --pid 398 --json";

const CREATE_EXAMPLES: &str = "\
Examples:
  cgctl create web --cpu 2 --memory 4G --pids 500
  cgctl create batch --cpu-weight 50 --io-weight 50 --cpu-idle
  cgctl set web --memory-high 3G --io-max /dev/vda=wbps=10M,riops=1000
  cgctl set web --cpuset-cpus 0-1 --hugetlb 2M=64M --json";

const SET_EXAMPLES: &str = "\
Examples:
  cgctl set web --memory 8G --swap 0
  cgctl set web --cpu 4 --cpu-burst 50ms
  cgctl set web --pids max --io-max 254:0=rbps=max";

const RUN_EXAMPLES: &str = "\
Examples:
  cgctl run --cpu 0.5 -- stress-ng --cpu 2          at most half a CPU
  cgctl run --memory 256M --swap 0 -- ./leaky        OOM-killed at 256 MiB
  cgctl run --pids 32 --cgroup ci/job-7 --keep -- ./build.sh

The child is in the cgroup before it runs: on pure cgroup v2, clone3(CLONE_INTO_CGROUP);
elsewhere it writes itself into each cgroup.procs between fork and exec. SIGINT, SIGTERM,
SIGHUP and SIGQUIT sent to cgctl are passed on to the command. The exit status is the
command's (128+N if killed by signal N). Unless --keep, a cgroup that run created is
removed afterwards, with anything the command left running in it killed.";

const MOVE_EXAMPLES: &str = "\
Examples:
  cgctl move web --pid 398                the whole process (cgroup.procs)
  cgctl move web/threads --pid 401 --thread   one thread (v1 tasks, v2 cgroup.threads)";

const FREEZE_EXAMPLES: &str = "\
Examples:
  cgctl freeze web     stop every process in web and below (v2 cgroup.freeze, v1 freezer)
  cgctl thaw web       let them run again";

const KILL_EXAMPLES: &str = "\
Examples:
  cgctl kill web       SIGKILL everything in web and below; the cgroups stay";

const RM_EXAMPLES: &str = "\
Examples:
  cgctl rm web              remove an empty cgroup
  cgctl rm --drain web      move its processes to the parent first (as cgdelete does)
  cgctl rm -r web           remove web and its children (refused while populated)
  cgctl rm -r --kill web    kill every process in the subtree, then remove it";

const STAT_EXAMPLES: &str = "\
Examples:
  cgctl stat web
  cgctl stat web --json | jq .memory.current_bytes";

const LS_EXAMPLES: &str = "\
Examples:
  cgctl ls                  the whole tree
  cgctl ls web --depth 1    web and its children";

const TOP_EXAMPLES: &str = "\
Examples:
  cgctl top                            refresh every second until interrupted
  cgctl top --sort throttled --depth 2
  cgctl top web --iterations 3 --interval 500ms > samples.txt

%CPU is CPU time used over the interval (100 = one CPU); THR% is the share of CFS
periods in which the cgroup was throttled (delta nr_throttled / delta nr_periods).";

/// The limit flags shared by `create`, `set`, `limit` and `run`.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitFlags {
    /// CPU limit in CPUs: 0.2 is 20% of one CPU, 1.5 one and a half CPUs.
    #[arg(long, value_name = "CPUS", allow_negative_numbers = true, value_parser = units::parse_cpus)]
    pub cpu: Option<f64>,
    /// Enforcement period of the CPU limit (100ms, 50000us, 1s; a bare number is us)
    /// [default: 100ms].
    #[arg(long, value_name = "PERIOD", value_parser = units::parse_period_usec, requires = "cpu")]
    pub period: Option<u64>,
    /// Relative CPU weight in v2 units, 1-10000 (default 100); converted to
    /// cpu.shares on v1.
    #[arg(long, value_name = "N", value_parser = units::parse_cpu_weight, conflicts_with = "cpu_shares")]
    pub cpu_weight: Option<CpuWeight>,
    /// Relative CPU weight in v1 units, 2-262144 (default 1024); converted to
    /// cpu.weight on v2.
    #[arg(long, value_name = "N", value_parser = units::parse_cpu_shares)]
    pub cpu_shares: Option<CpuWeight>,
    /// CPU time the group may bank above its quota (20ms, 5000us; kernel 5.14+).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration_usec)]
    pub cpu_burst: Option<u64>,
    /// Run the whole group at SCHED_IDLE priority (cpu.idle, v2, kernel 5.15+).
    #[arg(long)]
    pub cpu_idle: bool,
    /// CPUs the group may run on, such as 0-3,6.
    #[arg(long, value_name = "LIST", value_parser = units::parse_id_list)]
    pub cpuset_cpus: Option<IdSet>,
    /// Memory nodes the group may allocate from, such as 0.
    #[arg(long, value_name = "LIST", value_parser = units::parse_id_list)]
    pub cpuset_mems: Option<IdSet>,
    /// Hard memory limit (memory.max / memory.limit_in_bytes): 512M, 2G, max.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub memory: Option<Limit>,
    /// Memory throttle limit (memory.high, v2 only).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub memory_high: Option<Limit>,
    /// Best-effort memory protection (memory.low, v2 only).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub memory_low: Option<Limit>,
    /// Hard memory protection (memory.min, v2 only).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub memory_min: Option<Limit>,
    /// Swap limit beyond memory (memory.swap.max; on v1 memory+swap).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub swap: Option<Limit>,
    /// On OOM, kill the whole group rather than one process (memory.oom.group, v2).
    #[arg(long)]
    pub oom_group: bool,
    /// Task (process and thread) limit: a number or max.
    #[arg(long, value_name = "N|max", value_parser = units::parse_pids)]
    pub pids: Option<PidsLimit>,
    /// Relative io weight, 1-10000 (default 100).
    #[arg(long, value_name = "N", value_parser = units::parse_io_weight)]
    pub io_weight: Option<u16>,
    /// Per-device io limit, repeatable: DEVICE=rbps=N,wbps=N,riops=N,wiops=N with
    /// DEVICE a whole disk as MAJ:MIN or /dev/NAME; N takes K/M/G or max.
    #[arg(long, value_name = "DEV=KEY=N,..", value_parser = units::parse_io_max)]
    pub io_max: Vec<DeviceLimit>,
    /// Huge page limit, repeatable: PAGESIZE=LIMIT such as 2M=64M or 1G=max.
    #[arg(long, value_name = "SIZE=LIMIT", value_parser = units::parse_hugetlb)]
    pub hugetlb: Vec<(PageSize, Limit)>,
}

impl LimitFlags {
    /// The typed resources these flags ask for; no flag gives empty resources.
    pub fn resources(&self) -> Result<Resources, cgroupkit::Error> {
        let mut r = Resources::default();
        if self.cpu.is_some()
            || self.cpu_weight.is_some()
            || self.cpu_shares.is_some()
            || self.cpu_burst.is_some()
            || self.cpu_idle
        {
            let mut c = Cpu::default();
            if let Some(cpus) = self.cpu {
                let period = self.period.unwrap_or(cgroupkit::cpu::DEFAULT_PERIOD_USEC);
                c.quota = Some(CpuQuota::from_cpus(cpus, period)?);
            }
            c.weight = self.cpu_weight.or(self.cpu_shares);
            c.burst_usec = self.cpu_burst;
            c.idle = self.cpu_idle.then_some(true);
            r.cpu = Some(c);
        }
        if self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            let mut c = Cpuset::default();
            c.cpus = self.cpuset_cpus.clone();
            c.mems = self.cpuset_mems.clone();
            r.cpuset = Some(c);
        }
        if self.memory.is_some()
            || self.memory_high.is_some()
            || self.memory_low.is_some()
            || self.memory_min.is_some()
            || self.swap.is_some()
            || self.oom_group
        {
            let mut m = Memory::default();
            m.max = self.memory;
            m.high = self.memory_high;
            m.low = self.memory_low;
            m.min = self.memory_min;
            m.swap_max = self.swap;
            m.oom_group = self.oom_group.then_some(true);
            r.memory = Some(m);
        }
        if let Some(p) = self.pids {
            let mut pids = Pids::default();
            pids.max = Some(p);
            r.pids = Some(pids);
        }
        if self.io_weight.is_some() || !self.io_max.is_empty() {
            let mut io = match self.io_weight {
                Some(w) => Io::with_weight(w)?,
                None => Io::default(),
            };
            for l in &self.io_max {
                io = io.limit(l.clone());
            }
            r.io = Some(io);
        }
        if !self.hugetlb.is_empty() {
            let mut h = Hugetlb::default();
            for &(size, limit) in &self.hugetlb {
                h = h.limit(size, limit)?;
            }
            r.hugetlb = Some(h);
        }
        // The library's own checks (zero limits and the like), before anything exists.
        r.validate()?;
        Ok(r)
    }
}

/// `cgctl limit`.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// The limits.
    #[command(flatten)]
    pub limits: LimitFlags,
    /// The process to move (all its threads).
    #[arg(long, value_name = "PID", allow_negative_numbers = true, value_parser = units::parse_pid)]
    pub pid: i64,
    /// The cgroup, relative to the cgroup root [default: cgctl/pid-PID].
    #[arg(long, value_name = "NAME")]
    pub cgroup: Option<String>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cgctl create` and `cgctl set`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The cgroup, relative to the cgroup root (e.g. web/api).
    #[arg(value_name = "NAME")]
    pub cgroup: String,
    /// The limits.
    #[command(flatten)]
    pub limits: LimitFlags,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cgctl run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The limits.
    #[command(flatten)]
    pub limits: LimitFlags,
    /// The cgroup to run in, created if missing [default: cgctl/run-PID of cgctl].
    #[arg(long, value_name = "NAME")]
    pub cgroup: Option<String>,
    /// Keep the cgroup after the command exits.
    #[arg(long)]
    pub keep: bool,
    /// Always fork and join the cgroup before exec, even where clone3 with
    /// CLONE_INTO_CGROUP would work.
    #[arg(long)]
    pub no_clone3: bool,
    /// Report on stderr where the command runs and how it got there.
    #[arg(short, long)]
    pub verbose: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// `cgctl move`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The cgroup, relative to the cgroup root.
    #[arg(value_name = "NAME")]
    pub cgroup: String,
    /// The process (or with --thread, the thread id) to move.
    #[arg(long, value_name = "PID", allow_negative_numbers = true, value_parser = units::parse_pid)]
    pub pid: i64,
    /// Move only this thread (v1 tasks; v2 cgroup.threads, threaded cgroups only).
    #[arg(long)]
    pub thread: bool,
}

/// A command that takes only a cgroup name.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The cgroup, relative to the cgroup root.
    #[arg(value_name = "NAME")]
    pub cgroup: String,
}

/// `cgctl rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The cgroup, relative to the cgroup root.
    #[arg(value_name = "NAME")]
    pub cgroup: String,
    /// Remove the child cgroups too, deepest first.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Move its processes to the parent cgroup first (as cgdelete does).
    #[arg(long, conflicts_with = "kill")]
    pub drain: bool,
    /// SIGKILL its processes first (and wait until they are gone).
    #[arg(long)]
    pub kill: bool,
}

/// `cgctl stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// The cgroup, relative to the cgroup root.
    #[arg(value_name = "NAME")]
    pub cgroup: String,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also show what the BPF cgroup iterator reads from the kernel's structs for it
    /// on each hierarchy (CPU bandwidth counters, limits, cpuacct times, memory, OOM
    /// kills, pids), the fast path of `cgctl top`. Needs root, kernel BTF and the
    /// eBPF object.
    #[arg(long)]
    pub ebpf: bool,
}

/// `cgctl ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The top of the tree [default: the root].
    #[arg(value_name = "NAME")]
    pub cgroup: Option<String>,
    /// Show at most this many levels below NAME.
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
}

/// What `top` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// CPU % over the last interval.
    Cpu,
    /// Share of periods throttled.
    Throttled,
    /// Memory in use.
    Memory,
    /// Tasks.
    Pids,
}

/// `cgctl top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Only this cgroup and its descendants [default: the root].
    #[arg(value_name = "NAME")]
    pub cgroup: Option<String>,
    /// Time between frames (1s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = units::parse_interval)]
    pub interval: Duration,
    /// Column to sort by (descending).
    #[arg(long, value_enum, default_value_t = SortKey::Cpu)]
    pub sort: SortKey,
    /// Stop after this many frames [default: run until interrupted].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
    /// Show cgroups at most this many levels below the top.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub depth: usize,
    /// Read every cgroup's files instead of walking the tree with the BPF cgroup
    /// iterator (which needs root, kernel BTF and the object of
    /// `cargo xtask build-ebpf`; without them top reads the files anyway).
    #[arg(long)]
    pub no_ebpf: bool,
}
