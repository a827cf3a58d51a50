//! The hugetlb controller: per huge-page-size limits and usage.
//!
//! | what       | v1 (`hugetlb` hierarchy)              | v2                         |
//! |------------|---------------------------------------|----------------------------|
//! | limit      | hugetlb.<size>.limit_in_bytes         | hugetlb.<size>.max         |
//! | usage      | hugetlb.<size>.usage_in_bytes         | hugetlb.<size>.current     |
//! | peak       | hugetlb.<size>.max_usage_in_bytes     | —                          |
//! | limit hits | hugetlb.<size>.failcnt                | hugetlb.<size>.events `max N` |
//!
//! `<size>` is the kernel's name of a page size (`2MB`, `1GB`, `64KB`); the sizes a
//! host offers are discovered from the files present. Both versions show "no limit"
//! as a large byte count (`PAGE_COUNTER_MAX` rounded to the page size), read back
//! as [`Limit::Max`].
//!
//! On hybrid hosts hugetlb is often left to the cgroup2 mount (the only controller
//! there, as on this project's hosts): [`Cgroup::dir_for`] finds it either way.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::cgroup::{Cgroup, CgroupDir};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::{Controller, Layout, Version};
use crate::memory::Limit;
use crate::resources::Writer;

/// The prefix of every hugetlb file.
pub const PREFIX: &str = "hugetlb.";
/// v2 suffix: limit in bytes (`hugetlb.2MB.max`).
pub const MAX_SUFFIX: &str = ".max";
/// v2 suffix: usage in bytes.
pub const CURRENT_SUFFIX: &str = ".current";
/// v2 suffix: `max N`, allocations refused by the limit.
pub const EVENTS_SUFFIX: &str = ".events";
/// v1 suffix: limit in bytes.
pub const LIMIT_IN_BYTES_SUFFIX: &str = ".limit_in_bytes";
/// v1 suffix: usage in bytes.
pub const USAGE_IN_BYTES_SUFFIX: &str = ".usage_in_bytes";
/// v1 suffix: peak usage in bytes.
pub const MAX_USAGE_IN_BYTES_SUFFIX: &str = ".max_usage_in_bytes";
/// v1 suffix: limit hits.
pub const FAILCNT_SUFFIX: &str = ".failcnt";

/// A huge page size, named as the kernel names it in file names (`2MB`, `1GB`).
///
/// # Examples
/// ```
/// use cgroupkit::PageSize;
/// let p: PageSize = "2MB".parse()?;
/// assert_eq!(p.bytes(), 2 << 20);
/// assert_eq!(p.to_string(), "2MB");
/// assert_eq!(PageSize::from_bytes(1 << 30)?.to_string(), "1GB");
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(into = "String"))]
pub struct PageSize {
    bytes: u64,
}

impl PageSize {
    /// A page size of `bytes`: a power of two of at least 4 KiB.
    pub fn from_bytes(bytes: u64) -> Result<PageSize> {
        if !bytes.is_power_of_two() || bytes < 4096 {
            return Err(Error::InvalidResource {
                what: "huge page size",
                reason: format!("{bytes} bytes is not a power of two of at least 4KB"),
            });
        }
        Ok(PageSize { bytes })
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.bytes
    }
}

impl fmt::Display for PageSize {
    /// The kernel's `mem_fmt`: the largest unit that divides the size exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MB", b >> 20)
        } else {
            write!(f, "{}KB", b >> 10)
        }
    }
}

impl From<PageSize> for String {
    fn from(p: PageSize) -> String {
        p.to_string()
    }
}

impl FromStr for PageSize {
    type Err = Error;
    fn from_str(s: &str) -> Result<PageSize> {
        let bad = || Error::InvalidResource {
            what: "huge page size",
            reason: format!("{s:?} is not a page size such as 2MB or 1GB"),
        };
        let (num, shift) = if let Some(n) = s.strip_suffix("GB") {
            (n, 30)
        } else if let Some(n) = s.strip_suffix("MB") {
            (n, 20)
        } else if let Some(n) = s.strip_suffix("KB") {
            (n, 10)
        } else {
            return Err(bad());
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        let bytes = n.checked_mul(1 << shift).ok_or_else(bad)?;
        PageSize::from_bytes(bytes).map_err(|_| bad())
    }
}

/// The hugetlb settings of a cgroup: a limit per page size.
///
/// # Examples
/// ```
/// use cgroupkit::{Hugetlb, Limit};
/// let h = Hugetlb::default().limit("2MB".parse()?, Limit::Bytes(8 << 20))?;
/// assert_eq!(h.limits.len(), 1);
/// assert!(Hugetlb::default().limit("2MB".parse()?, Limit::Bytes(3 << 20)).is_err());
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Hugetlb {
    /// Byte limit per page size (a whole number of pages).
    pub limits: BTreeMap<PageSize, Limit>,
}

impl Hugetlb {
    /// Adds a limit for `size`; a byte count that is not a whole number of pages is
    /// refused (the kernel would round it down silently).
    pub fn limit(mut self, size: PageSize, limit: Limit) -> Result<Hugetlb> {
        check_limit(size, limit)?;
        self.limits.insert(size, limit);
        Ok(self)
    }
}

fn check_limit(size: PageSize, limit: Limit) -> Result<()> {
    if let Limit::Bytes(b) = limit
        && !b.is_multiple_of(size.bytes())
    {
        return Err(Error::InvalidResource {
            what: "hugetlb limit",
            reason: format!(
                "{b} bytes is not a whole number of {size} pages; use a multiple of {}",
                size.bytes()
            ),
        });
    }
    Ok(())
}

fn limit_file(version: Version, size: PageSize) -> String {
    match version {
        Version::V2 => format!("{PREFIX}{size}{MAX_SUFFIX}"),
        Version::V1 => format!("{PREFIX}{size}{LIMIT_IN_BYTES_SUFFIX}"),
    }
}

/// The page sizes offered in `dir`, from the names of its limit files.
pub(crate) fn page_sizes(dir: &CgroupDir) -> Result<Vec<PageSize>> {
    let suffix = match dir.version {
        Version::V2 => MAX_SUFFIX,
        Version::V1 => LIMIT_IN_BYTES_SUFFIX,
    };
    let rd = std::fs::read_dir(&dir.path).map_err(|source| Error::Read {
        path: dir.path.clone(),
        source,
    })?;
    let mut sizes: Vec<PageSize> = rd
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            page_size_of(&name, suffix)
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

/// `hugetlb.2MB.max` with suffix `.max` -> 2MB (`hugetlb.2MB.rsvd.max` -> None).
fn page_size_of(name: &str, suffix: &str) -> Option<PageSize> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// Applies the limits; a page size the host does not offer is
/// [`Error::Unsupported`] naming the sizes it does offer.
/// What can be checked without the host: whole numbers of pages.
pub(crate) fn validate(h: &Hugetlb) -> Result<()> {
    for (&size, &limit) in &h.limits {
        check_limit(size, limit)?;
    }
    Ok(())
}

pub(crate) fn apply(dir: &CgroupDir, h: &Hugetlb, w: &mut Writer) -> Result<()> {
    for (&size, &limit) in &h.limits {
        check_limit(size, limit)?;
        if !dir.file(&limit_file(dir.version, size)).exists() {
            let offered: Vec<String> = page_sizes(dir)?.iter().map(|p| p.to_string()).collect();
            return Err(Error::Unsupported {
                controller: Controller::Hugetlb,
                what: "hugetlb page size",
                layout: match dir.version {
                    Version::V1 => Layout::V1,
                    Version::V2 => Layout::V2,
                },
                reason: format!(
                    "{} has no {} file: {size} pages are not offered here (offered: {})",
                    dir.path.display(),
                    limit_file(dir.version, size),
                    if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    }
                ),
            });
        }
    }
    for (&size, &limit) in &h.limits {
        let v = match dir.version {
            Version::V2 => limit.to_v2(),
            Version::V1 => limit.to_v1(),
        };
        w.write(dir, &limit_file(dir.version, size), v)?;
    }
    Ok(())
}

/// Usage and limit hits of one page size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HugetlbSizeStat {
    /// The limit in force.
    pub max: Option<Limit>,
    /// Bytes in use (v2 `.current`, v1 `.usage_in_bytes`).
    pub current_bytes: u64,
    /// Peak bytes (v1 `.max_usage_in_bytes`; v2 has none).
    pub max_usage_bytes: Option<u64>,
    /// Allocations refused by the limit (v2 `.events` `max`, v1 `.failcnt`).
    pub events_max: u64,
}

/// hugetlb usage of a cgroup, per page size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HugetlbStat {
    /// By page size.
    pub sizes: BTreeMap<PageSize, HugetlbSizeStat>,
}

/// Parses a v2 `hugetlb.<size>.events` file: the `max` count.
pub fn parse_events(text: &str, path: &Path) -> Result<u64> {
    Ok(fsutil::parse_flat_keyed(path, text)?
        .into_iter()
        .find(|(k, _)| *k == "max")
        .map_or(0, |(_, v)| v))
}

pub(crate) fn stat(dir: &CgroupDir) -> Result<HugetlbStat> {
    let mut s = HugetlbStat::default();
    for size in page_sizes(dir)? {
        let f = |suffix: &str| dir.file(&format!("{PREFIX}{size}{suffix}"));
        let lim = f(match dir.version {
            Version::V2 => MAX_SUFFIX,
            Version::V1 => LIMIT_IN_BYTES_SUFFIX,
        });
        let max = Some(Limit::parse_file(&fsutil::read_to_string(&lim)?, &lim)?);
        let st = match dir.version {
            Version::V2 => {
                let ev = f(EVENTS_SUFFIX);
                HugetlbSizeStat {
                    max,
                    current_bytes: fsutil::read_u64(&f(CURRENT_SUFFIX))?,
                    max_usage_bytes: None,
                    events_max: parse_events(&fsutil::read_to_string(&ev)?, &ev)?,
                }
            }
            Version::V1 => HugetlbSizeStat {
                max,
                current_bytes: fsutil::read_u64(&f(USAGE_IN_BYTES_SUFFIX))?,
                max_usage_bytes: Some(fsutil::read_u64(&f(MAX_USAGE_IN_BYTES_SUFFIX))?),
                events_max: fsutil::read_u64(&f(FAILCNT_SUFFIX))?,
            },
        };
        s.sizes.insert(size, st);
    }
    Ok(s)
}

impl Cgroup {
    /// Limit, usage and limit hits per huge page size (files in the module docs).
    pub fn hugetlb_stat(&self) -> Result<HugetlbStat> {
        stat(self.dir_for(Controller::Hugetlb)?)
    }

    /// The huge page sizes this host offers to the cgroup.
    pub fn hugetlb_page_sizes(&self) -> Result<Vec<PageSize>> {
        page_sizes(self.dir_for(Controller::Hugetlb)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fake_dir, garbage};

    /// From this project's hybrid host (kernel 6.18, cgroup2 mount): "no limit" is
    /// a rounded byte count there, `max` on 6.1 / 6.12 (VM lane).
    const EVENTS_V2: &str = include_str!("../tests/fixtures/hugetlb.2MB.events.v2-6.18");
    const MAX_V2: &str = include_str!("../tests/fixtures/hugetlb.2MB.max.v2-6.18");
    const MAX_V2_612: &str = include_str!("../tests/fixtures/hugetlb.2MB.max.v2-6.12");

    #[test]
    fn page_size_names() {
        for (s, b) in [
            ("2MB", 2u64 << 20),
            ("1GB", 1 << 30),
            ("64KB", 64 << 10),
            ("32MB", 32 << 20),
        ] {
            let p: PageSize = s.parse().unwrap();
            assert_eq!(p.bytes(), b);
            assert_eq!(p.to_string(), s);
        }
        for bad in ["2M", "3MB", "MB", "0KB", "2KB", "99999999999999999GB", ""] {
            assert!(bad.parse::<PageSize>().is_err(), "{bad:?}");
        }
        assert_eq!(
            page_size_of("hugetlb.2MB.max", MAX_SUFFIX),
            "2MB".parse().ok()
        );
        assert_eq!(page_size_of("hugetlb.2MB.rsvd.max", MAX_SUFFIX), None);
    }

    #[test]
    fn parses_v2_files() {
        assert_eq!(parse_events(EVENTS_V2, Path::new("f")).unwrap(), 0);
        assert_eq!(
            Limit::parse_file(MAX_V2, Path::new("f")).unwrap(),
            Limit::Max
        );
        assert_eq!(
            Limit::parse_file(MAX_V2_612, Path::new("f")).unwrap(),
            Limit::Max
        );
    }

    #[test]
    fn discovers_sizes_and_refuses_absent_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = tmp.path().join("c");
        std::fs::create_dir(&cg).unwrap();
        for f in ["hugetlb.2MB.max", "hugetlb.2MB.rsvd.max", "hugetlb.1GB.max"] {
            std::fs::write(cg.join(f), "max\n").unwrap();
        }
        let dir = fake_dir(tmp.path(), Version::V2, "c", Controller::Hugetlb);
        assert_eq!(
            page_sizes(&dir).unwrap(),
            ["2MB".parse().unwrap(), "1GB".parse::<PageSize>().unwrap()]
        );
        let h = Hugetlb::default()
            .limit("16MB".parse().unwrap(), Limit::Bytes(32 << 20))
            .unwrap();
        let e = apply(&dir, &h, &mut Writer::default()).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("offered: 2MB, 1GB"), "{e}");
        let h = Hugetlb::default()
            .limit("2MB".parse().unwrap(), Limit::Bytes(4 << 20))
            .unwrap();
        apply(&dir, &h, &mut Writer::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(cg.join("hugetlb.2MB.max")).unwrap(),
            "4194304"
        );
    }

    #[test]
    fn parsers_never_panic() {
        for t in garbage(&[EVENTS_V2, MAX_V2, MAX_V2_612]) {
            let _ = parse_events(&t, Path::new("g"));
            let _ = t.parse::<PageSize>();
            let _ = page_size_of(&t, MAX_SUFFIX);
        }
    }
}
