//! User namespace id maps: [`IdMap`], [`SetGroups`], and the parent writing
//! `uid_map`/`gid_map`/`setgroups` (or running newuidmap/newgidmap) while the child
//! waits on the sync pipe; the cgroup placement the parent makes in the same window.

use std::io;

use super::builder::Spawn;
use crate::error::{self, Error, Result};
use crate::namespace::Namespace;
use crate::sys;

/// One line of a `uid_map` / `gid_map`: `count` ids starting at `inside` in the new user
/// namespace map to ids starting at `outside` in the parent's (user_namespaces(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (in the parent user namespace).
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

impl IdMap {
    /// `count` ids from `inside` to `outside`.
    pub fn new(inside: u32, outside: u32, count: u32) -> IdMap {
        IdMap {
            inside,
            outside,
            count,
        }
    }
}

/// What to write to `/proc/PID/setgroups` before `gid_map` (3.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetGroups {
    /// `deny` when the parent is unprivileged (the kernel requires it then), else leave
    /// `allow`.
    #[default]
    Auto,
    /// Always write `deny`: setgroups(2) is refused inside the namespace.
    Deny,
    /// Never write `deny` (needs CAP_SETGID in the parent user namespace).
    Allow,
}

impl Spawn {
    pub(super) fn uid_map_or_default(&self) -> Vec<IdMap> {
        if self.uid_map.is_empty() {
            // SAFETY: geteuid has no preconditions.
            vec![IdMap::new(0, unsafe { libc::geteuid() }, 1)]
        } else {
            self.uid_map.clone()
        }
    }

    pub(super) fn gid_map_or_default(&self) -> Vec<IdMap> {
        if self.gid_map.is_empty() {
            // SAFETY: getegid has no preconditions.
            vec![IdMap::new(0, unsafe { libc::getegid() }, 1)]
        } else {
            self.gid_map.clone()
        }
    }

    /// Some(true): write deny; Some(false): allowed (groups can be dropped).
    pub(super) fn setgroups_deny(&self) -> Option<bool> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Some(match self.setgroups {
            SetGroups::Deny => true,
            SetGroups::Allow => false,
            SetGroups::Auto => !root,
        })
    }

    pub(super) fn setup_parent_side(&self, pid: i32, placed: bool) -> Result<()> {
        if let Some(cg) = self.cgroup.as_ref().filter(|_| !placed) {
            {
                let f = nix::fcntl::openat(
                    cg,
                    "cgroup.procs",
                    nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| error::nix("openat", "cgroup.procs", e))?;
                sys::write_all(&f, pid.to_string().as_bytes())
                    .map_err(|e| error::sys("write", format!("cgroup.procs <- {pid}"), e))?;
            }
        }
        if !self.namespaces.contains(Namespace::USER) {
            return Ok(());
        }
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        // SAFETY: getegid has no preconditions.
        let egid = unsafe { libc::getegid() };
        let uids = self.uid_map_or_default();
        let gids = self.gid_map_or_default();
        let own = |maps: &[IdMap], me: u32| {
            maps.len() == 1 && maps[0].count == 1 && maps[0].outside == me
        };
        if euid != 0 && !(own(&uids, euid) && own(&gids, egid)) {
            return new_id_maps(pid, &uids, &gids);
        }
        if self.setgroups_deny() == Some(true) {
            write_proc(pid, "setgroups", b"deny")?;
        }
        write_proc(pid, "uid_map", map_text(&uids).as_bytes())?;
        write_proc(pid, "gid_map", map_text(&gids).as_bytes())?;
        Ok(())
    }
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect()
}

fn write_proc(pid: i32, file: &str, text: &[u8]) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    // One write(2): the kernel takes an id map in a single write only.
    std::fs::write(&path, text).map_err(|e| {
        error::io(
            "write",
            format!("{path} <- {:?}", String::from_utf8_lossy(text).trim_end()),
            e,
        )
    })
}

/// newuidmap(1)/newgidmap(1) for an unprivileged caller (shadow's `uidmap` package).
fn new_id_maps(pid: i32, uids: &[IdMap], gids: &[IdMap]) -> Result<()> {
    for (tool, maps) in [("newuidmap", uids), ("newgidmap", gids)] {
        let mut cmd = std::process::Command::new(tool);
        cmd.arg(pid.to_string());
        for m in maps {
            cmd.args([
                m.inside.to_string(),
                m.outside.to_string(),
                m.count.to_string(),
            ]);
        }
        let st = cmd.status().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::PermissionDenied {
                    syscall: "write",
                    what: format!("/proc/{pid}/uid_map"),
                    hint: "an unprivileged caller can map only its own id; install newuidmap/newgidmap (Debian package uidmap) and grant ranges in /etc/subuid and /etc/subgid",
                    source: e,
                }
            } else {
                error::io("exec", tool, e)
            }
        })?;
        if !st.success() {
            return Err(Error::Sys {
                syscall: "write",
                what: format!("{tool} {pid} ... ({st}): check /etc/subuid and /etc/subgid"),
                source: io::Error::from_raw_os_error(libc::EPERM),
            });
        }
    }
    Ok(())
}
