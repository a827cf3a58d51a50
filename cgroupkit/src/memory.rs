//! The memory controller: limits, protection, swap, OOM behaviour and usage stats.
//!
//! | what                | v1 (`memory` hierarchy)                      | v2                  |
//! |---------------------|----------------------------------------------|---------------------|
//! | hard limit          | memory.limit_in_bytes                        | memory.max          |
//! | throttle limit      | — ([`Error::Unsupported`])                   | memory.high         |
//! | best-effort protect | —                                            | memory.low          |
//! | hard protection     | —                                            | memory.min          |
//! | soft limit          | memory.soft_limit_in_bytes                   | — (refused, see [`Memory::soft_limit`]) |
//! | swap beyond memory  | memory.memsw.limit_in_bytes (memory + swap)  | memory.swap.max     |
//! | OOM kills the group | —                                            | memory.oom.group    |
//! | swappiness          | memory.swappiness                            | — (refused)         |
//! | OOM killer off      | memory.oom_control (`1`)                     | — (refused)         |
//! | usage / peak        | memory.usage_in_bytes / memory.max_usage_in_bytes | memory.current / memory.peak |
//! | breakdown           | memory.stat                                  | memory.stat         |
//! | events              | memory.oom_control, memory.failcnt           | memory.events       |
//!
//! Swap has one meaning here on both versions: **the swap a cgroup may use on top of
//! its memory**. v2's memory.swap.max says exactly that; v1's memsw limit counts memory
//! plus swap, so on v1 the value written is `max + swap_max` (and read back as
//! `memsw - limit`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::cgroup::{Cgroup, CgroupDir};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::{Controller, Layout, Version};
use crate::resources::Writer;

/// v2: hard limit in bytes or `max`.
pub const MEMORY_MAX: &str = "memory.max";
/// v2: throttle limit in bytes or `max`: above it the cgroup is reclaimed hard.
pub const MEMORY_HIGH: &str = "memory.high";
/// v2: best-effort protection from reclaim, bytes.
pub const MEMORY_LOW: &str = "memory.low";
/// v2: hard protection from reclaim, bytes.
pub const MEMORY_MIN: &str = "memory.min";
/// v2: swap limit in bytes or `max` (absent without swap accounting).
pub const MEMORY_SWAP_MAX: &str = "memory.swap.max";
/// v2: `1` makes the OOM killer kill the whole cgroup at once.
pub const MEMORY_OOM_GROUP: &str = "memory.oom.group";
/// v2: current usage, bytes.
pub const MEMORY_CURRENT: &str = "memory.current";
/// v2: peak usage, bytes (kernel 5.19+).
pub const MEMORY_PEAK: &str = "memory.peak";
/// v2: event counters (`low high max oom oom_kill oom_group_kill`).
pub const MEMORY_EVENTS: &str = "memory.events";
/// v1 and v2: usage breakdown, one `key value` a line.
pub const MEMORY_STAT: &str = "memory.stat";
/// v1: hard limit in bytes (`-1` to clear).
pub const LIMIT_IN_BYTES: &str = "memory.limit_in_bytes";
/// v1: memory + swap limit in bytes (absent without swap accounting).
pub const MEMSW_LIMIT_IN_BYTES: &str = "memory.memsw.limit_in_bytes";
/// v1: soft limit in bytes, reclaimed down to under global memory pressure.
pub const SOFT_LIMIT_IN_BYTES: &str = "memory.soft_limit_in_bytes";
/// v1: current usage, bytes.
pub const USAGE_IN_BYTES: &str = "memory.usage_in_bytes";
/// v1: peak usage, bytes.
pub const MAX_USAGE_IN_BYTES: &str = "memory.max_usage_in_bytes";
/// v1: `oom_kill_disable`, `under_oom`, `oom_kill` (kernel 4.13+).
pub const OOM_CONTROL: &str = "memory.oom_control";
/// v1: how many times usage hit the limit.
pub const FAILCNT: &str = "memory.failcnt";

/// Values at or above this are the kernel's "no limit": `PAGE_COUNTER_MAX` pages
/// (rounded to the page size) shown in bytes, e.g. 9223372036854771712. No real
/// limit is 4 EiB.
pub const UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// A byte limit that may be "no limit" (`max` on v2, `-1` on v1).
///
/// Parsed from `max`, a byte count, or a count with a binary suffix (`K`, `M`, `G`,
/// `T`, as 1024 powers).
///
/// # Examples
/// ```
/// use cgroupkit::Limit;
/// assert_eq!("32M".parse::<Limit>()?, Limit::Bytes(32 << 20));
/// assert_eq!("max".parse::<Limit>()?, Limit::Max);
/// assert_eq!(Limit::Bytes(4096).to_string(), "4096");
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Limit {
    /// At most this many bytes.
    Bytes(u64),
    /// No limit.
    Max,
}

impl Limit {
    /// The value of a v2 file (`max` or bytes).
    pub fn to_v2(self) -> String {
        self.to_string()
    }

    /// The value of a v1 file (`-1` or bytes).
    pub fn to_v1(self) -> String {
        match self {
            Limit::Bytes(b) => b.to_string(),
            Limit::Max => "-1".to_owned(),
        }
    }

    /// The byte count, `None` for no limit.
    pub fn bytes(self) -> Option<u64> {
        match self {
            Limit::Bytes(b) => Some(b),
            Limit::Max => None,
        }
    }

    /// Parses a limit file of either version: `max`, or bytes where values of
    /// [`UNLIMITED_THRESHOLD`] or more (the kernel's rounded "no limit") mean `Max`.
    pub fn parse_file(text: &str, path: &Path) -> Result<Limit> {
        let t = text.trim();
        if t == "max" {
            return Ok(Limit::Max);
        }
        let n: u64 = t
            .parse()
            .map_err(|_| fsutil::parse_error(path, 1, text.trim_end()))?;
        Ok(if n >= UNLIMITED_THRESHOLD {
            Limit::Max
        } else {
            Limit::Bytes(n)
        })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Bytes(b) => b.fmt(f),
            Limit::Max => f.write_str("max"),
        }
    }
}

impl FromStr for Limit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Limit> {
        let bad = || Error::InvalidResource {
            what: "byte limit",
            reason: format!("{s:?} is not `max` or a byte count such as 4096, 512K, 64M, 2G"),
        };
        let t = s.trim();
        if t == "max" {
            return Ok(Limit::Max);
        }
        let (num, shift) = match t.as_bytes().last() {
            Some(b'k' | b'K') => (&t[..t.len() - 1], 10),
            Some(b'm' | b'M') => (&t[..t.len() - 1], 20),
            Some(b'g' | b'G') => (&t[..t.len() - 1], 30),
            Some(b't' | b'T') => (&t[..t.len() - 1], 40),
            _ => (t, 0),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift).map(Limit::Bytes).ok_or_else(bad)
    }
}

/// The memory settings of a cgroup. Unset fields are left as they are.
///
/// # Examples
/// ```
/// use cgroupkit::{Limit, Memory};
/// let m = Memory::with_max(Limit::Bytes(256 << 20)).swap_max(Limit::Bytes(0));
/// assert_eq!(m.max, Some(Limit::Bytes(256 << 20)));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Memory {
    /// Hard limit: the OOM killer runs above it. v2 memory.max, v1 memory.limit_in_bytes.
    pub max: Option<Limit>,
    /// Throttle limit (v2 memory.high). v1 has none: [`Error::Unsupported`].
    pub high: Option<Limit>,
    /// Best-effort protection (v2 memory.low; `Max` protects everything). v1 has
    /// none: [`Error::Unsupported`], whose reason points to [`Memory::soft_limit`].
    pub low: Option<Limit>,
    /// Hard protection (v2 memory.min). v1 has none: [`Error::Unsupported`].
    pub min: Option<Limit>,
    /// Swap the cgroup may use on top of its memory. v2 memory.swap.max; v1
    /// memory.memsw.limit_in_bytes = memory limit + this (the memory limit is `max`
    /// from the same `Memory`, else the one set now; a finite swap limit under an
    /// unlimited memory cannot be said on v1 and is refused). Without swap
    /// accounting the file is absent: [`Error::Unsupported`].
    pub swap_max: Option<Limit>,
    /// Kill the whole cgroup on OOM (v2 memory.oom.group). v1: [`Error::Unsupported`].
    pub oom_group: Option<bool>,
    /// v1 soft limit (memory.soft_limit_in_bytes). Refused on v2
    /// ([`Error::Unsupported`]): v2 has no soft limit, and memory.low (a protection
    /// below which memory is not reclaimed, honoured hierarchically) is a different
    /// promise; set [`Memory::low`] on v2 when protection is what you mean.
    pub soft_limit: Option<Limit>,
    /// v1 memory.swappiness (0..=100): how eagerly the cgroup's anonymous memory is
    /// swapped. Refused on v2 ([`Error::Unsupported`]), which has no such file.
    pub swappiness: Option<u8>,
    /// v1 memory.oom_control: `true` stops the OOM killer in this cgroup (tasks
    /// over the limit wait instead). Refused on v2, which cannot turn it off.
    pub oom_kill_disable: Option<bool>,
}

/// v1: how eagerly the cgroup's memory is swapped, 0..=100.
pub const SWAPPINESS: &str = "memory.swappiness";
impl Memory {
    /// Only a hard limit.
    pub fn with_max(max: Limit) -> Memory {
        Memory {
            max: Some(max),
            ..Memory::default()
        }
    }

    /// Adds a swap limit (swap allowed beyond memory).
    pub fn swap_max(mut self, swap: Limit) -> Memory {
        self.swap_max = Some(swap);
        self
    }

    /// Adds a throttle limit (v2 only).
    pub fn high(mut self, high: Limit) -> Memory {
        self.high = Some(high);
        self
    }

    /// Adds best-effort protection (v2 only).
    pub fn low(mut self, low: Limit) -> Memory {
        self.low = Some(low);
        self
    }

    /// Adds hard protection (v2 only).
    pub fn min(mut self, min: Limit) -> Memory {
        self.min = Some(min);
        self
    }

    /// Sets group OOM kill (v2 only).
    pub fn oom_group(mut self, on: bool) -> Memory {
        self.oom_group = Some(on);
        self
    }

    /// Adds a soft limit (v1 only).
    pub fn soft_limit(mut self, soft: Limit) -> Memory {
        self.soft_limit = Some(soft);
        self
    }

    /// Checks what can be checked without the host, refusing what the kernel would
    /// accept but no one means: a `max` or `high` of 0 bytes (every allocation of the
    /// group would be reclaimed or OOM-killed at once; `Limit::Max` is "no limit"),
    /// and a finite `low`/`min` above a finite `max`. Zero is accepted where it means
    /// "none": `swap_max` 0 (no swap), `low`/`min` 0 (no protection), `soft_limit` 0.
    pub fn validate(&self) -> Result<()> {
        if let Some(v) = self.swappiness.filter(|v| *v > 100) {
            return Err(Error::InvalidResource {
                what: SWAPPINESS,
                reason: format!("{v} is above 100"),
            });
        }
        for (name, v) in [("memory.max", self.max), ("memory.high", self.high)] {
            if v == Some(Limit::Bytes(0)) {
                return Err(Error::InvalidResource {
                    what: name,
                    reason: "0 bytes is not a usable limit: every process of the cgroup would \
                             be OOM-killed or reclaimed at once; give a size such as 64M, or \
                             `max` for no limit"
                        .to_owned(),
                });
            }
        }
        let Some(Limit::Bytes(max)) = self.max else {
            return Ok(());
        };
        for (name, v) in [("memory.low", self.low), ("memory.min", self.min)] {
            if let Some(Limit::Bytes(b)) = v
                && b > max
            {
                return Err(Error::InvalidResource {
                    what: name,
                    reason: format!(
                        "{b} bytes of protection is above the hard limit of {max} bytes"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn unsupported(dir: &CgroupDir, what: &'static str, reason: String) -> Error {
    Error::Unsupported {
        controller: Controller::Memory,
        what,
        layout: match dir.version {
            Version::V1 => Layout::V1,
            Version::V2 => Layout::V2,
        },
        reason,
    }
}

const EINVAL: i32 = 22;

/// Applies `m` to the memory controller's directory. Everything that cannot be
/// honoured is refused before the first write.
pub(crate) fn apply(dir: &CgroupDir, m: &Memory, w: &mut Writer) -> Result<()> {
    m.validate()?;
    match dir.version {
        Version::V2 => apply_v2(dir, m, w),
        Version::V1 => apply_v1(dir, m, w),
    }
}

fn apply_v2(dir: &CgroupDir, m: &Memory, w: &mut Writer) -> Result<()> {
    if m.swappiness.is_some() || m.oom_kill_disable.is_some() {
        return Err(unsupported(
            dir,
            if m.swappiness.is_some() {
                "memory swappiness"
            } else {
                "disabling the OOM killer"
            },
            "cgroup v2 has neither memory.swappiness nor memory.oom_control".to_owned(),
        ));
    }
    if m.soft_limit.is_some() {
        return Err(unsupported(
            dir,
            "memory soft limit",
            "cgroup v2 has no soft limit; set `low` (memory.low) for protection from \
             reclaim, or `high` (memory.high) to throttle"
                .to_owned(),
        ));
    }
    if m.swap_max.is_some() && !dir.file(MEMORY_SWAP_MAX).exists() {
        return Err(unsupported(
            dir,
            "swap limit",
            format!(
                "{} does not exist: swap accounting is off (kernel without \
                 CONFIG_MEMCG_SWAP, or booted with cgroup.memory=noswap)",
                dir.file(MEMORY_SWAP_MAX).display()
            ),
        ));
    }
    // Protections and high before max, so a lowered max never sits below a
    // protection that is about to be lowered too.
    if let Some(v) = m.min {
        w.write(dir, MEMORY_MIN, v.to_v2())?;
    }
    if let Some(v) = m.low {
        w.write(dir, MEMORY_LOW, v.to_v2())?;
    }
    if let Some(v) = m.high {
        w.write(dir, MEMORY_HIGH, v.to_v2())?;
    }
    if let Some(v) = m.max {
        w.write(dir, MEMORY_MAX, v.to_v2())?;
    }
    if let Some(v) = m.swap_max {
        w.write(dir, MEMORY_SWAP_MAX, v.to_v2())?;
    }
    if let Some(g) = m.oom_group {
        w.write(dir, MEMORY_OOM_GROUP, if g { "1" } else { "0" })?;
    }
    Ok(())
}

fn apply_v1(dir: &CgroupDir, m: &Memory, w: &mut Writer) -> Result<()> {
    let v2_only = [
        (m.high.is_some(), "memory.high", "the throttle limit"),
        (m.low.is_some(), "memory.low", "best-effort protection"),
        (m.min.is_some(), "memory.min", "hard protection"),
        (m.oom_group.is_some(), "memory.oom.group", "group OOM kill"),
    ];
    if let Some((_, what, desc)) = v2_only.iter().find(|(set, ..)| *set) {
        let extra = if *what == "memory.low" {
            "; v1's nearest is the soft limit (`soft_limit`, memory.soft_limit_in_bytes)"
        } else {
            ""
        };
        return Err(unsupported(
            dir,
            what,
            format!(
                "{desc} exists only on cgroup v2; the memory controller here is on a v1 \
                 hierarchy ({}){extra}",
                dir.path.display()
            ),
        ));
    }
    let memsw = match m.swap_max {
        None => None,
        Some(swap) => Some(v1_memsw(dir, m.max, swap)?),
    };
    if let Some(v) = m.soft_limit {
        w.write(dir, SOFT_LIMIT_IN_BYTES, v.to_v1())?;
    }
    if let Some(v) = m.swappiness {
        w.write(dir, SWAPPINESS, v.to_string())?;
    }
    if let Some(off) = m.oom_kill_disable {
        w.write(dir, OOM_CONTROL, if off { "1" } else { "0" })?;
    }
    match (m.max, memsw) {
        (Some(max), None) => w.write(dir, LIMIT_IN_BYTES, max.to_v1())?,
        (None, Some(sw)) => w.write(dir, MEMSW_LIMIT_IN_BYTES, sw.to_v1())?,
        // The kernel keeps limit <= memsw after every write: raising both needs
        // memsw first, lowering both needs the limit first.
        (Some(max), Some(sw)) => match w.write(dir, LIMIT_IN_BYTES, max.to_v1()) {
            Ok(()) => w.write(dir, MEMSW_LIMIT_IN_BYTES, sw.to_v1())?,
            Err(e) if e.raw_os_error() == Some(EINVAL) => {
                w.write(dir, MEMSW_LIMIT_IN_BYTES, sw.to_v1())?;
                w.write(dir, LIMIT_IN_BYTES, max.to_v1())?;
            }
            Err(e) => return Err(e),
        },
        (None, None) => {}
    }
    Ok(())
}

/// The v1 memsw value meaning "`swap` beyond the memory limit".
fn v1_memsw(dir: &CgroupDir, max: Option<Limit>, swap: Limit) -> Result<Limit> {
    let file = dir.file(MEMSW_LIMIT_IN_BYTES);
    if !file.exists() {
        return Err(unsupported(
            dir,
            "swap limit",
            format!(
                "{} does not exist: swap accounting is off (kernel without \
                 CONFIG_MEMCG_SWAP, or booted without swapaccount=1 / with \
                 cgroup.memory=noswap)",
                file.display()
            ),
        ));
    }
    let Limit::Bytes(swap) = swap else {
        return Ok(Limit::Max);
    };
    let max = match max {
        Some(m) => m,
        None => {
            let p = dir.file(LIMIT_IN_BYTES);
            Limit::parse_file(&fsutil::read_to_string(&p)?, &p)?
        }
    };
    match max {
        Limit::Max => Err(unsupported(
            dir,
            "swap limit",
            "on cgroup v1 swap is limited as memory+swap (memory.memsw.limit_in_bytes), \
             so a finite swap limit needs a finite memory limit: set `max` too"
                .to_owned(),
        )),
        Limit::Bytes(m) => {
            m.checked_add(swap)
                .map(Limit::Bytes)
                .ok_or_else(|| Error::InvalidResource {
                    what: "swap limit",
                    reason: format!("{m} + {swap} bytes overflows"),
                })
        }
    }
}

/// Reads back the limits in force, in this module's meaning (v1 swap is
/// `memsw - limit`). Settings the layout lacks stay `None`.
pub(crate) fn read_limits(dir: &CgroupDir) -> Result<Memory> {
    let read = |name: &str| -> Result<Option<Limit>> {
        let p = dir.file(name);
        if !p.exists() {
            return Ok(None);
        }
        Limit::parse_file(&fsutil::read_to_string(&p)?, &p).map(Some)
    };
    let mut m = Memory::default();
    match dir.version {
        Version::V2 => {
            m.max = read(MEMORY_MAX)?;
            m.high = read(MEMORY_HIGH)?;
            m.low = read(MEMORY_LOW)?;
            m.min = read(MEMORY_MIN)?;
            m.swap_max = read(MEMORY_SWAP_MAX)?;
            let g = dir.file(MEMORY_OOM_GROUP);
            if g.exists() {
                m.oom_group = Some(fsutil::read_u64(&g)? != 0);
            }
        }
        Version::V1 => {
            m.max = read(LIMIT_IN_BYTES)?;
            m.soft_limit = read(SOFT_LIMIT_IN_BYTES)?;
            m.swap_max = match (m.max, read(MEMSW_LIMIT_IN_BYTES)?) {
                (_, None) => None,
                (_, Some(Limit::Max)) => Some(Limit::Max),
                (Some(Limit::Bytes(l)), Some(Limit::Bytes(sw))) => {
                    Some(Limit::Bytes(sw.saturating_sub(l)))
                }
                (_, Some(Limit::Bytes(_))) => None,
            };
        }
    }
    Ok(m)
}

/// Memory event counters: v2 memory.events; v1 memory.oom_control and memory.failcnt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MemoryEvents {
    /// v2 `low`: times reclaimed below memory.low.
    pub low: Option<u64>,
    /// v2 `high`: times throttled over memory.high.
    pub high: Option<u64>,
    /// v2 `max`: times usage was about to exceed memory.max.
    pub max: Option<u64>,
    /// v2 `oom`: times the OOM killer was considered.
    pub oom: Option<u64>,
    /// Processes OOM-killed (v2 `oom_kill`; v1 memory.oom_control `oom_kill`, 4.13+).
    pub oom_kill: Option<u64>,
    /// v2 `oom_group_kill` (5.16+): times the whole cgroup was OOM-killed.
    pub oom_group_kill: Option<u64>,
    /// v1 memory.oom_control `under_oom`: the cgroup is under OOM now.
    pub under_oom: Option<bool>,
    /// v1 memory.oom_control `oom_kill_disable`.
    pub oom_kill_disable: Option<bool>,
    /// v1 memory.failcnt: times usage hit the limit.
    pub failcnt: Option<u64>,
}

impl MemoryEvents {
    /// Parses v2's memory.events (unknown keys are skipped).
    pub fn parse_v2(text: &str, path: &Path) -> Result<MemoryEvents> {
        let mut e = MemoryEvents::default();
        for (k, v) in fsutil::parse_flat_keyed(path, text)? {
            match k {
                "low" => e.low = Some(v),
                "high" => e.high = Some(v),
                "max" => e.max = Some(v),
                "oom" => e.oom = Some(v),
                "oom_kill" => e.oom_kill = Some(v),
                "oom_group_kill" => e.oom_group_kill = Some(v),
                _ => {}
            }
        }
        Ok(e)
    }

    /// Parses v1's memory.oom_control.
    pub fn parse_v1_oom_control(text: &str, path: &Path) -> Result<MemoryEvents> {
        let mut e = MemoryEvents::default();
        for (k, v) in fsutil::parse_flat_keyed(path, text)? {
            match k {
                "oom_kill_disable" => e.oom_kill_disable = Some(v != 0),
                "under_oom" => e.under_oom = Some(v != 0),
                "oom_kill" => e.oom_kill = Some(v),
                _ => {}
            }
        }
        Ok(e)
    }
}

/// Memory usage of a cgroup: usage, peak, the memory.stat breakdown and events.
///
/// Typed fields are `None` where the kernel does not show them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MemoryStat {
    /// Usage now (v2 memory.current, v1 memory.usage_in_bytes).
    pub current_bytes: u64,
    /// Peak usage (v2 memory.peak, 5.19+; v1 memory.max_usage_in_bytes).
    pub peak_bytes: Option<u64>,
    /// Every memory.stat key as the kernel names it.
    pub stat: BTreeMap<String, u64>,
    /// Anonymous memory (v2 `anon`; v1 `rss`, which also counts swap cache).
    pub anon_bytes: Option<u64>,
    /// Page cache, tmpfs and shmem included (v2 `file`; v1 `cache`).
    pub file_bytes: Option<u64>,
    /// Kernel memory (v2 `kernel`, 5.18+).
    pub kernel_bytes: Option<u64>,
    /// Kernel stacks (v2 `kernel_stack`).
    pub kernel_stack_bytes: Option<u64>,
    /// Slab (v2 `slab`).
    pub slab_bytes: Option<u64>,
    /// Network buffers (v2 `sock`).
    pub sock_bytes: Option<u64>,
    /// tmpfs and shared memory (`shmem`, both versions).
    pub shmem_bytes: Option<u64>,
    /// Mapped page cache (v2 `file_mapped`; v1 `mapped_file`).
    pub file_mapped_bytes: Option<u64>,
    /// Dirty page cache (v2 `file_dirty`; v1 `dirty`).
    pub file_dirty_bytes: Option<u64>,
    /// Page cache under writeback (v2 `file_writeback`; v1 `writeback`).
    pub file_writeback_bytes: Option<u64>,
    /// Anonymous memory on the inactive LRU (`inactive_anon`).
    pub inactive_anon_bytes: Option<u64>,
    /// Anonymous memory on the active LRU (`active_anon`).
    pub active_anon_bytes: Option<u64>,
    /// Page cache on the inactive LRU (`inactive_file`).
    pub inactive_file_bytes: Option<u64>,
    /// Page cache on the active LRU (`active_file`).
    pub active_file_bytes: Option<u64>,
    /// Unevictable memory (`unevictable`).
    pub unevictable_bytes: Option<u64>,
    /// Page faults (`pgfault`).
    pub pgfault: Option<u64>,
    /// Major page faults (`pgmajfault`).
    pub pgmajfault: Option<u64>,
    /// v1 `rss` (anonymous and swap cache) of this cgroup alone.
    pub rss_bytes: Option<u64>,
    /// v1 `cache` of this cgroup alone.
    pub cache_bytes: Option<u64>,
    /// v1 `total_rss`: `rss` of the whole subtree.
    pub total_rss_bytes: Option<u64>,
    /// v1 `total_cache`: `cache` of the whole subtree.
    pub total_cache_bytes: Option<u64>,
    /// Event counters.
    pub events: MemoryEvents,
}

impl MemoryStat {
    /// Parses memory.stat of either version into the map and the typed fields
    /// (`version` picks the v1 or v2 key names).
    pub fn parse_stat(text: &str, path: &Path, version: Version) -> Result<MemoryStat> {
        let stat: BTreeMap<String, u64> = fsutil::parse_flat_keyed(path, text)?
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let g = |k: &str| stat.get(k).copied();
        let mut s = MemoryStat {
            shmem_bytes: g("shmem"),
            inactive_anon_bytes: g("inactive_anon"),
            active_anon_bytes: g("active_anon"),
            inactive_file_bytes: g("inactive_file"),
            active_file_bytes: g("active_file"),
            unevictable_bytes: g("unevictable"),
            pgfault: g("pgfault"),
            pgmajfault: g("pgmajfault"),
            ..MemoryStat::default()
        };
        match version {
            Version::V2 => {
                s.anon_bytes = g("anon");
                s.file_bytes = g("file");
                s.kernel_bytes = g("kernel");
                s.kernel_stack_bytes = g("kernel_stack");
                s.slab_bytes = g("slab");
                s.sock_bytes = g("sock");
                s.file_mapped_bytes = g("file_mapped");
                s.file_dirty_bytes = g("file_dirty");
                s.file_writeback_bytes = g("file_writeback");
            }
            Version::V1 => {
                s.anon_bytes = g("rss");
                s.file_bytes = g("cache");
                s.file_mapped_bytes = g("mapped_file");
                s.file_dirty_bytes = g("dirty");
                s.file_writeback_bytes = g("writeback");
                s.rss_bytes = g("rss");
                s.cache_bytes = g("cache");
                s.total_rss_bytes = g("total_rss");
                s.total_cache_bytes = g("total_cache");
            }
        }
        s.stat = stat;
        Ok(s)
    }
}

/// Picks the values of `keys` out of memory.stat text (either version) without
/// building [`MemoryStat`]'s map: what a scraper that reads a few keys of thousands
/// of cgroups needs. The same line parser as [`MemoryStat::parse_stat`]: a line that
/// is not `key <u64>` is an error; a key not shown is `None`.
///
/// # Examples
/// ```
/// let t = "anon 4096\nfile 8192\ninactive_file 100\n";
/// let [anon, file, x] =
///     cgroupkit::memory::stat_values(t, "memory.stat".as_ref(), ["anon", "file", "x"])?;
/// assert_eq!((anon, file, x), (Some(4096), Some(8192), None));
/// # Ok::<(), cgroupkit::Error>(())
/// ```
pub fn stat_values<const N: usize>(
    text: &str,
    path: &Path,
    keys: [&str; N],
) -> Result<[Option<u64>; N]> {
    let mut out = [None; N];
    // A scrape calls this for every cgroup: the usual line, `key digits` with one
    // space, is checked byte by byte and its value parsed only when wanted; anything
    // else goes through the general parser, so what is an error stays one.
    for (i, line) in text.split('\n').enumerate() {
        let b = line.as_bytes();
        let fast = match b.iter().position(|&c| c == b' ') {
            Some(sp) if sp > 0 && b.len() - sp - 1 <= 19 => {
                let (k, v) = (&b[..sp], &b[sp + 1..]);
                (!v.is_empty()
                    && v.iter().all(u8::is_ascii_digit)
                    && k.iter().all(u8::is_ascii_graphic))
                .then_some((k, v))
            }
            _ => None,
        };
        match fast {
            Some((k, v)) => {
                if let Some(at) = keys.iter().position(|want| want.as_bytes() == k) {
                    // At most 19 digits: below u64::MAX, no overflow.
                    out[at] = Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')));
                }
            }
            None => {
                // As fsutil::parse_flat_keyed reads a line (`lines()` drops a `\r`).
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.trim().is_empty() {
                    continue;
                }
                let mut it = line.split_whitespace();
                let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
                    return Err(fsutil::parse_error(path, i + 1, line));
                };
                let v: u64 = v
                    .parse()
                    .map_err(|_| fsutil::parse_error(path, i + 1, line))?;
                if let Some(at) = keys.iter().position(|&want| want == k) {
                    out[at] = Some(v);
                }
            }
        }
    }
    Ok(out)
}

/// Reads usage, memory.stat and events from the memory controller's directory.
pub(crate) fn stat(dir: &CgroupDir) -> Result<MemoryStat> {
    let p = dir.file(MEMORY_STAT);
    let mut s = MemoryStat::parse_stat(&fsutil::read_to_string(&p)?, &p, dir.version)?;
    match dir.version {
        Version::V2 => {
            s.current_bytes = fsutil::read_u64(&dir.file(MEMORY_CURRENT))?;
            s.peak_bytes = fsutil::read_u64_if_exists(&dir.file(MEMORY_PEAK))?;
            let e = dir.file(MEMORY_EVENTS);
            s.events = MemoryEvents::parse_v2(&fsutil::read_to_string(&e)?, &e)?;
        }
        Version::V1 => {
            s.current_bytes = fsutil::read_u64(&dir.file(USAGE_IN_BYTES))?;
            s.peak_bytes = Some(fsutil::read_u64(&dir.file(MAX_USAGE_IN_BYTES))?);
            let o = dir.file(OOM_CONTROL);
            s.events = MemoryEvents::parse_v1_oom_control(&fsutil::read_to_string(&o)?, &o)?;
            s.events.failcnt = Some(fsutil::read_u64(&dir.file(FAILCNT))?);
        }
    }
    Ok(s)
}

impl Cgroup {
    /// Memory usage, the memory.stat breakdown and OOM events.
    ///
    /// v2: memory.current, memory.peak, memory.stat, memory.events. v1:
    /// memory.usage_in_bytes, memory.max_usage_in_bytes, memory.stat,
    /// memory.oom_control, memory.failcnt.
    pub fn memory_stat(&self) -> Result<MemoryStat> {
        stat(self.dir_for(Controller::Memory)?)
    }

    /// The memory limits in force, read back from the kernel files [`Memory`]
    /// documents (v1 swap converted to "swap beyond memory").
    pub fn memory_limits(&self) -> Result<Memory> {
        read_limits(self.dir_for(Controller::Memory)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::garbage;

    /// stat_values' byte-level fast path gives what the general line parser gives:
    /// the same values, and the same error (line number included) for a bad line.
    #[test]
    fn stat_values_agrees_with_the_line_parser() {
        let p = Path::new("memory.stat");
        let keys = ["anon", "file", "total_rss", "big"];
        for text in [
            "anon 1\nfile 22\n",
            "anon 1\r\nfile  22\n\n  \ntotal_rss\t7\n",
            "big 18446744073709551615\n",
            "big 18446744073709551616\n",
            "anon 99999999999999999999\n",
            "anon 1\nfile x\n",
            "anon 1 2\n",
            "anon\n",
            " anon 5\n",
            "an\u{a0}on 5\n",
            "anon -1\n",
            "",
        ] {
            let slow = fsutil::parse_flat_keyed(p, text).map(|pairs| {
                let mut out = [None; 4];
                for (k, v) in pairs {
                    if let Some(i) = keys.iter().position(|&w| w == k) {
                        out[i] = Some(v);
                    }
                }
                out
            });
            let fast = stat_values(text, p, keys);
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text:?}");
        }
    }

    const STAT_V1: &str = include_str!("../tests/fixtures/memory.stat.v1");
    /// Captured in the VM lane (Debian 6.12 cloud and 6.1 kernels) after an OOM kill.
    const STAT_V2: &str = include_str!("../tests/fixtures/memory.stat.v2-6.12");
    const STAT_V2_61: &str = include_str!("../tests/fixtures/memory.stat.v2-6.1");
    const EVENTS_V2: &str = include_str!("../tests/fixtures/memory.events.v2-6.12");
    const OOM_V1: &str = include_str!("../tests/fixtures/memory.oom_control.v1");

    #[test]
    fn limit_parsing() {
        let p = Path::new("f");
        assert_eq!(Limit::parse_file("max\n", p).unwrap(), Limit::Max);
        assert_eq!(
            Limit::parse_file("9223372036854771712\n", p).unwrap(),
            Limit::Max
        );
        assert_eq!(
            Limit::parse_file("33554432\n", p).unwrap(),
            Limit::Bytes(32 << 20)
        );
        assert!(Limit::parse_file("-1\n", p).is_err());
        assert_eq!("1G".parse::<Limit>().unwrap(), Limit::Bytes(1 << 30));
        assert_eq!("512k".parse::<Limit>().unwrap(), Limit::Bytes(512 << 10));
        for bad in ["", "M", "1.5G", "-3", "99999999999T", "max2"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad:?}");
        }
        assert_eq!(Limit::Max.to_v1(), "-1");
        assert_eq!(Limit::Max.to_v2(), "max");
    }

    #[test]
    fn parses_v1_stat() {
        let s = MemoryStat::parse_stat(STAT_V1, Path::new("f"), Version::V1).unwrap();
        assert_eq!(s.rss_bytes, s.stat.get("rss").copied());
        assert_eq!(s.anon_bytes, s.rss_bytes);
        assert!(s.rss_bytes.unwrap() >= 8 << 20, "the fixture held 8 MiB");
        assert_eq!(s.cache_bytes, s.file_bytes);
        assert!(s.total_rss_bytes >= s.rss_bytes);
        assert_eq!(s.kernel_bytes, None);
        assert_eq!(
            s.stat.get("hierarchical_memory_limit"),
            Some(&(16 << 20)),
            "all keys kept"
        );
    }

    #[test]
    fn parses_v2_stat_and_events() {
        let s = MemoryStat::parse_stat(STAT_V2, Path::new("f"), Version::V2).unwrap();
        assert_eq!(s.anon_bytes, Some(208_896));
        assert_eq!(s.file_bytes, Some(0));
        assert_eq!(s.kernel_bytes, Some(372_736));
        assert_eq!(s.rss_bytes, None);
        assert!(!s.stat.contains_key("zswap"), "6.12 cloud has no zswap");
        let s = MemoryStat::parse_stat(STAT_V2_61, Path::new("f"), Version::V2).unwrap();
        assert_eq!(s.kernel_bytes, Some(323_584));
        assert_eq!(s.stat.get("zswap"), Some(&0));
        let e = MemoryEvents::parse_v2(EVENTS_V2, Path::new("f")).unwrap();
        assert_eq!((e.max, e.oom, e.oom_kill), (Some(37), Some(1), Some(1)));
        assert_eq!(e.oom_group_kill, Some(0));
        let e = MemoryEvents::parse_v1_oom_control(OOM_V1, Path::new("f")).unwrap();
        assert_eq!(
            (e.oom_kill, e.under_oom, e.oom_kill_disable),
            (Some(1), Some(false), Some(false))
        );
    }

    #[test]
    fn validate_catches_protection_above_max() {
        let mut m = Memory::with_max(Limit::Bytes(100));
        m.low = Some(Limit::Bytes(200));
        assert!(matches!(m.validate(), Err(Error::InvalidResource { .. })));
        m.low = Some(Limit::Bytes(50));
        assert!(m.validate().is_ok());
    }

    #[test]
    fn parsers_never_panic() {
        for t in garbage(&[STAT_V1, STAT_V2, STAT_V2_61, EVENTS_V2, OOM_V1, "max\n"]) {
            let p = Path::new("g");
            let _ = MemoryStat::parse_stat(&t, p, Version::V1);
            let _ = MemoryStat::parse_stat(&t, p, Version::V2);
            let _ = MemoryEvents::parse_v2(&t, p);
            let _ = MemoryEvents::parse_v1_oom_control(&t, p);
            let _ = Limit::parse_file(&t, p);
            let _ = t.parse::<Limit>();
        }
    }
}
