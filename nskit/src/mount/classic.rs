//! The classic mount(2) calls: [`MountSpec`] (bind, tmpfs, proc, sysfs, devpts,
//! mqueue, read-only), propagation, read-only remounts, unmount.

use std::ffi::{CStr, OsStr, OsString};
use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{Root, cpath, cwd_fd, proc_fd_path};
use crate::error::{self, Result};
use crate::sys;

/// Mount propagation (mount_namespaces(7)); applied recursively by
/// [`set_propagation`] with `MS_REC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// `MS_PRIVATE`: no events in or out.
    Private,
    /// `MS_SLAVE`: events from the parent's peer group come in, none go out.
    Slave,
    /// `MS_SHARED`: events go both ways within the peer group.
    Shared,
    /// `MS_UNBINDABLE`: private, and cannot be bind-mounted.
    Unbindable,
}

impl Propagation {
    /// The mount(2) flag.
    pub fn flags(self) -> MsFlags {
        match self {
            Propagation::Private => MsFlags::MS_PRIVATE,
            Propagation::Slave => MsFlags::MS_SLAVE,
            Propagation::Shared => MsFlags::MS_SHARED,
            Propagation::Unbindable => MsFlags::MS_UNBINDABLE,
        }
    }
}

/// One classic mount(2): source, target, filesystem type, flags and data.
///
/// Used directly ([`MountSpec::mount`], [`MountSpec::mount_in`]) or handed to
/// [`Spawn::mount`](crate::Spawn::mount) for the child to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub(crate) source: Option<OsString>,
    pub(crate) target: PathBuf,
    pub(crate) fstype: Option<String>,
    pub(crate) flags: MsFlags,
    pub(crate) data: Option<String>,
    pub(crate) mkdir: bool,
    /// A detached mount's fd ([`MountSpec::detached`]): attached with move_mount(2)
    /// instead of a mount(2).
    pub(crate) detached: Option<std::os::fd::RawFd>,
}

impl MountSpec {
    /// Makes the target directory first when it is missing (its parent must exist),
    /// inside the root: for mount points on a filesystem mounted earlier in the same
    /// spawn (a tmpfs). Only [`Spawn`](crate::Spawn) honours it.
    pub fn create_dir(mut self) -> MountSpec {
        self.mkdir = true;
        self
    }

    fn fs(fstype: &str, target: impl AsRef<Path>, flags: MsFlags, data: Option<&str>) -> MountSpec {
        MountSpec {
            source: Some(fstype.into()),
            target: target.as_ref().to_owned(),
            fstype: Some(fstype.into()),
            flags,
            data: data.map(str::to_owned),
            mkdir: false,
            detached: None,
        }
    }

    /// A tmpfs (with `nosuid,nodev`).
    pub fn tmpfs(target: impl AsRef<Path>) -> MountSpec {
        MountSpec::fs(
            "tmpfs",
            target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None,
        )
    }

    /// A procfs of the mounting process's pid namespace (`nosuid,nodev,noexec`).
    pub fn proc(target: impl AsRef<Path>) -> MountSpec {
        MountSpec::fs(
            "proc",
            target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        )
    }

    /// A sysfs (read-only, as container runtimes mount it). Showing the mounting
    /// process's network namespace needs that namespace to be owned by its user ns.
    pub fn sysfs(target: impl AsRef<Path>) -> MountSpec {
        MountSpec::fs(
            "sysfs",
            target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
            None,
        )
    }

    /// A new devpts instance (`newinstance,ptmxmode=0666,mode=0620`).
    pub fn devpts(target: impl AsRef<Path>) -> MountSpec {
        MountSpec::fs(
            "devpts",
            target,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
    }

    /// An mqueue filesystem (POSIX message queues of the ipc namespace).
    pub fn mqueue(target: impl AsRef<Path>) -> MountSpec {
        MountSpec::fs(
            "mqueue",
            target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        )
    }

    /// A bind mount of `source` (one mount, without submounts) on `target`.
    pub fn bind(source: impl AsRef<Path>, target: impl AsRef<Path>) -> MountSpec {
        MountSpec {
            source: Some(source.as_ref().as_os_str().to_owned()),
            target: target.as_ref().to_owned(),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            mkdir: false,
            detached: None,
        }
    }

    /// A mount made beforehand and not attached yet ([`DetachedMount`](super::DetachedMount),
    /// e.g. an idmapped clone of a tree), attached at `target` with move_mount(2): by
    /// the child of a [`Spawn`](crate::Spawn) inside its own mount namespace, or by
    /// [`MountSpec::mount`]. Per-mount flags given with [`MountSpec::flags`] are set
    /// after, as for a bind (with `MS_REC`: on every mount of the tree). `m` must
    /// stay open until then (the spawn has returned).
    pub fn detached(m: &super::DetachedMount, target: impl AsRef<Path>) -> MountSpec {
        use std::os::fd::{AsFd, AsRawFd};
        MountSpec {
            source: None,
            target: target.as_ref().to_owned(),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            mkdir: false,
            detached: Some(m.as_fd().as_raw_fd()),
        }
    }

    /// A recursive bind mount (`MS_BIND | MS_REC`, with submounts).
    pub fn rbind(source: impl AsRef<Path>, target: impl AsRef<Path>) -> MountSpec {
        let mut m = MountSpec::bind(source, target);
        m.flags |= MsFlags::MS_REC;
        m
    }

    /// Any filesystem: `mount -t fstype source target -o data`.
    pub fn new(
        fstype: &str,
        source: impl AsRef<OsStr>,
        target: impl AsRef<Path>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> MountSpec {
        MountSpec {
            source: Some(source.as_ref().to_owned()),
            target: target.as_ref().to_owned(),
            fstype: Some(fstype.into()),
            flags,
            data: data.map(str::to_owned),
            mkdir: false,
            detached: None,
        }
    }

    /// Read-only. For bind mounts this takes a second call, made for you (see
    /// [`MountSpec::flags`]).
    pub fn readonly(mut self) -> MountSpec {
        self.flags |= MsFlags::MS_RDONLY;
        self
    }

    /// Adds mount flags. A bind mount takes its per-mount flags (`MS_RDONLY`,
    /// `MS_NOSUID`, `MS_NODEV`, `MS_NOEXEC`, atime) only from a second call, made for
    /// you: mount_setattr(2) (5.12), on every submount of an rbind (`AT_RECURSIVE`);
    /// on older kernels a bind remount of the top mount only.
    pub fn flags(mut self, flags: MsFlags) -> MountSpec {
        self.flags |= flags;
        self
    }

    /// Filesystem-specific options (`size=64m`, ...).
    pub fn data(mut self, data: &str) -> MountSpec {
        self.data = Some(data.to_owned());
        self
    }

    /// The target path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Mounts at the target path as given (not confined), with mount(2).
    pub fn mount(&self) -> Result<()> {
        let target = cpath("mount target", &self.target)?;
        self.mount_at(&target, &self.target.display().to_string(), true)
    }

    /// Mounts at the target resolved inside `root` (see [`Root`]): a symlink in the
    /// rootfs cannot point the mount outside. The mount goes through the resolved
    /// fd's `/proc/self/fd/N` path, so the checked path is the one mounted on.
    pub fn mount_in(&self, root: &Root) -> Result<()> {
        let fd = root.resolve(&self.target)?;
        let p = proc_fd_path(fd.as_fd());
        let shown = format!("{}{}", root.path.display(), self.target.display());
        self.mount_at(&p, &shown, false)?;
        if self.bind_flags() != 0 {
            // The old fd names the covered directory; resolve again to reach the mount.
            let fd = root.resolve(&self.target)?;
            self.set_bind_flags(&proc_fd_path(fd.as_fd()), &shown)?;
        }
        Ok(())
    }

    /// A bind mount's per-mount flags (with `MS_REC` for an rbind) that take a
    /// second call; 0 for none, or for another filesystem.
    fn bind_flags(&self) -> libc::c_ulong {
        let f = self.flags.bits() as libc::c_ulong;
        if f & libc::MS_BIND == 0 || f & sys::PER_MOUNT_FLAGS == 0 {
            return 0;
        }
        f & (sys::PER_MOUNT_FLAGS | libc::MS_REC)
    }

    /// The second call of a bind mount with per-mount flags, at `target`.
    fn set_bind_flags(&self, target: &CStr, shown: &str) -> Result<()> {
        sys::set_bind_flags(target, self.bind_flags()).map_err(|e| {
            error::sys(
                "mount_setattr",
                format!("{shown}: flags {:#x} of a bind mount", self.bind_flags()),
                e,
            )
        })
    }

    /// mount(2) at `target`; `second`: make a bind's second call (per-mount flags)
    /// on the same path (a path reaches the new mount, an fd path does not).
    fn mount_at(&self, target: &CStr, shown: &str, second: bool) -> Result<()> {
        if let Some(fd) = self.detached {
            // SAFETY: the caller keeps the DetachedMount (and so fd) open (see
            // MountSpec::detached).
            let from = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            // MOVE_MOUNT_T_SYMLINKS: follow as mount(2) does (a /proc/self/fd/N path
            // from mount_in too).
            sys::move_mount(from, super::cwd_fd(), target, 0x10)
                .map_err(|e| error::sys("move_mount", format!("{self} at {shown}"), e))?;
            if second && self.bind_flags() != 0 {
                self.set_bind_flags(target, shown)?;
            }
            return Ok(());
        }
        let bind = self.flags.contains(MsFlags::MS_BIND);
        let flags = if bind {
            self.flags - MsFlags::MS_RDONLY
        } else {
            self.flags
        };
        nix::mount::mount(
            self.source.as_deref(),
            target,
            self.fstype.as_deref(),
            flags,
            self.data.as_deref(),
        )
        .map_err(|e| error::nix("mount", format!("{self} at {shown}"), e))?;
        if second && self.bind_flags() != 0 {
            self.set_bind_flags(target, shown)?;
        }
        Ok(())
    }
}

pub(super) fn remount_ro_at(target: &CStr, shown: &str, flags: MsFlags) -> Result<()> {
    let keep = flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
        None::<&str>,
    )
    .map_err(|e| error::nix("mount", format!("remount read-only {shown}"), e))
}

impl fmt::Display for MountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = self
            .source
            .as_deref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "none".into());
        match &self.fstype {
            None if self.detached.is_some() => {
                write!(f, "a detached mount on {}", self.target.display())?
            }
            Some(t) => write!(f, "{t} {src} on {}", self.target.display())?,
            None => write!(f, "bind {src} on {}", self.target.display())?,
        }
        write!(f, " flags {:#x}", self.flags.bits())?;
        if let Some(d) = &self.data {
            write!(f, " -o {d}")?;
        }
        Ok(())
    }
}

/// Changes the propagation of `target` (and, with `recursive`, every mount below it):
/// mount(2) with `MS_PRIVATE` / `MS_SLAVE` / `MS_SHARED` / `MS_UNBINDABLE`.
pub fn set_propagation(target: impl AsRef<Path>, p: Propagation, recursive: bool) -> Result<()> {
    let t = target.as_ref();
    let mut flags = p.flags();
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    nix::mount::mount(None::<&str>, t, None::<&str>, flags, None::<&str>)
        .map_err(|e| error::nix("mount", format!("{} {p:?}", t.display()), e))
}

/// Makes an existing mount read-only: mount_setattr(MOUNT_ATTR_RDONLY) (5.12; with
/// `recursive`, `AT_RECURSIVE` for every submount), else a bind remount with
/// `MS_RDONLY` (that mount only).
pub fn remount_readonly(target: impl AsRef<Path>, recursive: bool) -> Result<()> {
    let t = target.as_ref();
    let c = cpath("mount target", t)?;
    let attr = sys::MountAttr {
        attr_set: sys::MOUNT_ATTR_RDONLY,
        ..Default::default()
    };
    let flags = if recursive { sys::AT_RECURSIVE } else { 0 };
    let cwd = cwd_fd();
    match sys::mount_setattr(cwd, &c, flags, &attr) {
        Ok(()) => Ok(()),
        Err(libc::ENOSYS) => remount_ro_at(&c, &t.display().to_string(), MsFlags::empty()),
        Err(e) => Err(error::sys(
            "mount_setattr",
            format!("{} MOUNT_ATTR_RDONLY", t.display()),
            e,
        )),
    }
}

/// Unmounts `target`: umount2(2); with `detach`, `MNT_DETACH` (lazy: the mount leaves
/// the tree now, and is freed when no longer busy).
pub fn unmount(target: impl AsRef<Path>, detach: bool) -> Result<()> {
    let t = target.as_ref();
    let flags = if detach {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    nix::mount::umount2(t, flags).map_err(|e| error::nix("umount2", t.display().to_string(), e))
}
