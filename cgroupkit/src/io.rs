//! The io controller (`blkio` on v1): proportional weight, per-device bandwidth and
//! IOPS limits, per-device byte and operation counts.
//!
//! | what           | v1 (`blkio` hierarchy)                                  | v2                 |
//! |----------------|---------------------------------------------------------|--------------------|
//! | weight         | blkio.weight (CFQ, < 5.0; 10..1000) or blkio.bfq.weight (BFQ; 1..1000) | io.weight (1..10000) or io.bfq.weight (1..1000) |
//! | limits         | blkio.throttle.{read,write}_{bps,iops}_device `MAJ:MIN N` (0 clears) | io.max `MAJ:MIN rbps=N wbps=N riops=N wiops=N` (`max` clears) |
//! | stats          | blkio.throttle.io_service_bytes, blkio.throttle.io_serviced | io.stat            |
//!
//! The weight is given on v2's io.weight scale (1..=10000, default 100). A file
//! with a narrower range (BFQ's 1..1000, CFQ's 10..1000) takes the value as is when
//! it fits and refuses it otherwise: weights are relative to siblings, and a
//! silently rescaled weight would change that relation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::cgroup::{Cgroup, CgroupDir};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::{Controller, Layout, Version};
use crate::resources::Writer;

/// v2: default weight (`default N`) and per-device weights (iocost), 1..10000.
pub const IO_WEIGHT: &str = "io.weight";
/// v2: BFQ's weight, 1..1000 (present when BFQ is built in or loaded).
pub const IO_BFQ_WEIGHT: &str = "io.bfq.weight";
/// v2: per-device limits.
pub const IO_MAX: &str = "io.max";
/// v2: per-device counters.
pub const IO_STAT: &str = "io.stat";
/// v1: CFQ weight, 10..1000 (kernels before 5.0).
pub const BLKIO_WEIGHT: &str = "blkio.weight";
/// v1: BFQ weight, 1..1000.
pub const BLKIO_BFQ_WEIGHT: &str = "blkio.bfq.weight";
/// v1: read bytes per second limits, `MAJ:MIN N` a line.
pub const THROTTLE_READ_BPS: &str = "blkio.throttle.read_bps_device";
/// v1: write bytes per second limits.
pub const THROTTLE_WRITE_BPS: &str = "blkio.throttle.write_bps_device";
/// v1: read operations per second limits.
pub const THROTTLE_READ_IOPS: &str = "blkio.throttle.read_iops_device";
/// v1: write operations per second limits.
pub const THROTTLE_WRITE_IOPS: &str = "blkio.throttle.write_iops_device";
/// v1: bytes per device and direction (`MAJ:MIN Read N` ..., `Total N`).
pub const THROTTLE_IO_SERVICE_BYTES: &str = "blkio.throttle.io_service_bytes";
/// v1: operations per device and direction.
pub const THROTTLE_IO_SERVICED: &str = "blkio.throttle.io_serviced";

/// The io.weight range.
pub const WEIGHT_MIN: u16 = 1;
/// The io.weight range.
pub const WEIGHT_MAX: u16 = 10_000;

/// A block device number, `major:minor` as cgroup files print it.
///
/// # Examples
/// ```
/// use cgroupkit::DeviceNumber;
/// let d: DeviceNumber = "254:0".parse()?;
/// assert_eq!((d.major, d.minor), (254, 0));
/// assert_eq!(d.to_string(), "254:0");
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeviceNumber {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DeviceNumber {
    /// `major:minor`.
    pub fn new(major: u32, minor: u32) -> DeviceNumber {
        DeviceNumber { major, minor }
    }

    /// The number of a block device node such as `/dev/vda`: `st_rdev` from stat(2)
    /// (symlinks such as `/dev/disk/by-id/...` are followed). Anything but a block
    /// device is refused.
    pub fn of_block_device(path: &std::path::Path) -> Result<DeviceNumber> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let md = std::fs::metadata(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if !md.file_type().is_block_device() {
            return Err(Error::InvalidResource {
                what: "block device",
                reason: format!(
                    "{} is not a block device; give a disk such as /dev/vda, or MAJOR:MINOR \
                     from /sys/block/*/dev",
                    path.display()
                ),
            });
        }
        Ok(DeviceNumber {
            major: libc::major(md.rdev()),
            minor: libc::minor(md.rdev()),
        })
    }
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DeviceNumber {
    type Err = Error;
    fn from_str(s: &str) -> Result<DeviceNumber> {
        let bad = || Error::InvalidResource {
            what: "block device",
            reason: format!("{s:?} is not MAJOR:MINOR (see /sys/block/*/dev)"),
        };
        let (a, b) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(DeviceNumber {
            major: a.parse().map_err(|_| bad())?,
            minor: b.parse().map_err(|_| bad())?,
        })
    }
}

/// A per-device rate limit: a positive rate, or `max` for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum IoRate {
    /// At most this many bytes (bps) or operations (iops) per second; never 0
    /// (v1 reads 0 as "no limit").
    PerSecond(u64),
    /// No limit (v2 `max`, v1 `0`).
    Max,
}

impl IoRate {
    /// A limit of `n` per second; 0 is refused (it means "no limit" on v1).
    pub fn new(n: u64) -> Result<IoRate> {
        if n == 0 {
            return Err(Error::InvalidResource {
                what: "io rate",
                reason: "0 per second is not a limit; use IoRate::Max to clear one".to_owned(),
            });
        }
        Ok(IoRate::PerSecond(n))
    }

    fn v2(self) -> String {
        match self {
            IoRate::PerSecond(n) => n.to_string(),
            IoRate::Max => "max".to_owned(),
        }
    }

    fn v1(self) -> u64 {
        match self {
            IoRate::PerSecond(n) => n,
            IoRate::Max => 0,
        }
    }
}

/// The limits of one device. `None` fields are left as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DeviceLimit {
    /// The device (a whole disk; the kernel refuses partitions).
    pub device: DeviceNumber,
    /// Read bytes per second.
    pub rbps: Option<IoRate>,
    /// Write bytes per second.
    pub wbps: Option<IoRate>,
    /// Read operations per second.
    pub riops: Option<IoRate>,
    /// Write operations per second.
    pub wiops: Option<IoRate>,
}

impl DeviceLimit {
    /// No limits yet on `device`.
    pub fn new(device: DeviceNumber) -> DeviceLimit {
        DeviceLimit {
            device,
            rbps: None,
            wbps: None,
            riops: None,
            wiops: None,
        }
    }

    /// The value of a v2 io.max write, `None` when nothing is set.
    pub fn to_v2(&self) -> Option<String> {
        let parts: Vec<String> = [
            ("rbps", self.rbps),
            ("wbps", self.wbps),
            ("riops", self.riops),
            ("wiops", self.wiops),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", v.v2())))
        .collect();
        if parts.is_empty() {
            None
        } else {
            Some(format!("{} {}", self.device, parts.join(" ")))
        }
    }

    /// Parses v2's io.max (one device a line; all four keys).
    pub fn parse_v2(text: &str, path: &Path) -> Result<Vec<DeviceLimit>> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || fsutil::parse_error(path, i + 1, line);
            let mut it = line.split_whitespace();
            let dev: DeviceNumber = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let mut d = DeviceLimit::new(dev);
            for kv in it {
                let (k, v) = kv.split_once('=').ok_or_else(bad)?;
                let rate = match v {
                    "max" => IoRate::Max,
                    n => IoRate::PerSecond(n.parse().map_err(|_| bad())?),
                };
                match k {
                    "rbps" => d.rbps = Some(rate),
                    "wbps" => d.wbps = Some(rate),
                    "riops" => d.riops = Some(rate),
                    "wiops" => d.wiops = Some(rate),
                    _ => {}
                }
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Parses one v1 throttle file (`MAJ:MIN N` lines) into `(device, rate)` pairs.
    pub fn parse_v1_throttle(text: &str, path: &Path) -> Result<Vec<(DeviceNumber, IoRate)>> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || fsutil::parse_error(path, i + 1, line);
            let mut it = line.split_whitespace();
            let (Some(d), Some(n), None) = (it.next(), it.next(), it.next()) else {
                return Err(bad());
            };
            let n: u64 = n.parse().map_err(|_| bad())?;
            let rate = if n == 0 {
                IoRate::Max
            } else {
                IoRate::PerSecond(n)
            };
            out.push((d.parse().map_err(|_| bad())?, rate));
        }
        Ok(out)
    }
}

/// The io settings of a cgroup.
///
/// # Examples
/// ```
/// use cgroupkit::{DeviceLimit, DeviceNumber, Io, IoRate};
/// let mut lim = DeviceLimit::new(DeviceNumber::new(8, 16));
/// lim.wbps = Some(IoRate::new(1 << 20)?);
/// let io = Io::default().limit(lim);
/// assert_eq!(io.device_limits[0].to_v2().as_deref(), Some("8:16 wbps=1048576"));
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Io {
    /// Proportional weight on the io.weight scale (1..=10000, default 100); see
    /// the module docs for v1 and BFQ.
    pub weight: Option<u16>,
    /// Per-device limits.
    pub device_limits: Vec<DeviceLimit>,
}

impl Io {
    /// Only a weight, checked against 1..=10000.
    pub fn with_weight(weight: u16) -> Result<Io> {
        check_weight(weight, WEIGHT_MIN, WEIGHT_MAX, IO_WEIGHT)?;
        Ok(Io {
            weight: Some(weight),
            ..Io::default()
        })
    }

    /// Adds a device's limits.
    pub fn limit(mut self, l: DeviceLimit) -> Io {
        self.device_limits.push(l);
        self
    }
}

fn check_weight(w: u16, lo: u16, hi: u16, file: &'static str) -> Result<()> {
    if !(lo..=hi).contains(&w) {
        return Err(Error::InvalidResource {
            what: "io weight",
            reason: format!("{w} is outside {lo}..={hi}, the range of {file} on this host"),
        });
    }
    Ok(())
}

fn unsupported(dir: &CgroupDir, what: &'static str, reason: String) -> Error {
    Error::Unsupported {
        controller: Controller::Io,
        what,
        layout: match dir.version {
            Version::V1 => Layout::V1,
            Version::V2 => Layout::V2,
        },
        reason,
    }
}

/// Applies `io`: the weight to the first weight file present, the limits to io.max
/// (v2) or the four throttle files (v1).
/// What can be checked without the host: no rate of 0, a weight in 1..=10000.
pub(crate) fn validate(io: &Io) -> Result<()> {
    for l in &io.device_limits {
        for r in [l.rbps, l.wbps, l.riops, l.wiops].into_iter().flatten() {
            if r == IoRate::PerSecond(0) {
                IoRate::new(0)?;
            }
        }
    }
    if let Some(weight) = io.weight {
        check_weight(weight, WEIGHT_MIN, WEIGHT_MAX, IO_WEIGHT)?;
    }
    Ok(())
}

pub(crate) fn apply(dir: &CgroupDir, io: &Io, w: &mut Writer) -> Result<()> {
    validate(io)?;
    if let Some(weight) = io.weight {
        // (file, min, max) in order of preference.
        let candidates: &[(&'static str, u16, u16)] = match dir.version {
            Version::V2 => &[(IO_WEIGHT, 1, 10_000), (IO_BFQ_WEIGHT, 1, 1000)],
            Version::V1 => &[(BLKIO_WEIGHT, 10, 1000), (BLKIO_BFQ_WEIGHT, 1, 1000)],
        };
        let Some(&(file, lo, hi)) = candidates.iter().find(|(f, ..)| dir.file(f).exists()) else {
            let names: Vec<&str> = candidates.iter().map(|c| c.0).collect();
            return Err(unsupported(
                dir,
                "io weight",
                format!(
                    "{} has none of {}: no weight-based I/O policy (iocost, BFQ, CFQ) is \
                     available in this kernel",
                    dir.path.display(),
                    names.join(", ")
                ),
            ));
        };
        check_weight(weight, lo, hi, file)?;
        w.write(dir, file, weight.to_string())?;
    }
    match dir.version {
        Version::V2 => {
            for v in io.device_limits.iter().filter_map(DeviceLimit::to_v2) {
                w.write(dir, IO_MAX, v)?;
            }
        }
        Version::V1 => {
            for l in &io.device_limits {
                for (file, rate) in [
                    (THROTTLE_READ_BPS, l.rbps),
                    (THROTTLE_WRITE_BPS, l.wbps),
                    (THROTTLE_READ_IOPS, l.riops),
                    (THROTTLE_WRITE_IOPS, l.wiops),
                ] {
                    if let Some(r) = rate {
                        w.write(dir, file, format!("{} {}", l.device, r.v1()))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reads the per-device limits in force (devices without any limit are absent).
pub(crate) fn read_limits(dir: &CgroupDir) -> Result<Vec<DeviceLimit>> {
    match dir.version {
        Version::V2 => {
            let p = dir.file(IO_MAX);
            DeviceLimit::parse_v2(&fsutil::read_to_string(&p)?, &p)
        }
        Version::V1 => {
            let mut by_dev: BTreeMap<DeviceNumber, DeviceLimit> = BTreeMap::new();
            for file in [
                THROTTLE_READ_BPS,
                THROTTLE_WRITE_BPS,
                THROTTLE_READ_IOPS,
                THROTTLE_WRITE_IOPS,
            ] {
                let p = dir.file(file);
                for (dev, rate) in DeviceLimit::parse_v1_throttle(&fsutil::read_to_string(&p)?, &p)?
                {
                    let d = by_dev.entry(dev).or_insert_with(|| DeviceLimit::new(dev));
                    let slot = match file {
                        THROTTLE_READ_BPS => &mut d.rbps,
                        THROTTLE_WRITE_BPS => &mut d.wbps,
                        THROTTLE_READ_IOPS => &mut d.riops,
                        _ => &mut d.wiops,
                    };
                    *slot = Some(rate);
                }
            }
            Ok(by_dev.into_values().collect())
        }
    }
}

/// The counters of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DeviceIo {
    /// Bytes read (v2 `rbytes`; v1 io_service_bytes `Read`).
    pub rbytes: u64,
    /// Bytes written (v2 `wbytes`; v1 `Write`).
    pub wbytes: u64,
    /// Read operations (v2 `rios`; v1 io_serviced `Read`).
    pub rios: u64,
    /// Write operations (v2 `wios`; v1 `Write`).
    pub wios: u64,
    /// Bytes discarded (v2 `dbytes`; v1 `Discard`).
    pub dbytes: u64,
    /// Discard operations (v2 `dios`; v1 `Discard`).
    pub dios: u64,
}

/// I/O counters of a cgroup, per device.
///
/// v1's blkio.throttle.* counters count the I/O that passed the throttling layer,
/// which on recent kernels is only I/O to devices with a limit in the cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct IoStat {
    /// Counters by device.
    pub devices: BTreeMap<DeviceNumber, DeviceIo>,
}

impl IoStat {
    /// Parses v2's io.stat (`MAJ:MIN key=value ...` a line; unknown keys such as
    /// iocost's `cost.*` are skipped).
    pub fn parse_v2(text: &str, path: &Path) -> Result<IoStat> {
        let mut s = IoStat::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || fsutil::parse_error(path, i + 1, line);
            let mut it = line.split_whitespace();
            let dev: DeviceNumber = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let d = s.devices.entry(dev).or_default();
            for kv in it {
                let (k, v) = kv.split_once('=').ok_or_else(bad)?;
                let slot = match k {
                    "rbytes" => &mut d.rbytes,
                    "wbytes" => &mut d.wbytes,
                    "rios" => &mut d.rios,
                    "wios" => &mut d.wios,
                    "dbytes" => &mut d.dbytes,
                    "dios" => &mut d.dios,
                    _ => continue,
                };
                *slot = v.parse().map_err(|_| bad())?;
            }
        }
        Ok(s)
    }

    /// Adds v1's blkio.throttle.io_service_bytes (`bytes == true`) or io_serviced
    /// (`MAJ:MIN Read|Write|Sync|Async|Discard|Total N`, then `Total N`).
    pub fn add_v1(&mut self, text: &str, path: &Path, bytes: bool) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || fsutil::parse_error(path, i + 1, line);
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["Total", n] => {
                    n.parse::<u64>().map_err(|_| bad())?;
                }
                [dev, op, n] => {
                    let dev: DeviceNumber = dev.parse().map_err(|_| bad())?;
                    let n: u64 = n.parse().map_err(|_| bad())?;
                    let d = self.devices.entry(dev).or_default();
                    let slot = match (*op, bytes) {
                        ("Read", true) => &mut d.rbytes,
                        ("Write", true) => &mut d.wbytes,
                        ("Discard", true) => &mut d.dbytes,
                        ("Read", false) => &mut d.rios,
                        ("Write", false) => &mut d.wios,
                        ("Discard", false) => &mut d.dios,
                        _ => continue,
                    };
                    *slot = n;
                }
                _ => return Err(bad()),
            }
        }
        Ok(())
    }
}

pub(crate) fn stat(dir: &CgroupDir) -> Result<IoStat> {
    match dir.version {
        Version::V2 => {
            let p = dir.file(IO_STAT);
            IoStat::parse_v2(&fsutil::read_to_string(&p)?, &p)
        }
        Version::V1 => {
            let mut s = IoStat::default();
            let b = dir.file(THROTTLE_IO_SERVICE_BYTES);
            s.add_v1(&fsutil::read_to_string(&b)?, &b, true)?;
            let o = dir.file(THROTTLE_IO_SERVICED);
            s.add_v1(&fsutil::read_to_string(&o)?, &o, false)?;
            Ok(s)
        }
    }
}

impl Cgroup {
    /// I/O counters per device: v2 io.stat; v1 blkio.throttle.io_service_bytes and
    /// blkio.throttle.io_serviced.
    pub fn io_stat(&self) -> Result<IoStat> {
        stat(self.dir_for(Controller::Io)?)
    }

    /// The per-device limits in force: v2 io.max; v1 the four
    /// blkio.throttle.*_device files.
    pub fn io_limits(&self) -> Result<Vec<DeviceLimit>> {
        read_limits(self.dir_for(Controller::Io)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::garbage;

    /// The example in Documentation/admin-guide/cgroup-v2.rst.
    const STAT_V2: &str = include_str!("../tests/fixtures/io.stat.v2-kernel-docs");
    /// Captured in the VM lane: a device with a limit and no I/O yet (`259:0 `).
    const STAT_V2_IDLE: &str = include_str!("../tests/fixtures/io.stat.v2-6.12");
    const MAX_V2: &str = include_str!("../tests/fixtures/io.max.v2-6.12");
    const BYTES_V1: &str = include_str!("../tests/fixtures/blkio.throttle.io_service_bytes.v1");
    const OPS_V1: &str = include_str!("../tests/fixtures/blkio.throttle.io_serviced.v1");
    const BPS_V1: &str = include_str!("../tests/fixtures/blkio.throttle.read_bps_device.v1");

    #[test]
    fn parses_v2_stat_and_max() {
        let s = IoStat::parse_v2(STAT_V2, Path::new("f")).unwrap();
        let d = &s.devices[&DeviceNumber::new(8, 16)];
        assert_eq!(
            (d.rbytes, d.wbytes, d.rios, d.wios),
            (1_459_200, 314_773_504, 192, 353)
        );
        assert_eq!(s.devices[&DeviceNumber::new(8, 0)].dios, 3021);
        let idle = IoStat::parse_v2(STAT_V2_IDLE, Path::new("f")).unwrap();
        assert_eq!(
            idle.devices[&DeviceNumber::new(259, 0)],
            DeviceIo::default()
        );
        let m = DeviceLimit::parse_v2(MAX_V2, Path::new("f")).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].device, DeviceNumber::new(259, 0));
        assert_eq!(m[0].rbps, Some(IoRate::PerSecond(2_097_152)));
        assert_eq!(m[0].wbps, Some(IoRate::Max));
        assert_eq!(m[0].wiops, Some(IoRate::PerSecond(120)));
        assert_eq!(
            m[0].to_v2().as_deref(),
            Some("259:0 rbps=2097152 wbps=max riops=max wiops=120")
        );
    }

    #[test]
    fn parses_v1_throttle_files() {
        let mut s = IoStat::default();
        s.add_v1(BYTES_V1, Path::new("f"), true).unwrap();
        s.add_v1(OPS_V1, Path::new("f"), false).unwrap();
        let d = &s.devices[&DeviceNumber::new(254, 0)];
        assert_eq!(
            (d.rbytes, d.wbytes, d.rios, d.wios),
            (4_333_568, 4_362_240, 70, 106)
        );
        let l = DeviceLimit::parse_v1_throttle(BPS_V1, Path::new("f")).unwrap();
        assert_eq!(
            l,
            [(DeviceNumber::new(254, 0), IoRate::PerSecond(1_000_000_000))]
        );
        assert_eq!(
            DeviceLimit::parse_v1_throttle("8:0 0\n", Path::new("f")).unwrap()[0].1,
            IoRate::Max
        );
    }

    #[test]
    fn validation() {
        assert!(IoRate::new(0).is_err());
        assert!(Io::with_weight(0).is_err());
        assert!(Io::with_weight(10_001).is_err());
        assert!(Io::with_weight(100).is_ok());
        assert!("8".parse::<DeviceNumber>().is_err());
        assert!("a:b".parse::<DeviceNumber>().is_err());
        assert_eq!(DeviceLimit::new(DeviceNumber::new(1, 2)).to_v2(), None);
    }

    #[test]
    fn parsers_never_panic() {
        for t in garbage(&[STAT_V2, STAT_V2_IDLE, MAX_V2, BYTES_V1, OPS_V1, BPS_V1]) {
            let p = Path::new("g");
            let _ = IoStat::parse_v2(&t, p);
            let _ = IoStat::default().add_v1(&t, p, true);
            let _ = DeviceLimit::parse_v2(&t, p);
            let _ = DeviceLimit::parse_v1_throttle(&t, p);
            let _ = t.parse::<DeviceNumber>();
        }
    }
}
