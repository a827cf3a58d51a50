//! Kernel side of the CPU-throttling probe: per cgroup id (the kernfs id, equal to the
//! inode of the cgroup's directory) the number of throttle events, their total
//! duration and a log2 histogram of durations.
//!
//! Two strategies, chosen and attached by the loader (probes/src):
//! - `fexit/throttle_cfs_rq` + `fentry/unthrottle_cfs_rq` (kernels that throttle per
//!   cfs_rq and allow tracing programs, e.g. 6.1 and 6.12): one event per throttled
//!   cfs_rq, i.e. per CPU per period; in-flight starts keyed by the cfs_rq pointer.
//! - `tp_btf/sched_switch` (6.18+, which throttles per task): a task switched out with
//!   its `throttled` flag set starts an event, its next switch-in ends it; in-flight
//!   starts keyed by pid. `tp_btf/hrtimer_expire_entry` on the group's bandwidth timer
//!   (which unthrottles) gives the end without the run-queue wait that follows.
//!
//! Rust eBPF has no CO-RE relocations: every struct offset comes from the loader, which
//! reads it from the running kernel's BTF, through the `OFFSETS` global.
#![no_std]
#![no_main]
// atomic_xadd: the BPF target has no CAS, so core::sync::atomic offers no fetch_add;
// LLVM lowers an unused-result xadd to BPF_ATOMIC add, which every supported kernel has.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, fentry, fexit, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, FEntryContext, FExitContext},
};
use probes_common::{
    CgroupRecord, ThrottleStats, WalkEnd, counter, hist_bucket, iter_off, off, rec,
};

/// Offsets from the running kernel's BTF, written by the loader before loading (it
/// lands in .rodata, so the verifier sees constants).
#[unsafe(no_mangle)]
static OFFSETS: [u64; off::LEN] = [0; off::LEN];

/// Per-cgroup totals. Bounded (the loader may set another size); a full map counts in
/// `COUNTERS[DROPPED]`. An entry is made at a cgroup's first throttle start and deleted
/// when the cgroup is removed (`cgroup_rmdir`).
#[map]
static THROTTLE_STATS: HashMap<u64, ThrottleStats> = HashMap::with_max_entries(16384, 0);

/// The `struct cgroup_root *` of the hierarchy that serves the cpu controller, learnt at
/// throttle starts (0 until the first). cgroup ids are unique only within one hierarchy:
/// on a v1 host the memory hierarchy has its own cgroups with the same ids, so
/// `cgroup_rmdir` deletes an entry only for a cgroup of this root.
#[map]
static CPU_ROOT: Array<u64> = Array::with_max_entries(1, 0);

/// Throttles in flight: cfs_rq pointer or pid -> [start ns, cgroup id, task_group].
#[map]
static THROTTLE_STARTS: HashMap<u64, [u64; 3]> = HashMap::with_max_entries(32768, 0);

/// Slots of [`IN_FLIGHT`]: a power of two.
const IN_FLIGHT_SLOTS: u32 = 4096;

/// sched_switch strategy: how many throttles are in flight per slot of their pid
/// (`slot(pid)`), a filter in front of THROTTLE_STARTS. sched_switch ends a throttle
/// at the switch-in of every task, so without it each context switch pays a hash
/// lookup that almost always misses; with it, a switch whose slot is zero pays one load
/// (array lookups are inlined by the verifier). Updated with atomic adds; a slot is
/// nonzero exactly while a pid that hashes to it is in THROTTLE_STARTS. (The fentry
/// strategy's keys are cfs_rq pointers, which the verifier does not let us hash, and
/// it ends throttles only in unthrottle_cfs_rq, so it does without.)
#[map]
static IN_FLIGHT: Array<u64> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

/// task_group pointer -> last expiry of its bandwidth timer (sched_switch strategy).
/// LRU: old groups fall out instead of filling it.
#[map]
static UNTHROTTLE_TS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(8192, 0);

/// Per-CPU counters, indexed by `probes_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

#[inline(always)]
fn offset(i: usize) -> u64 {
    // SAFETY: OFFSETS is a static of fixed size and `i` is one of the `off::*`
    // constants below off::LEN; the volatile read keeps the compiler from folding the
    // build-time zeros, since the loader rewrites the value before the program loads.
    unsafe { core::ptr::read_volatile(OFFSETS.as_ptr().add(i)) }
}

#[inline(always)]
fn bump(which: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(which) {
        // SAFETY: a per-CPU array slot of this CPU; tracing programs of this object do
        // not nest on one CPU, so nothing else writes it concurrently.
        unsafe { *p += 1 };
    }
}

/// The IN_FLIGHT slot of a pid.
#[inline(always)]
fn slot(pid: u32) -> u32 {
    (pid ^ (pid >> 12)) & (IN_FLIGHT_SLOTS - 1)
}

/// Adds `delta` (two's complement for a decrement) to the IN_FLIGHT slot of `pid`.
#[inline(always)]
fn in_flight_add(pid: u32, delta: u64) {
    if let Some(p) = IN_FLIGHT.get_ptr_mut(slot(pid)) {
        // SAFETY: a value of IN_FLIGHT, u64-aligned; concurrent updates from other
        // CPUs go through the atomic add.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, delta) };
    }
}

/// Whether a throttle may be in flight under `pid` (false: certainly not).
#[inline(always)]
fn maybe_in_flight(pid: u32) -> bool {
    match IN_FLIGHT.get_ptr(slot(pid)) {
        // SAFETY: a value of IN_FLIGHT, u64-aligned, read once.
        Some(p) => (unsafe { core::ptr::read_volatile(p) }) != 0,
        None => true,
    }
}

/// Reads a u64 at `base + off` in kernel memory; 0 when the read faults.
#[inline(always)]
fn read_u64(base: u64, off: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((base.wrapping_add(off)) as *const u64) }.unwrap_or(0)
}

/// Reads a u32 at `base + off` in kernel memory; 0 when the read faults.
#[inline(always)]
fn read_u32(base: u64, off: u64) -> u32 {
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((base.wrapping_add(off)) as *const u32) }.unwrap_or(0)
}

/// task_group -> css.cgroup; 0 if missing.
#[inline(always)]
fn tg_cgroup(tg: u64) -> u64 {
    if tg == 0 {
        return 0;
    }
    read_u64(tg, offset(off::TG_CSS_CGROUP))
}

/// cgroup -> kn -> id; 0 if any link is missing.
#[inline(always)]
fn cgroup_id(cgrp: u64) -> u64 {
    if cgrp == 0 {
        return 0;
    }
    let kn = read_u64(cgrp, offset(off::CGROUP_KN));
    if kn == 0 {
        return 0;
    }
    read_u64(kn, offset(off::KN_ID))
}

/// Makes sure cgroup `cgid` has a stats entry (false: the map is full) and notes the
/// root of its hierarchy for `cgroup_rmdir`.
#[inline(always)]
fn stats_entry(cgid: u64, cgrp: u64) -> bool {
    if cgrp != 0 {
        let root = read_u64(cgrp, offset(off::CGROUP_ROOT));
        if let Some(p) = CPU_ROOT.get_ptr_mut(0) {
            // SAFETY: the only value of CPU_ROOT, u64-aligned; every writer stores the
            // same pointer (one cpu hierarchy), so a racing store is harmless.
            unsafe {
                if core::ptr::read_volatile(p) != root {
                    core::ptr::write_volatile(p, root);
                }
            }
        }
    }
    if THROTTLE_STATS.get_ptr(cgid).is_some() {
        return true;
    }
    // Fails if another CPU created it first (fine) or the map is full.
    let _ = THROTTLE_STATS.insert(cgid, &ZERO_STATS, BPF_NOEXIST.into());
    THROTTLE_STATS.get_ptr(cgid).is_some()
}

/// Records a throttle of task group `tg` starting under `key`; true when it made a new
/// entry (false: it replaced a start whose end was never seen, or a map was full).
///
/// The cgroup's stats entry is made here, not at the end: an end that finds no entry
/// belongs to a cgroup removed meanwhile (fentry: the last unthrottle of an empty
/// cfs_rq may come after the rmdir) and must not bring a dead id back.
#[inline(always)]
fn start(key: u64, tg: u64) -> bool {
    let cgrp = tg_cgroup(tg);
    let cgid = cgroup_id(cgrp);
    if !stats_entry(cgid, cgrp) {
        bump(counter::DROPPED);
        return false;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // A start whose end was never seen (rare: pid reuse) is replaced in place, so the
    // IN_FLIGHT count stays exact.
    if let Some(p) = THROTTLE_STARTS.get_ptr_mut(key) {
        // SAFETY: a value pointer of THROTTLE_STARTS, valid for this program run; the
        // key's start and end are serialised by the kernel (see `finish`).
        unsafe { *p = [now, cgid, tg] };
        bump(counter::STARTS);
        return false;
    }
    if THROTTLE_STARTS
        .insert(key, [now, cgid, tg], BPF_NOEXIST.into())
        .is_err()
    {
        bump(counter::DROPPED);
        false
    } else {
        bump(counter::STARTS);
        true
    }
}

/// Ends the throttle in flight under `key`, if any, accounts it to its cgroup and
/// removes its entry; false when there was none.
/// With `timer_end`, the end is the last bandwidth-timer expiry of the task's group or
/// one of its ancestors after the start, when there is one.
#[inline(always)]
fn finish(key: u64, timer_end: bool) -> bool {
    let Some(p) = THROTTLE_STARTS.get_ptr(key) else {
        return false;
    };
    // SAFETY: a value pointer of THROTTLE_STARTS, valid for this program run; a
    // concurrent delete of the same key cannot happen (one key is one cfs_rq or task,
    // whose throttle and end are serialised by the kernel).
    let [t0, cgid, tg] = unsafe { *p };
    if THROTTLE_STARTS.remove(key).is_err() {
        // Cannot happen (see above); were it to, the remover accounts for it.
        return false;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let mut end = unsafe { bpf_ktime_get_ns() };
    if timer_end {
        // The group with the limit may be an ancestor of the task's own group.
        let mut g = tg;
        let mut level = 0;
        while level < 8 && g != 0 {
            // SAFETY: a value of UNTHROTTLE_TS, a u64 read once right away.
            if let Some(ts) = unsafe { UNTHROTTLE_TS.get(g) } {
                let ts = *ts;
                if ts > t0 && ts < end {
                    end = ts;
                    break;
                }
            }
            g = read_u64(g, offset(off::TG_PARENT));
            level += 1;
        }
    }
    record(cgid, end.saturating_sub(t0));
    true
}

#[inline(always)]
fn add(p: *mut ThrottleStats, ns: u64) {
    let b = hist_bucket(ns);
    // SAFETY: `p` is a live value of THROTTLE_STATS; the fields are u64 aligned to 8;
    // updates from several CPUs go through atomic adds.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*p).events, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*p).throttled_ns, ns);
        if let Some(h) = (*p).hist.get_mut(b) {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(h, 1);
        }
    }
}

/// A zeroed value to create entries from: a pointer into .rodata (a map value for the
/// verifier) instead of 272 bytes of BPF stack.
static ZERO_STATS: ThrottleStats = ThrottleStats::ZERO;

/// Accounts a finished throttle to its cgroup. The entry was made at the start; when it
/// is gone the cgroup was removed meanwhile, and its numbers went with it.
#[inline(always)]
fn record(cgid: u64, ns: u64) {
    if let Some(p) = THROTTLE_STATS.get_ptr_mut(cgid) {
        add(p, ns);
    }
}

/// `bool throttle_cfs_rq(struct cfs_rq *cfs_rq)` returned: a throttle starts when it
/// returns true (false: runtime arrived meanwhile, nothing was throttled).
#[fexit(function = "throttle_cfs_rq")]
pub fn throttle_cfs_rq_exit(ctx: FExitContext) -> u32 {
    bump(counter::HITS);
    let cfs_rq: u64 = ctx.arg(0);
    if offset(off::THROTTLE_RETURNS_BOOL) != 0 {
        let ret: u64 = ctx.arg(1);
        if ret & 0xff == 0 {
            return 0;
        }
    }
    let tg = read_u64(cfs_rq, offset(off::CFS_RQ_TG));
    let _ = start(cfs_rq, tg);
    0
}

/// `void unthrottle_cfs_rq(struct cfs_rq *cfs_rq)`: the throttle of this cfs_rq ends.
#[fentry(function = "unthrottle_cfs_rq")]
pub fn unthrottle_cfs_rq_entry(ctx: FEntryContext) -> u32 {
    bump(counter::HITS);
    let cfs_rq: u64 = ctx.arg(0);
    if !finish(cfs_rq, false) {
        bump(counter::UNMATCHED);
    }
    0
}

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)`.
///
/// It runs on every context switch, so the common path is three loads: `prev`'s
/// throttled flag and `next`'s pid, read directly through the BTF pointers the
/// tracepoint passes (the offsets come from .rodata, frozen, so the verifier knows
/// them as constants and checks them against task_struct's BTF; a direct read is one
/// instruction where bpf_probe_read_kernel is a helper call), and the IN_FLIGHT slot of
/// that pid.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    bump(counter::HITS);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    // SAFETY: `prev` is the tracepoint's task_struct pointer and the offset that of
    // its `throttled` member (the verifier checks both); a faulting read yields 0.
    let flag = unsafe {
        core::ptr::read_volatile(prev.wrapping_add(offset(off::TASK_THROTTLED_BYTE) as usize))
    };
    if (u64::from(flag) >> (offset(off::TASK_THROTTLED_SHIFT) & 7))
        & offset(off::TASK_THROTTLED_MASK)
        != 0
    {
        let prev = prev as u64;
        let pid = read_u32(prev, offset(off::TASK_PID));
        let tg = read_u64(prev, offset(off::TASK_SCHED_TASK_GROUP));
        if start(u64::from(pid), tg) {
            in_flight_add(pid, 1);
        }
    }
    // SAFETY: as above, for `next` and task_struct.pid.
    let pid = unsafe {
        core::ptr::read_volatile(
            next.wrapping_add(offset(off::TASK_PID) as usize)
                .cast::<u32>(),
        )
    };
    // Idle (pid 0) is never throttled.
    if pid != 0 && maybe_in_flight(pid) && finish(u64::from(pid), offset(off::PERIOD_TIMER_FN) != 0)
    {
        in_flight_add(pid, u64::MAX);
    }
    0
}

/// `hrtimer_expire_entry(struct hrtimer *hrtimer, ktime_t *now)`: the CFS bandwidth
/// period (or slack) timer of a task group fires; it hands out runtime and unthrottles
/// the group's throttled cfs_rqs, so it is the end of their tasks' throttles. The time
/// is kept per task group; a throttled task's switch-in takes it as the end of its
/// throttle instead of the switch-in itself, which would add the run-queue wait.
#[btf_tracepoint(function = "hrtimer_expire_entry")]
pub fn hrtimer_expire(ctx: BtfTracePointContext) -> u32 {
    let period_fn = offset(off::PERIOD_TIMER_FN);
    if period_fn == 0 {
        return 0;
    }
    let timer: *const u8 = ctx.arg(0);
    // SAFETY: `timer` is the tracepoint's hrtimer pointer and the offset that of its
    // `function` member (checked by the verifier, as in sched_switch); it runs on
    // every timer expiry, so a direct read instead of a helper call.
    let func = unsafe {
        core::ptr::read_volatile(
            timer
                .wrapping_add(offset(off::HRTIMER_FUNCTION) as usize)
                .cast::<u64>(),
        )
    };
    let timer = timer as u64;
    let tg = if func == period_fn {
        timer.wrapping_sub(offset(off::TG_PERIOD_TIMER))
    } else if func != 0 && func == offset(off::SLACK_TIMER_FN) {
        timer.wrapping_sub(offset(off::TG_SLACK_TIMER))
    } else {
        return 0;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = UNTHROTTLE_TS.insert(tg, now, 0);
    0
}

/// `cgroup_rmdir(struct cgroup *cgrp, const char *path)`: a cgroup was removed; its
/// stats entry goes with it, if it is one of the cpu hierarchy (see [`CPU_ROOT`]).
/// Runs once per rmdir in any hierarchy, never on a hot path.
#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: BtfTracePointContext) -> u32 {
    let cgrp: u64 = ctx.arg(0);
    let Some(&cpu_root) = CPU_ROOT.get(0) else {
        return 0;
    };
    if cpu_root == 0 || read_u64(cgrp, offset(off::CGROUP_ROOT)) != cpu_root {
        return 0;
    }
    let _ = THROTTLE_STATS.remove(cgroup_id(cgrp));
    0
}

/// A program that does nothing, for `cargo xtask bench probes` only (the library never
/// loads it): attached alone to sched_switch it measures what any program there costs,
/// the tracepoint's dispatch to BPF, which is the floor under `sched_switch`'s cost.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_empty(_ctx: BtfTracePointContext) -> u32 {
    0
}

// ---------------------------------------------------------------------------------
// The cgroup iterator: `iter/cgroup`, linked by the loader to a cgroup (a hierarchy's
// root or a subtree) with the pre-order walk. For each cgroup it writes a
// CgroupRecord into CGROUP_RECORDS at the cgroup's index in the walk; at the end it
// writes one WalkEnd to the iterator's output. Keeping the records out of the output
// is what lets one read() carry any number of cgroups: a cgroup iterator has one read
// session of 8 pages (32 KB), after which read() fails with EOPNOTSUPP.
//
// Offsets come from ITER_OFFSETS (the loader fills it from the running kernel's
// BTF), so one object serves 6.1, 6.12 and 6.18. What the iterators' typed pointers
// reach (cgroup, kernfs_node, css, cgroup_root, psi_group, task_struct, css_set) is
// loaded directly ([`load`]); the controllers' structs around a css only through
// bpf_probe_read_kernel, a block of fields at a time where they lie close
// ([`read_block`]).
// ---------------------------------------------------------------------------------

/// Offsets for the iterator, indexed by `probes_common::iter_off` (frozen .rodata).
#[unsafe(no_mangle)]
static ITER_OFFSETS: [u64; iter_off::LEN] = [0; iter_off::LEN];

/// The records of the last walk, one per cgroup, at its index in the walk. The loader
/// sets its size; mmapable, so userspace reads it without a syscall per record.
#[map]
static CGROUP_RECORDS: Array<CgroupRecord> =
    Array::with_max_entries(16384, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// [session, dropped] of the walk in progress.
#[map]
static WALK_STATE: Array<[u64; 2]> = Array::with_max_entries(1, 0);

/// A per-CPU slot that locates per-CPU memory: its address on CPU n
/// (bpf_map_lookup_percpu_elem) minus its per-CPU pointer (`bpf_array.pptrs[0]`) is
/// CPU n's per-CPU offset, which turns the kernel's per-CPU pointers (cpuacct) into
/// addresses without `__per_cpu_offset` (not in kallsyms without KALLSYMS_ALL).
#[map]
static PERCPU_PROBE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// More CPUs than this are not summed (the loader refuses such a kernel for cpuacct).
const MAX_CPUS: u64 = 256;

#[inline(always)]
fn ioff(i: usize) -> u64 {
    // SAFETY: ITER_OFFSETS is a static of fixed size and `i` one of the iter_off
    // constants below LEN; volatile so the build-time zeros are not folded (the loader
    // rewrites the values before loading).
    unsafe { core::ptr::read_volatile(ITER_OFFSETS.as_ptr().add(i)) }
}

/// A pointer's value as a plain number, which the verifier lets us add offsets to
/// (it refuses arithmetic on map pointers): copied through bpf_probe_read_kernel,
/// whose output the verifier knows nothing about.
#[inline(always)]
fn launder(p: u64) -> u64 {
    let slot = p;
    // SAFETY: reads the u64 on our own stack.
    unsafe { bpf_probe_read_kernel(&slot as *const u64) }.unwrap_or(0)
}

/// Per-CPU offsets by CPU (see [`PERCPU_PROBE`]), 0 until learnt: they are fixed at
/// boot, so each is worked out once per load, not once per cgroup.
#[map]
static PERCPU_OFFSETS: Array<u64> = Array::with_max_entries(MAX_CPUS as u32, 0);

/// Loads a `T` at `base + at` straight through a kernel pointer the verifier has
/// typed from BTF: the iterators' arguments and what loads through them yield, with
/// `at` a constant of the frozen ITER_OFFSETS. The verifier checks the access
/// against the type and JITs it as one load whose fault yields 0 (PROBE_MEM), where
/// bpf_probe_read_kernel is a helper call. It refuses loads past the declared type
/// (a css pointer is a `cgroup_subsys_state`, not the controller's struct around
/// it): those stay [`read_u64`].
#[inline(always)]
fn load<T: Copy>(base: u64, at: u64) -> T {
    // SAFETY: `base` is a BTF-typed kernel pointer and `at` the offset of a member of
    // type T in it (the verifier refuses the program otherwise); a faulting load is
    // fixed up to 0 by the kernel.
    unsafe { core::ptr::read_volatile(base.wrapping_add(at) as *const T) }
}

/// A stack buffer for one block of a kernel struct (see [`read_block`]).
type Block = MaybeUninit<[u64; (probes_common::BLOCK_BYTES / 8) as usize]>;

/// Copies `len` bytes (at most BLOCK_BYTES, a constant of ITER_OFFSETS) at `src`
/// into `buf` with one helper call, for fields that can only be read with
/// bpf_probe_read_kernel; false when the read faults.
#[inline(always)]
fn read_block(src: u64, len: u64, buf: &mut Block) -> bool {
    // SAFETY: `buf` is BLOCK_BYTES of our stack and the loader keeps `len` within
    // it (the verifier checks it too); the helper checks the source address.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            buf.as_mut_ptr().cast(),
            len as u32,
            src as *const core::ffi::c_void,
        )
    };
    ret == 0
}

/// The `T` at byte `rel` of a block [`read_block`] filled.
#[inline(always)]
fn pick<T: Copy>(buf: &Block, rel: u64) -> T {
    // SAFETY: `rel` is a field's offset in the block, below the length read and
    // aligned for T (the loader starts blocks 8-aligned; the verifier checks both).
    unsafe {
        core::ptr::read_volatile(
            buf.as_ptr()
                .cast::<u8>()
                .wrapping_add(rel as usize)
                .cast::<T>(),
        )
    }
}

/// `cgroup->subsys[...]` at `slot` (an iter_off index), or 0.
#[inline(always)]
fn css_of(cgrp: u64, slot: usize) -> u64 {
    let at = ioff(slot);
    if at == iter_off::ABSENT {
        return 0;
    }
    load::<u64>(cgrp, at)
}

/// The cpu css of the nearest ancestor of `cgrp` that has one (a v2 cgroup without
/// the cpu controller shows the bandwidth counters of that ancestor in cpu.stat).
#[inline(always)]
fn ancestor_cpu_css(cgrp: u64) -> u64 {
    let mut c = cgrp;
    let mut i = 0;
    while i < 64 && c != 0 {
        let parent_css = load::<u64>(c, ioff(iter_off::CGROUP_PARENT));
        if parent_css == 0 {
            return 0;
        }
        c = load::<u64>(parent_css, ioff(iter_off::CSS_CGROUP));
        if c == 0 {
            return 0;
        }
        let css = css_of(c, iter_off::SUBSYS_CPU);
        if css != 0 {
            return css;
        }
        i += 1;
    }
    0
}

/// CPU n's per-CPU offset (see [`PERCPU_PROBE`]), learnt once per CPU.
#[inline(always)]
fn percpu_offset(cpu: u64) -> Option<u64> {
    let slot = PERCPU_OFFSETS.get_ptr_mut(cpu as u32)?;
    // SAFETY: a value of PERCPU_OFFSETS, u64-aligned; every writer stores the same
    // number, so a racing store is harmless.
    let known = unsafe { core::ptr::read_volatile(slot) };
    if known != 0 {
        return Some(known);
    }
    let map = launder(&PERCPU_PROBE as *const PerCpuArray<u64> as u64);
    let template = read_u64(map, ioff(iter_off::ARRAY_PPTRS));
    if template == 0 {
        return None;
    }
    let key = 0u32;
    // SAFETY: a lookup in our own per-CPU array with a key on the stack.
    let p = unsafe {
        aya_ebpf::helpers::generated::bpf_map_lookup_percpu_elem(
            &PERCPU_PROBE as *const PerCpuArray<u64> as *mut _,
            &key as *const u32 as *const _,
            cpu as u32,
        )
    };
    if p.is_null() {
        return None;
    }
    let off = launder(p as u64).wrapping_sub(template);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(slot, off) };
    Some(off)
}

#[inline(always)]
fn fill(r: &mut CgroupRecord, cgrp: u64) {
    let mut flags = 0u64;
    let mut buf: Block = MaybeUninit::uninit();
    let kn = load::<u64>(cgrp, ioff(iter_off::CGROUP_KN));
    r.id = if kn != 0 {
        load::<u64>(kn, ioff(iter_off::KN_ID))
    } else {
        0
    };
    r.level = u64::from(load::<u32>(cgrp, ioff(iter_off::CGROUP_LEVEL)));
    let name = if kn != 0 {
        load::<u64>(kn, ioff(iter_off::KN_NAME))
    } else {
        0
    };
    // SAFETY: `r.name` is [u64; 32] inside the map value: 256 writable bytes.
    let dest = unsafe {
        core::slice::from_raw_parts_mut(r.name.as_mut_ptr().cast::<u8>(), probes_common::NAME_BYTES)
    };
    dest[0] = 0;
    if name != 0 {
        // SAFETY: the helper checks the source address and stops at the buffer's end.
        match unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name as *const u8, dest) }
        {
            Ok(s) if s.len() + 1 >= probes_common::NAME_BYTES => flags |= rec::NAME_TRUNC,
            Ok(_) => {}
            Err(_) => {}
        }
    }
    // The hierarchy: v2 (hierarchy 0) or v1, and whether it has the cpu controller.
    let root = load::<u64>(cgrp, ioff(iter_off::CGROUP_ROOT));
    let v2 = root != 0 && load::<u32>(root, ioff(iter_off::ROOT_HIERARCHY_ID)) == 0;

    let own = css_of(cgrp, iter_off::SUBSYS_CPU);
    // Only a v2 cgroup can lack the cpu css of its hierarchy's root (on v1 every
    // cgroup has all of its hierarchy's controllers): climb only there.
    let eff = if own != 0 {
        own
    } else if v2
        && ioff(iter_off::ROOT_CPU_CSS) != iter_off::ABSENT
        && load::<u64>(root, ioff(iter_off::ROOT_CPU_CSS)) != 0
    {
        ancestor_cpu_css(cgrp)
    } else {
        0
    };
    if eff != 0 {
        let tg = eff.wrapping_sub(ioff(iter_off::TG_CSS));
        let base = ioff(iter_off::TG_BLOCK);
        let burst = ioff(iter_off::TG_NR_BURST) != iter_off::ABSENT;
        if base != iter_off::ABSENT {
            // One read for the counters and the cgroup's own quota and period (when
            // it has its own css, that is `eff`).
            if read_block(
                tg.wrapping_add(base),
                ioff(iter_off::TG_BLOCK_LEN),
                &mut buf,
            ) {
                let at = |i: usize| ioff(i).wrapping_sub(base);
                r.nr_periods = u64::from(pick::<u32>(&buf, at(iter_off::TG_NR_PERIODS)));
                r.nr_throttled = u64::from(pick::<u32>(&buf, at(iter_off::TG_NR_THROTTLED)));
                r.throttled_ns = pick::<u64>(&buf, at(iter_off::TG_THROTTLED_TIME));
                flags |= rec::CPU_EFF;
                if burst {
                    r.nr_bursts = u64::from(pick::<u32>(&buf, at(iter_off::TG_NR_BURST)));
                    r.burst_ns = pick::<u64>(&buf, at(iter_off::TG_BURST_TIME));
                    flags |= rec::BURST;
                }
                if own != 0 {
                    r.quota_ns = pick::<u64>(&buf, at(iter_off::TG_QUOTA));
                    r.period_ns = pick::<u64>(&buf, at(iter_off::TG_PERIOD));
                    r.shares = read_u64(tg, ioff(iter_off::TG_SHARES));
                    flags |= rec::CPU_OWN;
                }
            }
        } else {
            r.nr_periods = u64::from(read_u32(tg, ioff(iter_off::TG_NR_PERIODS)));
            r.nr_throttled = u64::from(read_u32(tg, ioff(iter_off::TG_NR_THROTTLED)));
            r.throttled_ns = read_u64(tg, ioff(iter_off::TG_THROTTLED_TIME));
            flags |= rec::CPU_EFF;
            if burst {
                r.nr_bursts = u64::from(read_u32(tg, ioff(iter_off::TG_NR_BURST)));
                r.burst_ns = read_u64(tg, ioff(iter_off::TG_BURST_TIME));
                flags |= rec::BURST;
            }
            if own != 0 {
                r.quota_ns = read_u64(tg, ioff(iter_off::TG_QUOTA));
                r.period_ns = read_u64(tg, ioff(iter_off::TG_PERIOD));
                r.shares = read_u64(tg, ioff(iter_off::TG_SHARES));
                flags |= rec::CPU_OWN;
            }
        }
    }

    let mem = css_of(cgrp, iter_off::SUBSYS_MEMORY);
    if mem != 0 {
        let memcg = mem.wrapping_sub(ioff(iter_off::MEMCG_CSS));
        let base = ioff(iter_off::MEMCG_BLOCK);
        if base != iter_off::ABSENT {
            if read_block(
                memcg.wrapping_add(base),
                ioff(iter_off::MEMCG_BLOCK_LEN),
                &mut buf,
            ) {
                r.mem_usage_pages =
                    pick::<u64>(&buf, ioff(iter_off::MEMCG_USAGE).wrapping_sub(base));
                r.mem_max_pages = pick::<u64>(&buf, ioff(iter_off::MEMCG_MAX).wrapping_sub(base));
            }
        } else {
            r.mem_usage_pages = read_u64(memcg, ioff(iter_off::MEMCG_USAGE));
            r.mem_max_pages = read_u64(memcg, ioff(iter_off::MEMCG_MAX));
        }
        flags |= rec::MEM;
        if ioff(iter_off::MEMCG_OOM_KILL) != iter_off::ABSENT {
            r.oom_kills = read_u64(memcg, ioff(iter_off::MEMCG_OOM_KILL));
            flags |= rec::OOM;
        }
    }

    let pids = css_of(cgrp, iter_off::SUBSYS_PIDS);
    if pids != 0 {
        let pc = pids.wrapping_sub(ioff(iter_off::PIDS_CSS));
        r.pids = read_u64(pc, ioff(iter_off::PIDS_COUNTER));
        flags |= rec::PIDS;
    }

    let acct = css_of(cgrp, iter_off::SUBSYS_CPUACCT);
    let nr_cpus = ioff(iter_off::NR_CPUS);
    if acct != 0 && nr_cpus != 0 && ioff(iter_off::ARRAY_PPTRS) != iter_off::ABSENT {
        let ca = acct.wrapping_sub(ioff(iter_off::CPUACCT_CSS));
        let base = ioff(iter_off::CPUACCT_BLOCK);
        let (usage_pcpu, stat_pcpu) = if base != iter_off::ABSENT {
            if read_block(
                ca.wrapping_add(base),
                ioff(iter_off::CPUACCT_BLOCK_LEN),
                &mut buf,
            ) {
                (
                    pick::<u64>(&buf, ioff(iter_off::CPUACCT_USAGE).wrapping_sub(base)),
                    pick::<u64>(&buf, ioff(iter_off::CPUACCT_CPUSTAT).wrapping_sub(base)),
                )
            } else {
                (0, 0)
            }
        } else {
            (
                read_u64(ca, ioff(iter_off::CPUACCT_USAGE)),
                read_u64(ca, ioff(iter_off::CPUACCT_CPUSTAT)),
            )
        };
        let (mut usage, mut user, mut system) = (0u64, 0u64, 0u64);
        let mut ok = usage_pcpu != 0 && stat_pcpu != 0;
        let stat_base = ioff(iter_off::CPUSTAT_BLOCK);
        let mut cpu = 0u64;
        while ok && cpu < MAX_CPUS && cpu < nr_cpus {
            let Some(off) = percpu_offset(cpu) else {
                ok = false;
                break;
            };
            usage = usage.wrapping_add(read_u64(usage_pcpu, off));
            let st = stat_pcpu.wrapping_add(off);
            if stat_base != iter_off::ABSENT {
                if !read_block(
                    st.wrapping_add(stat_base),
                    ioff(iter_off::CPUSTAT_BLOCK_LEN),
                    &mut buf,
                ) {
                    ok = false;
                    break;
                }
                let at = |i: usize| ioff(i).wrapping_sub(stat_base);
                user = user
                    .wrapping_add(pick::<u64>(&buf, at(iter_off::CPUSTAT_USER)))
                    .wrapping_add(pick::<u64>(&buf, at(iter_off::CPUSTAT_NICE)));
                system = system
                    .wrapping_add(pick::<u64>(&buf, at(iter_off::CPUSTAT_SYSTEM)))
                    .wrapping_add(pick::<u64>(&buf, at(iter_off::CPUSTAT_IRQ)))
                    .wrapping_add(pick::<u64>(&buf, at(iter_off::CPUSTAT_SOFTIRQ)));
            } else {
                user = user
                    .wrapping_add(read_u64(st, ioff(iter_off::CPUSTAT_USER)))
                    .wrapping_add(read_u64(st, ioff(iter_off::CPUSTAT_NICE)));
                system = system
                    .wrapping_add(read_u64(st, ioff(iter_off::CPUSTAT_SYSTEM)))
                    .wrapping_add(read_u64(st, ioff(iter_off::CPUSTAT_IRQ)))
                    .wrapping_add(read_u64(st, ioff(iter_off::CPUSTAT_SOFTIRQ)));
            }
            cpu += 1;
        }
        if ok {
            r.usage_ns = usage;
            r.user_ns = user;
            r.system_ns = system;
            flags |= rec::CPUACCT;
        }
    }

    // Pressure: the totals the pressure files print, as of the group's last
    // aggregation (every cgroup has a group while cgroup PSI is on). Only on v2:
    // PSI accounts there alone, and a v1 cgroup's group stays zero.
    let psi_at = ioff(iter_off::CGROUP_PSI);
    let total_at = ioff(iter_off::PSI_TOTAL);
    if v2 && psi_at != iter_off::ABSENT && total_at != iter_off::ABSENT {
        let g = if ioff(iter_off::CGROUP_PSI_PTR) != 0 {
            load::<u64>(cgrp, psi_at)
        } else {
            cgrp.wrapping_add(psi_at)
        };
        let en = ioff(iter_off::PSI_ENABLED);
        if g != 0 && (en == iter_off::ABSENT || load::<u8>(g, en) != 0) {
            let mut i = 0;
            while i < 6 {
                r.psi_ns[i] = load::<u64>(g, total_at.wrapping_add(8 * i as u64));
                i += 1;
            }
            flags |= rec::PSI;
        }
    }
    r.flags = flags;
}

/// `iter/cgroup`: `(struct bpf_iter_meta *meta, struct cgroup *cgroup)`; `cgroup` is
/// NULL once, after the last cgroup.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/cgroup")]
pub fn cgroup_records(ctx: *mut core::ffi::c_void) -> i32 {
    let args = ctx as *const u64;
    // SAFETY: a tracing program's context is its arguments as u64s: two here.
    let (meta, cgrp) = unsafe { (*args, *args.add(1)) };
    // SAFETY: `meta` is the trusted bpf_iter_meta pointer the iterator passes:
    // { seq_file *seq; u64 session_id; u64 seq_num; }, read directly (the verifier
    // needs `seq` to come from it as is).
    let (seq, session, seq_num) = unsafe {
        let m = meta as *const u64;
        (
            core::ptr::read_volatile(m),
            core::ptr::read_volatile(m.add(1)),
            core::ptr::read_volatile(m.add(2)),
        )
    };
    let Some(state) = WALK_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the only value of WALK_STATE; a walk runs on one CPU at a time under
    // the cgroup lock, and concurrent walks of other iterators only ever make their
    // own session current.
    let st = unsafe { &mut *state };
    if st[0] != session {
        st[0] = session;
        st[1] = 0;
    }
    if cgrp == 0 {
        let end = WalkEnd {
            session,
            slots: seq_num,
            dropped: st[1],
        };
        // SAFETY: `seq` is the iterator's seq_file; `end` lives on our stack.
        unsafe {
            aya_ebpf::helpers::generated::bpf_seq_write(
                seq as *mut _,
                &end as *const WalkEnd as *const _,
                core::mem::size_of::<WalkEnd>() as u32,
            );
        }
        return 0;
    }
    let Some(slot) = CGROUP_RECORDS.get_ptr_mut(seq_num as u32) else {
        st[1] += 1;
        return 0;
    };
    // SAFETY: a value of CGROUP_RECORDS; only this walk writes it now (the loader
    // runs one walk at a time per map).
    let r = unsafe { &mut *slot };
    fill(r, cgrp);
    r.session = session;
    0
}

/// The cgroup id of `cgrp` (`cgroup->kn->id`), 0 for none.
#[inline(always)]
fn kn_id(cgrp: u64) -> u64 {
    if cgrp == 0 {
        return 0;
    }
    let kn = load::<u64>(cgrp, ioff(iter_off::CGROUP_KN));
    if kn == 0 {
        0
    } else {
        load::<u64>(kn, ioff(iter_off::KN_ID))
    }
}

/// The id of the cgroup of css_set `cset` for the controller whose slot in
/// `cgroup.subsys` is at `slot` (an iter_off index), or 0.
#[inline(always)]
fn cset_cgroup_id(cset: u64, slot: usize) -> u64 {
    let at = ioff(slot);
    if at == iter_off::ABSENT {
        return 0;
    }
    let i = at.wrapping_sub(ioff(iter_off::CGROUP_SUBSYS));
    let css = load::<u64>(cset, ioff(iter_off::CSET_SUBSYS).wrapping_add(i));
    if css == 0 {
        return 0;
    }
    kn_id(load::<u64>(css, ioff(iter_off::CSS_CGROUP)))
}

/// `iter/task`: `(struct bpf_iter_meta *meta, struct task_struct *task)`, every
/// task (thread) visible in the reader's pid namespace, then NULL once. Writes a
/// TaskRecord for each one not exiting. Every field is a direct load ([`load`]):
/// task_struct, css_set, cgroup_subsys_state, cgroup and kernfs_node.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn task_cgroups(ctx: *mut core::ffi::c_void) -> i32 {
    let args = ctx as *const u64;
    // SAFETY: a tracing program's context is its arguments as u64s: two here.
    let (meta, task) = unsafe { (*args, *args.add(1)) };
    if task == 0 || ioff(iter_off::TASK_CGROUPS) == iter_off::ABSENT {
        return 0;
    }
    // SAFETY: `meta` is the trusted bpf_iter_meta pointer; its first field is the
    // seq_file (read as is, as the verifier wants).
    let seq = unsafe { core::ptr::read_volatile(meta as *const u64) };
    // Past cgroup_exit: no longer on its cgroups' lists, as cgroup.procs sees it.
    if u64::from(load::<u32>(task, ioff(iter_off::TASK_FLAGS))) & probes_common::PF_EXITING != 0 {
        return 0;
    }
    let cset = load::<u64>(task, ioff(iter_off::TASK_CGROUPS));
    if cset == 0 {
        return 0;
    }
    let r = probes_common::TaskRecord {
        tgid: u64::from(load::<u32>(task, ioff(iter_off::TASK_TGID))),
        ids: [
            kn_id(load::<u64>(cset, ioff(iter_off::CSET_DFL_CGRP))),
            cset_cgroup_id(cset, iter_off::SUBSYS_CPU),
            cset_cgroup_id(cset, iter_off::SUBSYS_MEMORY),
            cset_cgroup_id(cset, iter_off::SUBSYS_PIDS),
        ],
    };
    // SAFETY: `seq` is the iterator's seq_file; `r` lives on our stack.
    unsafe {
        aya_ebpf::helpers::generated::bpf_seq_write(
            seq as *mut _,
            &r as *const probes_common::TaskRecord as *const _,
            core::mem::size_of::<probes_common::TaskRecord>() as u32,
        );
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The licence the kernel checks before allowing GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
