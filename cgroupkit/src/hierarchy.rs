//! Which cgroup hierarchies are mounted, and which one serves each controller.
//!
//! Read from `/proc/self/mountinfo` (the path is injectable). Three layouts are
//! first-class: pure v2, pure v1, and hybrid (v1 controllers plus a cgroup2 mount with
//! few or no controllers, as systemd's "hybrid" mode sets it up).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fsutil;

/// The default mountinfo file.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";
/// The file of a cgroup2 directory listing the controllers available in it.
pub const CGROUP_CONTROLLERS: &str = "cgroup.controllers";

/// A cgroup controller (v1 subsystem or v2 controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Controller {
    /// CPU bandwidth and weight (`cpu`).
    Cpu,
    /// CPU accounting, v1 only (`cpuacct`); part of `cpu` on v2.
    Cpuacct,
    /// CPU and memory-node placement (`cpuset`).
    Cpuset,
    /// Memory (`memory`).
    Memory,
    /// Process-count limit (`pids`).
    Pids,
    /// Block I/O: `io` on v2, `blkio` on v1.
    Io,
    /// Huge pages (`hugetlb`).
    Hugetlb,
    /// v1 freezer (`freezer`); on v2 freezing is a core feature (`cgroup.freeze`).
    Freezer,
    /// v1 device access (`devices`); eBPF programs on v2.
    Devices,
    /// perf events (`perf_event`).
    PerfEvent,
    /// v1 network class ids (`net_cls`).
    NetCls,
    /// v1 network priorities (`net_prio`).
    NetPrio,
    /// RDMA resources (`rdma`).
    Rdma,
    /// Miscellaneous scalar resources (`misc`).
    Misc,
}

impl Controller {
    /// Every controller this crate knows.
    pub const ALL: [Controller; 14] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Pids,
        Controller::Io,
        Controller::Hugetlb,
        Controller::Freezer,
        Controller::Devices,
        Controller::PerfEvent,
        Controller::NetCls,
        Controller::NetPrio,
        Controller::Rdma,
        Controller::Misc,
    ];

    /// The name in a v1 mount's options and /proc/cgroups.
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Io => "blkio",
            Controller::Hugetlb => "hugetlb",
            Controller::Freezer => "freezer",
            Controller::Devices => "devices",
            Controller::PerfEvent => "perf_event",
            Controller::NetCls => "net_cls",
            Controller::NetPrio => "net_prio",
            Controller::Rdma => "rdma",
            Controller::Misc => "misc",
        }
    }

    /// The name in v2's cgroup.controllers, `None` where v2 has no such controller.
    pub fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Io => Some("io"),
            Controller::Cpuacct
            | Controller::Freezer
            | Controller::Devices
            | Controller::NetCls
            | Controller::NetPrio => None,
            c => Some(c.v1_name()),
        }
    }

    fn from_v1_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.v1_name() == name)
    }

    fn from_v2_name(name: &str) -> Option<Controller> {
        Controller::ALL
            .into_iter()
            .find(|c| c.v2_name() == Some(name))
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v1_name())
    }
}

/// The cgroup version of one hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Version {
    /// A legacy v1 hierarchy (`cgroup` filesystem), one or more controllers per mount.
    V1,
    /// The unified v2 hierarchy (`cgroup2` filesystem).
    V2,
}

/// How cgroups are mounted on the host as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Layout {
    /// Only v1 hierarchies.
    V1,
    /// Only the unified v2 hierarchy.
    V2,
    /// v1 controllers plus a cgroup2 mount (systemd's hybrid mode).
    Hybrid,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::V1 => "cgroup v1",
            Layout::V2 => "cgroup v2",
            Layout::Hybrid => "hybrid v1+v2",
        })
    }
}

/// One mounted hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// v1 or v2.
    pub version: Version,
    /// Where it is mounted, e.g. `/sys/fs/cgroup/cpu` or `/sys/fs/cgroup`.
    pub mount_point: PathBuf,
    /// The cgroup of the mount's root as seen by the kernel (mountinfo's root field;
    /// not `/` inside a cgroup namespace or for a bind mount of a sub-cgroup).
    pub root: String,
    /// Controllers served: bound to this v1 mount, or listed in the v2 root's
    /// cgroup.controllers.
    pub controllers: Vec<Controller>,
    /// The v1 `name=` option of a named hierarchy such as `name=systemd`.
    pub name: Option<String>,
}

/// One cgroup mount as parsed from mountinfo (before cgroup.controllers is read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfoEntry {
    /// `major:minor` of the superblock, to drop duplicate mounts of one hierarchy.
    pub dev: String,
    /// The root field.
    pub root: String,
    /// The mount point, unescaped.
    pub mount_point: PathBuf,
    /// `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Super options (controller names for v1).
    pub super_options: Vec<String>,
}

/// Parses the cgroup and cgroup2 mounts out of mountinfo text.
///
/// Lines of other filesystems are skipped; a malformed line is an error naming it.
pub fn parse_mountinfo(text: &str, origin: &Path) -> Result<Vec<MountInfoEntry>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || fsutil::parse_error(origin, i + 1, line);
        let (pre, post) = line.split_once(" - ").ok_or_else(bad)?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 6 || post.len() < 3 {
            return Err(bad());
        }
        let fstype = post[0];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        out.push(MountInfoEntry {
            dev: pre[2].to_owned(),
            root: unescape(pre[3]),
            mount_point: PathBuf::from(unescape(pre[4])),
            fstype: fstype.to_owned(),
            super_options: post[2].split(',').map(str::to_owned).collect(),
        });
    }
    Ok(out)
}

/// Undoes mountinfo's octal escapes (`\040` for space and so on).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup hierarchies of a host (or of a test's fixture).
///
/// Cheap to clone.
///
/// # Examples
/// ```no_run
/// use cgroupkit::{Controller, Hierarchy};
/// let h = Hierarchy::detect()?;
/// println!("layout: {}", h.layout());
/// if let Some(m) = h.mount_for(Controller::Cpu) {
///     println!("cpu is served by {:?} at {}", m.version, m.mount_point.display());
/// }
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Hierarchy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mounts: Vec<Mount>,
    layout: Layout,
}

impl Hierarchy {
    /// Detects the hierarchies of the calling process from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Hierarchy> {
        Hierarchy::from_mountinfo(Path::new(MOUNTINFO))
    }

    /// Detects the hierarchies from the given mountinfo file.
    pub fn from_mountinfo(path: &Path) -> Result<Hierarchy> {
        let text = fsutil::read_to_string(path)?;
        Hierarchy::from_mountinfo_text(&text, path)
    }

    /// Builds the hierarchies from mountinfo text; `origin` names it in errors.
    ///
    /// The v2 mount's controllers are read from `cgroup.controllers` under its mount
    /// point, so a test can point a fixture's mount point at a temporary directory.
    pub fn from_mountinfo_text(text: &str, origin: &Path) -> Result<Hierarchy> {
        let entries = parse_mountinfo(text, origin)?;
        let mut mounts: Vec<Mount> = Vec::new();
        let mut seen_devs: Vec<&str> = Vec::new();
        for e in &entries {
            // A hierarchy mounted twice (bind mounts) keeps its first mount.
            if seen_devs.contains(&e.dev.as_str()) {
                continue;
            }
            seen_devs.push(&e.dev);
            if e.fstype == "cgroup2" {
                let file = e.mount_point.join(CGROUP_CONTROLLERS);
                let text = fsutil::read_to_string(&file)?;
                let controllers = text
                    .split_whitespace()
                    .filter_map(Controller::from_v2_name)
                    .collect();
                mounts.push(Mount {
                    version: Version::V2,
                    mount_point: e.mount_point.clone(),
                    root: e.root.clone(),
                    controllers,
                    name: None,
                });
            } else {
                let controllers: Vec<Controller> = e
                    .super_options
                    .iter()
                    .filter_map(|o| Controller::from_v1_name(o))
                    .collect();
                let name = e
                    .super_options
                    .iter()
                    .find_map(|o| o.strip_prefix("name="))
                    .map(str::to_owned);
                mounts.push(Mount {
                    version: Version::V1,
                    mount_point: e.mount_point.clone(),
                    root: e.root.clone(),
                    controllers,
                    name,
                });
            }
        }
        let has_v1 = mounts.iter().any(|m| m.version == Version::V1);
        let has_v2 = mounts.iter().any(|m| m.version == Version::V2);
        let layout = match (has_v1, has_v2) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::V1,
            (false, true) => Layout::V2,
            (false, false) => {
                return Err(Error::NoCgroupFs {
                    mountinfo: origin.to_path_buf(),
                });
            }
        };
        // On hybrid hosts a controller bound to v1 is not usable on v2; keep the v2
        // list to what the kernel says is available there (it already excludes them).
        Ok(Hierarchy {
            inner: Arc::new(Inner { mounts, layout }),
        })
    }

    /// The host's layout.
    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    /// Every mounted hierarchy, in mountinfo order.
    pub fn mounts(&self) -> &[Mount] {
        &self.inner.mounts
    }

    /// The unified (v2) mount, if any.
    pub fn unified(&self) -> Option<&Mount> {
        self.inner.mounts.iter().find(|m| m.version == Version::V2)
    }

    /// The hierarchy that serves `controller`: its v1 mount if one is bound to it,
    /// else the v2 mount if the controller is available there, else `None`.
    /// The freezer and device control are core on v2 (cgroup.freeze, eBPF device
    /// programs), so the v2 mount serves them when no v1 hierarchy of theirs is
    /// mounted.
    pub fn mount_for(&self, controller: Controller) -> Option<&Mount> {
        let v2 = |m: &&Mount| m.version == Version::V2;
        self.inner
            .mounts
            .iter()
            .find(|m| m.version == Version::V1 && m.controllers.contains(&controller))
            .or_else(|| {
                self.inner
                    .mounts
                    .iter()
                    .filter(v2)
                    .find(|m| m.controllers.contains(&controller))
            })
            .or_else(|| match controller {
                // Core on v2: cgroup.freeze, and device programs (eBPF).
                Controller::Freezer | Controller::Devices => self.inner.mounts.iter().find(v2),
                _ => None,
            })
    }

    /// Like [`Hierarchy::mount_for`], but a missing controller is an error naming it.
    pub fn require(&self, controller: Controller) -> Result<&Mount> {
        self.mount_for(controller)
            .ok_or(Error::ControllerUnavailable {
                controller,
                layout: self.layout(),
            })
    }

    /// The distinct mounts that serve any of `controllers`, in mountinfo order.
    pub fn mounts_for(&self, controllers: &[Controller]) -> Result<Vec<&Mount>> {
        let mut out: Vec<&Mount> = Vec::new();
        for &c in controllers {
            let m = self.require(c)?;
            if !out.iter().any(|o| std::ptr::eq(*o, m)) {
                out.push(m);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copied from this project's development hosts (hybrid: v1 controllers plus a
    /// cgroup2 mount whose only controller is hugetlb).
    const HYBRID: &str = include_str!("../tests/fixtures/mountinfo.hybrid");
    /// A Debian 12 / systemd host with only cgroup2.
    const PURE_V2: &str = include_str!("../tests/fixtures/mountinfo.v2");
    /// An older host with cpu,cpuacct co-mounted and no cgroup2.
    const PURE_V1: &str = include_str!("../tests/fixtures/mountinfo.v1");

    fn with_root(fixture: &str, root: &Path) -> String {
        fixture.replace("/sys/fs/cgroup", &root.display().to_string())
    }

    fn tmp_controllers(dir: &Path, sub: &str, list: &str) {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(CGROUP_CONTROLLERS), list).unwrap();
    }

    #[test]
    fn parses_entries_of_cgroup_mounts_only() {
        let e = parse_mountinfo(HYBRID, Path::new("fixture")).unwrap();
        assert_eq!(e.len(), 10);
        assert_eq!(e[0].mount_point, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(e[0].super_options, ["rw", "cpu"]);
        assert_eq!(e[9].fstype, "cgroup2");
    }

    #[test]
    fn hybrid_layout() {
        let tmp = tempfile::tempdir().unwrap();
        tmp_controllers(tmp.path(), "unified", "hugetlb\n");
        let h =
            Hierarchy::from_mountinfo_text(&with_root(HYBRID, tmp.path()), Path::new("f")).unwrap();
        assert_eq!(h.layout(), Layout::Hybrid);
        let cpu = h.mount_for(Controller::Cpu).unwrap();
        assert_eq!(
            (cpu.version, cpu.mount_point.clone()),
            (Version::V1, tmp.path().join("cpu"))
        );
        let huge = h.mount_for(Controller::Hugetlb).unwrap();
        assert_eq!(huge.version, Version::V2);
        assert_eq!(
            h.mount_for(Controller::Io).unwrap().mount_point,
            tmp.path().join("blkio")
        );
        assert!(h.mount_for(Controller::Rdma).is_none());
        let err = h.require(Controller::Rdma).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the rdma controller is not available on this host (hybrid v1+v2 layout)"
        );
        let named = h.mounts().iter().find(|m| m.name.is_some()).unwrap();
        assert_eq!(named.name.as_deref(), Some("systemd"));
        assert!(named.controllers.is_empty());
    }

    #[test]
    fn pure_v2_layout() {
        let tmp = tempfile::tempdir().unwrap();
        tmp_controllers(
            tmp.path(),
            "",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        let h = Hierarchy::from_mountinfo_text(&with_root(PURE_V2, tmp.path()), Path::new("f"))
            .unwrap();
        assert_eq!(h.layout(), Layout::V2);
        for c in [
            Controller::Cpu,
            Controller::Memory,
            Controller::Io,
            Controller::Pids,
            Controller::Cpuset,
        ] {
            assert_eq!(h.mount_for(c).unwrap().version, Version::V2, "{c}");
        }
        // Freezing and device programs are core on v2.
        for c in [Controller::Freezer, Controller::Devices] {
            assert_eq!(h.mount_for(c).unwrap().version, Version::V2, "{c}");
        }
        assert!(h.mount_for(Controller::NetCls).is_none());
        assert_eq!(
            h.mounts_for(&[Controller::Cpu, Controller::Memory])
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn pure_v1_layout_with_comounted_cpu_cpuacct() {
        let h = Hierarchy::from_mountinfo_text(PURE_V1, Path::new("f")).unwrap();
        assert_eq!(h.layout(), Layout::V1);
        let cpu = h.mount_for(Controller::Cpu).unwrap();
        assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cpu.controllers, [Controller::Cpu, Controller::Cpuacct]);
        assert!(std::ptr::eq(cpu, h.mount_for(Controller::Cpuacct).unwrap()));
        assert_eq!(
            h.mounts_for(&[Controller::Cpu, Controller::Cpuacct])
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            h.mount_for(Controller::NetPrio).unwrap().mount_point,
            Path::new("/sys/fs/cgroup/net_cls,net_prio")
        );
    }

    #[test]
    fn no_cgroup_mounts_is_an_error() {
        let err = Hierarchy::from_mountinfo_text(
            "22 1 0:21 / /proc rw,relatime - proc proc rw\n",
            Path::new("/proc/self/mountinfo"),
        )
        .unwrap_err();
        assert!(matches!(err, Error::NoCgroupFs { .. }), "{err}");
    }

    #[test]
    fn malformed_line_names_the_line() {
        let err = parse_mountinfo("garbage line\n", Path::new("mi")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected content in mi at line 1: \"garbage line\""
        );
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn duplicate_mounts_of_one_hierarchy_keep_the_first() {
        let text = "30 23 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                    99 23 0:29 / /mnt/cpu rw - cgroup cgroup rw,cpu\n";
        let h = Hierarchy::from_mountinfo_text(text, Path::new("f")).unwrap();
        assert_eq!(h.mounts().len(), 1);
    }
}
