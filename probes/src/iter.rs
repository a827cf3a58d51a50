//! Every cgroup of a subtree in one `read(2)`: the `iter/cgroup` BPF iterator of
//! probes/ebpf (`cgroup_records`) walks the tree in the kernel and writes one
//! [`CgroupRecord`] per cgroup into an mmapable array map; [`CgroupIter::walk`] reads
//! them back as typed [`CgroupStats`] with their paths.
//!
//! What comes from the kernel's structs (offsets from the running kernel's BTF, so one
//! object serves 6.1, 6.12 and 6.18), per cgroup: id, level and name; the CPU
//! bandwidth counters of `cpu.stat` (nr_periods, nr_throttled, throttled time, bursts
//! and burst time) and `cpu.max`/`cpu.cfs_*`/`cpu.shares`/`cpu.weight`; v1 cpuacct
//! usage, user and system time; memory usage, limit and OOM kills; the pids
//! controller's task count. Values the kernel keeps in rstat (v2 `cpu.stat` usage,
//! `memory.stat`) are not here: reading them right needs the flush kfunc
//! (`cgroup_rstat_flush`, `css_rstat_flush` since 6.15) from a sleepable iterator,
//! and aya 0.14 cannot relocate kfunc calls (`BPF_PSEUDO_KFUNC_CALL`), so callers
//! read those files.
//!
//! The iterator needs kernel 6.1+ (cgroup iterators), CAP_BPF + CAP_PERFMON (or
//! CAP_SYS_ADMIN) and kernel BTF. It works on v1 hierarchies (link one per
//! hierarchy: each v1 cgroup has only its hierarchy's controllers) and on v2.
//!
//! # Examples
//! ```no_run
//! let it = probes::iter::CgroupIter::from_file(probes::BUILD_OBJECT).load()?;
//! let link = it.link("/sys/fs/cgroup/cpu")?;
//! for cg in it.walk(&link)? {
//!     if let Some(bw) = cg.bandwidth {
//!         println!("{} throttled {} of {} periods", cg.display_path(), bw.nr_throttled, bw.nr_periods);
//!     }
//! }
//! # Ok::<(), probes::Error>(())
//! ```

use std::borrow::Cow;
use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Mutex;

use aya::EbpfLoader;
use aya::programs::Iter;
use probes_common::{BLOCK_BYTES, CgroupRecord, NAME_BYTES, TaskRecord, WalkEnd, iter_off, rec};

use crate::btf::{self, Btf, BtfError};
use crate::{Error, Object, Result};

/// The iterator program in probes/ebpf.
const PROG: &str = "cgroup_records";
/// The task iterator program (processes per cgroup).
const TASK_PROG: &str = "task_cgroups";
/// Its records map.
const MAP_RECORDS: &str = "CGROUP_RECORDS";
/// Its offsets global.
const GLOBAL: &str = "ITER_OFFSETS";
/// The other maps of the object, created by every load: one entry each, since the
/// iterator does not use them.
const OTHER_MAPS: &[&str] = &[
    "THROTTLE_STATS",
    "THROTTLE_STARTS",
    "UNTHROTTLE_TS",
    "IN_FLIGHT",
    "CPU_ROOT",
];

/// Records the map holds unless [`CgroupIterBuilder::capacity`] says otherwise: the
/// cgroups one walk can return (the map takes `capacity * 456` bytes of kernel
/// memory).
pub const DEFAULT_CAPACITY: u32 = 16384;

/// `BPF_CGROUP_ITER_DESCENDANTS_PRE`: the subtree, parents before children.
const ORDER_DESCENDANTS_PRE: u32 = 2;
/// `enum bpf_cmd` values (include/uapi/linux/bpf.h).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
/// `enum bpf_attach_type`: BPF_TRACE_ITER.
const BPF_TRACE_ITER: u32 = 28;

/// The iterator's offsets, from the running kernel's BTF (see `probes_common::iter_off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IterOffsets(pub [u64; iter_off::LEN]);

fn bytes(btf: &Btf, path: &str) -> std::result::Result<u64, BtfError> {
    let m = btf.member(path)?;
    if m.bitfield_size.is_some() || m.bit_offset % 8 != 0 {
        return Err(BtfError::Malformed(format!(
            "{path} is a bitfield where a pointer or integer was expected"
        )));
    }
    Ok(m.byte_offset())
}

impl IterOffsets {
    /// Whether the records carry pressure totals on this kernel (CONFIG_PSI).
    pub fn pressure(&self) -> bool {
        self.0[iter_off::PSI_TOTAL] != iter_off::ABSENT
    }

    /// Resolves the offsets from `btf`. What every record needs (the cgroup's id,
    /// level, name and parent) must be there; a controller whose structs are missing
    /// (not built in) is marked absent and its fields are never valid.
    pub fn resolve(btf: &Btf) -> std::result::Result<IterOffsets, BtfError> {
        use iter_off as o;
        let mut v = [o::ABSENT; o::LEN];
        v[o::CGROUP_KN] = bytes(btf, "cgroup.kn")?;
        v[o::KN_ID] = bytes(btf, "kernfs_node.id")?;
        v[o::KN_NAME] = bytes(btf, "kernfs_node.name")?;
        v[o::CGROUP_LEVEL] = bytes(btf, "cgroup.level")?;
        v[o::CGROUP_SELF] = bytes(btf, "cgroup.self")?;
        v[o::CGROUP_PARENT] = bytes(btf, "cgroup.self.parent")?;
        v[o::CSS_CGROUP] = bytes(btf, "cgroup_subsys_state.cgroup")?;
        v[o::CGROUP_ROOT] = bytes(btf, "cgroup.root")?;
        v[o::ROOT_HIERARCHY_ID] = bytes(btf, "cgroup_root.hierarchy_id")?;
        let root_cgrp = bytes(btf, "cgroup_root.cgrp")?;
        let subsys = bytes(btf, "cgroup.subsys")?;
        let slot = |name: &str| -> std::result::Result<u64, BtfError> {
            Ok(match btf.enum_value(name)? {
                Some(i) if (0..64).contains(&i) => subsys + 8 * i as u64,
                _ => o::ABSENT,
            })
        };
        v[o::SUBSYS_CPU] = slot("cpu_cgrp_id")?;
        v[o::SUBSYS_MEMORY] = slot("memory_cgrp_id")?;
        v[o::SUBSYS_PIDS] = slot("pids_cgrp_id")?;
        v[o::SUBSYS_CPUACCT] = slot("cpuacct_cgrp_id")?;

        if v[o::SUBSYS_CPU] != o::ABSENT {
            let cpu = (|| -> std::result::Result<[u64; 9], BtfError> {
                Ok([
                    bytes(btf, "task_group.css")?,
                    bytes(btf, "task_group.shares")?,
                    bytes(btf, "task_group.cfs_bandwidth.nr_periods")?,
                    bytes(btf, "task_group.cfs_bandwidth.nr_throttled")?,
                    bytes(btf, "task_group.cfs_bandwidth.throttled_time")?,
                    bytes(btf, "task_group.cfs_bandwidth.quota")?,
                    bytes(btf, "task_group.cfs_bandwidth.period")?,
                    bytes(btf, "task_group.cfs_bandwidth.nr_burst").unwrap_or(o::ABSENT),
                    bytes(btf, "task_group.cfs_bandwidth.burst_time").unwrap_or(o::ABSENT),
                ])
            })();
            match cpu {
                Ok(
                    [
                        css,
                        shares,
                        periods,
                        throttled,
                        time,
                        quota,
                        period,
                        burst,
                        burst_time,
                    ],
                ) => {
                    v[o::TG_CSS] = css;
                    v[o::TG_SHARES] = shares;
                    v[o::TG_NR_PERIODS] = periods;
                    v[o::TG_NR_THROTTLED] = throttled;
                    v[o::TG_THROTTLED_TIME] = time;
                    v[o::TG_QUOTA] = quota;
                    v[o::TG_PERIOD] = period;
                    let mut fields = vec![
                        (periods, 4),
                        (throttled, 4),
                        (time, 8),
                        (quota, 8),
                        (period, 8),
                    ];
                    if burst != o::ABSENT && burst_time != o::ABSENT {
                        v[o::TG_NR_BURST] = burst;
                        v[o::TG_BURST_TIME] = burst_time;
                        fields.extend([(burst, 4), (burst_time, 8)]);
                    }
                    (v[o::TG_BLOCK], v[o::TG_BLOCK_LEN]) = block(&fields);
                }
                // No CFS bandwidth (CONFIG_CFS_BANDWIDTH off): no cpu fields.
                Err(_) => v[o::SUBSYS_CPU] = o::ABSENT,
            }
        }
        if v[o::SUBSYS_MEMORY] != o::ABSENT {
            let mem = (|| -> std::result::Result<[u64; 3], BtfError> {
                Ok([
                    bytes(btf, "mem_cgroup.css")?,
                    bytes(btf, "mem_cgroup.memory.usage")?,
                    bytes(btf, "mem_cgroup.memory.max")?,
                ])
            })();
            match mem {
                Ok([css, usage, max]) => {
                    v[o::MEMCG_CSS] = css;
                    v[o::MEMCG_USAGE] = usage;
                    v[o::MEMCG_MAX] = max;
                    (v[o::MEMCG_BLOCK], v[o::MEMCG_BLOCK_LEN]) = block(&[(usage, 8), (max, 8)]);
                    if let (Ok(ev), Some(k)) = (
                        bytes(btf, "mem_cgroup.memory_events"),
                        btf.enum_value("MEMCG_OOM_KILL")?,
                    ) && (0..64).contains(&k)
                    {
                        v[o::MEMCG_OOM_KILL] = ev + 8 * k as u64;
                    }
                }
                Err(_) => v[o::SUBSYS_MEMORY] = o::ABSENT,
            }
        }
        if v[o::SUBSYS_PIDS] != o::ABSENT {
            match (
                bytes(btf, "pids_cgroup.css"),
                bytes(btf, "pids_cgroup.counter"),
            ) {
                (Ok(css), Ok(counter)) => {
                    v[o::PIDS_CSS] = css;
                    v[o::PIDS_COUNTER] = counter;
                }
                _ => v[o::SUBSYS_PIDS] = o::ABSENT,
            }
        }
        if v[o::SUBSYS_CPUACCT] != o::ABSENT {
            let acct = (|| -> std::result::Result<[u64; 9], BtfError> {
                let stat = bytes(btf, "kernel_cpustat.cpustat")?;
                let idx = |n: &str| -> std::result::Result<u64, BtfError> {
                    match btf.enum_value(n)? {
                        Some(i) if (0..32).contains(&i) => Ok(stat + 8 * i as u64),
                        _ => Err(BtfError::Malformed(format!(
                            "enum cpu_usage_stat has no {n}"
                        ))),
                    }
                };
                Ok([
                    bytes(btf, "cpuacct.css")?,
                    bytes(btf, "cpuacct.cpuusage")?,
                    bytes(btf, "cpuacct.cpustat")?,
                    idx("CPUTIME_USER")?,
                    idx("CPUTIME_NICE")?,
                    idx("CPUTIME_SYSTEM")?,
                    idx("CPUTIME_IRQ")?,
                    idx("CPUTIME_SOFTIRQ")?,
                    bytes(btf, "bpf_array.pptrs")?,
                ])
            })();
            let cpus = possible_cpus();
            match acct {
                Ok(a) if (1..=256).contains(&cpus) => {
                    v[o::CPUACCT_CSS] = a[0];
                    v[o::CPUACCT_USAGE] = a[1];
                    v[o::CPUACCT_CPUSTAT] = a[2];
                    v[o::CPUSTAT_USER] = a[3];
                    v[o::CPUSTAT_NICE] = a[4];
                    v[o::CPUSTAT_SYSTEM] = a[5];
                    v[o::CPUSTAT_IRQ] = a[6];
                    v[o::CPUSTAT_SOFTIRQ] = a[7];
                    v[o::ARRAY_PPTRS] = a[8];
                    v[o::NR_CPUS] = cpus;
                    (v[o::CPUACCT_BLOCK], v[o::CPUACCT_BLOCK_LEN]) = block(&[(a[1], 8), (a[2], 8)]);
                    (v[o::CPUSTAT_BLOCK], v[o::CPUSTAT_BLOCK_LEN]) =
                        block(&[(a[3], 8), (a[4], 8), (a[5], 8), (a[6], 8), (a[7], 8)]);
                }
                _ => v[o::SUBSYS_CPUACCT] = o::ABSENT,
            }
        }
        if v[o::SUBSYS_CPU] != o::ABSENT {
            v[o::ROOT_CPU_CSS] = root_cgrp + v[o::SUBSYS_CPU];
        }
        if v[o::NR_CPUS] == o::ABSENT {
            v[o::NR_CPUS] = 0;
        }
        // The task iterator's: every task's process and css_set.
        let task = (|| -> std::result::Result<[u64; 6], BtfError> {
            Ok([
                bytes(btf, "task_struct.tgid")?,
                bytes(btf, "task_struct.flags")?,
                bytes(btf, "task_struct.cgroups")?,
                bytes(btf, "css_set.subsys")?,
                bytes(btf, "css_set.dfl_cgrp")?,
                bytes(btf, "cgroup_subsys_state.cgroup")?,
            ])
        })();
        if let Ok([tgid, flags, cgroups, cset_subsys, dfl, css_cgroup]) = task {
            v[o::TASK_TGID] = tgid;
            v[o::TASK_FLAGS] = flags;
            v[o::TASK_CGROUPS] = cgroups;
            v[o::CSET_SUBSYS] = cset_subsys;
            v[o::CSET_DFL_CGRP] = dfl;
            v[o::CSS_CGROUP] = css_cgroup;
            v[o::CGROUP_SUBSYS] = subsys;
        }
        // Pressure (CONFIG_PSI): `cgroup.psi` a pointer since 5.19, the group
        // itself before.
        if let (Ok(m), Ok(total)) = (btf.member("cgroup.psi"), bytes(btf, "psi_group.total"))
            && m.bitfield_size.is_none()
            && m.bit_offset % 8 == 0
        {
            let ptr = matches!(btf.kind(btf.resolve(m.type_id)?)?, crate::btf::Kind::Ptr);
            v[o::CGROUP_PSI] = m.byte_offset();
            v[o::CGROUP_PSI_PTR] = u64::from(ptr);
            v[o::PSI_TOTAL] = total;
            v[o::PSI_ENABLED] = bytes(btf, "psi_group.enabled").unwrap_or(o::ABSENT);
        }
        Ok(IterOffsets(v))
    }
}

/// `(start, len)` of the one block of a struct, at most [`BLOCK_BYTES`] long and
/// starting 8-aligned, that holds every `(offset, size)` of `fields`; both
/// [`iter_off::ABSENT`] when they lie further apart (the program then reads them one
/// by one).
fn block(fields: &[(u64, u64)]) -> (u64, u64) {
    let start = fields.iter().map(|&(at, _)| at).min().map(|at| at & !7);
    let end = fields
        .iter()
        .map(|&(at, size)| at.saturating_add(size))
        .max()
        .map(|end| end.next_multiple_of(8));
    match (start, end) {
        (Some(start), Some(end)) if end - start <= BLOCK_BYTES => (start, end - start),
        _ => (iter_off::ABSENT, iter_off::ABSENT),
    }
}

/// Where the possible CPUs are listed (`0-1`); per-CPU values are summed over them.
pub const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// The number of possible CPUs: the highest in [`POSSIBLE_CPUS`] plus one (0 when
/// unreadable). Per-CPU sums cover the ids below it, as the kernel's
/// `for_each_possible_cpu`.
fn possible_cpus() -> u64 {
    let Ok(s) = std::fs::read_to_string(POSSIBLE_CPUS) else {
        return 0;
    };
    s.trim()
        .split([',', '-'])
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

/// CPU bandwidth counters of a cgroup, as `cpu.stat` shows them (on v2: from the
/// nearest cgroup up the tree with the cpu controller, as the kernel does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bandwidth {
    /// `nr_periods`.
    pub nr_periods: u64,
    /// `nr_throttled`.
    pub nr_throttled: u64,
    /// `throttled_time` (v1) / `throttled_usec` * 1000 (v2), nanoseconds.
    pub throttled_ns: u64,
    /// `nr_bursts` and `burst_time` in nanoseconds (kernel 5.14+).
    pub bursts: Option<(u64, u64)>,
}

/// The cgroup's own CPU limits (only where it has the cpu controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuLimits {
    /// The quota per period in nanoseconds; `None` when unlimited (`max`, `-1`).
    pub quota_ns: Option<u64>,
    /// The period in nanoseconds.
    pub period_ns: u64,
    /// `task_group.shares` as the kernel keeps it (scaled load weight); see
    /// [`CpuLimits::shares`] and [`CpuLimits::weight`].
    pub shares_raw: u64,
}

impl CpuLimits {
    /// v1 `cpu.shares` (`scale_load_down` of the weight).
    pub fn shares(&self) -> u64 {
        if self.shares_raw == 0 {
            0
        } else {
            (self.shares_raw >> 10).max(2)
        }
    }

    /// v2 `cpu.weight` (1-10000), from the shares as the kernel converts them.
    pub fn weight(&self) -> u64 {
        let w = self.shares();
        ((w * 100 + 512) / 1024).clamp(1, 10000)
    }
}

/// v1 cpuacct times, nanoseconds, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuUsage {
    /// `cpuacct.usage`.
    pub usage_ns: u64,
    /// `cpuacct.usage_all` user column, summed.
    pub user_ns: u64,
    /// `cpuacct.usage_all` system column, summed.
    pub system_ns: u64,
}

/// Memory of a cgroup (its own memory css).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// `memory.current` (v2) / `memory.usage_in_bytes` (v1, not the root's: the root's
    /// is computed from global counters, read the file).
    pub usage_bytes: u64,
    /// `memory.max` / `memory.limit_in_bytes`; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// What the kernel prints for the limit: on v1 `limit_in_bytes` also for no limit
    /// (9223372036854771712 with 4 KiB pages).
    pub limit_raw_bytes: u64,
}

/// One cgroup of a walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupStats {
    /// The cgroup id (`cgroup->kn->id`, the inode of its directory).
    pub id: u64,
    /// `cgroup->level`: 0 for a hierarchy's root.
    pub level: u32,
    /// The path relative to the walk's root: `""` for the root, `"a/b"` below it.
    pub path: String,
    /// CPU bandwidth counters.
    pub bandwidth: Option<Bandwidth>,
    /// CPU limits.
    pub cpu_limits: Option<CpuLimits>,
    /// v1 cpuacct times.
    pub cpu_usage: Option<CpuUsage>,
    /// Memory usage and limit.
    pub memory: Option<Memory>,
    /// OOM kills (`memory.events` oom_kill / `memory.oom_control` oom_kill).
    pub oom_kills: Option<u64>,
    /// `pids.current`: tasks in the subtree.
    pub pids: Option<u64>,
    /// Pressure stall totals (where the kernel keeps a pressure group for the
    /// cgroup: on the v2 hierarchy, the one PSI accounts on).
    pub pressure: Option<PressureTotals>,
}

/// The `total=` values of a cgroup's `cpu.pressure`, `memory.pressure` and
/// `io.pressure`, microseconds, `[some, full]` each: as the files print them at
/// the group's last aggregation (a read of a pressure file aggregates; else the
/// kernel does every 2 s while the group is busy, so these may trail the files
/// by that much, never lead them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PressureTotals {
    /// `cpu.pressure` some, full.
    pub cpu: [u64; 2],
    /// `memory.pressure` some, full.
    pub memory: [u64; 2],
    /// `io.pressure` some, full.
    pub io: [u64; 2],
}

impl CgroupStats {
    /// The path with a leading `/` (`/` for the walk's root).
    pub fn display_path(&self) -> String {
        format!("/{}", self.path)
    }
}

/// Options of [`CgroupIter`] loading; made by [`CgroupIter::from_file`] or
/// [`CgroupIter::from_bytes`].
#[derive(Clone, Debug)]
pub struct CgroupIterBuilder {
    object: Object,
    btf: Option<PathBuf>,
    capacity: u32,
}

/// The loaded iterator program and its records map. `Sync`: walks take a lock (the
/// map holds one walk at a time).
#[derive(Debug)]
pub struct CgroupIter {
    prog: OwnedFd,
    map: OwnedFd,
    /// The task iterator's link (all tasks), or why there is none.
    tasks: std::result::Result<OwnedFd, String>,
    /// One walk at a time: they share the map.
    walking: Mutex<()>,
    capacity: u32,
    page_size: u64,
    offsets: IterOffsets,
}

/// Processes per cgroup from [`CgroupIter::processes`].
#[derive(Debug, Default)]
pub struct Processes {
    /// By [`TaskHierarchy`] index: cgroup id -> processes.
    counts: [std::collections::HashMap<u64, u32>; 4],
}

/// Which of a task's cgroups [`Processes`] counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskHierarchy {
    /// Its cgroup on the v2 hierarchy.
    V2 = 0,
    /// Its cgroup of the cpu controller.
    Cpu = 1,
    /// Its cgroup of the memory controller.
    Memory = 2,
    /// Its cgroup of the pids controller.
    Pids = 3,
}

impl Processes {
    /// The processes in the cgroup of id `id` on hierarchy `h` (0 for one with none,
    /// or unknown).
    pub fn get(&self, h: TaskHierarchy, id: u64) -> u32 {
        self.counts[h as usize].get(&id).copied().unwrap_or(0)
    }
}

/// The records of one walk, mapped from the map for as long as they are read: mapped
/// pages count in RSS, so only the walk's records are mapped, and only meanwhile.
struct Mapped {
    ptr: NonNull<c_void>,
    len: NonZeroUsize,
}

impl Mapped {
    /// Maps the first `len` bytes (rounded up to pages) of `map`, read-only.
    fn new(map: std::os::fd::BorrowedFd<'_>, len: NonZeroUsize) -> Result<Mapped> {
        // SAFETY: a new shared read-only mapping of the map's value area (an mmapable
        // array at least `len` bytes long, rounded to pages by the kernel); nothing
        // else refers to it.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ,
                // Populated at once: one call instead of a fault per page.
                nix::sys::mman::MapFlags::MAP_SHARED | nix::sys::mman::MapFlags::MAP_POPULATE,
                map,
                0,
            )
        }
        .map_err(|e| Error::Iter {
            what: "mmap the records map",
            reason: e.to_string(),
        })?;
        Ok(Mapped { ptr, len })
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in `new`, unmapped once here.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len.get()) };
    }
}

/// A cgroup iterator linked to one cgroup (the root of the walks). It holds a
/// reference to that cgroup: while it lives, the cgroup stays (dead once removed, so
/// a walk of a removed root returns nothing).
#[derive(Debug)]
pub struct IterLink {
    fd: OwnedFd,
    dir: PathBuf,
    /// On the v2 hierarchy (cgroup2), where pressure is accounted.
    v2: bool,
}

impl IterLink {
    /// The directory the link was made on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u64], what: &'static str) -> Result<OwnedFd> {
    // SAFETY: `attr` is a zeroed union bpf_attr prefix laid out for `cmd` by the
    // caller, valid for the call; the kernel reads `attr.len() * 8` bytes of it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        return Err(Error::Iter {
            what,
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    // SAFETY: the bpf syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

impl CgroupIterBuilder {
    /// How many cgroups one walk can return (default [`DEFAULT_CAPACITY`]); a walk of
    /// more fails with [`Error::IterCapacity`].
    pub fn capacity(mut self, records: u32) -> Self {
        self.capacity = records;
        self
    }

    /// Read struct offsets from this raw BTF file instead of /sys/kernel/btf/vmlinux.
    pub fn btf(mut self, path: impl Into<PathBuf>) -> Self {
        self.btf = Some(path.into());
        self
    }

    /// Loads the iterator program (not yet linked to any cgroup: see
    /// [`CgroupIter::link`]). Needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN), kernel
    /// BTF and kernel 6.1+.
    pub fn load(self) -> Result<CgroupIter> {
        if self.capacity == 0 {
            return Err(Error::ZeroCapacity);
        }
        let object = self.object.read()?;
        if !crate::privileged() {
            return Err(Error::NotPrivileged);
        }
        let (offsets, stub) = {
            let kbtf = match &self.btf {
                Some(p) => Btf::from_file(p)?,
                None => Btf::from_sys()?,
            };
            let offsets = IterOffsets::resolve(&kbtf)?;
            let stub = kbtf.attach_stub(&[
                ("bpf_iter_cgroup", btf::Kind::Func),
                ("bpf_iter_task", btf::Kind::Func),
            ])?;
            (offsets, stub)
        };
        let aya_btf =
            aya::Btf::parse(&stub, aya::Endianness::default()).map_err(Error::KernelBtf)?;
        drop(stub);
        let capacity = self.capacity;
        let (loaded, _) =
            crate::stub::without_vmlinux(|| load_fds(&object, &offsets, &aya_btf, capacity));
        let (prog_fd, map_fd, task_fd) = loaded?;
        let mut it = CgroupIter::from_fds(prog_fd, map_fd, self.capacity, offsets)?;
        // All tasks: a link without a target.
        it.tasks = task_fd.and_then(|p| {
            let mut attr = [0u64; 4];
            attr[0] = u64::from(p.as_raw_fd() as u32);
            attr[1] = u64::from(BPF_TRACE_ITER);
            bpf(BPF_LINK_CREATE, &mut attr, "link the task iterator").map_err(|e| e.to_string())
        });
        Ok(it)
    }
}

/// Loads the programs and their maps with aya; their fds (aya's copies are closed):
/// the cgroup iterator's, its map's, and the task iterator's or why it did not load
/// (an object without it, or a kernel that refuses it, leaves processes to files).
fn load_fds(
    object: &[u8],
    offsets: &IterOffsets,
    aya_btf: &aya::Btf,
    capacity: u32,
) -> Result<(OwnedFd, OwnedFd, std::result::Result<OwnedFd, String>)> {
    {
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(aya_btf))
            .override_global(GLOBAL, &offsets.0, true)
            .map_max_entries(MAP_RECORDS, capacity);
        for m in OTHER_MAPS {
            loader.map_max_entries(m, 1);
        }
        let mut ebpf = loader.load(object).map_err(|e| Error::Iter {
            what: "load the eBPF object (creating its maps)",
            reason: errchain::chain(&e),
        })?;
        let prog: &mut Iter = ebpf
            .program_mut(PROG)
            .ok_or(Error::Iter {
                what: "find the iterator program",
                reason: format!(
                    "the object has no {PROG} program (rebuild it: cargo xtask build-ebpf)"
                ),
            })?
            .try_into()
            .map_err(|e| Error::Iter {
                what: "find the iterator program",
                reason: errchain::chain(&e),
            })?;
        prog.load("cgroup", aya_btf).map_err(|e| Error::Iter {
            what: "load iter/cgroup (kernel 6.1+ with BTF)",
            reason: errchain::chain(&e),
        })?;
        let dup = |fd: std::os::fd::BorrowedFd<'_>, what: &'static str| {
            fd.try_clone_to_owned().map_err(|e| Error::Iter {
                what,
                reason: e.to_string(),
            })
        };
        let prog_fd = dup(
            prog.fd()
                .map_err(|e| Error::Iter {
                    what: "the iterator program's fd",
                    reason: errchain::chain(&e),
                })?
                .as_fd(),
            "duplicate the program fd",
        )?;
        let map_fd = match ebpf.map(MAP_RECORDS) {
            Some(aya::maps::Map::Array(data)) => dup(data.fd().as_fd(), "duplicate the map fd")?,
            _ => {
                return Err(Error::Map {
                    name: MAP_RECORDS,
                    reason: "missing from the object, or not an array".into(),
                });
            }
        };
        let task_fd = if offsets.0[iter_off::TASK_CGROUPS] == iter_off::ABSENT {
            Err("the kernel's BTF lacks a task_struct or css_set field it reads".into())
        } else {
            match ebpf.program_mut(TASK_PROG) {
                None => Err(format!(
                    "the object has no {TASK_PROG} program (rebuild it: cargo xtask build-ebpf)"
                )),
                Some(p) => <&mut Iter>::try_from(p)
                    .map_err(|e| errchain::chain(&e))
                    .and_then(|p| {
                        p.load("task", aya_btf)
                            .map_err(|e| format!("load iter/task: {}", errchain::chain(&e)))?;
                        let fd = p.fd().map_err(|e| errchain::chain(&e))?;
                        fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())
                    }),
            }
        };
        // The programs and map live on through our fds; aya's copies go.
        drop(ebpf);
        Ok((prog_fd, map_fd, task_fd))
    }
}

impl CgroupIter {
    /// Options for loading the eBPF object from the file at `path` (e.g.
    /// [`crate::BUILD_OBJECT`]).
    pub fn from_file(path: impl Into<PathBuf>) -> CgroupIterBuilder {
        CgroupIterBuilder {
            object: Object::File(path.into()),
            btf: None,
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// Options for loading the eBPF object from `bytes`.
    pub fn from_bytes(bytes: impl Into<Cow<'static, [u8]>>) -> CgroupIterBuilder {
        CgroupIterBuilder {
            object: Object::Bytes(bytes.into()),
            btf: None,
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// An iterator from the fds of a loaded `cgroup_records` program and its
    /// `CGROUP_RECORDS` map of `capacity` entries (e.g. loaded by another process and
    /// passed over a unix socket), with the offsets it was loaded with.
    pub fn from_fds(
        prog: OwnedFd,
        map: OwnedFd,
        capacity: u32,
        offsets: IterOffsets,
    ) -> Result<CgroupIter> {
        if capacity == 0 {
            return Err(Error::ZeroCapacity);
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = u64::try_from(page).unwrap_or(4096);
        Ok(CgroupIter {
            prog,
            map,
            tasks: Err("loaded from fds: the task iterator was not passed".into()),
            walking: Mutex::new(()),
            capacity,
            page_size: page,
            offsets,
        })
    }

    /// The loaded program's fd.
    pub fn program_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// The records map's fd.
    pub fn map_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.map.as_fd()
    }

    /// Records one walk can return.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The offsets the program was loaded with.
    pub fn offsets(&self) -> &IterOffsets {
        &self.offsets
    }

    /// Whether [`CgroupIter::processes`] can run (the task iterator loaded and linked).
    pub fn counts_processes(&self) -> bool {
        self.tasks.is_ok()
    }

    /// Why [`CgroupIter::processes`] cannot run, if it cannot.
    pub fn processes_unavailable(&self) -> Option<&str> {
        self.tasks.as_ref().err().map(String::as_str)
    }

    /// Every cgroup's processes, counted from one pass of the task iterator over the
    /// tasks visible in our pid namespace, as `cgroup.procs` lists them read from
    /// here: the distinct processes with a live task in the cgroup.
    pub fn processes(&self) -> Result<Processes> {
        let link = self.tasks.as_ref().map_err(|why| Error::Iter {
            what: "count processes with the task iterator",
            reason: why.clone(),
        })?;
        let mut attr = [u64::from(link.as_raw_fd() as u32)];
        let iter = bpf(BPF_ITER_CREATE, &mut attr, "start the task iterator")?;
        let mut file = std::fs::File::from(iter);
        let mut bytes = Vec::with_capacity(64 * 1024);
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| Error::Iter {
            what: "read the task iterator",
            reason: e.to_string(),
        })?;
        let size = std::mem::size_of::<TaskRecord>();
        if bytes.len() % size != 0 {
            return Err(Error::Iter {
                what: "read the task iterator",
                reason: format!(
                    "{} bytes, not a multiple of the {size}-byte record (a mismatched object?)",
                    bytes.len()
                ),
            });
        }
        // Per hierarchy the (cgroup, process) pairs, sorted and deduplicated: a
        // cgroup's processes are then its run of pairs. (A SipHash set of the pairs,
        // four inserts per task, made a pass over 2000 tasks ~25% slower.)
        let tasks = bytes.len() / size;
        let mut pairs: [Vec<(u64, u64)>; 4] = std::array::from_fn(|_| Vec::with_capacity(tasks));
        for chunk in bytes.chunks_exact(size) {
            let word = |i: usize| ne_u64(chunk, i);
            let tgid = word(0);
            for (h, v) in pairs.iter_mut().enumerate() {
                let id = word(1 + h);
                if id != 0 {
                    v.push((id, tgid));
                }
            }
        }
        let mut p = Processes::default();
        for (v, counts) in pairs.iter_mut().zip(p.counts.iter_mut()) {
            v.sort_unstable();
            v.dedup();
            counts.reserve(v.chunk_by(|a, b| a.0 == b.0).count());
            for run in v.chunk_by(|a, b| a.0 == b.0) {
                counts.insert(run[0].0, u32::try_from(run.len()).unwrap_or(u32::MAX));
            }
        }
        Ok(p)
    }

    /// Links the iterator to the cgroup directory `dir` (a hierarchy's root such as
    /// `/sys/fs/cgroup/cpu`, or any cgroup below it): walks then cover it and every
    /// cgroup below, parents first.
    pub fn link(&self, dir: impl AsRef<Path>) -> Result<IterLink> {
        let dir = dir.as_ref();
        let d = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| Error::Iter {
                what: "open the cgroup directory to link the iterator to",
                reason: format!("{}: {e}", dir.display()),
            })?;
        // union bpf_iter_link_info: cgroup = { u32 order; u32 cgroup_fd; u64 cgroup_id }.
        let info: [u64; 2] = [
            u64::from(ORDER_DESCENDANTS_PRE) | (u64::from(d.as_raw_fd() as u32) << 32),
            0,
        ];
        // bpf_attr.link_create: prog_fd, target_fd, attach_type, flags,
        // iter_info (pointer), iter_info_len.
        let mut attr = [0u64; 4];
        attr[0] = u64::from(self.prog.as_raw_fd() as u32);
        attr[1] = u64::from(BPF_TRACE_ITER);
        attr[2] = info.as_ptr() as u64;
        attr[3] = std::mem::size_of_val(&info) as u64;
        let fd = bpf(
            BPF_LINK_CREATE,
            &mut attr,
            "link the cgroup iterator (BPF_LINK_CREATE)",
        )
        .map_err(|e| match e {
            Error::Iter { what, reason } => Error::Iter {
                what,
                reason: format!("{}: {reason}", dir.display()),
            },
            e => e,
        })?;
        // Pressure is accounted on the v2 hierarchy only: a v1 cgroup's group (the
        // kernel makes one for every cgroup) stays at zero, and is not reported.
        let v2 = nix::sys::statfs::fstatfs(&d)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        Ok(IterLink {
            fd,
            dir: dir.to_owned(),
            v2,
        })
    }

    /// One walk of `link`'s subtree: every live cgroup in it, parents first, with its
    /// path relative to the link's directory.
    pub fn walk(&self, link: &IterLink) -> Result<Vec<CgroupStats>> {
        let mut out = Vec::new();
        self.walk_with(link, |s| out.push(s))?;
        Ok(out)
    }

    /// As [`walk`](CgroupIter::walk), handing each cgroup to `f` in walk order.
    pub fn walk_with(&self, link: &IterLink, mut f: impl FnMut(CgroupStats)) -> Result<()> {
        let walking = self.walking.lock().unwrap_or_else(|p| p.into_inner());
        let mut attr = [u64::from(link.fd.as_raw_fd() as u32)];
        let iter = bpf(BPF_ITER_CREATE, &mut attr, "start a walk (BPF_ITER_CREATE)")?;
        let mut file = std::fs::File::from(iter);
        let mut buf = [0u8; 64];
        let mut got = 0usize;
        loop {
            use std::io::Read;
            match file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    if got == buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Iter {
                        what: "read the cgroup iterator",
                        reason: format!("{}: {e}", link.dir.display()),
                    });
                }
            }
        }
        drop(file);
        if got != std::mem::size_of::<WalkEnd>() {
            return Err(Error::Iter {
                what: "read the cgroup iterator",
                reason: format!(
                    "{}: {got} bytes where the program writes {} (a mismatched object?)",
                    link.dir.display(),
                    std::mem::size_of::<WalkEnd>()
                ),
            });
        }
        let word = |i: usize| ne_u64(&buf, i);
        let end = WalkEnd {
            session: word(0),
            slots: word(1),
            dropped: word(2),
        };
        if end.dropped > 0 {
            return Err(Error::IterCapacity {
                capacity: self.capacity,
                cgroups: u64::from(self.capacity) + end.dropped,
            });
        }
        let n = usize::try_from(end.slots.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(self.capacity as usize);
        let Some(bytes) = NonZeroUsize::new(n * std::mem::size_of::<CgroupRecord>()) else {
            return Ok(()); // nothing walked (a dead root)
        };
        let records = Mapped::new(self.map.as_fd(), bytes)?;
        let base = records.ptr.as_ptr().cast::<CgroupRecord>();
        let mut stack: Vec<(u64, usize)> = Vec::new(); // (level, path length)
        let mut path = String::new();
        let mut root_level: Option<u64> = None;
        for i in 0..n {
            // SAFETY: `i` < n, inside the mapping of `n` records; the
            // walk that wrote them has ended (its read returned) and the lock keeps
            // another from starting. A volatile read: the kernel wrote the memory.
            let r = unsafe { std::ptr::read_volatile(base.add(i)) };
            if r.session != end.session {
                continue; // a cgroup that died before this walk reached it
            }
            let name = name_of(&r);
            match root_level {
                None => {
                    root_level = Some(r.level);
                    path.clear();
                    stack.push((r.level, 0));
                }
                Some(_) => {
                    while stack.last().is_some_and(|&(l, _)| l >= r.level) {
                        stack.pop();
                    }
                    let parent_len = stack.last().map_or(0, |&(_, len)| len);
                    path.truncate(parent_len);
                    if !path.is_empty() {
                        path.push('/');
                    }
                    path.push_str(&name);
                    stack.push((r.level, path.len()));
                }
            }
            f(self.typed(&r, path.clone(), link.v2));
        }
        drop(records);
        drop(walking);
        Ok(())
    }

    fn typed(&self, r: &CgroupRecord, path: String, v2: bool) -> CgroupStats {
        let has = |bit: u64| r.flags & bit != 0;
        let page = self.page_size;
        // PAGE_COUNTER_MAX: LONG_MAX / PAGE_SIZE, the page counter's "no limit".
        let counter_max = (i64::MAX as u64) / page;
        CgroupStats {
            id: r.id,
            level: u32::try_from(r.level).unwrap_or(u32::MAX),
            path,
            bandwidth: has(rec::CPU_EFF).then(|| Bandwidth {
                nr_periods: r.nr_periods,
                nr_throttled: r.nr_throttled,
                throttled_ns: r.throttled_ns,
                bursts: has(rec::BURST).then_some((r.nr_bursts, r.burst_ns)),
            }),
            cpu_limits: has(rec::CPU_OWN).then(|| CpuLimits {
                quota_ns: (r.quota_ns != u64::MAX).then_some(r.quota_ns),
                period_ns: r.period_ns,
                shares_raw: r.shares,
            }),
            cpu_usage: has(rec::CPUACCT).then_some(CpuUsage {
                usage_ns: r.usage_ns,
                user_ns: r.user_ns,
                system_ns: r.system_ns,
            }),
            memory: has(rec::MEM).then(|| Memory {
                usage_bytes: r.mem_usage_pages.saturating_mul(page),
                limit_bytes: (r.mem_max_pages < counter_max)
                    .then(|| r.mem_max_pages.saturating_mul(page)),
                limit_raw_bytes: r.mem_max_pages.saturating_mul(page),
            }),
            oom_kills: has(rec::OOM).then_some(r.oom_kills),
            pids: has(rec::PIDS).then_some(r.pids),
            pressure: (v2 && has(rec::PSI)).then(|| {
                let us = |i: usize| r.psi_ns[i] / 1000;
                PressureTotals {
                    cpu: [
                        us(4),
                        // "CPU FULL is undefined at the system level": the root's
                        // file prints 0.
                        if r.level == 0 { 0 } else { us(5) },
                    ],
                    memory: [us(2), us(3)],
                    io: [us(0), us(1)],
                }
            }),
        }
    }
}

/// The `i`th native-endian u64 of `bytes` (the caller keeps `i` in range).
fn ne_u64(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_ne_bytes(w)
}

/// The record's name (bytes up to the NUL; not UTF-8 bytes replaced).
fn name_of(r: &CgroupRecord) -> String {
    let mut bytes = [0u8; NAME_BYTES];
    for (chunk, w) in bytes.chunks_exact_mut(8).zip(r.name.iter()) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_covers_its_fields_from_an_aligned_start() {
        // 6.18's cfs_bandwidth in task_group: quota at 472 .. burst_time ending at 696.
        let f = [
            (664, 4),
            (668, 4),
            (680, 8),
            (472, 8),
            (464, 8),
            (672, 4),
            (688, 8),
        ];
        assert_eq!(block(&f), (464, 232));
        // An int at 12 starts the block at 8 and a 4-byte end rounds up.
        assert_eq!(block(&[(12, 4), (20, 4)]), (8, 16));
    }

    #[test]
    fn fields_further_apart_than_a_block_have_none() {
        let far = (iter_off::ABSENT, iter_off::ABSENT);
        assert_eq!(block(&[(0, 8), (BLOCK_BYTES, 8)]), far);
        assert_eq!(block(&[(0, 8), (BLOCK_BYTES - 8, 8)]), (0, BLOCK_BYTES));
        assert_eq!(block(&[]), far);
    }
}
