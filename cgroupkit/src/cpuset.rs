//! The cpuset controller: which CPUs and memory nodes a cgroup's tasks may use.
//!
//! | what             | v1 (`cpuset` hierarchy)                   | v2                                     |
//! |------------------|-------------------------------------------|----------------------------------------|
//! | requested        | cpuset.cpus, cpuset.mems                  | cpuset.cpus, cpuset.mems               |
//! | effective        | cpuset.effective_cpus, cpuset.effective_mems | cpuset.cpus.effective, cpuset.mems.effective |
//! | allowed by parent| parent's cpuset.cpus / cpuset.mems        | parent's cpuset.cpus.effective / cpuset.mems.effective |
//!
//! On v1 a new cpuset cgroup starts with empty cpus and mems, and no task can join
//! it (ENOSPC) until both are set. [`apply`] of any [`Cpuset`] on v1 — even
//! `Cpuset::default()` — fills an empty cpuset.cpus or cpuset.mems from the nearest
//! ancestor that has them, top-down, before writing the requested values. This is
//! done in apply, not in `Cgroup::create`, so that every cgroup prepared through
//! [`Resources`](crate::Resources) works, creation stays controller-agnostic, and a
//! caller that wants the parent's sets just applies `Cpuset::default()`.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::cgroup::{Cgroup, CgroupDir};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::{Controller, Version};
use crate::resources::Writer;

/// Requested CPUs (v1 and v2).
pub const CPUSET_CPUS: &str = "cpuset.cpus";
/// Requested memory nodes (v1 and v2).
pub const CPUSET_MEMS: &str = "cpuset.mems";
/// v2: CPUs granted (requested ∩ parent's effective, or the parent's when empty).
pub const CPUSET_CPUS_EFFECTIVE: &str = "cpuset.cpus.effective";
/// v2: memory nodes granted.
pub const CPUSET_MEMS_EFFECTIVE: &str = "cpuset.mems.effective";
/// v1: CPUs granted.
pub const EFFECTIVE_CPUS: &str = "cpuset.effective_cpus";
/// v1: memory nodes granted.
pub const EFFECTIVE_MEMS: &str = "cpuset.effective_mems";

/// The largest id accepted (the kernel's `NR_CPUS` and node limits are far below).
pub const MAX_ID: u32 = (1 << 20) - 1;

/// A set of CPU or memory-node ids, in the kernel's list format (`0-3,5`).
///
/// Kept as sorted, merged ranges; `Display` prints the kernel format back.
///
/// # Examples
/// ```
/// use cgroupkit::IdSet;
/// let s: IdSet = "5,0-2,3".parse()?;
/// assert_eq!(s.to_string(), "0-3,5");
/// assert!(s.contains(3) && !s.contains(4));
/// assert!("0".parse::<IdSet>()?.is_subset(&s));
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(into = "String"))]
pub struct IdSet {
    ranges: Vec<RangeInclusive<u32>>,
}

impl IdSet {
    /// The empty set.
    pub fn new() -> IdSet {
        IdSet::default()
    }

    /// The set holding `ids`.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> IdSet {
        IdSet::from_ranges(ids.into_iter().map(|i| i..=i).collect())
    }

    fn from_ranges(mut r: Vec<RangeInclusive<u32>>) -> IdSet {
        r.sort_by_key(|r| *r.start());
        let mut out: Vec<RangeInclusive<u32>> = Vec::with_capacity(r.len());
        for x in r {
            match out.last_mut() {
                Some(last) if *x.start() <= last.end().saturating_add(1) => {
                    if x.end() > last.end() {
                        *last = *last.start()..=*x.end();
                    }
                }
                _ => out.push(x),
            }
        }
        IdSet { ranges: out }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u32) -> bool {
        self.ranges.iter().any(|r| r.contains(&id))
    }

    /// Whether every id of `self` is in `other`.
    pub fn is_subset(&self, other: &IdSet) -> bool {
        self.ranges.iter().all(|r| {
            other
                .ranges
                .iter()
                .any(|o| o.start() <= r.start() && r.end() <= o.end())
        })
    }

    /// The number of ids.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| u64::from(r.end() - r.start()) + 1)
            .sum()
    }

    /// The ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|r| r.clone())
    }

    /// Parses a kernel file holding a list (`0-3,5`; empty is the empty set).
    pub fn parse_file(text: &str, path: &Path) -> Result<IdSet> {
        text.parse()
            .map_err(|_| fsutil::parse_error(path, 1, text.trim_end()))
    }
}

impl fmt::Display for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

impl From<IdSet> for String {
    fn from(s: IdSet) -> String {
        s.to_string()
    }
}

impl FromStr for IdSet {
    type Err = Error;
    fn from_str(s: &str) -> Result<IdSet> {
        let bad = |why: &str| Error::InvalidResource {
            what: "cpu/node list",
            reason: format!("{s:?}: {why} (expected a list such as 0-3,5)"),
        };
        let t = s.trim();
        if t.is_empty() {
            return Ok(IdSet::new());
        }
        let num = |x: &str| -> Result<u32> {
            let n: u32 = x.trim().parse().map_err(|_| bad("not a number"))?;
            if n > MAX_ID {
                return Err(bad("id too large"));
            }
            Ok(n)
        };
        let mut ranges = Vec::new();
        for part in t.split(',') {
            let r = match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(bad("range runs backwards"));
                    }
                    a..=b
                }
                None => {
                    let n = num(part)?;
                    n..=n
                }
            };
            ranges.push(r);
        }
        Ok(IdSet::from_ranges(ranges))
    }
}

/// The cpuset settings of a cgroup.
///
/// # Examples
/// ```
/// use cgroupkit::Cpuset;
/// let c = Cpuset::with_cpus("0".parse()?);
/// assert_eq!(c.cpus.unwrap().to_string(), "0");
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Cpuset {
    /// CPUs (cpuset.cpus); must be within what the parent allows and non-empty.
    pub cpus: Option<IdSet>,
    /// Memory nodes (cpuset.mems); same rules.
    pub mems: Option<IdSet>,
}

impl Cpuset {
    /// Only CPUs.
    pub fn with_cpus(cpus: IdSet) -> Cpuset {
        Cpuset {
            cpus: Some(cpus),
            mems: None,
        }
    }
}

fn parent_allowed(
    dir: &CgroupDir,
    file_v1: &str,
    file_v2: &str,
) -> Result<Option<(IdSet, PathBuf)>> {
    let Some(parent) = dir.path.parent() else {
        return Ok(None);
    };
    let file = parent.join(match dir.version {
        Version::V1 => file_v1,
        Version::V2 => file_v2,
    });
    if !file.exists() {
        return Ok(None);
    }
    let set = IdSet::parse_file(&fsutil::read_to_string(&file)?, &file)?;
    Ok(Some((set, file)))
}

fn check(
    dir: &CgroupDir,
    want: &IdSet,
    what: &'static str,
    file_v1: &str,
    file_v2: &str,
) -> Result<()> {
    if want.is_empty() {
        return Err(Error::InvalidResource {
            what,
            reason: "an empty set leaves the cgroup's tasks nowhere to run".to_owned(),
        });
    }
    if let Some((allowed, file)) = parent_allowed(dir, file_v1, file_v2)?
        && !want.is_subset(&allowed)
    {
        return Err(Error::InvalidResource {
            what,
            reason: format!(
                "{want} is not within {allowed}, the set the parent allows ({})",
                file.display()
            ),
        });
    }
    Ok(())
}

/// v1: fills an empty `file` of `dir` (and of its empty ancestors, top-down) from
/// the nearest ancestor whose value is not empty.
fn fill_v1_from_ancestors(dir: &CgroupDir, file: &str, w: &mut Writer) -> Result<()> {
    let mut empty: Vec<PathBuf> = Vec::new();
    let mut cur = Some(dir.path.clone());
    let mut source = None;
    while let Some(d) = cur {
        let p = d.join(file);
        if !p.exists() {
            break;
        }
        let v = fsutil::read_to_string(&p)?;
        if v.trim().is_empty() {
            cur = d.parent().map(Path::to_path_buf);
            empty.push(d);
        } else {
            source = Some(v.trim().to_owned());
            break;
        }
    }
    let Some(value) = source else { return Ok(()) };
    for d in empty.iter().rev() {
        let tmp = CgroupDir {
            path: d.clone(),
            ..dir.clone()
        };
        w.write(&tmp, file, value.clone())?;
    }
    Ok(())
}

/// Applies `c`. On v1 fills empty cpus/mems from the ancestors first (module docs).
pub(crate) fn apply(dir: &CgroupDir, c: &Cpuset, w: &mut Writer) -> Result<()> {
    // v1: the parent's sets are what the check compares against, so fill first.
    if dir.version == Version::V1 {
        fill_v1_from_ancestors(dir, CPUSET_CPUS, w)?;
        fill_v1_from_ancestors(dir, CPUSET_MEMS, w)?;
    }
    if let Some(cpus) = &c.cpus {
        check(dir, cpus, "cpuset.cpus", CPUSET_CPUS, CPUSET_CPUS_EFFECTIVE)?;
    }
    if let Some(mems) = &c.mems {
        check(dir, mems, "cpuset.mems", CPUSET_MEMS, CPUSET_MEMS_EFFECTIVE)?;
    }
    if let Some(cpus) = &c.cpus {
        w.write(dir, CPUSET_CPUS, cpus.to_string())?;
    }
    if let Some(mems) = &c.mems {
        w.write(dir, CPUSET_MEMS, mems.to_string())?;
    }
    Ok(())
}

/// The CPUs and memory nodes a cgroup's tasks get.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CpusetStat {
    /// Requested CPUs (cpuset.cpus; empty means "the parent's" on v2).
    pub cpus: IdSet,
    /// Requested memory nodes (cpuset.mems).
    pub mems: IdSet,
    /// CPUs granted (v2 cpuset.cpus.effective, v1 cpuset.effective_cpus).
    pub cpus_effective: IdSet,
    /// Memory nodes granted (v2 cpuset.mems.effective, v1 cpuset.effective_mems).
    pub mems_effective: IdSet,
}

pub(crate) fn stat(dir: &CgroupDir) -> Result<CpusetStat> {
    let read = |f: &str| -> Result<IdSet> {
        let p = dir.file(f);
        IdSet::parse_file(&fsutil::read_to_string(&p)?, &p)
    };
    let (ec, em) = match dir.version {
        Version::V2 => (CPUSET_CPUS_EFFECTIVE, CPUSET_MEMS_EFFECTIVE),
        Version::V1 => (EFFECTIVE_CPUS, EFFECTIVE_MEMS),
    };
    Ok(CpusetStat {
        cpus: read(CPUSET_CPUS)?,
        mems: read(CPUSET_MEMS)?,
        cpus_effective: read(ec)?,
        mems_effective: read(em)?,
    })
}

impl Cgroup {
    /// Requested and effective CPUs and memory nodes (the files in the module docs).
    pub fn cpuset_stat(&self) -> Result<CpusetStat> {
        stat(self.dir_for(Controller::Cpuset)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fake_dir, garbage};

    #[test]
    fn list_format_round_trips() {
        for (input, out) in [
            ("", ""),
            ("0", "0"),
            ("0-3,5", "0-3,5"),
            ("5,0-1,2,3", "0-3,5"),
            ("0-1,1-4,8-9\n", "0-4,8-9"),
            ("7,7", "7"),
        ] {
            assert_eq!(
                input.parse::<IdSet>().unwrap().to_string(),
                out,
                "{input:?}"
            );
        }
        let s: IdSet = "0-3,5".parse().unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 5]);
        assert!(!"0-5".parse::<IdSet>().unwrap().is_subset(&s));
        assert!("1-2,5".parse::<IdSet>().unwrap().is_subset(&s));
        for bad in ["a", "3-1", "1,", "-", "1-", "0-4294967295", "1 2"] {
            assert!(bad.parse::<IdSet>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parent_check_names_the_allowed_set() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(CPUSET_CPUS_EFFECTIVE), "0-1\n").unwrap();
        let child = tmp.path().join("c");
        std::fs::create_dir(&child).unwrap();
        std::fs::write(child.join(CPUSET_CPUS), "").unwrap();
        let dir = fake_dir(tmp.path(), Version::V2, "c", Controller::Cpuset);
        let mut w = Writer::default();
        let e = apply(&dir, &Cpuset::with_cpus("1-3".parse().unwrap()), &mut w).unwrap_err();
        assert!(e.to_string().contains("not within 0-1"), "{e}");
        apply(&dir, &Cpuset::with_cpus("1".parse().unwrap()), &mut w).unwrap();
        assert_eq!(std::fs::read_to_string(dir.file(CPUSET_CPUS)).unwrap(), "1");
    }

    #[test]
    fn v1_fills_empty_sets_from_ancestors() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = a.join("b");
        std::fs::create_dir_all(&b).unwrap();
        for (d, cpus, mems) in [
            (tmp.path(), "0-1\n", "0\n"),
            (&a, "\n", "\n"),
            (&b, "\n", "\n"),
        ] {
            std::fs::write(d.join(CPUSET_CPUS), cpus).unwrap();
            std::fs::write(d.join(CPUSET_MEMS), mems).unwrap();
        }
        let dir = fake_dir(tmp.path(), Version::V1, "a/b", Controller::Cpuset);
        let mut w = Writer::default();
        apply(&dir, &Cpuset::default(), &mut w).unwrap();
        let written = w.into_written();
        assert_eq!(written[0].path, a.join(CPUSET_CPUS), "top-down");
        for d in [&a, &b] {
            assert_eq!(std::fs::read_to_string(d.join(CPUSET_CPUS)).unwrap(), "0-1");
            assert_eq!(std::fs::read_to_string(d.join(CPUSET_MEMS)).unwrap(), "0");
        }
    }

    #[test]
    fn parsers_never_panic() {
        for t in garbage(&["0-3,5\n", "0\n", "0-1,4-7,9\n"]) {
            let _ = t.parse::<IdSet>();
            let _ = IdSet::parse_file(&t, Path::new("g"));
        }
    }
}
