//! The cpu controller: CFS bandwidth (quota per period) and CPU usage/throttling stats.
//!
//! | what              | v1 (`cpu`, `cpuacct` hierarchies)         | v2                   |
//! |-------------------|-------------------------------------------|----------------------|
//! | bandwidth         | cpu.cfs_quota_us + cpu.cfs_period_us      | cpu.max `QUOTA PERIOD` |
//! | throttling stats  | cpu.stat (`throttled_time` in ns)         | cpu.stat (`throttled_usec`) |
//! | usage             | cpuacct.usage, cpuacct.usage_{user,sys} (ns) | cpu.stat `usage_usec` ... |

use std::fmt;
use std::path::Path;

use crate::cgroup::CgroupDir;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::Version;
use crate::resources::Writer;

/// v1: microseconds of CPU time per period the cgroup may use; -1 for no limit.
pub const CFS_QUOTA_US: &str = "cpu.cfs_quota_us";
/// v1: the period of the quota, microseconds.
pub const CFS_PERIOD_US: &str = "cpu.cfs_period_us";
/// v2: `QUOTA PERIOD` in microseconds, `max` for no limit.
pub const CPU_MAX: &str = "cpu.max";
/// Throttling statistics (v1 and v2), and usage on v2.
pub const CPU_STAT: &str = "cpu.stat";
/// v1 cpuacct: total CPU time, nanoseconds.
pub const CPUACCT_USAGE: &str = "cpuacct.usage";
/// v1 cpuacct: user CPU time, nanoseconds (kernel 4.7+).
pub const CPUACCT_USAGE_USER: &str = "cpuacct.usage_user";
/// v1 cpuacct: system CPU time, nanoseconds (kernel 4.7+).
pub const CPUACCT_USAGE_SYS: &str = "cpuacct.usage_sys";
/// v1 cpuacct: user and system CPU time per CPU, nanoseconds (kernel 4.7+); one file
/// for what cpuacct.usage_user and cpuacct.usage_sys hold.
pub const CPUACCT_USAGE_ALL: &str = "cpuacct.usage_all";

/// The totals of a cpuacct.usage_all file (`cpu user system` and a line per CPU):
/// user and system nanoseconds summed over the CPUs, which is what
/// cpuacct.usage_user and cpuacct.usage_sys show. (Their sum is not cpuacct.usage:
/// the kernel keeps usage from the scheduler's runtime and user/system from tick-based
/// CPU time accounting.)
pub fn parse_cpuacct_usage_all(text: &str, path: &Path) -> Result<(u64, u64)> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.split_whitespace().eq(["cpu", "user", "system"]) => {}
        other => {
            return Err(fsutil::parse_error(path, 1, other.map_or("", |(_, l)| l)));
        }
    }
    let (mut user, mut system) = (0u64, 0u64);
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(u), Some(s)) = (
            f.get(1).and_then(|v| v.parse::<u64>().ok()),
            f.get(2).and_then(|v| v.parse::<u64>().ok()),
        ) else {
            return Err(fsutil::parse_error(path, i + 1, line));
        };
        if f.len() != 3 || f[0].parse::<u32>().is_err() {
            return Err(fsutil::parse_error(path, i + 1, line));
        }
        user = user.saturating_add(u);
        system = system.saturating_add(s);
    }
    Ok((user, system))
}

/// The shortest period the kernel accepts (1 ms).
pub const MIN_PERIOD_USEC: u64 = 1_000;
/// The longest period the kernel accepts (1 s).
pub const MAX_PERIOD_USEC: u64 = 1_000_000;
/// The smallest quota the kernel accepts (1 ms).
pub const MIN_QUOTA_USEC: u64 = 1_000;
/// The largest quota the kernel accepts (`MAX_BW` = 2^44 - 1 us).
pub const MAX_QUOTA_USEC: u64 = (1 << 44) - 1;
/// The period used unless one is given (100 ms, the kernel's default).
pub const DEFAULT_PERIOD_USEC: u64 = 100_000;

/// A CFS bandwidth limit: at most `quota` microseconds of CPU time every `period`.
///
/// `quota / period` is the number of CPUs: 20000/100000 is 20% of one CPU.
///
/// # Examples
/// ```
/// use cgroupkit::CpuQuota;
/// let q = CpuQuota::from_cpus(0.2, 100_000)?;
/// assert_eq!((q.quota_usec(), q.period_usec()), (Some(20_000), 100_000));
/// assert_eq!(q.to_v2(), "20000 100000");
/// assert!(CpuQuota::from_cpus(0.0, 100_000).is_err());
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CpuQuota {
    quota_usec: Option<u64>,
    period_usec: u64,
}

impl CpuQuota {
    /// A quota of `quota_usec` every `period_usec`, checked against the kernel's ranges.
    pub fn new(quota_usec: u64, period_usec: u64) -> Result<CpuQuota> {
        check_period(period_usec)?;
        if !(MIN_QUOTA_USEC..=MAX_QUOTA_USEC).contains(&quota_usec) {
            return Err(Error::InvalidResource {
                what: "cpu quota",
                reason: format!(
                    "{quota_usec} us per {period_usec} us period is outside the kernel's range \
                     ({MIN_QUOTA_USEC} us to {MAX_QUOTA_USEC} us); use a larger value or a longer period"
                ),
            });
        }
        Ok(CpuQuota {
            quota_usec: Some(quota_usec),
            period_usec,
        })
    }

    /// No bandwidth limit (`max`, or -1 on v1), with the given period.
    pub fn unlimited(period_usec: u64) -> Result<CpuQuota> {
        check_period(period_usec)?;
        Ok(CpuQuota {
            quota_usec: None,
            period_usec,
        })
    }

    /// `cpus` CPUs' worth of time per period: 0.2 is 20% of one CPU, 1.5 one and a half.
    pub fn from_cpus(cpus: f64, period_usec: u64) -> Result<CpuQuota> {
        if !cpus.is_finite() || cpus <= 0.0 {
            return Err(Error::InvalidResource {
                what: "cpu limit",
                reason: format!(
                    "{cpus} is not a positive number of CPUs (0.2 means 20% of one CPU)"
                ),
            });
        }
        check_period(period_usec)?;
        let quota = (cpus * period_usec as f64).round();
        if quota < MIN_QUOTA_USEC as f64 {
            return Err(Error::InvalidResource {
                what: "cpu limit",
                reason: format!(
                    "{cpus} CPUs over a {period_usec} us period is a quota of {quota} us, below the \
                     kernel's minimum of {MIN_QUOTA_USEC} us; use a larger limit or a longer period"
                ),
            });
        }
        if quota > MAX_QUOTA_USEC as f64 {
            return Err(Error::InvalidResource {
                what: "cpu limit",
                reason: format!("{cpus} CPUs is above the kernel's maximum quota"),
            });
        }
        CpuQuota::new(quota as u64, period_usec)
    }

    /// The quota in microseconds; `None` means unlimited.
    pub fn quota_usec(&self) -> Option<u64> {
        self.quota_usec
    }

    /// The period in microseconds.
    pub fn period_usec(&self) -> u64 {
        self.period_usec
    }

    /// The limit in CPUs (`None` when unlimited).
    pub fn cpus(&self) -> Option<f64> {
        self.quota_usec.map(|q| q as f64 / self.period_usec as f64)
    }

    /// The value of v2's cpu.max.
    pub fn to_v2(&self) -> String {
        match self.quota_usec {
            Some(q) => format!("{q} {}", self.period_usec),
            None => format!("max {}", self.period_usec),
        }
    }

    /// The value of v1's cpu.cfs_quota_us.
    pub fn v1_quota(&self) -> String {
        match self.quota_usec {
            Some(q) => q.to_string(),
            None => "-1".to_owned(),
        }
    }

    /// Parses v2's cpu.max.
    pub fn parse_v2(text: &str, path: &Path) -> Result<CpuQuota> {
        let bad = || fsutil::parse_error(path, 1, text.trim_end());
        let mut it = text.split_whitespace();
        let (Some(q), Some(p), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        let period_usec: u64 = p.parse().map_err(|_| bad())?;
        let quota_usec = match q {
            "max" => None,
            q => Some(q.parse().map_err(|_| bad())?),
        };
        Ok(CpuQuota {
            quota_usec,
            period_usec,
        })
    }

    /// Parses v1's cpu.cfs_quota_us and cpu.cfs_period_us.
    pub fn parse_v1(quota: &str, period: &str, path: &Path) -> Result<CpuQuota> {
        let period_usec: u64 = period
            .trim()
            .parse()
            .map_err(|_| fsutil::parse_error(path, 1, period.trim_end()))?;
        let q: i64 = quota
            .trim()
            .parse()
            .map_err(|_| fsutil::parse_error(path, 1, quota.trim_end()))?;
        Ok(CpuQuota {
            quota_usec: u64::try_from(q).ok(),
            period_usec,
        })
    }
}

impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cpus() {
            Some(c) => write!(
                f,
                "{c} CPUs ({} us per {} us)",
                self.quota_usec.unwrap_or(0),
                self.period_usec
            ),
            None => write!(f, "unlimited (period {} us)", self.period_usec),
        }
    }
}

fn check_period(period_usec: u64) -> Result<()> {
    if !(MIN_PERIOD_USEC..=MAX_PERIOD_USEC).contains(&period_usec) {
        return Err(Error::InvalidResource {
            what: "cpu period",
            reason: format!(
                "{period_usec} us is outside the kernel's range ({MIN_PERIOD_USEC} us to {MAX_PERIOD_USEC} us)"
            ),
        });
    }
    Ok(())
}

/// v1: relative CPU weight, 2..=262144 (default 1024).
pub const CPU_SHARES: &str = "cpu.shares";
/// v2: relative CPU weight, 1..=10000 (default 100).
pub const CPU_WEIGHT: &str = "cpu.weight";
/// v2: burst allowance on top of the quota, microseconds (5.14+).
pub const CPU_MAX_BURST: &str = "cpu.max.burst";
/// v1: burst allowance, microseconds (5.14+).
pub const CFS_BURST_US: &str = "cpu.cfs_burst_us";
/// v1 and v2: SCHED_IDLE for the whole group, 0 or 1 (5.15+).
pub const CPU_IDLE: &str = "cpu.idle";

/// The smallest v1 share value.
pub const MIN_SHARES: u64 = 2;
/// The largest v1 share value.
pub const MAX_SHARES: u64 = 262_144;
/// The smallest v2 weight.
pub const MIN_WEIGHT: u64 = 1;
/// The largest v2 weight.
pub const MAX_WEIGHT: u64 = 10_000;

/// A relative CPU weight, given in either version's unit and converted for the other.
///
/// The conversion is the log-scale one of runc 1.3+ and crun 1.23+, which maps the
/// defaults onto each other (1024 shares = weight 100) and the ends of the ranges
/// (2 -> 1, 262144 -> 10000); the older linear formula mapped 1024 shares to 39.
///
/// # Examples
/// ```
/// use cgroupkit::cpu::CpuWeight;
/// assert_eq!(CpuWeight::shares(1024)?.as_weight(), 100);
/// assert_eq!(CpuWeight::weight(100)?.as_shares(), 1024);
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CpuWeight {
    /// v2 units, 1..=10000.
    Weight(u64),
    /// v1 units, 2..=262144.
    Shares(u64),
}

impl CpuWeight {
    /// A v2 weight, checked against 1..=10000.
    pub fn weight(w: u64) -> Result<CpuWeight> {
        if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&w) {
            return Err(Error::InvalidResource {
                what: "cpu weight",
                reason: format!("{w} is outside {MIN_WEIGHT}..={MAX_WEIGHT} (default 100)"),
            });
        }
        Ok(CpuWeight::Weight(w))
    }

    /// v1 shares, checked against 2..=262144.
    pub fn shares(s: u64) -> Result<CpuWeight> {
        if !(MIN_SHARES..=MAX_SHARES).contains(&s) {
            return Err(Error::InvalidResource {
                what: "cpu shares",
                reason: format!("{s} is outside {MIN_SHARES}..={MAX_SHARES} (default 1024)"),
            });
        }
        Ok(CpuWeight::Shares(s))
    }

    /// The value in v2 units.
    pub fn as_weight(self) -> u64 {
        match self {
            CpuWeight::Weight(w) => w,
            CpuWeight::Shares(s) => shares_to_weight(s),
        }
    }

    /// The value in v1 units.
    pub fn as_shares(self) -> u64 {
        match self {
            CpuWeight::Shares(s) => s,
            CpuWeight::Weight(w) => weight_to_shares(w),
        }
    }
}

/// runc 1.3+ / crun 1.23+: `10^((l^2 + 125 l) / 612 - 7/34)` with `l = log2(shares)`.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares <= MIN_SHARES {
        return MIN_WEIGHT;
    }
    if shares >= MAX_SHARES {
        return MAX_WEIGHT;
    }
    let l = (shares as f64).log2();
    let exp = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exp).ceil() as u64).clamp(MIN_WEIGHT, MAX_WEIGHT)
}

/// The inverse of [`shares_to_weight`] (solving the quadratic for `l`).
pub fn weight_to_shares(weight: u64) -> u64 {
    if weight <= MIN_WEIGHT {
        return MIN_SHARES;
    }
    if weight >= MAX_WEIGHT {
        return MAX_SHARES;
    }
    let c = 612.0 * ((weight as f64).log10() + 7.0 / 34.0);
    let l = (-125.0 + (125.0f64 * 125.0 + 4.0 * c).sqrt()) / 2.0;
    (2f64.powf(l).round() as u64).clamp(MIN_SHARES, MAX_SHARES)
}

/// The cpu settings of a cgroup. Unset fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Cpu {
    /// CFS bandwidth limit (cpu.max / cpu.cfs_quota_us + cpu.cfs_period_us).
    pub quota: Option<CpuQuota>,
    /// Relative weight (cpu.weight / cpu.shares).
    pub weight: Option<CpuWeight>,
    /// Burst allowance above the quota, microseconds; at most the quota
    /// (cpu.max.burst / cpu.cfs_burst_us, kernel 5.14+).
    pub burst_usec: Option<u64>,
    /// SCHED_IDLE for the whole group (cpu.idle, kernel 5.15+).
    pub idle: Option<bool>,
    /// Real-time bandwidth, v1 only (cpu.rt_period_us and cpu.rt_runtime_us, with
    /// CONFIG_RT_GROUP_SCHED): (runtime, period) in microseconds; runtime -1 is
    /// no limit. The kernel refuses a runtime its parent cannot give. cgroup v2 has
    /// no such files ([`Error::Unsupported`]).
    pub realtime: Option<(i64, u64)>,
}

/// v1: real-time runtime per period, microseconds (-1: no limit).
pub const RT_RUNTIME_US: &str = "cpu.rt_runtime_us";
/// v1: real-time period, microseconds.
pub const RT_PERIOD_US: &str = "cpu.rt_period_us";

impl Cpu {
    /// Only a bandwidth limit.
    pub fn with_quota(quota: CpuQuota) -> Cpu {
        Cpu {
            quota: Some(quota),
            ..Cpu::default()
        }
    }
}

/// CPU usage and throttling of a cgroup, from cpu.stat (and cpuacct on v1).
///
/// Times are microseconds, as v2 reports them (v1's nanoseconds are converted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CpuStat {
    /// Total CPU time; `None` where no accounting is available (v1 without cpuacct).
    pub usage_usec: Option<u64>,
    /// User CPU time.
    pub user_usec: Option<u64>,
    /// System CPU time.
    pub system_usec: Option<u64>,
    /// Enforcement periods that elapsed with the cgroup runnable (`nr_periods`).
    pub nr_periods: u64,
    /// Periods in which the cgroup was throttled (`nr_throttled`).
    pub nr_throttled: u64,
    /// Total time throttled (`throttled_usec`, v1 `throttled_time`).
    pub throttled_usec: u64,
    /// Periods in which burst was used (`nr_bursts`, kernel 5.14+).
    pub nr_bursts: Option<u64>,
    /// Total burst time used (`burst_usec`, v1 `burst_time`).
    pub burst_usec: Option<u64>,
}

impl CpuStat {
    /// Parses v2's cpu.stat. Fields the kernel does not show (throttling fields when
    /// the cpu controller is not enabled for the cgroup) stay at 0 / `None`.
    pub fn parse_v2(text: &str, path: &Path) -> Result<CpuStat> {
        let mut s = CpuStat::default();
        for (k, v) in fsutil::parse_flat_keyed(path, text)? {
            match k {
                "usage_usec" => s.usage_usec = Some(v),
                "user_usec" => s.user_usec = Some(v),
                "system_usec" => s.system_usec = Some(v),
                "nr_periods" => s.nr_periods = v,
                "nr_throttled" => s.nr_throttled = v,
                "throttled_usec" => s.throttled_usec = v,
                "nr_bursts" => s.nr_bursts = Some(v),
                "burst_usec" => s.burst_usec = Some(v),
                _ => {}
            }
        }
        Ok(s)
    }

    /// Parses v1's cpu.stat (times in nanoseconds). Usage comes from cpuacct, see
    /// [`CpuStat::set_v1_usage`].
    pub fn parse_v1(text: &str, path: &Path) -> Result<CpuStat> {
        let mut s = CpuStat::default();
        for (k, v) in fsutil::parse_flat_keyed(path, text)? {
            match k {
                "nr_periods" => s.nr_periods = v,
                "nr_throttled" => s.nr_throttled = v,
                "throttled_time" => s.throttled_usec = v / 1000,
                "nr_bursts" => s.nr_bursts = Some(v),
                "burst_time" => s.burst_usec = Some(v / 1000),
                _ => {}
            }
        }
        Ok(s)
    }

    /// Fills usage from v1 cpuacct values in nanoseconds.
    pub fn set_v1_usage(&mut self, usage_ns: u64, user_ns: Option<u64>, sys_ns: Option<u64>) {
        self.usage_usec = Some(usage_ns / 1000);
        self.user_usec = user_ns.map(|n| n / 1000);
        self.system_usec = sys_ns.map(|n| n / 1000);
    }
}

const EINVAL: i32 = 22;

/// What can be checked without the host: a burst no larger than the quota.
pub(crate) fn validate(cpu: &Cpu) -> Result<()> {
    if let (Some(b), Some(q)) = (cpu.burst_usec, cpu.quota.and_then(|q| q.quota_usec()))
        && b > q
    {
        return Err(Error::InvalidResource {
            what: "cpu burst",
            reason: format!(
                "{b} us is more than the quota of {q} us; the kernel allows at most the quota"
            ),
        });
    }
    Ok(())
}

/// Applies `cpu` to the directory of the hierarchy serving the cpu controller.
pub(crate) fn apply(dir: &CgroupDir, cpu: &Cpu, w: &mut Writer) -> Result<()> {
    validate(cpu)?;
    // Files older kernels lack are looked for before the first write, so that a
    // refused burst or idle leaves the quota and weight as they were.
    let burst_file = match dir.version {
        Version::V2 => CPU_MAX_BURST,
        Version::V1 => CFS_BURST_US,
    };
    for (set, file, what, why) in [
        (
            cpu.burst_usec.is_some(),
            burst_file,
            "burst",
            "CPU burst needs kernel 5.14+",
        ),
        (
            cpu.idle.is_some(),
            CPU_IDLE,
            "idle",
            "cpu.idle needs kernel 5.15+",
        ),
        (
            cpu.realtime.is_some(),
            RT_RUNTIME_US,
            "realtime",
            "real-time group scheduling is cgroup v1 only, and needs a kernel with \
             CONFIG_RT_GROUP_SCHED",
        ),
    ] {
        if set {
            require(dir, file, what, why)?;
        }
    }
    if let Some(weight) = cpu.weight {
        let (file, value) = match dir.version {
            Version::V2 => (CPU_WEIGHT, weight.as_weight()),
            Version::V1 => (CPU_SHARES, weight.as_shares()),
        };
        write_optional(dir, w, file, value.to_string(), "weight", "")?;
    }
    if let Some(q) = &cpu.quota {
        apply_quota(dir, q, w)?;
    }
    if let Some(b) = cpu.burst_usec {
        write_optional(
            dir,
            w,
            burst_file,
            b.to_string(),
            "burst",
            "CPU burst needs kernel 5.14+",
        )?;
    }
    if let Some((runtime, period)) = cpu.realtime {
        let why = "real-time group scheduling is cgroup v1 only, and needs a kernel \
                   with CONFIG_RT_GROUP_SCHED";
        write_optional(dir, w, RT_PERIOD_US, period.to_string(), "realtime", why)?;
        write_optional(dir, w, RT_RUNTIME_US, runtime.to_string(), "realtime", why)?;
    }
    if let Some(idle) = cpu.idle {
        let v = if idle { "1" } else { "0" };
        write_optional(
            dir,
            w,
            CPU_IDLE,
            v.into(),
            "idle",
            "cpu.idle needs kernel 5.15+",
        )?;
    }
    Ok(())
}

/// Writes a file that older kernels lack; its absence is [`Error::Unsupported`].
fn write_optional(
    dir: &CgroupDir,
    w: &mut Writer,
    file: &str,
    value: String,
    what: &'static str,
    why: &str,
) -> Result<()> {
    require(dir, file, what, why)?;
    w.write(dir, file, value)
}

/// [`Error::Unsupported`] unless `file` exists in `dir`.
fn require(dir: &CgroupDir, file: &str, what: &'static str, why: &str) -> Result<()> {
    if !dir.file(file).exists() {
        return Err(Error::Unsupported {
            controller: crate::Controller::Cpu,
            what,
            layout: match dir.version {
                Version::V1 => crate::Layout::V1,
                Version::V2 => crate::Layout::V2,
            },
            reason: format!("{} does not exist. {why}", dir.file(file).display()),
        });
    }
    Ok(())
}

fn apply_quota(dir: &CgroupDir, q: &CpuQuota, w: &mut Writer) -> Result<()> {
    match dir.version {
        Version::V2 => w.write(dir, CPU_MAX, q.to_v2()),
        Version::V1 => {
            // The kernel checks quota/period against the parent's bandwidth after
            // each write; one order can fail where the other succeeds.
            match w.write(dir, CFS_PERIOD_US, q.period_usec().to_string()) {
                Ok(()) => w.write(dir, CFS_QUOTA_US, q.v1_quota()),
                Err(e) if e.raw_os_error() == Some(EINVAL) => {
                    w.write(dir, CFS_QUOTA_US, q.v1_quota())?;
                    w.write(dir, CFS_PERIOD_US, q.period_usec().to_string())
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Reads the bandwidth limit.
pub(crate) fn read_quota(dir: &CgroupDir) -> Result<CpuQuota> {
    match dir.version {
        Version::V2 => {
            let p = dir.file(CPU_MAX);
            CpuQuota::parse_v2(&fsutil::read_to_string(&p)?, &p)
        }
        Version::V1 => {
            let qp = dir.file(CFS_QUOTA_US);
            let q = fsutil::read_to_string(&qp)?;
            let p = fsutil::read_to_string(&dir.file(CFS_PERIOD_US))?;
            CpuQuota::parse_v1(&q, &p, &qp)
        }
    }
}

/// Reads cpu.stat, and on v1 the cpuacct usage files from `cpuacct_dir` if given.
pub(crate) fn stat(dir: &CgroupDir, cpuacct_dir: Option<&Path>) -> Result<CpuStat> {
    let path = dir.file(CPU_STAT);
    let text = fsutil::read_to_string(&path)?;
    match dir.version {
        Version::V2 => CpuStat::parse_v2(&text, &path),
        Version::V1 => {
            let mut s = CpuStat::parse_v1(&text, &path)?;
            if let Some(acct) = cpuacct_dir {
                let usage = fsutil::read_u64(&acct.join(CPUACCT_USAGE))?;
                // One read for user and system where the kernel has usage_all.
                let all = acct.join(CPUACCT_USAGE_ALL);
                let (user, system) = match fsutil::read_to_string(&all) {
                    Ok(t) => {
                        let (u, s) = parse_cpuacct_usage_all(&t, &all)?;
                        (Some(u), Some(s))
                    }
                    Err(_) => (
                        fsutil::read_u64(&acct.join(CPUACCT_USAGE_USER)).ok(),
                        fsutil::read_u64(&acct.join(CPUACCT_USAGE_SYS)).ok(),
                    ),
                };
                s.set_v1_usage(usage, user, system);
            }
            Ok(s)
        }
    }
}

/// Reads back the settings [`apply`] writes; files this kernel lacks stay `None`.
pub(crate) fn read_settings(dir: &CgroupDir) -> Result<Cpu> {
    let opt = |file: &str| -> Result<Option<u64>> {
        let p = dir.file(file);
        if p.exists() {
            // cpu.max.burst and cpu.cfs_burst_us hold a plain number of us.
            fsutil::read_u64(&p).map(Some)
        } else {
            Ok(None)
        }
    };
    let (weight, burst) = match dir.version {
        Version::V2 => (opt(CPU_WEIGHT)?.map(CpuWeight::Weight), opt(CPU_MAX_BURST)?),
        Version::V1 => (opt(CPU_SHARES)?.map(CpuWeight::Shares), opt(CFS_BURST_US)?),
    };
    let quota = match dir.version {
        Version::V2 if !dir.file(CPU_MAX).exists() => None,
        _ => Some(read_quota(dir)?),
    };
    Ok(Cpu {
        quota,
        weight,
        burst_usec: burst,
        idle: opt(CPU_IDLE)?.map(|v| v != 0),
        realtime: match (
            std::fs::read_to_string(dir.file(RT_RUNTIME_US)),
            opt(RT_PERIOD_US)?,
        ) {
            (Ok(rt), Some(p)) => rt.trim().parse().ok().map(|rt: i64| (rt, p)),
            _ => None,
        },
    })
}

impl crate::Cgroup {
    /// The cpu settings in force: quota, weight (v2 cpu.weight / v1 cpu.shares),
    /// burst and idle, read from the files [`Cpu`] documents.
    pub fn cpu_settings(&self) -> Result<Cpu> {
        read_settings(self.dir_for(crate::Controller::Cpu)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_conversion_matches_runc_1_3() {
        // The values runc 1.3+ computes for the same shares.
        for (shares, weight) in [
            (2, 1),
            (128, 21),
            (512, 59),
            (1024, 100),
            (2048, 174),
            (262_144, 10_000),
        ] {
            assert_eq!(shares_to_weight(shares), weight, "shares {shares}");
        }
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
        // Round trips stay close (weight has fewer steps than shares).
        for w in [1, 10, 50, 100, 500, 1000, 9999] {
            let back = shares_to_weight(weight_to_shares(w));
            assert!(back.abs_diff(w) <= w / 50 + 1, "{w} -> {back}");
        }
        assert!(CpuWeight::weight(0).is_err());
        assert!(CpuWeight::weight(10_001).is_err());
        assert!(CpuWeight::shares(1).is_err());
        assert!(CpuWeight::shares(262_145).is_err());
    }

    #[test]
    fn quota_from_cpus() {
        let q = CpuQuota::from_cpus(0.2, DEFAULT_PERIOD_USEC).unwrap();
        assert_eq!(q.quota_usec(), Some(20_000));
        assert_eq!(q.v1_quota(), "20000");
        assert_eq!(
            CpuQuota::from_cpus(1.5, 100_000).unwrap().to_v2(),
            "150000 100000"
        );
        assert_eq!(
            CpuQuota::from_cpus(0.5, 10_000).unwrap().to_v2(),
            "5000 10000"
        );
        assert_eq!(CpuQuota::unlimited(100_000).unwrap().to_v2(), "max 100000");
        assert_eq!(CpuQuota::unlimited(100_000).unwrap().v1_quota(), "-1");
    }

    #[test]
    fn quota_refuses_out_of_range() {
        for cpus in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.001, 1e12] {
            let e = CpuQuota::from_cpus(cpus, 100_000).unwrap_err();
            assert!(matches!(e, Error::InvalidResource { .. }), "{cpus}: {e}");
        }
        assert!(CpuQuota::from_cpus(0.2, 999).is_err());
        assert!(CpuQuota::from_cpus(0.2, 1_000_001).is_err());
        let msg = CpuQuota::from_cpus(0.001, 100_000).unwrap_err().to_string();
        assert!(msg.contains("minimum of 1000 us"), "{msg}");
    }

    #[test]
    fn parses_cpu_max_and_v1_files() {
        let p = Path::new("cpu.max");
        assert_eq!(
            CpuQuota::parse_v2("20000 100000\n", p).unwrap(),
            CpuQuota::new(20_000, 100_000).unwrap()
        );
        assert_eq!(
            CpuQuota::parse_v2("max 100000\n", p).unwrap().quota_usec(),
            None
        );
        assert!(CpuQuota::parse_v2("max\n", p).is_err());
        assert!(CpuQuota::parse_v2("", p).is_err());
        assert_eq!(
            CpuQuota::parse_v1("-1\n", "100000\n", p)
                .unwrap()
                .quota_usec(),
            None
        );
        assert_eq!(
            CpuQuota::parse_v1("20000\n", "100000\n", p).unwrap().cpus(),
            Some(0.2)
        );
    }

    #[test]
    fn parses_cpuacct_usage_all() {
        // From this host's root cpuacct cgroup (2 CPUs).
        let p = Path::new("cpuacct.usage_all");
        let (user, system) =
            parse_cpuacct_usage_all(include_str!("../tests/fixtures/cpuacct.usage_all.v1"), p)
                .unwrap();
        assert_eq!(user, 10410277999792 + 10221102799947);
        assert_eq!(system, 2699647218475 + 3679381475490);
        assert_eq!(
            parse_cpuacct_usage_all("cpu user system\n", p).unwrap(),
            (0, 0)
        );
        for bad in [
            "",
            "cpu user\n0 1\n",
            "cpu user system\n0 1\n",
            "cpu user system\nx 1 2\n",
        ] {
            assert!(parse_cpuacct_usage_all(bad, p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_v1_cpu_stat() {
        let s = CpuStat::parse_v1(
            include_str!("../tests/fixtures/cpu.stat.v1"),
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(
            (s.nr_periods, s.nr_throttled, s.throttled_usec),
            (10, 10, 725_825)
        );
        assert_eq!((s.nr_bursts, s.burst_usec), (Some(0), Some(0)));
        assert_eq!(s.usage_usec, None);
    }

    #[test]
    fn parses_v2_cpu_stat() {
        let s = CpuStat::parse_v2(
            include_str!("../tests/fixtures/cpu.stat.v2"),
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(s.usage_usec, Some(1_932_432));
        assert_eq!(
            (s.user_usec, s.system_usec),
            (Some(1_788_043), Some(144_389))
        );
        assert_eq!(
            (s.nr_periods, s.nr_throttled, s.throttled_usec),
            (22, 21, 1_713_232)
        );
        let s = CpuStat::parse_v2(
            include_str!("../tests/fixtures/cpu.stat.v2-no-cpu-controller"),
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(
            (s.usage_usec, s.nr_periods, s.nr_bursts),
            (Some(80_562), 0, None)
        );
    }

    #[test]
    fn malformed_cpu_stat_is_an_error() {
        for t in [
            "nr_periods\n",
            "nr_periods x\n",
            "a 1 2\n",
            "nr_periods -1\n",
        ] {
            assert!(CpuStat::parse_v2(t, Path::new("f")).is_err(), "{t:?}");
            assert!(CpuStat::parse_v1(t, Path::new("f")).is_err(), "{t:?}");
        }
    }
}
