//! `Cgroup`: a handle on one cgroup, the same relative path on every hierarchy it spans.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cpu::{self, CpuQuota, CpuStat};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::{Controller, Hierarchy, Layout, Mount, Version};
use crate::path::CgroupPath;
use crate::proc::{Pid, Procfs};
use crate::resources::{Resources, Writer, Written};

/// Processes of a cgroup (v1 and v2): writing a pid moves the whole process.
pub const CGROUP_PROCS: &str = "cgroup.procs";
/// v1: the threads of a cgroup.
pub const TASKS: &str = "tasks";
/// v2: the threads of a cgroup.
pub const CGROUP_THREADS: &str = "cgroup.threads";
/// v2: the controllers enabled for a cgroup's children.
pub const CGROUP_SUBTREE_CONTROL: &str = "cgroup.subtree_control";

const EBUSY: i32 = 16;
const EINVAL: i32 = 22;
const ESRCH: i32 = 3;
/// How long `delete` retries EBUSY: a cgroup stays populated for a moment after its
/// last process exits, until the zombie is reaped.
const DELETE_RETRY: Duration = Duration::from_millis(500);

/// The directory of a cgroup on one hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupDir {
    /// v1 or v2.
    pub version: Version,
    /// The directory, e.g. `/sys/fs/cgroup/cpu/myapp`.
    pub path: PathBuf,
    /// The hierarchy's mount point, e.g. `/sys/fs/cgroup/cpu`.
    pub mount_point: PathBuf,
    /// The controllers this hierarchy serves.
    pub controllers: Vec<Controller>,
}

impl CgroupDir {
    fn new(mount: &Mount, path: &CgroupPath) -> CgroupDir {
        CgroupDir {
            version: mount.version,
            path: path.under(&mount.mount_point),
            mount_point: mount.mount_point.clone(),
            controllers: mount.controllers.clone(),
        }
    }

    /// A file of this cgroup directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// A cgroup: one relative path, present on the hierarchies that serve its controllers.
///
/// On cgroup v2 that is one directory; on v1 and hybrid hosts, one per hierarchy.
///
/// # Examples
/// Cap a process at 20% of one CPU, as `cgctl limit --cpu 0.2 --pid 398` does:
/// ```no_run
/// use cgroupkit::{Cgroup, CgroupPath, Controller, Cpu, CpuQuota, Hierarchy, Pid, Resources};
/// let h = Hierarchy::detect()?;
/// let cg = Cgroup::create(&h, &CgroupPath::new("demo/capped")?, &[Controller::Cpu])?;
/// let mut r = Resources::default();
/// r.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(0.2, 100_000)?));
/// cg.apply(&r)?;
/// cg.add_process(Pid::new(398)?)?;
/// println!("{:?}", cg.cpu_stat()?);
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    path: CgroupPath,
    dirs: Vec<CgroupDir>,
    created: Vec<PathBuf>,
    procfs: Procfs,
}

impl Cgroup {
    /// Creates the cgroup (and missing parents, like `mkdir -p`) on every hierarchy
    /// serving `controllers` (plus, on v1, cpuacct with cpu, and on hybrid hosts the
    /// unified tree); an existing cgroup is reused. On v2 the controllers are
    /// enabled in cgroup.subtree_control of every ancestor.
    ///
    /// On error, the directories this call created are removed again.
    pub fn create(h: &Hierarchy, path: &CgroupPath, controllers: &[Controller]) -> Result<Cgroup> {
        let mut mounts = h.mounts_for(controllers)?;
        // Where cpuacct is a v1 hierarchy of its own, a cgroup with cpu joins it too,
        // so that its CPU usage is accounted (cpu_stat's usage fields).
        if controllers.contains(&Controller::Cpu)
            && let Some(acct) = h.mount_for(Controller::Cpuacct)
            && !mounts.iter().any(|m| std::ptr::eq(*m, acct))
        {
            mounts.push(acct);
        }
        // On hybrid hosts the cgroup is also made in the unified tree, as systemd
        // does, so that PSI, cgroup.events and cgroup.kill work for it.
        if let Some(u) = h.unified()
            && h.layout() == Layout::Hybrid
            && !mounts.iter().any(|m| std::ptr::eq(*m, u))
        {
            mounts.push(u);
        }
        let mut cg = Cgroup {
            hierarchy: h.clone(),
            path: path.clone(),
            dirs: mounts.iter().map(|m| CgroupDir::new(m, path)).collect(),
            created: Vec::new(),
            procfs: Procfs::default(),
        };
        let mut made = Vec::new();
        let res = mounts
            .iter()
            .try_for_each(|m| create_on(m, path, controllers, &mut made));
        cg.created = made;
        match res {
            Ok(()) => Ok(cg),
            Err(e) => {
                // Best effort: the original error is what the caller needs to see.
                let _ = cg.rollback();
                Err(e)
            }
        }
    }

    /// Opens an existing cgroup on the hierarchies serving `controllers`; it must
    /// exist on each of them.
    pub fn open(h: &Hierarchy, path: &CgroupPath, controllers: &[Controller]) -> Result<Cgroup> {
        let mut dirs: Vec<CgroupDir> = h
            .mounts_for(controllers)?
            .into_iter()
            .map(|m| CgroupDir::new(m, path))
            .collect();
        if let Some(missing) = dirs.iter().find(|d| !is_real_dir(&d.path)) {
            return Err(Error::NotFound {
                path: format!("{path} (no {})", missing.path.display()),
            });
        }
        // The unified companion of a hybrid host's cgroup, when it has one.
        if let Some(u) = h.unified().filter(|_| h.layout() == Layout::Hybrid) {
            let d = CgroupDir::new(u, path);
            if !dirs.contains(&d) && is_real_dir(&d.path) {
                dirs.push(d);
            }
        }
        Ok(Cgroup {
            hierarchy: h.clone(),
            path: path.clone(),
            dirs,
            created: Vec::new(),
            procfs: Procfs::default(),
        })
    }

    /// Opens an existing cgroup on every hierarchy where its directory exists
    /// (named v1 hierarchies such as `name=systemd` included).
    pub fn load(h: &Hierarchy, path: &CgroupPath) -> Result<Cgroup> {
        let dirs: Vec<CgroupDir> = h
            .mounts()
            .iter()
            .map(|m| CgroupDir::new(m, path))
            .filter(|d| is_real_dir(&d.path))
            .collect();
        if dirs.is_empty() {
            return Err(Error::NotFound {
                path: path.to_string(),
            });
        }
        Ok(Cgroup {
            hierarchy: h.clone(),
            path: path.clone(),
            dirs,
            created: Vec::new(),
            procfs: Procfs::default(),
        })
    }

    /// Uses another procfs (default `/proc`) for process checks.
    pub fn with_procfs(mut self, procfs: Procfs) -> Cgroup {
        self.procfs = procfs;
        self
    }

    /// The cgroup's path relative to the hierarchy roots.
    pub fn path(&self) -> &CgroupPath {
        &self.path
    }

    /// The hierarchies this handle was made from.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// The cgroup's directory on each hierarchy it spans.
    pub fn dirs(&self) -> &[CgroupDir] {
        &self.dirs
    }

    /// The directories that [`Cgroup::create`] made (parents first); empty when the
    /// cgroup already existed.
    pub fn created(&self) -> &[PathBuf] {
        &self.created
    }

    /// Removes the directories [`Cgroup::create`] made, deepest first, so that a
    /// failed operation leaves nothing behind. Directories that existed before are
    /// left alone.
    pub fn rollback(&mut self) -> Result<()> {
        let mut first_err = None;
        while let Some(dir) = self.created.pop() {
            if let Err(source) = rmdir_retry(&dir) {
                first_err.get_or_insert(Error::Rmdir { path: dir, source });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The directory on the hierarchy serving `controller`.
    pub fn dir_for(&self, controller: Controller) -> Result<&CgroupDir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .ok_or(Error::ControllerUnavailable {
                controller,
                layout: self.hierarchy.layout(),
            })
    }

    /// Applies `resources`, returning every file written and the value written.
    ///
    /// v1: cpu.cfs_period_us then cpu.cfs_quota_us; v2: cpu.max. Every value is
    /// checked first ([`Resources::validate`]): bad input writes nothing.
    pub fn apply(&self, resources: &Resources) -> Result<Vec<Written>> {
        resources.validate()?;
        let mut w = Writer::default();
        if let Some(c) = &resources.cpu {
            cpu::apply(self.dir_for(Controller::Cpu)?, c, &mut w)?;
        }
        if let Some(c) = &resources.cpuset {
            crate::cpuset::apply(self.dir_for(Controller::Cpuset)?, c, &mut w)?;
        }
        if let Some(m) = &resources.memory {
            crate::memory::apply(self.dir_for(Controller::Memory)?, m, &mut w)?;
        }
        if let Some(p) = &resources.pids {
            crate::pids::apply(self.dir_for(Controller::Pids)?, p, &mut w)?;
        }
        if let Some(io) = &resources.io {
            crate::io::apply(self.dir_for(Controller::Io)?, io, &mut w)?;
        }
        if let Some(h) = &resources.hugetlb {
            crate::hugetlb::apply(self.dir_for(Controller::Hugetlb)?, h, &mut w)?;
        }
        if let Some(d) = &resources.devices {
            crate::devices::apply(self, d, &mut w)?;
        }
        Ok(w.into_written())
    }

    /// The CPU bandwidth limit currently set.
    pub fn cpu_quota(&self) -> Result<CpuQuota> {
        cpu::read_quota(self.dir_for(Controller::Cpu)?)
    }

    /// Moves a whole process (every thread) into the cgroup on each hierarchy it
    /// spans, by writing its pid to cgroup.procs.
    ///
    /// Errors: [`Error::NoSuchProcess`], [`Error::KernelThread`], or the write error.
    /// On v1 hosts with several hierarchies the moves are not atomic as a whole.
    pub fn add_process(&self, pid: Pid) -> Result<()> {
        for d in &self.dirs {
            self.write_pid(&d.file(CGROUP_PROCS), pid)?;
        }
        Ok(())
    }

    fn write_pid(&self, file: &Path, pid: Pid) -> Result<()> {
        fsutil::write(file, &pid.to_string()).map_err(|e| match e.raw_os_error() {
            Some(ESRCH) => Error::NoSuchProcess { pid: pid.as_raw() },
            // The kernel refuses kernel threads with EINVAL; say so when that is why.
            Some(EINVAL) => match self.procfs.user_process(pid) {
                Err(k @ Error::KernelThread { .. }) => k,
                Err(gone @ Error::NoSuchProcess { .. }) => gone,
                _ => e,
            },
            _ => e,
        })
    }

    /// The processes in the cgroup (from the first hierarchy it spans).
    pub fn procs(&self) -> Result<Vec<Pid>> {
        self.read_ids(CGROUP_PROCS)
    }

    /// The threads in the cgroup (v1 `tasks`, v2 `cgroup.threads`).
    pub fn threads(&self) -> Result<Vec<Pid>> {
        let name = match self.first_dir()?.version {
            Version::V1 => TASKS,
            Version::V2 => CGROUP_THREADS,
        };
        self.read_ids(name)
    }

    fn first_dir(&self) -> Result<&CgroupDir> {
        self.dirs.first().ok_or_else(|| Error::NotFound {
            path: self.path.to_string(),
        })
    }

    fn read_ids(&self, name: &str) -> Result<Vec<Pid>> {
        let path = self.first_dir()?.file(name);
        let text = fsutil::read_to_string(&path)?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                l.trim()
                    .parse::<i64>()
                    .ok()
                    .and_then(|n| Pid::new(n).ok())
                    .ok_or_else(|| fsutil::parse_error(&path, i + 1, l))
            })
            .collect()
    }

    /// CPU usage and throttling. On v1 usage comes from the cpuacct hierarchy when the
    /// cgroup exists there (it is `None` otherwise).
    pub fn cpu_stat(&self) -> Result<CpuStat> {
        let acct = self
            .hierarchy
            .mount_for(Controller::Cpuacct)
            .map(|m| self.path.under(&m.mount_point))
            .filter(|p| is_real_dir(p));
        cpu::stat(self.dir_for(Controller::Cpu)?, acct.as_deref())
    }

    /// Removes the cgroup (not its children) on every hierarchy it spans, retrying
    /// EBUSY briefly while exiting processes are reaped.
    pub fn delete(self) -> Result<()> {
        for d in self.dirs.iter().rev() {
            match rmdir_retry(&d.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Rmdir {
                        path: d.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Moves every process of this cgroup out, as libcgroup's cgdelete does before
    /// removing: to the parent on v1; on v2 to the nearest ancestor that may hold
    /// processes (one with no controllers enabled in cgroup.subtree_control, or the
    /// root), since the no-internal-process rule forbids the parent. Returns each
    /// write made (the target cgroup.procs and the pid).
    pub fn drain_to_parent(&self) -> Result<Vec<Written>> {
        let mut moved = Vec::new();
        if self.path.is_root() {
            return Ok(moved);
        }
        for d in &self.dirs {
            let target = drain_target(d)?.join(CGROUP_PROCS);
            let procs = fsutil::read_to_string(&d.file(CGROUP_PROCS))?;
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i64>().ok()) {
                let Ok(pid) = Pid::new(pid) else { continue };
                match self.write_pid(&target, pid) {
                    Ok(()) => moved.push(Written {
                        path: target.clone(),
                        value: pid.to_string(),
                    }),
                    Err(Error::NoSuchProcess { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(moved)
    }
}

/// Where [`Cgroup::drain_to_parent`] moves the processes of `d`.
fn drain_target(d: &CgroupDir) -> Result<PathBuf> {
    let mut target = d.path.parent().unwrap_or(&d.mount_point).to_path_buf();
    if d.version == Version::V2 {
        while target != d.mount_point && target.starts_with(&d.mount_point) {
            let sc = fsutil::read_to_string(&target.join(CGROUP_SUBTREE_CONTROL))?;
            if sc.trim().is_empty() {
                break;
            }
            match target.parent() {
                Some(p) => target = p.to_path_buf(),
                None => break,
            }
        }
    }
    Ok(target)
}

fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

pub(crate) fn rmdir_retry(dir: &Path) -> std::io::Result<()> {
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(EBUSY) && start.elapsed() < DELETE_RETRY => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

/// mkdir -p of `path` on one hierarchy; on v2 also enables the controllers in the
/// subtree_control of each ancestor. Records the directories it made in `made`.
fn create_on(
    m: &Mount,
    path: &CgroupPath,
    controllers: &[Controller],
    made: &mut Vec<PathBuf>,
) -> Result<()> {
    let v2_enable: Vec<&str> = if m.version == Version::V2 {
        controllers
            .iter()
            .filter(|c| m.controllers.contains(c))
            .filter_map(|c| c.v2_name())
            .collect()
    } else {
        Vec::new()
    };
    for anc in path.ancestors_and_self() {
        let dir = anc.under(&m.mount_point);
        if !anc.is_root() {
            match std::fs::create_dir(&dir) {
                Ok(()) => made.push(dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !is_real_dir(&dir) {
                        return Err(Error::Mkdir {
                            path: dir,
                            source: std::io::Error::new(
                                std::io::ErrorKind::AlreadyExists,
                                "exists and is not a directory (symlinks are refused)",
                            ),
                        });
                    }
                }
                Err(source) => return Err(Error::Mkdir { path: dir, source }),
            }
        }
        if anc != *path && !v2_enable.is_empty() {
            enable_controllers(&dir, &v2_enable)?;
        }
    }
    Ok(())
}

/// Writes `+name` to a v2 cgroup's subtree_control for each controller not yet enabled.
fn enable_controllers(dir: &Path, names: &[&str]) -> Result<()> {
    let file = dir.join(CGROUP_SUBTREE_CONTROL);
    let current = fsutil::read_to_string(&file)?;
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !current.split_whitespace().any(|c| c == **n))
        .map(|n| format!("+{n}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fsutil::write(&file, &missing.join(" "))
}
