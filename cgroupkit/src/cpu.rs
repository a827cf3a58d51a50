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

/// The cpu settings of a cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Cpu {
    /// CFS bandwidth limit.
    pub quota: Option<CpuQuota>,
}

impl Cpu {
    /// Only a bandwidth limit.
    pub fn with_quota(quota: CpuQuota) -> Cpu {
        Cpu { quota: Some(quota) }
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
            match k.as_str() {
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
            match k.as_str() {
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

/// Applies `cpu` to the directory of the hierarchy serving the cpu controller.
pub(crate) fn apply(dir: &CgroupDir, cpu: &Cpu, w: &mut Writer) -> Result<()> {
    let Some(q) = &cpu.quota else { return Ok(()) };
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
                s.set_v1_usage(
                    usage,
                    fsutil::read_u64(&acct.join(CPUACCT_USAGE_USER)).ok(),
                    fsutil::read_u64(&acct.join(CPUACCT_USAGE_SYS)).ok(),
                );
            }
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
