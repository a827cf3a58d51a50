//! Userspace side of the CPU-throttling eBPF probe: loads probes/ebpf, attaches it with
//! the strategy the running kernel accepts, and reads per-cgroup throttle events,
//! throttled time and duration histograms, with cgroup paths resolved through
//! cgroupkit.
//!
//! `cpu.stat` gives totals; this gives each throttle event and its duration, so a
//! histogram shows whether a container is throttled for 1 ms or 90 ms at a time.
//!
//! # Examples
//! ```no_run
//! use std::time::Duration;
//! // The object `cargo xtask build-ebpf` builds; a program may also embed it
//! // (`Probe::from_bytes(include_bytes!(...))`).
//! let object = "target/bpfel-unknown-none/release/probes-ebpf";
//! let mut probe = probes::Probe::from_file(object).load()?; // needs root and kernel BTF
//! println!("strategy: {}", probe.strategy());
//! std::thread::sleep(Duration::from_secs(5));
//! for cg in probe.snapshot()?.cgroups {
//!     println!("{} {} events, {} ns", cg.display_path(), cg.stats.events, cg.stats.throttled_ns);
//! }
//! # Ok::<(), probes::Error>(())
//! ```
//!
//! # Strategies
//! - [`Strategy::Fentry`]: `fexit/throttle_cfs_rq` + `fentry/unthrottle_cfs_rq`. For
//!   kernels that throttle per cfs_rq (up to 6.17) and permit tracing programs. One
//!   event per throttled cfs_rq, i.e. per CPU the cgroup ran on, per period.
//! - [`Strategy::SchedSwitch`]: `tp_btf/sched_switch`. For kernels that throttle per
//!   task (6.18+): one event per task per throttle, from its switch-out with
//!   `task_struct.throttled` set to its next switch-in.
//!
//! Offsets of kernel structs are read from the running kernel's BTF ([`btf`]) at load
//! time and handed to the program, so one object runs on every supported kernel.
//!
//! Both strategies also attach `tp_btf/cgroup_rmdir`: the entry of a removed cgroup is
//! deleted in the kernel, so the bounded stats map (see
//! [`ProbeBuilder::stats_capacity`]) holds live cgroups only.
//!
//! The loader reads the eBPF object only from where its caller says
//! ([`Probe::from_file`], [`Probe::from_bytes`]): no environment variable, no build
//! path. [`BUILD_OBJECT`] is where `cargo xtask build-ebpf` puts it.
#![deny(missing_docs)]

pub mod btf;
mod cgroups;
pub mod iter;
mod offsets;
mod stub;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{BtfTracePoint, FEntry, FExit};
use aya::{Ebpf, EbpfLoader};
pub use probes_common::{HIST_BUCKETS, ThrottleStats, bucket_low_usec, hist_bucket};

pub use cgroups::{CgroupIndex, cgroup_id};
pub use offsets::Offsets;

/// Where `cargo xtask build-ebpf` writes the object, relative to the workspace root.
/// Programs choose where they look for it (the loader never does) and may start here.
pub const BUILD_OBJECT: &str = "target/bpfel-unknown-none/release/probes-ebpf";

/// Entries of the per-cgroup stats map unless [`ProbeBuilder::stats_capacity`] says
/// otherwise: the live cgroups that can be recorded at once.
pub const DEFAULT_STATS_CAPACITY: u32 = 16384;

const MAP_STATS: &str = "THROTTLE_STATS";
const MAP_COUNTERS: &str = "COUNTERS";
const GLOBAL_OFFSETS: &str = "OFFSETS";
const PROG_THROTTLE: &str = "throttle_cfs_rq_exit";
const PROG_UNTHROTTLE: &str = "unthrottle_cfs_rq_entry";
const PROG_SWITCH: &str = "sched_switch";
const PROG_TIMER: &str = "hrtimer_expire";
const PROG_RMDIR: &str = "cgroup_rmdir";

/// Errors of the probe loader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The eBPF object was not built.
    #[error(
        "eBPF object not found at {}: run `cargo xtask build-ebpf` to build it",
        path.display()
    )]
    ObjectNotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The eBPF object exists but could not be read.
    #[error("cannot read eBPF object {}", path.display())]
    ObjectRead {
        /// The object.
        path: PathBuf,
        /// The read's error.
        #[source]
        source: std::io::Error,
    },
    /// A stats map of no entries was asked for.
    #[error("stats map capacity 0: the probe needs room for at least one cgroup")]
    ZeroCapacity,
    /// The process may not load eBPF programs.
    #[error(
        "loading eBPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); \
         this process has neither: run as root"
    )]
    NotPrivileged,
    /// Reading the kernel's BTF failed (our reader).
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    /// Reading the kernel's BTF failed (aya, for program loading).
    #[error(
        "cannot read kernel BTF at {}: the kernel needs CONFIG_DEBUG_INFO_BTF=y",
        btf::VMLINUX_BTF
    )]
    KernelBtf(#[source] aya::BtfError),
    /// The requested strategy could not be used.
    #[error("attach strategy {strategy} failed: {reason}")]
    Strategy {
        /// The strategy.
        strategy: Strategy,
        /// Why, with the kernel's answer.
        reason: String,
    },
    /// No strategy attached.
    #[error(
        "no attach strategy works on this kernel: fentry/fexit: {fentry}; tp_btf/sched_switch: {sched_switch}"
    )]
    NoStrategy {
        /// Why fentry/fexit failed.
        fentry: String,
        /// Why tp_btf/sched_switch failed.
        sched_switch: String,
    },
    /// A map of the object is missing or could not be read.
    #[error("eBPF map {name}: {reason}")]
    Map {
        /// The map.
        name: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// cgroup hierarchy detection failed (paths cannot be resolved).
    #[error(transparent)]
    Cgroup(#[from] cgroupkit::Error),
    /// The cgroup iterator could not be loaded, linked or read.
    #[error("cgroup iterator: cannot {what}: {reason}")]
    Iter {
        /// What was attempted.
        what: &'static str,
        /// Why, with the kernel's answer.
        reason: String,
    },
    /// A walk met more cgroups than the records map holds.
    #[error(
        "cgroup iterator: the walk met {cgroups} cgroups but the records map holds \
         {capacity}: load it with a larger capacity (CgroupIterBuilder::capacity)"
    )]
    IterCapacity {
        /// Records the map holds.
        capacity: u32,
        /// Cgroups the walk met.
        cgroups: u64,
    },
    /// Reading a program's run statistics, or enabling them, failed.
    #[error("eBPF program statistics ({what}): {reason}")]
    Stats {
        /// What was attempted (`BPF_ENABLE_STATS`, or the program's name).
        what: String,
        /// The kernel's answer.
        reason: String,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// How the probe attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// `fexit/throttle_cfs_rq` + `fentry/unthrottle_cfs_rq`: counts per cfs_rq (per CPU
    /// per period). Needs tracing programs (refused with EPERM on some kernels).
    Fentry,
    /// `tp_btf/sched_switch` with `task_struct.throttled`: counts per task. Kernel 6.18+.
    SchedSwitch,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Fentry => "fentry/fexit (throttle_cfs_rq, unthrottle_cfs_rq)",
            Strategy::SchedSwitch => "tp_btf/sched_switch (per-task throttle)",
        })
    }
}

impl Strategy {
    /// Short name: `fentry` or `sched_switch`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fentry => "fentry",
            Strategy::SchedSwitch => "sched_switch",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fentry" | "fexit" => Ok(Strategy::Fentry),
            "sched_switch" | "sched-switch" | "tp_btf" => Ok(Strategy::SchedSwitch),
            _ => Err(format!(
                "unknown strategy {s:?}: use fentry or sched_switch"
            )),
        }
    }
}

/// Where the eBPF object comes from: a file, or bytes the caller holds (read, or
/// embedded with `include_bytes!`).
#[derive(Clone, Debug)]
enum Object {
    File(PathBuf),
    Bytes(Cow<'static, [u8]>),
}

impl Object {
    /// The object's bytes.
    fn read(self) -> Result<Cow<'static, [u8]>> {
        match self {
            Object::Bytes(b) => Ok(b),
            Object::File(path) => match std::fs::read(&path) {
                Ok(b) => Ok(Cow::Owned(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::ObjectNotFound { path })
                }
                Err(source) => Err(Error::ObjectRead { path, source }),
            },
        }
    }
}

/// Options of [`Probe`] loading; made by [`Probe::from_file`] or [`Probe::from_bytes`].
#[derive(Clone, Debug)]
pub struct ProbeBuilder {
    object: Object,
    strategy: Option<Strategy>,
    btf: Option<PathBuf>,
    cgroup_index: bool,
    stats_capacity: u32,
}

impl ProbeBuilder {
    fn new(object: Object) -> ProbeBuilder {
        ProbeBuilder {
            object,
            strategy: None,
            btf: None,
            cgroup_index: true,
            stats_capacity: DEFAULT_STATS_CAPACITY,
        }
    }

    /// How many cgroups the stats map holds at once (default
    /// [`DEFAULT_STATS_CAPACITY`]). Removed cgroups leave it; while it is full, the
    /// throttles of cgroups not in it count in [`Snapshot::dropped`]. The kernel
    /// allocates entries as they are used, so a large capacity costs little until used.
    pub fn stats_capacity(mut self, entries: u32) -> Self {
        self.stats_capacity = entries;
        self
    }

    /// Use only this strategy instead of trying fentry first, then sched_switch.
    pub fn strategy(mut self, s: Strategy) -> Self {
        self.strategy = Some(s);
        self
    }

    /// Read struct offsets from this raw BTF file instead of /sys/kernel/btf/vmlinux.
    pub fn btf(mut self, path: impl Into<PathBuf>) -> Self {
        self.btf = Some(path.into());
        self
    }

    /// Do not resolve cgroup ids to paths in snapshots (no cgroup hierarchy needed).
    pub fn without_paths(mut self) -> Self {
        self.cgroup_index = false;
        self
    }

    /// Loads the object and attaches it: the requested strategy, or fentry/fexit first
    /// and tp_btf/sched_switch when the kernel refuses it.
    ///
    /// Needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN) and kernel BTF. The programs stay
    /// attached until the [`Probe`] is dropped.
    pub fn load(self) -> Result<Probe> {
        if self.stats_capacity == 0 {
            return Err(Error::ZeroCapacity);
        }
        let object = self.object.read()?;
        if !privileged() {
            return Err(Error::NotPrivileged);
        }
        let order: &[Strategy] = match self.strategy {
            Some(Strategy::Fentry) => &[Strategy::Fentry],
            Some(Strategy::SchedSwitch) => &[Strategy::SchedSwitch],
            None => &[Strategy::Fentry, Strategy::SchedSwitch],
        };
        // The offsets of every strategy first, then our parse of the kernel's BTF is
        // dropped before aya parses it again: the two are never in memory together
        // (each is tens of MB on a distribution kernel; this is the peak RSS of a
        // process that loads the probe).
        // aya needs the kernel's BTF only to look the attach targets up by name: it
        // gets a stub with just those at their ids instead of a full parse of its own
        // (~30 MB and ~50 ms here). EbpfLoader::new() still parses the kernel BTF once
        // per load, whatever BTF is given afterwards (aya-rs/aya#1172): that parse is
        // the peak RSS of a process loading the probe, ~35 MB, freed right after.
        let (resolved, stub) = {
            let kbtf = match &self.btf {
                Some(p) => btf::Btf::from_file(p)?,
                None => btf::Btf::from_sys()?,
            };
            let resolved: Vec<(Strategy, std::result::Result<Offsets, String>)> = order
                .iter()
                .map(|&s| (s, Offsets::resolve(&kbtf, s).map_err(|e| e.to_string())))
                .collect();
            (resolved, kbtf.attach_stub(ATTACH_TARGETS)?)
        };
        let aya_btf =
            aya::Btf::parse(&stub, aya::Endianness::default()).map_err(Error::KernelBtf)?;
        drop(stub);

        let mut failures: Vec<(Strategy, String)> = Vec::new();
        for (s, offsets) in resolved {
            let attached = offsets.and_then(|o| {
                stub::without_vmlinux(|| attach(&object, self.stats_capacity, o, &aya_btf, s)).0
            });
            match attached {
                Ok((ebpf, offsets, notes)) => {
                    let index = if self.cgroup_index {
                        Some(CgroupIndex::new(cgroupkit::Hierarchy::detect()?))
                    } else {
                        None
                    };
                    return Ok(Probe {
                        ebpf,
                        strategy: s,
                        offsets,
                        fallback: failures,
                        notes,
                        index,
                    });
                }
                Err(reason) => failures.push((s, reason)),
            }
        }
        if failures.len() == 1 {
            let (strategy, reason) = failures.remove(0);
            return Err(Error::Strategy { strategy, reason });
        }
        let why = |s: Strategy| {
            failures
                .iter()
                .find(|f| f.0 == s)
                .map(|f| f.1.clone())
                .unwrap_or_default()
        };
        Err(Error::NoStrategy {
            fentry: why(Strategy::Fentry),
            sched_switch: why(Strategy::SchedSwitch),
        })
    }
}

/// What the programs attach to, as named in the kernel's BTF: the functions of the
/// fentry strategy and the `btf_trace_*` typedefs of the tracepoints.
const ATTACH_TARGETS: &[(&str, btf::Kind)] = &[
    ("throttle_cfs_rq", btf::Kind::Func),
    ("unthrottle_cfs_rq", btf::Kind::Func),
    ("btf_trace_sched_switch", btf::Kind::Typedef),
    ("btf_trace_hrtimer_expire_entry", btf::Kind::Typedef),
    ("btf_trace_cgroup_rmdir", btf::Kind::Typedef),
];

/// Effective capabilities allow loading tracing programs: CAP_SYS_ADMIN (21), or
/// CAP_BPF (39) with CAP_PERFMON (38). From /proc/self/status.
pub(crate) fn privileged() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true; // cannot tell: let the kernel answer
    };
    let Some(hex) = status.lines().find_map(|l| l.strip_prefix("CapEff:")) else {
        return true;
    };
    let Ok(caps) = u64::from_str_radix(hex.trim(), 16) else {
        return true;
    };
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    has(21) || (has(39) && has(38))
}

/// Loads a fresh copy of the object with the offsets of `strategy` and attaches its
/// programs. Errors are human-readable reasons, for the fallback report.
fn attach(
    object: &[u8],
    stats_capacity: u32,
    offsets: Offsets,
    aya_btf: &aya::Btf,
    strategy: Strategy,
) -> std::result::Result<(Ebpf, Offsets, Vec<String>), String> {
    let mut notes = Vec::new();
    let values = offsets.values();
    let mut ebpf = EbpfLoader::new()
        .btf(Some(aya_btf))
        .override_global(GLOBAL_OFFSETS, &values, true)
        .map_max_entries(MAP_STATS, stats_capacity)
        .load(object)
        .map_err(|e| {
            format!(
                "cannot load the eBPF object (creating its maps): {}",
                errchain::chain(&e)
            )
        })?;
    let fail = |what: &str, e: &dyn std::error::Error| {
        let chain = errchain::chain(e);
        let hint = if chain.contains("Operation not permitted") || chain.contains("EPERM") {
            " (the kernel refuses this program type here: EPERM)"
        } else {
            ""
        };
        format!("{what}: {chain}{hint}")
    };
    // Finds program `$prog` in the object, loads it for `$target` (the kernel function
    // or tracepoint) and attaches it; `$kind` names the program type in errors.
    macro_rules! load_attach {
        ($ty:ty, $prog:expr, $kind:literal, $target:literal) => {
            (|| -> std::result::Result<(), String> {
                let prog: &mut $ty = ebpf
                    .program_mut($prog)
                    .ok_or_else(|| {
                        format!(
                            "the object has no {} program (rebuild it: cargo xtask build-ebpf)",
                            $prog
                        )
                    })?
                    .try_into()
                    .map_err(|e| fail(concat!($kind, " program"), &e))?;
                prog.load($target, aya_btf)
                    .map_err(|e| fail(concat!("load ", $kind, "/", $target), &e))?;
                prog.attach()
                    .map_err(|e| fail(concat!("attach ", $kind, "/", $target), &e))?;
                Ok(())
            })()
        };
    }
    match strategy {
        Strategy::Fentry => {
            load_attach!(FExit, PROG_THROTTLE, "fexit", "throttle_cfs_rq")?;
            load_attach!(FEntry, PROG_UNTHROTTLE, "fentry", "unthrottle_cfs_rq")?;
        }
        Strategy::SchedSwitch => {
            load_attach!(BtfTracePoint, PROG_SWITCH, "tp_btf", "sched_switch")?;
            if offsets.period_timer_fn != 0 {
                let timer =
                    load_attach!(BtfTracePoint, PROG_TIMER, "tp_btf", "hrtimer_expire_entry");
                notes.push(match timer {
                    Ok(()) => "a throttle ends when the group's bandwidth timer unthrottles it \
                               (tp_btf/hrtimer_expire_entry)"
                        .into(),
                    Err(e) => format!(
                        "{e}: a throttle ends at the task's switch-in, run-queue wait included"
                    ),
                });
            } else {
                notes.push(
                    "sched_cfs_period_timer not in /proc/kallsyms (or hidden): a throttle ends \
                     at the task's switch-in, run-queue wait included"
                        .into(),
                );
            }
        }
    }
    // Every strategy: a removed cgroup's entry leaves the bounded stats map.
    load_attach!(BtfTracePoint, PROG_RMDIR, "tp_btf", "cgroup_rmdir")?;
    // Dropping `ebpf` on an error path above detaches and unloads what was attached.
    Ok((ebpf, offsets, notes))
}

/// `ThrottleStats` as a map value for aya.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct StatsPod(ThrottleStats);
// SAFETY: ThrottleStats is #[repr(C)] and made only of u64s: no padding, every bit
// pattern valid.
unsafe impl aya::Pod for StatsPod {}

/// The attached probe. Dropping it detaches and unloads the programs.
pub struct Probe {
    ebpf: Ebpf,
    strategy: Strategy,
    offsets: Offsets,
    fallback: Vec<(Strategy, String)>,
    notes: Vec<String>,
    index: Option<CgroupIndex>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("strategy", &self.strategy)
            .field("offsets", &self.offsets)
            .field("fallback", &self.fallback)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

/// The kernel's accounting of one attached program (`bpf_prog_info.run_cnt` and
/// `run_time_ns`). Both only advance while run-time statistics are enabled, by
/// [`enable_run_stats`] or the `kernel.bpf_stats_enabled` sysctl; timing each run
/// costs two clock reads, so measure the probe's overhead with them off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// The program's name in the object (`sched_switch`, `hrtimer_expire`, ...).
    pub name: &'static str,
    /// Runs counted.
    pub run_count: u64,
    /// Time spent in the program over those runs (the program body, without the
    /// tracepoint's own dispatch).
    pub run_time: Duration,
}

/// Enables the kernel's per-program run statistics (run count and run time) for as
/// long as the returned descriptor stays open (`BPF_ENABLE_STATS`, kernel 5.8+; needs
/// CAP_SYS_ADMIN). Unlike the `kernel.bpf_stats_enabled` sysctl, nothing is left
/// changed when the process exits.
pub fn enable_run_stats() -> Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| Error::Stats {
        what: "BPF_ENABLE_STATS".into(),
        reason: errchain::chain(&e),
    })
}

/// Throttling of one cgroup since the probe attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupThrottle {
    /// The cgroup id (`cgroup->kn->id`, the inode of its directory).
    pub id: u64,
    /// Its path relative to the root of the hierarchy serving the cpu controller
    /// (e.g. `/system.slice/foo`); `None` when not found (removed, or elsewhere).
    pub path: Option<String>,
    /// Counters and histogram.
    pub stats: ThrottleStats,
}

impl CgroupThrottle {
    /// The path, or `id:<n>` when it is unknown.
    pub fn display_path(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("id:{}", self.id))
    }
}

/// Everything the probe counted so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One entry per cgroup that was throttled, sorted by id.
    pub cgroups: Vec<CgroupThrottle>,
    /// Program runs (sched_switch hits, or throttle/unthrottle calls).
    pub hits: u64,
    /// Starts or ends lost because a bounded map was full.
    pub dropped: u64,
    /// Ends whose start the probe did not see (throttled before it attached).
    pub unmatched: u64,
    /// Throttle starts recorded (some may still be in flight).
    pub starts: u64,
}

impl Snapshot {
    /// The entry of cgroup `id`, if it was throttled.
    pub fn get(&self, id: u64) -> Option<&CgroupThrottle> {
        self.cgroups.iter().find(|c| c.id == id)
    }
}

impl Probe {
    /// Options for loading the eBPF object from the file at `path` (e.g. where
    /// `cargo xtask build-ebpf` put it, [`BUILD_OBJECT`]); see [`ProbeBuilder::load`].
    /// A missing file is [`Error::ObjectNotFound`].
    pub fn from_file(path: impl Into<PathBuf>) -> ProbeBuilder {
        ProbeBuilder::new(Object::File(path.into()))
    }

    /// Options for loading the eBPF object from `bytes` (read by the caller, or
    /// embedded with `include_bytes!`); see [`ProbeBuilder::load`].
    pub fn from_bytes(bytes: impl Into<Cow<'static, [u8]>>) -> ProbeBuilder {
        ProbeBuilder::new(Object::Bytes(bytes.into()))
    }

    /// The cgroup id -> path index of snapshots (`None` after
    /// [`ProbeBuilder::without_paths`]).
    pub fn cgroup_index(&self) -> Option<&CgroupIndex> {
        self.index.as_ref()
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Strategies tried before the one in use, and why each failed.
    pub fn fallback_reasons(&self) -> &[(Strategy, String)] {
        &self.fallback
    }

    /// Details of how the strategy in use measures (e.g. where a throttle ends).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The kernel struct offsets handed to the program.
    pub fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    /// Per-CPU counter `idx`, summed over CPUs.
    fn counter(&self, idx: u32) -> Result<u64> {
        let map = self.ebpf.map(MAP_COUNTERS).ok_or(Error::Map {
            name: MAP_COUNTERS,
            reason: "missing from the object".into(),
        })?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| Error::Map {
                name: MAP_COUNTERS,
                reason: e.to_string(),
            })?;
        let vals = arr.get(&idx, 0).map_err(|e| Error::Map {
            name: MAP_COUNTERS,
            reason: format!("lookup {idx}: {e}"),
        })?;
        Ok(vals.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// Program runs so far (summed over CPUs): the number of probe hits.
    pub fn hits(&self) -> Result<u64> {
        self.counter(probes_common::counter::HITS)
    }

    /// The kernel's run count and run time of each attached program; they advance only
    /// while run statistics are enabled (see [`enable_run_stats`]).
    pub fn program_stats(&self) -> Result<Vec<ProgramStats>> {
        let names: &[&'static str] = match self.strategy {
            Strategy::Fentry => &[PROG_THROTTLE, PROG_UNTHROTTLE, PROG_RMDIR],
            Strategy::SchedSwitch => &[PROG_SWITCH, PROG_TIMER, PROG_RMDIR],
        };
        let mut out = Vec::new();
        for &name in names {
            let Some(prog) = self.ebpf.program(name) else {
                continue;
            };
            // Not loaded: the optional timer program when its attach failed.
            if prog.fd().is_err() {
                continue;
            }
            let info = prog.info().map_err(|e| Error::Stats {
                what: name.into(),
                reason: errchain::chain(&e),
            })?;
            out.push(ProgramStats {
                name,
                run_count: info.run_count(),
                run_time: info.run_time(),
            });
        }
        Ok(out)
    }

    /// Reads every cgroup's counters and resolves ids to paths (ids not found in the
    /// cpu hierarchy are kept with `path: None`). Ids resolved by an earlier snapshot
    /// are not looked up again (see [`CgroupIndex`]). A cgroup whose first throttle is
    /// still in flight is not listed yet.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let map = self.ebpf.map(MAP_STATS).ok_or(Error::Map {
            name: MAP_STATS,
            reason: "missing from the object".into(),
        })?;
        let stats: BpfHashMap<&MapData, u64, StatsPod> =
            BpfHashMap::try_from(map).map_err(|e| Error::Map {
                name: MAP_STATS,
                reason: e.to_string(),
            })?;
        let mut raw: HashMap<u64, ThrottleStats> = HashMap::new();
        for item in stats.iter() {
            // An entry removed while iterating ends the walk early; what was read stays.
            let Ok((id, v)) = item else { break };
            // Made at the first throttle's start; listed from its first end.
            if v.0.events != 0 {
                raw.insert(id, v.0);
            }
        }
        let mut cgroups: Vec<CgroupThrottle> = raw
            .into_iter()
            .map(|(id, stats)| CgroupThrottle {
                id,
                path: None,
                stats,
            })
            .collect();
        cgroups.sort_by_key(|c| c.id);
        if let Some(index) = &mut self.index {
            let ids: Vec<u64> = cgroups.iter().map(|c| c.id).collect();
            let paths = index.resolve(&ids);
            for c in &mut cgroups {
                c.path = paths.get(&c.id).cloned();
            }
        }
        use probes_common::counter;
        Ok(Snapshot {
            cgroups,
            hits: self.counter(counter::HITS)?,
            dropped: self.counter(counter::DROPPED)?,
            unmatched: self.counter(counter::UNMATCHED)?,
            starts: self.counter(counter::STARTS)?,
        })
    }
}

/// The histogram bucket `i` as a range for people: `"1-2ms"`, `"256-512us"`, `"<2us"`,
/// and `">=2147s"` for the last, open-ended one.
pub fn bucket_label(i: usize) -> String {
    fn human(us: u64) -> String {
        if us >= 1_000_000 {
            format!("{}s", us / 1_000_000)
        } else if us >= 1000 {
            format!("{}ms", us / 1000)
        } else {
            format!("{us}us")
        }
    }
    if i == 0 {
        return "<2us".to_owned();
    }
    let lo = bucket_low_usec(i);
    if i + 1 >= HIST_BUCKETS {
        return format!(">={}", human(lo));
    }
    let hi = bucket_low_usec(i + 1);
    let (l, h) = (human(lo), human(hi));
    // "1ms-2ms" -> "1-2ms" when the units agree.
    let unit = |s: &str| {
        s.trim_start_matches(|c: char| c.is_ascii_digit())
            .to_owned()
    };
    if unit(&l) == unit(&h) {
        format!("{}-{h}", l.trim_end_matches(|c: char| !c.is_ascii_digit()))
    } else {
        format!("{l}-{h}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(hist_bucket(0), 0);
        assert_eq!(hist_bucket(1_999), 0);
        assert_eq!(hist_bucket(2_000), 1);
        assert_eq!(hist_bucket(1_000_000), 9); // 1000 us in [512, 1024)
        assert_eq!(hist_bucket(80_000_000), 16); // 80 ms in [65.5, 131) ms
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
        for ns in [1u64, 5_000, 123_456, 9_999_999, 1 << 40] {
            let b = hist_bucket(ns);
            let us = ns / 1000;
            assert!(b == 0 || us >= bucket_low_usec(b), "{ns}");
            assert!(b + 1 >= HIST_BUCKETS || us < bucket_low_usec(b + 1), "{ns}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(bucket_label(0), "<2us");
        assert_eq!(bucket_label(1), "2-4us");
        assert_eq!(bucket_label(9), "512us-1ms");
        assert_eq!(bucket_label(10), "1-2ms");
        assert_eq!(bucket_label(16), "65-131ms");
        assert_eq!(bucket_label(HIST_BUCKETS - 1), ">=2147s");
    }

    #[test]
    fn missing_object_names_the_command() {
        let e = Probe::from_file("/nonexistent/probes-ebpf")
            .load()
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/probes-ebpf"), "{msg}");
        assert!(msg.contains("cargo xtask build-ebpf"), "{msg}");
    }

    #[test]
    fn strategy_names() {
        assert_eq!("fentry".parse::<Strategy>(), Ok(Strategy::Fentry));
        assert_eq!(
            "sched_switch".parse::<Strategy>(),
            Ok(Strategy::SchedSwitch)
        );
        assert!("kprobe".parse::<Strategy>().is_err());
    }
}
