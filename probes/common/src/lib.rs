//! `#[repr(C)]` types shared by the probes eBPF program and its userspace loader.
//!
//! The kernel side (probes/ebpf) writes these into BPF maps; the loader
//! (probes/src) reads them back. Both sides must agree byte for byte, so every
//! type here is `#[repr(C)]`, made of `u64`s only (no padding), and has a fixed size.
#![no_std]
#![deny(missing_docs)]

/// Buckets of the throttle-duration histogram.
///
/// Bucket 0 counts durations below 2 µs; bucket `i >= 1` counts durations in
/// `[2^i, 2^(i+1))` microseconds; the last bucket also takes everything longer.
pub const HIST_BUCKETS: usize = 32;

/// Per-cgroup throttling totals, the value of the `THROTTLE_STATS` map (keyed by the
/// cgroup id, `cgroup->kn->id`, equal to the inode of the cgroup's directory).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleStats {
    /// Completed throttle events (throttle followed by its end).
    pub events: u64,
    /// Sum of the durations of those events, in nanoseconds.
    pub throttled_ns: u64,
    /// log2 histogram of the durations, see [`HIST_BUCKETS`].
    pub hist: [u64; HIST_BUCKETS],
}

impl ThrottleStats {
    /// All zero.
    pub const ZERO: ThrottleStats = ThrottleStats {
        events: 0,
        throttled_ns: 0,
        hist: [0; HIST_BUCKETS],
    };
}

impl Default for ThrottleStats {
    fn default() -> Self {
        Self::ZERO
    }
}

/// The histogram bucket of a duration in nanoseconds (see [`HIST_BUCKETS`]).
///
/// Branch-light and loop-free, so the eBPF verifier accepts it as is.
#[inline(always)]
pub fn hist_bucket(ns: u64) -> usize {
    let mut v = ns / 1000;
    let mut log = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        log += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        log += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        log += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        log += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        log += 2;
    }
    if v >= 1 << 1 {
        log += 1;
    }
    if log >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        log
    }
}

/// Lower bound, in microseconds, of histogram bucket `i` (0 for bucket 0).
pub const fn bucket_low_usec(i: usize) -> u64 {
    if i == 0 { 0 } else { 1 << i }
}

/// Indices of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Times the program ran (sched_switch hits, or throttle/unthrottle calls).
    pub const HITS: u32 = 0;
    /// Throttle starts or ends lost because a bounded map was full.
    pub const DROPPED: u32 = 1;
    /// Throttle ends whose start was not seen (the probe attached mid-throttle).
    pub const UNMATCHED: u32 = 2;
    /// Throttle starts recorded.
    pub const STARTS: u32 = 3;
    /// Number of counters.
    pub const LEN: u32 = 4;
}

/// Indices of the `OFFSETS` values the loader resolves from the running kernel's
/// BTF and hands to the program as the global array `OFFSETS` (byte offsets, except
/// where noted).
pub mod off {
    /// `cfs_rq.tg` (fentry strategy).
    pub const CFS_RQ_TG: usize = 0;
    /// `task_group.css` + `cgroup_subsys_state.cgroup` (pointer to the cgroup).
    pub const TG_CSS_CGROUP: usize = 1;
    /// `cgroup.kn`.
    pub const CGROUP_KN: usize = 2;
    /// `kernfs_node.id`.
    pub const KN_ID: usize = 3;
    /// `task_struct.sched_task_group` (sched_switch strategy).
    pub const TASK_SCHED_TASK_GROUP: usize = 4;
    /// `task_struct.pid`.
    pub const TASK_PID: usize = 5;
    /// Byte offset of the byte that holds `task_struct.throttled` (read directly, so
    /// it must lie inside the member for the verifier).
    pub const TASK_THROTTLED_BYTE: usize = 6;
    /// Right shift applied to that byte to bring the flag to bit 0.
    pub const TASK_THROTTLED_SHIFT: usize = 7;
    /// Mask applied after the shift (1 for a bool or 1-bit bitfield).
    pub const TASK_THROTTLED_MASK: usize = 8;
    /// 1 when `throttle_cfs_rq` returns bool (false: it did not throttle).
    pub const THROTTLE_RETURNS_BOOL: usize = 9;
    /// `hrtimer.function`.
    pub const HRTIMER_FUNCTION: usize = 10;
    /// `task_group.cfs_bandwidth` + `cfs_bandwidth.period_timer`.
    pub const TG_PERIOD_TIMER: usize = 11;
    /// `task_group.cfs_bandwidth` + `cfs_bandwidth.slack_timer`.
    pub const TG_SLACK_TIMER: usize = 12;
    /// Kernel address of `sched_cfs_period_timer` (0: timer ends disabled).
    pub const PERIOD_TIMER_FN: usize = 13;
    /// Kernel address of `sched_cfs_slack_timer` (0: not watched).
    pub const SLACK_TIMER_FN: usize = 14;
    /// `task_group.parent`.
    pub const TG_PARENT: usize = 15;
    /// `cgroup.root` (the hierarchy's `struct cgroup_root *`).
    pub const CGROUP_ROOT: usize = 16;
    /// Number of entries.
    pub const LEN: usize = 17;
}

/// Bytes of a cgroup's name in a [`CgroupRecord`]: NAME_MAX (255) plus the NUL.
pub const NAME_BYTES: usize = 256;

/// One cgroup as the `iter/cgroup` program writes it into the `CGROUP_RECORDS` array,
/// at the index of the cgroup in the walk (`bpf_iter_meta.seq_num`).
///
/// Only what the kernel keeps in plain struct fields is here (no rstat-flushed
/// value); [`rec`] says which groups of fields are valid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupRecord {
    /// `cgroup->kn->id` (the inode of the cgroup's directory).
    pub id: u64,
    /// `cgroup->level` (0 for a hierarchy's root).
    pub level: u64,
    /// `bpf_iter_meta.session_id` of the walk that wrote it: slots of an earlier walk
    /// (a cgroup that died since) carry another.
    pub session: u64,
    /// Bits of [`rec`].
    pub flags: u64,
    /// `cfs_bandwidth.nr_periods` of the effective cpu css ([`rec::CPU_EFF`]).
    pub nr_periods: u64,
    /// `cfs_bandwidth.nr_throttled`.
    pub nr_throttled: u64,
    /// `cfs_bandwidth.throttled_time`, nanoseconds.
    pub throttled_ns: u64,
    /// `cfs_bandwidth.nr_burst` ([`rec::BURST`]).
    pub nr_bursts: u64,
    /// `cfs_bandwidth.burst_time`, nanoseconds.
    pub burst_ns: u64,
    /// `cfs_bandwidth.quota` of the cgroup's own cpu css ([`rec::CPU_OWN`]),
    /// nanoseconds, `u64::MAX` when unlimited.
    pub quota_ns: u64,
    /// `cfs_bandwidth.period`, nanoseconds.
    pub period_ns: u64,
    /// `task_group.shares` (scaled load weight: 1024 << 10 for cpu.shares 1024).
    pub shares: u64,
    /// `mem_cgroup.memory.usage`, pages ([`rec::MEM`]).
    pub mem_usage_pages: u64,
    /// `mem_cgroup.memory.max`, pages.
    pub mem_max_pages: u64,
    /// `mem_cgroup.memory_events[MEMCG_OOM_KILL]` ([`rec::OOM`]).
    pub oom_kills: u64,
    /// `pids_cgroup.counter`: tasks in the subtree ([`rec::PIDS`]).
    pub pids: u64,
    /// cpuacct usage summed over CPUs, nanoseconds ([`rec::CPUACCT`]).
    pub usage_ns: u64,
    /// cpuacct user time (`CPUTIME_USER` + `CPUTIME_NICE`), nanoseconds.
    pub user_ns: u64,
    /// cpuacct system time (`CPUTIME_SYSTEM` + `IRQ` + `SOFTIRQ`), nanoseconds.
    pub system_ns: u64,
    /// `psi_group.total[PSI_AVGS]` of the cgroup's pressure group ([`rec::PSI`]):
    /// nanoseconds stalled, in the kernel's order io some, io full, memory some,
    /// memory full, cpu some, cpu full. What the pressure files print as `total=`
    /// (in microseconds), as of the group's last aggregation: a read of a pressure
    /// file aggregates, else the kernel does every 2 s while the group is busy.
    pub psi_ns: [u64; 6],
    /// `cgroup->kn->name`, NUL-terminated.
    pub name: [u64; NAME_BYTES / 8],
}

impl CgroupRecord {
    /// All zero.
    pub const ZERO: CgroupRecord = CgroupRecord {
        id: 0,
        level: 0,
        session: 0,
        flags: 0,
        nr_periods: 0,
        nr_throttled: 0,
        throttled_ns: 0,
        nr_bursts: 0,
        burst_ns: 0,
        quota_ns: 0,
        period_ns: 0,
        shares: 0,
        mem_usage_pages: 0,
        mem_max_pages: 0,
        oom_kills: 0,
        pids: 0,
        usage_ns: 0,
        user_ns: 0,
        system_ns: 0,
        psi_ns: [0; 6],
        name: [0; NAME_BYTES / 8],
    };
}

/// Bits of [`CgroupRecord::flags`].
pub mod rec {
    /// The cgroup has its own cpu css: quota, period and shares are valid.
    pub const CPU_OWN: u64 = 1;
    /// The bandwidth counters are valid (from the nearest cgroup up the tree that has
    /// a cpu css, as a v2 `cpu.stat` shows them).
    pub const CPU_EFF: u64 = 2;
    /// Memory usage and limit are valid.
    pub const MEM: u64 = 4;
    /// `pids` is valid.
    pub const PIDS: u64 = 8;
    /// The name did not fit (never with NAME_MAX names).
    pub const NAME_TRUNC: u64 = 16;
    /// `nr_bursts` and `burst_ns` are valid (kernel 5.14+).
    pub const BURST: u64 = 32;
    /// `oom_kills` is valid.
    pub const OOM: u64 = 64;
    /// `usage_ns`, `user_ns` and `system_ns` are valid.
    pub const CPUACCT: u64 = 128;
    /// `psi_ns` is valid: the cgroup is on the v2 hierarchy (the one pressure is
    /// accounted on; a v1 cgroup's group stays zero, and is not read) and has a
    /// pressure group, which is enabled.
    pub const PSI: u64 = 256;
}

/// What the task iterator writes for each live task (thread): its process and the
/// ids of its cgroups, so that a reader counts each cgroup's processes as its
/// `cgroup.procs` lists them (the distinct thread group ids of its tasks).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskRecord {
    /// `task_struct.tgid`: the process.
    pub tgid: u64,
    /// Cgroup ids (`kn->id`, 0 where the task has none): of its v2 cgroup, then its
    /// cgroups of the cpu, memory and pids controllers (v1 hierarchies, or v2 again).
    pub ids: [u64; 4],
}

/// PF_EXITING in `task_struct.flags`.
pub const PF_EXITING: u64 = 4;

/// What the program writes to the iterator's output at the end of a walk (its only
/// output: the records go to the map, so the walk never meets the 32 KB limit of one
/// read of a cgroup iterator).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkEnd {
    /// The walk's `bpf_iter_meta.session_id`.
    pub session: u64,
    /// `bpf_iter_meta.seq_num` at the end: the records written are at indices below it.
    pub slots: u64,
    /// Cgroups whose index was past the map's end (not recorded).
    pub dropped: u64,
}

/// Indices of the `ITER_OFFSETS` global of the cgroup iterator (byte offsets unless
/// noted; [`iter_off::ABSENT`] where the kernel lacks the field or controller).
pub mod iter_off {
    /// A value of ITER_OFFSETS meaning "not in this kernel".
    pub const ABSENT: u64 = u64::MAX;
    /// `cgroup.kn`.
    pub const CGROUP_KN: usize = 0;
    /// `kernfs_node.id`.
    pub const KN_ID: usize = 1;
    /// `kernfs_node.name`.
    pub const KN_NAME: usize = 2;
    /// `cgroup.level`.
    pub const CGROUP_LEVEL: usize = 3;
    /// `cgroup.self.parent` (the parent's `self` css, at the parent's
    /// `cgroup.self`).
    pub const CGROUP_PARENT: usize = 4;
    /// `cgroup.self`.
    pub const CGROUP_SELF: usize = 5;
    /// `cgroup.subsys` + 8 * `cpu_cgrp_id`.
    pub const SUBSYS_CPU: usize = 6;
    /// `cgroup.subsys` + 8 * `memory_cgrp_id`.
    pub const SUBSYS_MEMORY: usize = 7;
    /// `cgroup.subsys` + 8 * `pids_cgrp_id`.
    pub const SUBSYS_PIDS: usize = 8;
    /// `task_group.css`.
    pub const TG_CSS: usize = 9;
    /// `task_group.shares`.
    pub const TG_SHARES: usize = 10;
    /// `task_group.cfs_bandwidth.nr_periods` (int).
    pub const TG_NR_PERIODS: usize = 11;
    /// `task_group.cfs_bandwidth.nr_throttled` (int).
    pub const TG_NR_THROTTLED: usize = 12;
    /// `task_group.cfs_bandwidth.throttled_time`.
    pub const TG_THROTTLED_TIME: usize = 13;
    /// `task_group.cfs_bandwidth.nr_burst` (int).
    pub const TG_NR_BURST: usize = 14;
    /// `task_group.cfs_bandwidth.burst_time`.
    pub const TG_BURST_TIME: usize = 15;
    /// `task_group.cfs_bandwidth.quota`.
    pub const TG_QUOTA: usize = 16;
    /// `task_group.cfs_bandwidth.period`.
    pub const TG_PERIOD: usize = 17;
    /// `mem_cgroup.css`.
    pub const MEMCG_CSS: usize = 18;
    /// `mem_cgroup.memory.usage`.
    pub const MEMCG_USAGE: usize = 19;
    /// `mem_cgroup.memory.max`.
    pub const MEMCG_MAX: usize = 20;
    /// `mem_cgroup.memory_events` + 8 * `MEMCG_OOM_KILL`.
    pub const MEMCG_OOM_KILL: usize = 21;
    /// `pids_cgroup.css`.
    pub const PIDS_CSS: usize = 22;
    /// `pids_cgroup.counter`.
    pub const PIDS_COUNTER: usize = 23;
    /// `cgroup.subsys` + 8 * `cpuacct_cgrp_id`.
    pub const SUBSYS_CPUACCT: usize = 24;
    /// `cpuacct.css`.
    pub const CPUACCT_CSS: usize = 25;
    /// `cpuacct.cpuusage` (a per-CPU pointer).
    pub const CPUACCT_USAGE: usize = 26;
    /// `cpuacct.cpustat` (a per-CPU pointer to `kernel_cpustat`).
    pub const CPUACCT_CPUSTAT: usize = 27;
    /// Byte offsets in `kernel_cpustat` of `cpustat[CPUTIME_USER]`, `NICE`,
    /// `SYSTEM`, `IRQ`, `SOFTIRQ`.
    pub const CPUSTAT_USER: usize = 28;
    /// See [`CPUSTAT_USER`].
    pub const CPUSTAT_NICE: usize = 29;
    /// See [`CPUSTAT_USER`].
    pub const CPUSTAT_SYSTEM: usize = 30;
    /// See [`CPUSTAT_USER`].
    pub const CPUSTAT_IRQ: usize = 31;
    /// See [`CPUSTAT_USER`].
    pub const CPUSTAT_SOFTIRQ: usize = 32;
    /// `bpf_array.pptrs`: where a per-CPU array map keeps its per-CPU pointers.
    pub const ARRAY_PPTRS: usize = 33;
    /// Possible CPUs (count, not an offset).
    pub const NR_CPUS: usize = 34;
    /// `cgroup.psi`: a pointer to the cgroup's `psi_group` (5.19+), or the group
    /// itself (earlier kernels; then [`CGROUP_PSI_PTR`] is 0).
    pub const CGROUP_PSI: usize = 35;
    /// 1 when `cgroup.psi` is a pointer, 0 when the group is embedded.
    pub const CGROUP_PSI_PTR: usize = 36;
    /// `psi_group.total` (its first row: `PSI_AVGS`).
    pub const PSI_TOTAL: usize = 37;
    /// `psi_group.enabled` (bool, 6.5+: `cgroup.pressure` can turn a group off).
    pub const PSI_ENABLED: usize = 38;
    /// `task_struct.tgid` (the task iterator's; [`ABSENT`] when it cannot run).
    pub const TASK_TGID: usize = 39;
    /// `task_struct.flags` (PF_EXITING: the task has left its cgroups' lists).
    pub const TASK_FLAGS: usize = 40;
    /// `task_struct.cgroups` (its `css_set`).
    pub const TASK_CGROUPS: usize = 41;
    /// `css_set.subsys`.
    pub const CSET_SUBSYS: usize = 42;
    /// `css_set.dfl_cgrp` (the task's cgroup on the v2 hierarchy).
    pub const CSET_DFL_CGRP: usize = 43;
    /// `cgroup_subsys_state.cgroup`.
    pub const CSS_CGROUP: usize = 44;
    /// `cgroup.subsys` (the `SUBSYS_*` slots minus this are 8 * the controller's id).
    pub const CGROUP_SUBSYS: usize = 45;
    /// `cgroup.root` (its `struct cgroup_root *`).
    pub const CGROUP_ROOT: usize = 46;
    /// `cgroup_root.hierarchy_id` (int; 0 is the v2 hierarchy).
    pub const ROOT_HIERARCHY_ID: usize = 47;
    /// `cgroup_root.cgrp` + [`SUBSYS_CPU`]: the cpu css of the hierarchy's root,
    /// NULL when the hierarchy has no cpu controller.
    pub const ROOT_CPU_CSS: usize = 48;
    /// Start (in `task_group`, 8-aligned) of one block that holds every
    /// `cfs_bandwidth` field the record takes ([`ABSENT`]: they are read one by one).
    pub const TG_BLOCK: usize = 49;
    /// Its length in bytes (at most [`super::BLOCK_BYTES`]).
    pub const TG_BLOCK_LEN: usize = 50;
    /// Start (in `mem_cgroup`) of the block of `memory.usage` and `memory.max`.
    pub const MEMCG_BLOCK: usize = 51;
    /// Its length.
    pub const MEMCG_BLOCK_LEN: usize = 52;
    /// Start (in `cpuacct`) of the block of its `cpuusage` and `cpustat` pointers.
    pub const CPUACCT_BLOCK: usize = 53;
    /// Its length.
    pub const CPUACCT_BLOCK_LEN: usize = 54;
    /// Start (in `kernel_cpustat`) of the block of the five `CPUSTAT_*` entries.
    pub const CPUSTAT_BLOCK: usize = 55;
    /// Its length.
    pub const CPUSTAT_BLOCK_LEN: usize = 56;
    /// Number of entries.
    pub const LEN: usize = 57;
}

/// Longest run of a kernel struct the iterator copies with one
/// `bpf_probe_read_kernel` (a buffer on its stack), instead of a read per field.
pub const BLOCK_BYTES: u64 = 256;
