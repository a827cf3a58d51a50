//! Mounts: bind, tmpfs, proc, sysfs, devpts, mqueue, read-only remounts, propagation,
//! unmount, pivot_root, overlay, and the fd-based mount API (5.2+) with idmapped
//! mounts (5.12+), with the classic mount(2) calls where the kernel lacks it.
//!
//! Everything here acts on the **calling process's** mount namespace. Run it in a
//! child with its own mount namespace ([`Spawn`](crate::Spawn) with
//! [`Namespace::MOUNT`](crate::Namespace::MOUNT), or after
//! [`unshare`](crate::unshare)) unless you mean to change the host's mounts.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open};
pub use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use crate::error::{self, Error, Result};
use crate::namespace::NsHandle;
use crate::sys;

fn cpath(what: &'static str, p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Nul {
        what,
        value: p.display().to_string(),
    })
}

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
}

impl MountSpec {
    fn fs(fstype: &str, target: impl AsRef<Path>, flags: MsFlags, data: Option<&str>) -> MountSpec {
        MountSpec {
            source: Some(fstype.into()),
            target: target.as_ref().to_owned(),
            fstype: Some(fstype.into()),
            flags,
            data: data.map(str::to_owned),
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
        }
    }

    /// Read-only. For bind mounts this takes a second, remount call
    /// (`MS_BIND | MS_REMOUNT | MS_RDONLY`), made for you.
    pub fn readonly(mut self) -> MountSpec {
        self.flags |= MsFlags::MS_RDONLY;
        self
    }

    /// Adds mount flags.
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
        if self.flags.contains(MsFlags::MS_BIND) && self.flags.contains(MsFlags::MS_RDONLY) {
            // The old fd names the covered directory; resolve again to reach the mount.
            let fd = root.resolve(&self.target)?;
            remount_ro_at(&proc_fd_path(fd.as_fd()), &shown, self.flags)?;
        }
        Ok(())
    }

    /// mount(2) at `target`; `remount_ro`: make a read-only bind's second call on the
    /// same path (a path reaches the new mount, an fd path does not).
    fn mount_at(&self, target: &CStr, shown: &str, remount_ro: bool) -> Result<()> {
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
        if remount_ro && bind && self.flags.contains(MsFlags::MS_RDONLY) {
            remount_ro_at(target, shown, self.flags)?;
        }
        Ok(())
    }
}

fn remount_ro_at(target: &CStr, shown: &str, flags: MsFlags) -> Result<()> {
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

fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    // A decimal fd never holds a NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
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

fn cwd_fd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a sentinel the kernel accepts wherever a dirfd is taken; it
    // is never closed.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
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

/// Makes `new_root` the process's root with pivot_root(2) and detaches the old root
/// (the runc way: `pivot_root(".", ".")` then `umount2(".", MNT_DETACH)`), so no path
/// leads back to it. `new_root` must be a mount point (bind it onto itself first) and
/// its parent mount not shared ([`set_propagation`] private on `/` first). Changes
/// the cwd to the new `/`.
///
/// Needs a mount namespace of its own; it fails with EINVAL when the current root is
/// the initramfs `rootfs`, which cannot be pivoted away from.
pub fn pivot_root(new_root: impl AsRef<Path>) -> Result<()> {
    let r = new_root.as_ref();
    let fd = open(
        r,
        OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| error::nix("open", r.display().to_string(), e))?;
    nix::unistd::fchdir(&fd).map_err(|e| error::nix("fchdir", r.display().to_string(), e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| error::nix("pivot_root", format!("{} (\".\", \".\")", r.display()), e))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| error::nix("umount2", "old root (MNT_DETACH)", e))?;
    nix::unistd::chdir("/").map_err(|e| error::nix("chdir", "/", e))
}

/// A directory that paths are resolved inside of, as the root of a container's
/// filesystem: `..` and absolute symlinks stay inside it.
///
/// Resolution is openat2(2) with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` (5.6). On
/// older kernels each component is opened with `O_NOFOLLOW` and any symlink or `..` is
/// refused (stricter, never weaker).
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens the root directory (`O_PATH | O_DIRECTORY`).
    pub fn open(path: impl AsRef<Path>) -> Result<Root> {
        let path = path.as_ref().to_owned();
        let fd = open(
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| error::nix("open", path.display().to_string(), e))?;
        Ok(Root { fd, path })
    }

    /// The root's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `path` (absolute or relative, both taken inside the root) as an `O_PATH`
    /// fd, confined to the root.
    ///
    /// # Errors
    /// [`Error::Escape`] when the fallback walk meets a symlink or `..`; an openat2
    /// failure (ENOENT, ...) otherwise.
    pub fn resolve(&self, path: impl AsRef<Path>) -> Result<OwnedFd> {
        self.open_in(path.as_ref(), OFlag::O_PATH)
    }

    fn open_in(&self, path: &Path, flags: OFlag) -> Result<OwnedFd> {
        let rel = relative(path);
        let c = cpath("path", &rel)?;
        match sys::openat2(
            self.fd.as_fd(),
            &c,
            flags.bits(),
            sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(fd),
            Err(libc::ENOSYS) => self.walk(&rel, flags),
            Err(e @ (libc::EXDEV | libc::ELOOP)) => Err(Error::Escape {
                root: self.path.display().to_string(),
                path: path.display().to_string(),
                source: std::io::Error::from_raw_os_error(e),
            }),
            Err(e) => Err(error::sys(
                "openat2",
                format!(
                    "{} in root {} (RESOLVE_IN_ROOT)",
                    path.display(),
                    self.path.display()
                ),
                e,
            )),
        }
    }

    fn walk(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd> {
        let escape = |e: i32| Error::Escape {
            root: self.path.display().to_string(),
            path: rel.display().to_string(),
            source: std::io::Error::from_raw_os_error(e),
        };
        let mut cur = nix::unistd::dup(&self.fd).map_err(|e| error::nix("dup", "root fd", e))?;
        for comp in rel.components() {
            match comp {
                Component::Normal(n) => {
                    let next = nix::fcntl::openat(
                        &cur,
                        n,
                        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| error::nix("openat", rel.display().to_string(), e))?;
                    let st = nix::sys::stat::fstat(&next)
                        .map_err(|e| error::nix("fstat", rel.display().to_string(), e))?;
                    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                        return Err(escape(libc::ELOOP));
                    }
                    cur = next;
                }
                Component::CurDir => {}
                _ => return Err(escape(libc::EXDEV)),
            }
        }
        if flags.contains(OFlag::O_PATH) {
            Ok(cur)
        } else {
            nix::fcntl::openat(&cur, ".", flags | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| error::nix("openat", rel.display().to_string(), e))
        }
    }

    /// Creates `path` and its missing parents inside the root (mkdirat(2) on confined
    /// fds), as a mount point.
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> Result<()> {
        let rel = relative(path.as_ref());
        let mut done = PathBuf::new();
        for comp in rel.components() {
            let Component::Normal(n) = comp else { continue };
            let parent = self.resolve(&done)?;
            match nix::sys::stat::mkdirat(&parent, n, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => {
                    return Err(error::nix(
                        "mkdirat",
                        format!("{}/{}", self.path.display(), done.join(n).display()),
                        e,
                    ));
                }
            }
            done.push(n);
        }
        Ok(())
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn relative(p: &Path) -> PathBuf {
    let r = p.strip_prefix("/").unwrap_or(p);
    if r.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        r.to_owned()
    }
}

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
        let attr = sys::MountAttr {
            attr_set: sys::MOUNT_ATTR_IDMAP,
            userns_fd: userns.as_fd().as_raw_fd() as u64,
            ..Default::default()
        };
        sys::mount_setattr(self.fd.as_fd(), c"", libc::AT_EMPTY_PATH as u32, &attr)
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

/// An overlay filesystem (overlayfs, 3.18): read-only `lower` layers (the first is the
/// top one), a writable `upper` directory and its `work` directory on the same
/// filesystem. Without an upper the overlay is read-only.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> nskit::Result<()> {
/// nskit::Overlay::new()
///     .lower("/layers/app")
///     .lower("/layers/base")
///     .upper("/ctr/upper", "/ctr/work")
///     .mount("/ctr/rootfs")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    lowers: Vec<PathBuf>,
    upper: Option<(PathBuf, PathBuf)>,
}

/// The option string limit of mount(2): one page.
const MOUNT_DATA_MAX: usize = 4095;

impl Overlay {
    /// An overlay with no layers yet.
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// Adds a lower layer below the ones already added.
    pub fn lower(&mut self, dir: impl AsRef<Path>) -> &mut Overlay {
        self.lowers.push(dir.as_ref().to_owned());
        self
    }

    /// The writable upper layer and its work directory.
    pub fn upper(&mut self, upper: impl AsRef<Path>, work: impl AsRef<Path>) -> &mut Overlay {
        self.upper = Some((upper.as_ref().to_owned(), work.as_ref().to_owned()));
        self
    }

    /// Mounts the overlay at `target`. Many layers never hit mount(2)'s one-page option
    /// limit: on 6.8+ each layer is its own `fsconfig(lowerdir+)` call; otherwise the
    /// classic option string is used, with the layers given as short
    /// `/proc/self/fd/N` paths of open fds when the full paths would not fit.
    pub fn mount(&self, target: impl AsRef<Path>) -> Result<()> {
        let target = target.as_ref();
        if self.lowers.is_empty() {
            return Err(Error::InvalidArgument(
                "an overlay needs at least one lower layer".into(),
            ));
        }
        for p in self
            .lowers
            .iter()
            .chain(self.upper.iter().flat_map(|(u, w)| [u, w]))
        {
            if p.as_os_str()
                .as_bytes()
                .iter()
                .any(|b| matches!(b, b',' | b':' | b'\n'))
            {
                return Err(Error::InvalidArgument(format!(
                    "overlay layer path {} holds ',' or ':', which overlayfs options cannot carry",
                    p.display()
                )));
            }
        }
        if crate::namespace::kernel_at_least(6, 8) {
            match self.mount_fsconfig(target) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_unsupported() => {}
                Err(e) => return Err(e),
            }
        }
        // Paths go to the kernel as the bytes they are: a lossy display() would
        // mount another directory (or none) for a name that is not UTF-8.
        let full = self.options(|p| p.as_os_str().as_bytes().to_vec());
        if full.len() <= MOUNT_DATA_MAX {
            return self.mount_classic(target, &full);
        }
        let mut fds = Vec::new();
        for l in &self.lowers {
            fds.push(
                open(
                    l,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| error::nix("open", l.display().to_string(), e))?,
            );
        }
        let mut i = 0;
        let short = self.options(|p| {
            if self.lowers.iter().any(|l| l == p) && i < fds.len() {
                let s = format!("/proc/self/fd/{}", fds[i].as_raw_fd());
                i += 1;
                s.into_bytes()
            } else {
                p.as_os_str().as_bytes().to_vec()
            }
        });
        if short.len() > MOUNT_DATA_MAX {
            return Err(Error::InvalidArgument(format!(
                "{} overlay layers do not fit mount(2)'s one-page option limit on this kernel (fsconfig lowerdir+ needs Linux 6.8)",
                self.lowers.len()
            )));
        }
        self.mount_classic(target, &short)
    }

    /// `lowerdir=L1:L2,upperdir=U,workdir=W`, each path as `name` gives it.
    fn options(&self, mut name: impl FnMut(&Path) -> Vec<u8>) -> Vec<u8> {
        let mut s = b"lowerdir=".to_vec();
        for (i, l) in self.lowers.iter().enumerate() {
            if i > 0 {
                s.push(b':');
            }
            s.extend(name(l));
        }
        if let Some((u, w)) = &self.upper {
            s.extend_from_slice(b",upperdir=");
            s.extend(name(u));
            s.extend_from_slice(b",workdir=");
            s.extend(name(w));
        }
        s
    }

    fn mount_classic(&self, target: &Path, data: &[u8]) -> Result<()> {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
        .map_err(|e| {
            error::nix(
                "mount",
                format!(
                    "overlay on {} ({} lower layers)",
                    target.display(),
                    self.lowers.len()
                ),
                e,
            )
        })
    }

    fn mount_fsconfig(&self, target: &Path) -> Result<()> {
        let mut opts: Vec<(&str, Option<&OsStr>)> = Vec::new();
        for l in &self.lowers {
            opts.push(("lowerdir+", Some(l.as_os_str())));
        }
        if let Some((u, w)) = &self.upper {
            opts.push(("upperdir", Some(u.as_os_str())));
            opts.push(("workdir", Some(w.as_os_str())));
        }
        DetachedMount::new_fs_os("overlay", &opts)?.attach(target)
    }
}
