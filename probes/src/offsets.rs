//! Kernel struct offsets the eBPF program needs, resolved from the running kernel's BTF.

use probes_common::off;

use crate::Strategy;
use crate::btf::{Btf, BtfError};

/// Offsets handed to the program in its `OFFSETS` global (see `probes_common::off`).
///
/// Byte offsets, except the `task_struct.throttled` flag, which is read as the byte
/// at `throttled_byte`, shifted right by `throttled_shift` and masked with
/// `throttled_mask` (this covers a bool and a bitfield alike). The program reads that
/// byte directly through the tracepoint's BTF pointer, so it lies inside the member,
/// as the verifier requires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `cfs_rq.tg`.
    pub cfs_rq_tg: u64,
    /// `task_group.css.cgroup`.
    pub tg_css_cgroup: u64,
    /// `cgroup.kn`.
    pub cgroup_kn: u64,
    /// `cgroup.root` (which hierarchy a removed cgroup belonged to).
    pub cgroup_root: u64,
    /// `kernfs_node.id`.
    pub kn_id: u64,
    /// `task_struct.sched_task_group`.
    pub task_sched_task_group: u64,
    /// `task_struct.pid`.
    pub task_pid: u64,
    /// Byte offset of the byte holding `task_struct.throttled`.
    pub throttled_byte: u64,
    /// Shift of the flag inside that byte.
    pub throttled_shift: u64,
    /// Mask of the flag after the shift.
    pub throttled_mask: u64,
    /// `throttle_cfs_rq` returns bool (whether it throttled).
    pub throttle_returns_bool: bool,
    /// `hrtimer.function`.
    pub hrtimer_function: u64,
    /// `task_group.cfs_bandwidth.period_timer`.
    pub tg_period_timer: u64,
    /// `task_group.cfs_bandwidth.slack_timer`.
    pub tg_slack_timer: u64,
    /// `task_group.parent`.
    pub tg_parent: u64,
    /// Address of `sched_cfs_period_timer` from /proc/kallsyms; 0 when unknown (then
    /// a throttle ends at the task's switch-in, run-queue wait included).
    pub period_timer_fn: u64,
    /// Address of `sched_cfs_slack_timer`; 0 when unknown.
    pub slack_timer_fn: u64,
}

/// Where kernel symbols are listed (addresses are zero without CAP_SYSLOG or with
/// kernel.kptr_restrict=2).
pub const KALLSYMS: &str = "/proc/kallsyms";

/// Addresses of the text symbols `names` in /proc/kallsyms (0 where absent or hidden).
fn kallsyms(names: &[&str]) -> Vec<u64> {
    let mut out = vec![0u64; names.len()];
    let Ok(text) = std::fs::read_to_string(KALLSYMS) else {
        return out;
    };
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        if let Some(i) = names.iter().position(|n| *n == name) {
            out[i] = u64::from_str_radix(addr, 16).unwrap_or(0);
        }
    }
    out
}

fn bytes(btf: &Btf, path: &str) -> Result<u64, BtfError> {
    let m = btf.member(path)?;
    if m.bitfield_size.is_some() || m.bit_offset % 8 != 0 {
        return Err(BtfError::Malformed(format!(
            "{path} is a bitfield where a pointer or integer was expected"
        )));
    }
    Ok(m.byte_offset())
}

impl Offsets {
    /// Resolves what `strategy` needs from `btf`; an error names the missing piece.
    pub fn resolve(btf: &Btf, strategy: Strategy) -> Result<Offsets, BtfError> {
        let mut o = Offsets {
            tg_css_cgroup: bytes(btf, "task_group.css.cgroup")?,
            cgroup_kn: bytes(btf, "cgroup.kn")?,
            cgroup_root: bytes(btf, "cgroup.root")?,
            kn_id: bytes(btf, "kernfs_node.id")?,
            ..Offsets::default()
        };
        match strategy {
            Strategy::Fentry => {
                o.cfs_rq_tg = bytes(btf, "cfs_rq.tg")?;
                o.throttle_returns_bool = btf.func_return_type("throttle_cfs_rq")? != 0;
                // Also needed by the fentry program's attach.
                btf.func_return_type("unthrottle_cfs_rq")?;
            }
            Strategy::SchedSwitch => {
                o.task_sched_task_group = bytes(btf, "task_struct.sched_task_group")?;
                o.task_pid = bytes(btf, "task_struct.pid")?;
                let t = btf.member("task_struct.throttled").map_err(|e| match e {
                    BtfError::NoMember { .. } => BtfError::Malformed(
                        "task_struct has no `throttled` flag: this kernel throttles per cfs_rq \
                         (before 6.18), use the fentry strategy"
                            .into(),
                    ),
                    e => e,
                })?;
                // A bool (or wider integer: its low byte, little-endian) or a
                // bitfield within one byte.
                let bits = t
                    .bitfield_size
                    .map(u64::from)
                    .unwrap_or(t.byte_size.saturating_mul(8))
                    .clamp(1, 8);
                o.throttled_byte = t.bit_offset / 8;
                o.throttled_shift = t.bit_offset % 8;
                o.throttled_mask = (1u64 << bits) - 1;
                // The bandwidth timer as the end of a throttle: optional, anything
                // missing falls back to the switch-in.
                let timer = (|| -> Result<[u64; 4], BtfError> {
                    Ok([
                        bytes(btf, "hrtimer.function")?,
                        bytes(btf, "task_group.cfs_bandwidth.period_timer")?,
                        bytes(btf, "task_group.cfs_bandwidth.slack_timer")?,
                        bytes(btf, "task_group.parent")?,
                    ])
                })();
                if let Ok([f, p, sl, parent]) = timer {
                    let addrs = kallsyms(&["sched_cfs_period_timer", "sched_cfs_slack_timer"]);
                    o.hrtimer_function = f;
                    o.tg_period_timer = p;
                    o.tg_slack_timer = sl;
                    o.tg_parent = parent;
                    o.period_timer_fn = addrs[0];
                    o.slack_timer_fn = addrs[1];
                }
                if o.throttled_shift + bits > 8 {
                    return Err(BtfError::Malformed(
                        "task_struct.throttled is a bitfield across a byte boundary; \
                         the probe reads one byte"
                            .into(),
                    ));
                }
            }
        }
        Ok(o)
    }

    /// The values of the program's `OFFSETS` array, indexed by `probes_common::off`.
    pub fn values(&self) -> [u64; off::LEN] {
        let mut v = [0u64; off::LEN];
        v[off::CFS_RQ_TG] = self.cfs_rq_tg;
        v[off::TG_CSS_CGROUP] = self.tg_css_cgroup;
        v[off::CGROUP_KN] = self.cgroup_kn;
        v[off::KN_ID] = self.kn_id;
        v[off::TASK_SCHED_TASK_GROUP] = self.task_sched_task_group;
        v[off::TASK_PID] = self.task_pid;
        v[off::TASK_THROTTLED_BYTE] = self.throttled_byte;
        v[off::TASK_THROTTLED_SHIFT] = self.throttled_shift;
        v[off::TASK_THROTTLED_MASK] = self.throttled_mask;
        v[off::THROTTLE_RETURNS_BOOL] = u64::from(self.throttle_returns_bool);
        v[off::HRTIMER_FUNCTION] = self.hrtimer_function;
        v[off::TG_PERIOD_TIMER] = self.tg_period_timer;
        v[off::TG_SLACK_TIMER] = self.tg_slack_timer;
        v[off::PERIOD_TIMER_FN] = self.period_timer_fn;
        v[off::SLACK_TIMER_FN] = self.slack_timer_fn;
        v[off::TG_PARENT] = self.tg_parent;
        v[off::CGROUP_ROOT] = self.cgroup_root;
        v
    }
}
