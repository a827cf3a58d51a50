//! Which cgroups a process is in: `/proc/PID/cgroup`, parsed once for the workspace.
//!
//! Each line is `hierarchy-ID:controller-list:path` (cgroups(7)): on v1 one line per
//! mounted hierarchy (`4:cpu,cpuacct:/user.slice`, `1:name=systemd:/...`), on v2 the
//! single line `0::/path`. Paths are relative to the hierarchy root as the reading
//! process sees it (a cgroup namespace shows `/` at its own root).

use std::path::Path;

use crate::error::{Error, Result};
use crate::hierarchy::{Controller, Hierarchy, Version};
use crate::path::CgroupPath;
use crate::proc::{Pid, Procfs};
use crate::{fsutil, reader};

/// One line of `/proc/PID/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCgroup {
    /// The hierarchy ID (0 for the v2 tree; v1 IDs as in /proc/cgroups).
    pub hierarchy_id: u32,
    /// The controllers of a v1 hierarchy as the kernel names them (`cpu`,
    /// `cpuacct`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    /// The path from the hierarchy root, `/` for the root. The kernel appends
    /// ` (deleted)` to a removed cgroup's path; that is kept as it is.
    pub path: String,
}

impl ProcCgroup {
    /// Parses the text of `/proc/PID/cgroup` (`path` names it in errors).
    ///
    /// # Examples
    /// ```
    /// use cgroupkit::membership::ProcCgroup;
    /// let l = ProcCgroup::parse("4:cpu,cpuacct:/app\n0::/app\n", "cgroup".as_ref())?;
    /// assert_eq!(l[0].controllers, ["cpu", "cpuacct"]);
    /// assert_eq!(l[1].path, "/app");
    /// # Ok::<(), cgroupkit::Error>(())
    /// ```
    pub fn parse(text: &str, path: &Path) -> Result<Vec<ProcCgroup>> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            // The path may itself hold ':' (cgroup names can): split twice only.
            let mut it = line.splitn(3, ':');
            let (Some(id), Some(ctl), Some(p)) = (it.next(), it.next(), it.next()) else {
                return Err(fsutil::parse_error(path, i + 1, line));
            };
            let hierarchy_id = id
                .parse::<u32>()
                .map_err(|_| fsutil::parse_error(path, i + 1, line))?;
            if !p.starts_with('/') {
                return Err(fsutil::parse_error(path, i + 1, line));
            }
            out.push(ProcCgroup {
                hierarchy_id,
                controllers: ctl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: p.to_owned(),
            });
        }
        Ok(out)
    }

    /// Whether this line is the v2 tree's (`0::/path`).
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }
}

impl Procfs {
    /// The cgroups of process `pid`, from `/proc/PID/cgroup`. A process that is gone
    /// is [`Error::NoSuchProcess`].
    pub fn cgroups(&self, pid: Pid) -> Result<Vec<ProcCgroup>> {
        let path = self.root().join(pid.as_raw().to_string()).join("cgroup");
        match reader::read_string(&path) {
            Ok(t) => ProcCgroup::parse(&t, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NoSuchProcess { pid: pid.as_raw() })
            }
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// The cgroup of `pid` on the hierarchy that serves `controller` in `h` (the v2
    /// tree on v2 hosts): its [`CgroupPath`], the root being [`CgroupPath::root`].
    /// `Ok(None)` when the process is on no such hierarchy or its cgroup was removed
    /// (` (deleted)`).
    pub fn cgroup_of(
        &self,
        pid: Pid,
        h: &Hierarchy,
        controller: Controller,
    ) -> Result<Option<CgroupPath>> {
        let Some(m) = h.mount_for(controller) else {
            return Ok(None);
        };
        let lines = self.cgroups(pid)?;
        let line = lines.iter().find(|l| match m.version {
            Version::V2 => l.is_v2(),
            Version::V1 => l.controllers.iter().any(|c| c == controller.v1_name()),
        });
        let Some(l) = line else { return Ok(None) };
        if l.path.ends_with(" (deleted)") {
            return Ok(None);
        }
        let rel = l.path.trim_matches('/');
        if rel.is_empty() {
            Ok(Some(CgroupPath::root()))
        } else {
            CgroupPath::new(rel).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_and_v2() {
        let t = "12:pids:/user.slice/x\n1:name=systemd:/a:b\n0::/\n";
        let l = ProcCgroup::parse(t, Path::new("cgroup")).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].hierarchy_id, 12);
        assert_eq!(l[1].controllers, ["name=systemd"]);
        assert_eq!(l[1].path, "/a:b");
        assert!(l[2].is_v2() && l[2].path == "/");
        for bad in ["x::/", "1:cpu", "1:cpu:rel", "-1::/"] {
            assert!(ProcCgroup::parse(bad, Path::new("c")).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_cgroup_on_this_host() {
        let h = Hierarchy::detect().unwrap();
        let procfs = Procfs::default();
        let lines = procfs.cgroups(Pid::this()).unwrap();
        assert!(!lines.is_empty());
        // Whatever serves pids here, we are somewhere on it, and the path exists.
        if let Some(m) = h.mount_for(Controller::Pids) {
            let p = procfs
                .cgroup_of(Pid::this(), &h, Controller::Pids)
                .unwrap()
                .unwrap();
            assert!(p.under(&m.mount_point).is_dir(), "{p}");
        }
    }
}
