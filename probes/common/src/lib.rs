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
