//! Delegation: whether a cgroup subtree is handed to an unprivileged user.
//!
//! The kernel's rule (Documentation/admin-guide/cgroup-v2.rst, "Delegation"): a
//! cgroup is delegated to a user when the user may write its directory (to create
//! children) and its `cgroup.procs`, `cgroup.threads` and `cgroup.subtree_control`
//! files (v1: `cgroup.procs` and `tasks`). Moving a process also needs write access
//! to `cgroup.procs` of the common ancestor of source and destination, which is why
//! delegation is of whole subtrees.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::cgroup::{CGROUP_PROCS, CGROUP_SUBTREE_CONTROL, CGROUP_THREADS, Cgroup, TASKS};
use crate::error::{Error, Result};
use crate::hierarchy::Version;

/// A user and group, as in /etc/passwd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// What keeps a cgroup from being delegated to an [`Owner`]: the first path the
/// user cannot write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotDelegated {
    /// The directory or file.
    pub path: PathBuf,
    /// Its owner uid and mode, for the message.
    pub owner_uid: u32,
    /// Permission bits.
    pub mode: u32,
}

fn writable_by(meta: &std::fs::Metadata, who: Owner) -> bool {
    let mode = meta.mode();
    if who.uid == 0 {
        return true;
    }
    if meta.uid() == who.uid {
        return mode & 0o200 != 0;
    }
    if meta.gid() == who.gid {
        return mode & 0o020 != 0;
    }
    mode & 0o002 != 0
}

impl Cgroup {
    /// The files a delegate must be able to write, on every hierarchy spanned.
    fn delegation_paths(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in self.dirs() {
            out.push(d.path.clone());
            match d.version {
                Version::V2 => {
                    for f in [CGROUP_PROCS, CGROUP_THREADS, CGROUP_SUBTREE_CONTROL] {
                        out.push(d.file(f));
                    }
                }
                Version::V1 => {
                    for f in [CGROUP_PROCS, TASKS] {
                        out.push(d.file(f));
                    }
                }
            }
        }
        out
    }

    /// Checks that the subtree rooted here is delegated to `who`: `Ok(None)` when it
    /// is, `Ok(Some(..))` naming the first path `who` cannot write otherwise.
    /// (Write access checked from ownership and mode bits; ACLs are not consulted.)
    pub fn delegation_gap(&self, who: Owner) -> Result<Option<NotDelegated>> {
        for p in self.delegation_paths() {
            let meta = std::fs::symlink_metadata(&p).map_err(|source| Error::Read {
                path: p.clone(),
                source,
            })?;
            if !writable_by(&meta, who) {
                return Ok(Some(NotDelegated {
                    path: p,
                    owner_uid: meta.uid(),
                    mode: meta.mode() & 0o7777,
                }));
            }
        }
        Ok(None)
    }

    /// Delegates the subtree rooted here to `who` (as a manager such as systemd does
    /// with `Delegate=yes`): chowns the directory and its delegation files on every
    /// hierarchy spanned. Other interface files stay root's, so the delegate cannot
    /// change the limits set on this cgroup, only those of its children.
    pub fn delegate_to(&self, who: Owner) -> Result<()> {
        for p in self.delegation_paths() {
            std::os::unix::fs::lchown(&p, Some(who.uid), Some(who.gid)).map_err(|source| {
                Error::Write {
                    path: p.clone(),
                    value: format!("chown {}:{}", who.uid, who.gid),
                    source,
                }
            })?;
        }
        Ok(())
    }
}
