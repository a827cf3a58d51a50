//! Freeze, thaw, kill and recursive delete.
//!
//! | operation | v2 | v1 |
//! |---|---|---|
//! | freeze / thaw | `cgroup.freeze` 1/0, then wait for `frozen 1/0` in `cgroup.events` (5.2+) | `freezer.state` FROZEN/THAWED, then wait until it reads back so |
//! | kill | `cgroup.kill` (5.14+), else freeze + SIGKILL each process + thaw | freeze + SIGKILL + thaw (freezer hierarchy), else SIGKILL until empty |
//!
//! Without cgroup.kill each process is signalled through a pidfd, and only if it is
//! still in the cgroup once the pidfd is open ([`kill_listed`]): a pid read from
//! cgroup.procs whose process exited meanwhile, and whose number now belongs to an
//! unrelated process, is never signalled.
//! | delete -r | children first; processes drained or killed; frozen children thawed | the same |

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup::{CGROUP_PROCS, Cgroup, CgroupDir};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::{Controller, Version};
use crate::path::CgroupPath;
use crate::proc::Pid;
use crate::walk::{Visit, Walk};

/// v2: write 1 to freeze, 0 to thaw (kernel 5.2+).
pub const CGROUP_FREEZE: &str = "cgroup.freeze";
/// v2: `populated` and `frozen` state, changes notified through inotify/poll.
pub const CGROUP_EVENTS: &str = "cgroup.events";
/// v2: write 1 to SIGKILL every process in the subtree (kernel 5.14+).
pub const CGROUP_KILL: &str = "cgroup.kill";
/// v1 freezer: THAWED, FREEZING or FROZEN.
pub const FREEZER_STATE: &str = "freezer.state";

/// How long freeze/thaw/kill wait for the kernel to finish.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`Cgroup::delete_recursive`] does with processes still inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftovers {
    /// Refuse: fail with EBUSY naming the cgroup that still holds processes.
    Refuse,
    /// Move them out, as [`Cgroup::drain_to_parent`] does for the top cgroup.
    Drain,
    /// SIGKILL them (through cgroup.kill or the freezer, so forks cannot escape).
    Kill,
}

/// The freezer state of a cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FreezerState {
    /// Running.
    Thawed,
    /// v1 only: freezing in progress.
    Freezing,
    /// Every process stopped.
    Frozen,
}

impl Cgroup {
    /// The directory that freezes this cgroup: the v1 freezer hierarchy when the
    /// cgroup spans it, else the v2 directory (freezing is core on v2).
    fn freezer_dir(&self) -> Result<&CgroupDir> {
        self.dirs()
            .iter()
            .find(|d| d.version == Version::V1 && d.controllers.contains(&Controller::Freezer))
            .or_else(|| self.dirs().iter().find(|d| d.version == Version::V2))
            .ok_or_else(|| Error::NotInHierarchy {
                path: self.path().to_string(),
                controller: Controller::Freezer,
            })
    }

    /// Freezes every process of the cgroup and its descendants, and waits until the
    /// kernel reports it frozen.
    pub fn freeze(&self) -> Result<()> {
        set_frozen(self.freezer_dir()?, true)
    }

    /// Thaws the cgroup and waits until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        set_frozen(self.freezer_dir()?, false)
    }

    /// The freezer state.
    pub fn freezer_state(&self) -> Result<FreezerState> {
        read_frozen(self.freezer_dir()?)
    }

    /// Whether any process is in the cgroup or its descendants (v2 `populated` in
    /// cgroup.events; v1: a recursive look at cgroup.procs).
    pub fn is_populated(&self) -> Result<bool> {
        match self.dirs().iter().find(|d| d.version == Version::V2) {
            Some(d) => Ok(read_events(d)?.populated),
            None => {
                let d = self.dirs().first().ok_or_else(|| Error::NotFound {
                    path: self.path().to_string(),
                })?;
                populated_v1(&d.path)
            }
        }
    }

    /// SIGKILLs every process in the cgroup and its descendants, and waits until it
    /// is empty. Uses cgroup.kill (5.14+) where present; otherwise freezes the cgroup
    /// so that no process can fork while it is being signalled. Frozen descendants
    /// are thawed afterwards, since a task frozen by the v1 freezer dies only once
    /// thawed.
    pub fn kill(&self) -> Result<()> {
        let cgroup_kill = self
            .dirs()
            .iter()
            .find(|d| d.version == Version::V2)
            .map(|d| d.file(CGROUP_KILL))
            .filter(|f| f.exists());
        if let Some(file) = cgroup_kill {
            fsutil::write(&file, "1")?;
        } else {
            let frozen = self.freezer_dir().is_ok();
            if frozen {
                self.freeze()?;
            }
            let start = Instant::now();
            loop {
                let listed = kill_listed(|| self.all_procs(), frozen)?;
                // Frozen, nothing could fork meanwhile: one pass reached everyone.
                if frozen || listed == 0 || start.elapsed() > SETTLE_TIMEOUT {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for d in self.dirs() {
            thaw_tree(d)?;
        }
        self.wait_empty()
    }

    /// Sends `sig` (a signal number, e.g. `libc::SIGTERM`) once to every process in
    /// the cgroup and its descendants, through pidfds checked against a second
    /// listing (never to a reused pid); a process that exits meanwhile is skipped.
    /// Unlike [`Cgroup::kill`] it neither freezes nor waits: a process forked during
    /// the call may be missed. Returns how many processes were listed.
    pub fn signal(&self, sig: libc::c_int) -> Result<usize> {
        signal_listed(|| self.all_procs(), false, sig)
    }

    /// Every pid in this cgroup and its descendants (first hierarchy).
    pub fn all_procs(&self) -> Result<Vec<Pid>> {
        let d = self.dirs().first().ok_or_else(|| Error::NotFound {
            path: self.path().to_string(),
        })?;
        let mut out = Vec::new();
        collect_procs(&d.path, &mut out)?;
        Ok(out)
    }

    fn wait_empty(&self) -> Result<()> {
        let start = Instant::now();
        while self.is_populated()? {
            if start.elapsed() > SETTLE_TIMEOUT {
                return Err(Error::Timeout {
                    what: "the cgroup to empty after SIGKILL",
                    path: self.path().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// The child cgroups (paths relative to the root), from every hierarchy spanned.
    pub fn children(&self) -> Result<Vec<CgroupPath>> {
        let mut out: Vec<CgroupPath> = Vec::new();
        for d in self.dirs() {
            // A cgroup directory's link count is 2 + its subdirectories (kernfs keeps
            // it so): at 2 there is nothing to list. (Other counts, e.g. 1 where a
            // filesystem does not count subdirectories, mean: list.)
            if std::fs::symlink_metadata(&d.path).is_ok_and(|m| m.nlink() == 2) {
                continue;
            }
            for name in child_dirs(&d.path)? {
                let p = self.path().join(&name)?;
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(out)
    }

    /// Removes the cgroup and every descendant, deepest first, on every hierarchy
    /// it spans. Frozen descendants are thawed first (so that drained or killed
    /// processes can move or die), and EBUSY is retried for a bounded time.
    pub fn delete_recursive(self, leftovers: Leftovers) -> Result<()> {
        if leftovers == Leftovers::Kill && self.is_populated()? {
            self.kill()?;
        }
        for d in self.dirs() {
            thaw_tree(d)?;
        }
        if leftovers == Leftovers::Drain {
            drain_tree(&self)?;
        }
        for d in self.dirs().iter().rev() {
            remove_tree(&d.path)?;
        }
        Ok(())
    }
}

/// SIGKILLs the processes `list` reports (a read of cgroup.procs), race-free against
/// pid reuse: every listed pid is opened as a pidfd (pidfd_open, 5.3), `list` is read
/// again, and only the pids still listed are signalled, each through its pidfd
/// (pidfd_send_signal). A pidfd opened on a pid whose process had exited and whose
/// number was given to another process names that other process, which is not in
/// the second listing (and if it is, it is a member, rightly killed); a process that
/// exits after its pidfd is open is not replaced by one that reuses its number.
/// Returns how many pids the first read listed.
///
/// Without pidfd_open (ENOSYS, before 5.3) kill(2) is used only when `frozen`: a
/// task frozen by the v1 freezer does not exit, so its pid cannot be recycled;
/// otherwise that is [`Error::Unsupported`].
pub(crate) fn kill_listed(list: impl FnMut() -> Result<Vec<Pid>>, frozen: bool) -> Result<usize> {
    signal_listed(list, frozen, libc::SIGKILL)
}

/// [`kill_listed`] with any signal `sig`.
fn signal_listed(
    mut list: impl FnMut() -> Result<Vec<Pid>>,
    frozen: bool,
    sig: libc::c_int,
) -> Result<usize> {
    let first = list()?;
    let mut opened = Vec::with_capacity(first.len());
    for &pid in &first {
        match crate::sys::pidfd_open(pid.as_raw()) {
            Ok(fd) => opened.push((pid, Some(fd))),
            // Gone already: nothing to kill.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) && frozen => opened.push((pid, None)),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                return Err(Error::Unsupported {
                    controller: Controller::Freezer,
                    what: "kill without cgroup.kill or a freezer",
                    layout: crate::Layout::V1,
                    reason: "signalling pids read from cgroup.procs safely needs pidfd_open \
                             (kernel 5.3+), cgroup.kill (5.14+) or a freezer hierarchy"
                        .to_owned(),
                });
            }
            Err(source) => {
                return Err(Error::Signal {
                    syscall: "pidfd_open",
                    pid: pid.as_raw(),
                    source,
                });
            }
        }
    }
    if opened.is_empty() {
        return Ok(first.len());
    }
    let mut members = list()?;
    members.sort_unstable();
    for (pid, fd) in opened {
        if members.binary_search(&pid).is_err() {
            continue;
        }
        let (syscall, res) = match fd {
            Some(fd) => ("pidfd_send_signal", crate::sys::pidfd_send_signal(&fd, sig)),
            None => {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid is a
                // frozen member of the cgroup (see above), so it names that member.
                let r = unsafe { libc::kill(pid.as_raw(), sig) };
                (
                    "kill",
                    if r < 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(())
                    },
                )
            }
        };
        match res {
            Ok(()) => {}
            // Exited meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(source) => {
                return Err(Error::Signal {
                    syscall,
                    pid: pid.as_raw(),
                    source,
                });
            }
        }
    }
    Ok(first.len())
}

/// Names of the child directories of a cgroup directory, sorted.
fn child_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut first_err = None;
    Walk::new(dir)
        .max_depth(Some(1))
        .run(
            |e| {
                if e.depth == 1 {
                    out.push(e.rel.to_owned());
                }
                Visit::Descend
            },
            |_, err| {
                first_err.get_or_insert(err);
            },
        )
        .and_then(|()| first_err.map_or(Ok(()), Err))
        .map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
    out.sort();
    Ok(out)
}

/// Pre-order list of the cgroup directories of the tree under `dir` (top first).
fn tree_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Walk::new(dir)
        .collect()
        .map(|rels| {
            rels.iter()
                .map(|r| {
                    if r.is_empty() {
                        dir.to_path_buf()
                    } else {
                        dir.join(r)
                    }
                })
                .collect()
        })
        .map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })
}

fn collect_procs(dir: &Path, out: &mut Vec<Pid>) -> Result<()> {
    let dirs = match tree_dirs(dir) {
        Ok(d) => d,
        // Removed meanwhile.
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    for d in dirs {
        match fsutil::read_to_string(&d.join(CGROUP_PROCS)) {
            Ok(text) => out.extend(
                text.lines()
                    .filter_map(|l| l.trim().parse::<i64>().ok())
                    .filter_map(|n| Pid::new(n).ok()),
            ),
            // Removed meanwhile.
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn populated_v1(dir: &Path) -> Result<bool> {
    let mut v = Vec::new();
    collect_procs(dir, &mut v)?;
    Ok(!v.is_empty())
}

/// `populated` and `frozen` from v2 cgroup.events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CgroupEvents {
    /// A process is in the cgroup or a descendant.
    pub populated: bool,
    /// The cgroup is frozen (kernel 5.2+; `false` where the key is absent).
    pub frozen: bool,
}

impl CgroupEvents {
    /// Parses cgroup.events.
    pub fn parse(text: &str, path: &Path) -> Result<CgroupEvents> {
        let mut ev = CgroupEvents::default();
        for (k, v) in fsutil::parse_flat_keyed(path, text)? {
            match k {
                "populated" => ev.populated = v != 0,
                "frozen" => ev.frozen = v != 0,
                _ => {}
            }
        }
        Ok(ev)
    }
}

pub(crate) fn read_events(d: &CgroupDir) -> Result<CgroupEvents> {
    let p = d.file(CGROUP_EVENTS);
    CgroupEvents::parse(&fsutil::read_to_string(&p)?, &p)
}

fn read_frozen(d: &CgroupDir) -> Result<FreezerState> {
    match d.version {
        Version::V2 => Ok(if read_events(d)?.frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        }),
        Version::V1 => {
            let p = d.file(FREEZER_STATE);
            let t = fsutil::read_to_string(&p)?;
            match t.trim() {
                "THAWED" => Ok(FreezerState::Thawed),
                "FREEZING" => Ok(FreezerState::Freezing),
                "FROZEN" => Ok(FreezerState::Frozen),
                other => Err(fsutil::parse_error(&p, 1, other)),
            }
        }
    }
}

fn set_frozen(d: &CgroupDir, frozen: bool) -> Result<()> {
    match d.version {
        Version::V2 => {
            let f = d.file(CGROUP_FREEZE);
            if !f.exists() {
                return Err(Error::Unsupported {
                    controller: Controller::Freezer,
                    what: "freeze",
                    layout: crate::Layout::V2,
                    reason: format!(
                        "{} does not exist: the v2 freezer needs kernel 5.2+",
                        f.display()
                    ),
                });
            }
            fsutil::write(&f, if frozen { "1" } else { "0" })?;
        }
        Version::V1 => fsutil::write(
            &d.file(FREEZER_STATE),
            if frozen { "FROZEN" } else { "THAWED" },
        )?,
    }
    let want = if frozen {
        FreezerState::Frozen
    } else {
        FreezerState::Thawed
    };
    let start = Instant::now();
    loop {
        let now = read_frozen(d)?;
        if now == want {
            return Ok(());
        }
        if start.elapsed() > SETTLE_TIMEOUT {
            return Err(Error::Timeout {
                what: if frozen {
                    "the cgroup to freeze"
                } else {
                    "the cgroup to thaw"
                },
                path: d.path.display().to_string(),
            });
        }
        // v1: writing FROZEN again retries tasks that could not be frozen yet.
        if frozen && d.version == Version::V1 {
            fsutil::write(&d.file(FREEZER_STATE), "FROZEN")?;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Thaws every frozen cgroup of the tree under `d` (the top included).
fn thaw_tree(d: &CgroupDir) -> Result<()> {
    let has_freezer = match d.version {
        Version::V1 => d.controllers.contains(&Controller::Freezer),
        Version::V2 => d.file(CGROUP_FREEZE).exists(),
    };
    if !has_freezer {
        return Ok(());
    }
    for p in tree_dirs(&d.path)? {
        let sub = CgroupDir {
            path: p,
            ..d.clone()
        };
        if read_frozen(&sub)? != FreezerState::Thawed {
            set_frozen(&sub, false)?;
        }
    }
    Ok(())
}

/// Moves the processes of every descendant out of the tree, to where the top's
/// processes go.
fn drain_tree(cg: &Cgroup) -> Result<()> {
    for child in cg.children()? {
        let c = Cgroup::load(cg.hierarchy(), &child)?;
        drain_tree(&c)?;
        // A child's processes go to the top's drain target, not into the top, which
        // is about to be removed: move them up one level at a time.
        c.drain_to_parent()?;
    }
    cg.drain_to_parent()?;
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<()> {
    let dirs = match tree_dirs(dir) {
        Ok(d) => d,
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    for p in dirs.iter().rev() {
        match crate::cgroup::rmdir_retry(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Rmdir {
                    path: p.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// A process of the test's own, in no cgroup of a test: what a recycled pid of a
    /// stale cgroup.procs listing would name.
    fn bystander() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("start sleep")
    }

    fn pid_of(c: &std::process::Child) -> Pid {
        Pid::new(i64::from(c.id())).expect("pid in range")
    }

    #[test]
    fn kill_listed_spares_a_pid_that_left_the_listing() {
        // First read: the pid (as a stale read would show it); second read, after the
        // pidfd is open: not a member. It must not be signalled.
        let mut by = bystander();
        let pid = pid_of(&by);
        let mut reads = vec![vec![], vec![pid]];
        let listed = kill_listed(|| Ok(reads.pop().unwrap_or_default()), false).unwrap();
        assert_eq!(listed, 1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(by.try_wait().unwrap().is_none(), "a non-member was killed");

        // Listed both times: a member, killed through its pidfd.
        let mut reads = vec![vec![pid], vec![pid]];
        kill_listed(|| Ok(reads.pop().unwrap_or_default()), false).unwrap();
        assert_eq!(by.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn kill_listed_skips_processes_already_gone() {
        let mut by = bystander();
        let pid = pid_of(&by);
        by.kill().unwrap();
        by.wait().unwrap();
        // Reaped: pidfd_open fails with ESRCH (or the pid names a newer process that
        // is not listed the second time); either way nothing is signalled, no error.
        let mut reads = vec![vec![], vec![pid]];
        assert_eq!(
            kill_listed(|| Ok(reads.pop().unwrap_or_default()), false).unwrap(),
            1
        );
        assert_eq!(kill_listed(|| Ok(vec![]), false).unwrap(), 0);
    }

    #[test]
    fn parses_cgroup_events() {
        let p = Path::new("cgroup.events");
        assert_eq!(
            CgroupEvents::parse("populated 1\nfrozen 0\n", p).unwrap(),
            CgroupEvents {
                populated: true,
                frozen: false
            }
        );
        assert!(!CgroupEvents::parse("populated 0\n", p).unwrap().frozen);
        assert!(CgroupEvents::parse("populated yes\n", p).is_err());
    }
}
