//! What cgroup operations need to know about processes, read from procfs.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;

/// The largest pid the kernel can hand out (`PID_MAX_LIMIT` on 64-bit).
pub const PID_MAX_LIMIT: i64 = 4_194_304;
/// `PF_KTHREAD` in the flags field of /proc/PID/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

/// A process id that is in the kernel's range (1 ..= 4194304).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Pid(i32);

impl Pid {
    /// Checks the range; 0 and negative numbers are refused (to the kernel they mean
    /// "the caller" or process groups, never a specific process).
    pub fn new(pid: i64) -> Result<Pid> {
        if !(1..=PID_MAX_LIMIT).contains(&pid) {
            return Err(Error::InvalidResource {
                what: "pid",
                reason: format!("{pid} is not a process id (valid: 1 to {PID_MAX_LIMIT})"),
            });
        }
        Ok(Pid(pid as i32))
    }

    /// The pid of the calling process.
    pub fn this() -> Pid {
        Pid(std::process::id() as i32)
    }

    /// The raw value.
    pub fn as_raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for Pid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Pid> {
        let n: i64 = s.trim().parse().map_err(|_| Error::InvalidResource {
            what: "pid",
            reason: format!("{s:?} is not a number"),
        })?;
        Pid::new(n)
    }
}

/// A procfs mount (default `/proc`), injectable for tests.
#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
}

impl Default for Procfs {
    fn default() -> Self {
        Procfs {
            root: PathBuf::from("/proc"),
        }
    }
}

/// Selected fields of /proc/PID/stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// The pid.
    pub pid: i32,
    /// The command name (`comm`), up to 15 bytes.
    pub comm: String,
    /// The state letter (R, S, D, Z, ...).
    pub state: char,
    /// The parent pid.
    pub ppid: i32,
    /// The kernel's `PF_*` flags.
    pub flags: u64,
    /// User CPU time in clock ticks (`sysconf(_SC_CLK_TCK)`).
    pub utime_ticks: u64,
    /// System CPU time in clock ticks.
    pub stime_ticks: u64,
    /// The number of threads.
    pub num_threads: u64,
}

impl ProcStat {
    /// Parses the text of /proc/PID/stat. `comm` may hold spaces and parentheses: it
    /// runs from the first `(` to the last `)`.
    pub fn parse(text: &str, path: &Path) -> Result<ProcStat> {
        let bad = || fsutil::parse_error(path, 1, text.trim_end());
        let open = text.find('(').ok_or_else(bad)?;
        let close = text.rfind(')').ok_or_else(bad)?;
        if close < open {
            return Err(bad());
        }
        let pid: i32 = text[..open].trim().parse().map_err(|_| bad())?;
        let comm = text[open + 1..close].to_owned();
        let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
        if rest.len() < 18 {
            return Err(bad());
        }
        let num = |i: usize| rest[i].parse::<u64>().map_err(|_| bad());
        Ok(ProcStat {
            pid,
            comm,
            state: rest[0].chars().next().ok_or_else(bad)?,
            ppid: rest[1].parse().map_err(|_| bad())?,
            flags: num(6)?,
            utime_ticks: num(11)?,
            stime_ticks: num(12)?,
            num_threads: num(17)?,
        })
    }

    /// Whether this is a kernel thread (`PF_KTHREAD`).
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

impl Procfs {
    /// A procfs mounted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Procfs {
        Procfs { root: root.into() }
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads /proc/PID/stat; a missing process is [`Error::NoSuchProcess`].
    pub fn stat(&self, pid: Pid) -> Result<ProcStat> {
        let path = self.root.join(pid.0.to_string()).join("stat");
        match fsutil::read_to_string(&path) {
            Ok(text) => ProcStat::parse(&text, &path),
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => {
                Err(Error::NoSuchProcess { pid: pid.0 })
            }
            Err(e) => Err(e),
        }
    }

    /// The thread ids of a process (/proc/PID/task).
    pub fn threads(&self, pid: Pid) -> Result<Vec<i32>> {
        let dir = self.root.join(pid.0.to_string()).join("task");
        let rd = std::fs::read_dir(&dir).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::NoSuchProcess { pid: pid.0 }
            } else {
                Error::Read {
                    path: dir.clone(),
                    source,
                }
            }
        })?;
        let mut tids: Vec<i32> = rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        Ok(tids)
    }

    /// A user-space process that exists: the checks to make before moving it.
    pub fn user_process(&self, pid: Pid) -> Result<ProcStat> {
        let st = self.stat(pid)?;
        if st.is_kernel_thread() {
            return Err(Error::KernelThread {
                pid: pid.0,
                comm: st.comm,
            });
        }
        Ok(st)
    }
}

/// Clock ticks per second of the times in /proc/PID/stat.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let text = include_str!("../tests/fixtures/proc-stat.busy");
        let st = ProcStat::parse(text, Path::new("stat")).unwrap();
        assert_eq!(st.pid, 4021);
        assert_eq!(st.comm, "sh (busy) x");
        assert_eq!(st.state, 'R');
        assert_eq!(st.ppid, 4019);
        assert_eq!(
            (st.utime_ticks, st.stime_ticks, st.num_threads),
            (191, 2, 1)
        );
        assert!(!st.is_kernel_thread());
    }

    #[test]
    fn kernel_thread_flag() {
        let text = include_str!("../tests/fixtures/proc-stat.kthreadd");
        let st = ProcStat::parse(text, Path::new("stat")).unwrap();
        assert_eq!(st.comm, "kthreadd");
        assert!(st.is_kernel_thread());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for t in [
            "",
            "12",
            "12 (x",
            "x) (",
            "1 (a) R",
            "1 (a) R 1 2 3 4 5 six",
        ] {
            assert!(ProcStat::parse(t, Path::new("s")).is_err(), "{t:?}");
        }
    }

    #[test]
    fn pid_range() {
        assert!(Pid::new(0).is_err());
        assert!(Pid::new(-5).is_err());
        assert!(Pid::new(PID_MAX_LIMIT + 1).is_err());
        assert_eq!(Pid::new(398).unwrap().as_raw(), 398);
        assert!("abc".parse::<Pid>().is_err());
    }
}
