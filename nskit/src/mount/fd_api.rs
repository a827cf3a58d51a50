//! The fd-based mount API (5.2+): [`DetachedMount`] (fsopen/fsconfig/fsmount,
//! open_tree, mount_setattr and idmapped mounts, move_mount), and [`bind`] through it.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{MountSpec, Root, cpath, cwd_fd};
use crate::error::{self, Error, Result};
use crate::namespace::NsHandle;
use crate::sys;

/// A mount not attached anywhere yet (an fd from fsmount(2) or open_tree(2), 5.2):
/// configure it, then [`attach`](DetachedMount::attach) it with move_mount(2).
/// Dropping it unmounts it.
#[derive(Debug)]
pub struct DetachedMount {
    fd: OwnedFd,
}

impl DetachedMount {
    /// A new filesystem through the fd-based API: fsopen(2), fsconfig(2) with each
    /// `(key, value)` (`value` `None` for a flag), `FSCONFIG_CMD_CREATE`, fsmount(2).
    /// 5.2+; each value is limited to 256 bytes by fsconfig.
    pub fn new_fs(fstype: &str, options: &[(&str, Option<&str>)]) -> Result<DetachedMount> {
        let options: Vec<(&str, Option<&OsStr>)> = options
            .iter()
            .map(|(k, v)| (*k, v.map(OsStr::new)))
            .collect();
        DetachedMount::new_fs_os(fstype, &options)
    }

    /// [`new_fs`](DetachedMount::new_fs) with values as bytes (paths that need not be
    /// UTF-8, such as overlay layers).
    pub(crate) fn new_fs_os(
        fstype: &str,
        options: &[(&str, Option<&OsStr>)],
    ) -> Result<DetachedMount> {
        let t = CString::new(fstype).map_err(|_| Error::Nul {
            what: "filesystem type",
            value: fstype.into(),
        })?;
        let fs = sys::fsopen(&t).map_err(|e| error::sys("fsopen", fstype, e))?;
        for (k, v) in options {
            let kc = CString::new(*k).map_err(|_| Error::Nul {
                what: "fsconfig key",
                value: (*k).into(),
            })?;
            let vc = v
                .map(|v| {
                    CString::new(v.as_bytes()).map_err(|_| Error::Nul {
                        what: "fsconfig value",
                        value: v.to_string_lossy().into_owned(),
                    })
                })
                .transpose()?;
            let cmd = if vc.is_some() {
                sys::FSCONFIG_SET_STRING
            } else {
                sys::FSCONFIG_SET_FLAG
            };
            sys::fsconfig(fs.as_fd(), cmd, Some(&kc), vc.as_deref()).map_err(|e| {
                let v = v.map(OsStr::to_string_lossy).unwrap_or_default();
                error::sys("fsconfig", format!("{fstype}: {k}={v}"), e)
            })?;
        }
        sys::fsconfig(fs.as_fd(), sys::FSCONFIG_CMD_CREATE, None, None)
            .map_err(|e| error::sys("fsconfig", format!("{fstype}: FSCONFIG_CMD_CREATE"), e))?;
        let fd = sys::fsmount(fs.as_fd(), 0).map_err(|e| error::sys("fsmount", fstype, e))?;
        Ok(DetachedMount { fd })
    }

    /// A detached copy of the mount at `source` (`recursive`: with its submounts):
    /// open_tree(OPEN_TREE_CLONE) (5.2), the fd-based bind mount.
    pub fn clone_tree(source: impl AsRef<Path>, recursive: bool) -> Result<DetachedMount> {
        let s = source.as_ref();
        let c = cpath("source", s)?;
        let mut flags = sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC;
        if recursive {
            flags |= sys::AT_RECURSIVE;
        }
        let fd = sys::open_tree(cwd_fd(), &c, flags)
            .map_err(|e| error::sys("open_tree", s.display().to_string(), e))?;
        Ok(DetachedMount { fd })
    }

    /// Makes the mount idmapped through the user namespace `userns` (its uid/gid maps
    /// apply to file ownership seen through this mount): mount_setattr(2) with
    /// `MOUNT_ATTR_IDMAP` (5.12; the filesystem must support it: ext4, xfs, btrfs,
    /// tmpfs since 6.3, overlay since 5.19...).
    pub fn idmap(&self, userns: &NsHandle) -> Result<()> {
        self.idmap_tree(userns, false)
    }

    /// [`idmap`](DetachedMount::idmap), with `recursive` on every mount of a tree
    /// cloned with its submounts (`AT_RECURSIVE`).
    pub fn idmap_tree(&self, userns: &NsHandle, recursive: bool) -> Result<()> {
        let attr = sys::MountAttr {
            attr_set: sys::MOUNT_ATTR_IDMAP,
            userns_fd: userns.as_fd().as_raw_fd() as u64,
            ..Default::default()
        };
        let mut flags = libc::AT_EMPTY_PATH as u32;
        if recursive {
            flags |= sys::AT_RECURSIVE;
        }
        sys::mount_setattr(self.fd.as_fd(), c"", flags, &attr)
            .map_err(|e| error::sys("mount_setattr", "MOUNT_ATTR_IDMAP", e))
    }

    /// Makes the mount read-only (mount_setattr `MOUNT_ATTR_RDONLY`, 5.12).
    pub fn set_readonly(&self) -> Result<()> {
        let attr = sys::MountAttr {
            attr_set: sys::MOUNT_ATTR_RDONLY,
            ..Default::default()
        };
        sys::mount_setattr(
            self.fd.as_fd(),
            c"",
            libc::AT_EMPTY_PATH as u32 | sys::AT_RECURSIVE,
            &attr,
        )
        .map_err(|e| error::sys("mount_setattr", "MOUNT_ATTR_RDONLY", e))
    }

    /// Attaches the mount at `target` with move_mount(2).
    pub fn attach(self, target: impl AsRef<Path>) -> Result<()> {
        let t = target.as_ref();
        let c = cpath("target", t)?;
        sys::move_mount(self.fd.as_fd(), cwd_fd(), &c, 0)
            .map_err(|e| error::sys("move_mount", t.display().to_string(), e))
    }

    /// Attaches the mount at `path` resolved inside `root` (see [`Root`]).
    pub fn attach_in(self, root: &Root, path: impl AsRef<Path>) -> Result<()> {
        let fd = root.resolve(path.as_ref())?;
        // MOVE_MOUNT_T_EMPTY_PATH: the target is the fd itself.
        sys::move_mount(self.fd.as_fd(), fd.as_fd(), c"", 0x40).map_err(|e| {
            error::sys(
                "move_mount",
                format!("{}{}", root.path.display(), path.as_ref().display()),
                e,
            )
        })
    }
}

impl AsFd for DetachedMount {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A bind mount of `source` on `target` (`recursive`: with submounts, rbind):
/// open_tree(OPEN_TREE_CLONE) + move_mount(2) (5.2), mount(MS_BIND) before.
pub fn bind(source: impl AsRef<Path>, target: impl AsRef<Path>, recursive: bool) -> Result<()> {
    match DetachedMount::clone_tree(source.as_ref(), recursive) {
        Ok(m) => m.attach(target),
        Err(e) if e.is_unsupported() => {
            let m = if recursive {
                MountSpec::rbind(source, target)
            } else {
                MountSpec::bind(source, target)
            };
            m.mount()
        }
        Err(e) => Err(e),
    }
}
