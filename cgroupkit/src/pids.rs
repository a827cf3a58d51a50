//! The pids controller: a limit on the number of tasks (processes and threads).
//!
//! The files are the same on v1 and v2: pids.max (`max` or a count), pids.current,
//! pids.peak (6.1+) and pids.events (`max N`: forks refused by this cgroup's limit).

use std::fmt;
use std::path::Path;

use crate::cgroup::{Cgroup, CgroupDir};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::Controller;
use crate::proc::PID_MAX_LIMIT;
use crate::resources::Writer;

/// The task limit: a count or `max`.
pub const PIDS_MAX: &str = "pids.max";
/// Tasks in the cgroup and its descendants now.
pub const PIDS_CURRENT: &str = "pids.current";
/// Highest pids.current seen (kernel 6.1+ on v2; also on recent v1).
pub const PIDS_PEAK: &str = "pids.peak";
/// `max N`: forks that failed because of a limit (this cgroup's or an ancestor's
/// limit, as seen from this cgroup).
pub const PIDS_EVENTS: &str = "pids.events";

/// A task limit: a count, or `max` for none.
///
/// # Examples
/// ```
/// use cgroupkit::PidsLimit;
/// assert_eq!(PidsLimit::new(5)?.to_string(), "5");
/// assert_eq!(PidsLimit::Max.to_string(), "max");
/// assert!(PidsLimit::new(5_000_000).is_err());
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PidsLimit {
    /// At most this many tasks (1 ..= 4194304, the kernel's `PID_MAX_LIMIT`).
    Tasks(u64),
    /// No limit.
    Max,
}

impl PidsLimit {
    /// A limit of `n` tasks, checked against the kernel's range; 0 is refused (no
    /// process could be started in the cgroup; to forbid forks of one process, give 1).
    pub fn new(n: u64) -> Result<PidsLimit> {
        if n == 0 {
            return Err(Error::InvalidResource {
                what: "pids.max",
                reason: "0 tasks is not a usable limit: no process could be started in the \
                         cgroup; give at least 1 (1 forbids forks of a single process), or \
                         `max` for no limit"
                    .to_owned(),
            });
        }
        if n > PID_MAX_LIMIT as u64 {
            return Err(Error::InvalidResource {
                what: "pids.max",
                reason: format!(
                    "{n} is above the kernel's maximum of {PID_MAX_LIMIT} tasks; use `max` for no limit"
                ),
            });
        }
        Ok(PidsLimit::Tasks(n))
    }

    /// Parses pids.max.
    pub fn parse(text: &str, path: &Path) -> Result<PidsLimit> {
        match text.trim() {
            "max" => Ok(PidsLimit::Max),
            t => t
                .parse()
                .map(PidsLimit::Tasks)
                .map_err(|_| fsutil::parse_error(path, 1, text.trim_end())),
        }
    }
}

impl fmt::Display for PidsLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidsLimit::Tasks(n) => n.fmt(f),
            PidsLimit::Max => f.write_str("max"),
        }
    }
}

/// The pids settings of a cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Pids {
    /// The task limit (pids.max).
    pub max: Option<PidsLimit>,
}

impl Pids {
    /// A limit of `n` tasks.
    pub fn with_max(n: u64) -> Result<Pids> {
        Ok(Pids {
            max: Some(PidsLimit::new(n)?),
        })
    }
}

/// Task count and limit hits of a cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PidsStat {
    /// Tasks now (pids.current).
    pub current: u64,
    /// Highest count seen (pids.peak), where the kernel has it.
    pub peak: Option<u64>,
    /// Forks refused by a pids limit (pids.events `max`).
    pub events_max: u64,
}

impl PidsStat {
    /// Parses pids.events into `events_max` (other keys such as 6.15's
    /// `max.imposed` are skipped).
    pub fn parse_events(text: &str, path: &Path) -> Result<u64> {
        Ok(fsutil::parse_flat_keyed(path, text)?
            .into_iter()
            .find(|(k, _)| *k == "max")
            .map_or(0, |(_, v)| v))
    }
}

/// Applies `p` (same file on v1 and v2).
pub(crate) fn apply(dir: &CgroupDir, p: &Pids, w: &mut Writer) -> Result<()> {
    validate(p)?;
    let Some(max) = p.max else { return Ok(()) };
    w.write(dir, PIDS_MAX, max.to_string())
}

/// The checks of [`PidsLimit::new`], for a limit built from the public variant.
pub(crate) fn validate(p: &Pids) -> Result<()> {
    if let Some(PidsLimit::Tasks(n)) = p.max {
        PidsLimit::new(n)?;
    }
    Ok(())
}

pub(crate) fn stat(dir: &CgroupDir) -> Result<PidsStat> {
    let events = dir.file(PIDS_EVENTS);
    Ok(PidsStat {
        current: fsutil::read_u64(&dir.file(PIDS_CURRENT))?,
        peak: fsutil::read_u64_if_exists(&dir.file(PIDS_PEAK))?,
        events_max: PidsStat::parse_events(&fsutil::read_to_string(&events)?, &events)?,
    })
}

impl Cgroup {
    /// Task count and limit hits: pids.current, pids.peak, pids.events (v1 and v2).
    pub fn pids_stat(&self) -> Result<PidsStat> {
        stat(self.dir_for(Controller::Pids)?)
    }

    /// The task limit in force (pids.max).
    pub fn pids_max(&self) -> Result<PidsLimit> {
        let p = self.dir_for(Controller::Pids)?.file(PIDS_MAX);
        PidsLimit::parse(&fsutil::read_to_string(&p)?, &p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::garbage;

    const EVENTS_V1: &str = include_str!("../tests/fixtures/pids.events.v1");
    const EVENTS_V2: &str = include_str!("../tests/fixtures/pids.events.v2-6.12");

    #[test]
    fn parses_events_and_max() {
        let p = Path::new("f");
        assert_eq!(PidsStat::parse_events(EVENTS_V1, p).unwrap(), 12);
        assert_eq!(PidsStat::parse_events(EVENTS_V2, p).unwrap(), 1);
        assert_eq!(
            PidsStat::parse_events("max 4\nmax.imposed 7\n", p).unwrap(),
            4
        );
        assert_eq!(PidsLimit::parse("max\n", p).unwrap(), PidsLimit::Max);
        assert_eq!(PidsLimit::parse("5\n", p).unwrap(), PidsLimit::Tasks(5));
        assert!(PidsLimit::parse("-1\n", p).is_err());
    }

    #[test]
    fn limit_range() {
        assert!(PidsLimit::new(0).is_err());
        assert!(PidsLimit::new(1).is_ok());
        assert!(PidsLimit::new(PID_MAX_LIMIT as u64).is_ok());
        assert!(PidsLimit::new(PID_MAX_LIMIT as u64 + 1).is_err());
    }

    #[test]
    fn parsers_never_panic() {
        for t in garbage(&[EVENTS_V1, EVENTS_V2, "5\n"]) {
            let _ = PidsStat::parse_events(&t, Path::new("g"));
            let _ = PidsLimit::parse(&t, Path::new("g"));
        }
    }
}
