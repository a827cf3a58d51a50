//! Namespace kinds, handles on existing namespaces, identity, setns(2) and unshare(2).

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use crate::error::{self, Error, Result};
use crate::sys;

bitflags::bitflags! {
    /// Namespace kinds, as the `CLONE_NEW*` flags of clone(2), unshare(2) and setns(2).
    ///
    /// | kind | isolates | since |
    /// |---|---|---|
    /// | `MOUNT` | mount table | 2.4.19 |
    /// | `UTS` | hostname, NIS domain name | 2.6.19 |
    /// | `IPC` | System V IPC, POSIX message queues | 2.6.19 |
    /// | `USER` | uids, gids, capabilities | 3.8 |
    /// | `PID` | process ids | 2.6.24 |
    /// | `NET` | network devices, stacks, ports | 2.6.29 |
    /// | `CGROUP` | the cgroup root a process sees | 4.6 |
    /// | `TIME` | CLOCK_MONOTONIC / CLOCK_BOOTTIME offsets | 5.6 |
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Namespace: u64 {
        /// `CLONE_NEWCGROUP`: cgroup namespace (4.6).
        const CGROUP = libc::CLONE_NEWCGROUP as u64;
        /// `CLONE_NEWIPC`: System V IPC and POSIX message queues.
        const IPC = libc::CLONE_NEWIPC as u64;
        /// `CLONE_NEWNS`: mount namespace.
        const MOUNT = libc::CLONE_NEWNS as u64;
        /// `CLONE_NEWNET`: network namespace.
        const NET = libc::CLONE_NEWNET as u64;
        /// `CLONE_NEWPID`: pid namespace (affects children; the first child is PID 1).
        const PID = libc::CLONE_NEWPID as u64;
        /// `CLONE_NEWTIME`: time namespace (5.6; clone3 or unshare only).
        const TIME = libc::CLONE_NEWTIME as u64;
        /// `CLONE_NEWUSER`: user namespace (3.8).
        const USER = libc::CLONE_NEWUSER as u64;
        /// `CLONE_NEWUTS`: hostname and NIS domain name.
        const UTS = libc::CLONE_NEWUTS as u64;
    }
}

/// Every kind, in the order setns(2) one by one should enter them: the user namespace
/// first (it grants the capabilities needed for the rest), the mount namespace last
/// (it changes the root and cwd that /proc paths are resolved from).
pub(crate) const ENTER_ORDER: [Namespace; 8] = [
    Namespace::USER,
    Namespace::CGROUP,
    Namespace::IPC,
    Namespace::UTS,
    Namespace::NET,
    Namespace::PID,
    Namespace::TIME,
    Namespace::MOUNT,
];

impl Namespace {
    /// The file name under `/proc/PID/ns/` of a single kind (`None` for a set).
    pub fn proc_name(self) -> Option<&'static str> {
        Some(match self {
            Namespace::CGROUP => "cgroup",
            Namespace::IPC => "ipc",
            Namespace::MOUNT => "mnt",
            Namespace::NET => "net",
            Namespace::PID => "pid",
            Namespace::TIME => "time",
            Namespace::USER => "user",
            Namespace::UTS => "uts",
            _ => return None,
        })
    }

    /// The kinds in this set, one by one, in [`ENTER_ORDER`](Namespace::kinds) (user
    /// first, mount last).
    pub fn kinds(self) -> impl Iterator<Item = Namespace> {
        ENTER_ORDER.into_iter().filter(move |k| self.contains(*k))
    }

    pub(crate) fn clone_flags(self) -> CloneFlags {
        CloneFlags::from_bits_retain(self.bits() as libc::c_int)
    }
}

impl fmt::Display for Namespace {
    /// `net`, `pid+mnt`, ...: the /proc/PID/ns names joined by `+`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for k in self.kinds() {
            if !first {
                f.write_str("+")?;
            }
            first = false;
            f.write_str(k.proc_name().unwrap_or("?"))?;
        }
        Ok(())
    }
}

/// The identity of a namespace: the device and inode of its nsfs file. Two processes
/// share a namespace exactly when their `NsId`s are equal (namespaces(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsId {
    /// `st_dev` of the nsfs inode.
    pub dev: u64,
    /// `st_ino` of the nsfs inode (the number in `net:[4026531840]`).
    pub ino: u64,
}

impl NsId {
    /// The namespace of `kind` that process `pid` is in: stat(2) of `/proc/PID/ns/<kind>`.
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`] when the process is gone (or a zombie);
    /// [`Error::NoNamespaceKind`] when the kernel has no namespace of that kind;
    /// `InvalidArgument` when `kind` is not exactly one kind.
    pub fn of(pid: i32, kind: Namespace) -> Result<NsId> {
        let name = single(kind)?;
        let path = format!("/proc/{pid}/ns/{name}");
        match std::fs::metadata(&path) {
            Ok(m) => Ok(NsId {
                dev: m.dev(),
                ino: m.ino(),
            }),
            Err(e) => Err(ns_file_error(
                pid,
                name,
                "stat",
                path,
                e.raw_os_error().unwrap_or(libc::EIO),
            )),
        }
    }

    /// The namespace of `kind` the calling thread is in (`/proc/thread-self/ns`, 3.17):
    /// setns(2) and unshare(2) act on the calling thread, so after them other threads
    /// of the process may still be elsewhere.
    pub fn current(kind: Namespace) -> Result<NsId> {
        let name = single(kind)?;
        let path = format!("/proc/thread-self/ns/{name}");
        let m = std::fs::metadata(&path).map_err(|e| error::io("stat", path, e))?;
        Ok(NsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

impl fmt::Display for NsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.ino)
    }
}

/// Opens `/proc/PID/ns/NAME`.
fn open_ns_file(pid: i32, name: &'static str) -> Result<OwnedFd> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
    open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| ns_file_error(pid, name, "open", path.display().to_string(), e as i32))
}

/// The error for a `/proc/PID/ns/NAME` that `syscall` failed on. ENOENT there means
/// either that the process is gone (or a zombie, whose namespaces are released) or
/// that the kernel has no namespace of that kind: our own `/proc/self/ns/NAME` tells
/// which (lstat: the entry itself, present for every kind the kernel has).
fn ns_file_error(
    pid: i32,
    name: &'static str,
    syscall: &'static str,
    path: String,
    errno: i32,
) -> Error {
    match errno {
        libc::ENOENT
            if std::fs::symlink_metadata(format!("/proc/self/ns/{name}"))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            Error::NoNamespaceKind {
                kind: name,
                path,
                needs: kernel_with(name),
            }
        }
        libc::ENOENT | libc::ESRCH => Error::NoSuchProcess { pid },
        e => error::sys(syscall, path, e),
    }
}

/// The kernel that has the namespace kind of this /proc/PID/ns name.
fn kernel_with(name: &str) -> &'static str {
    match name {
        "cgroup" => "Linux 4.6 or newer built with CONFIG_CGROUPS",
        "ipc" => "a kernel built with CONFIG_IPC_NS",
        "net" => "a kernel built with CONFIG_NET_NS",
        "pid" | "pid_for_children" => "a kernel built with CONFIG_PID_NS",
        "time" | "time_for_children" => "Linux 5.6 or newer built with CONFIG_TIME_NS",
        "user" => "Linux 3.8 or newer built with CONFIG_USER_NS",
        "uts" => "a kernel built with CONFIG_UTS_NS",
        _ => "a kernel that has this namespace kind",
    }
}

fn single(kind: Namespace) -> Result<&'static str> {
    kind.proc_name().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "expected exactly one namespace kind, got {kind} ({:#x})",
            kind.bits()
        ))
    })
}

#[derive(Debug)]
enum Target {
    /// An nsfs fd: one namespace of one kind.
    One(Namespace),
    /// A pidfd: every namespace of a process (setns on a pidfd, 5.8+). The pid is kept
    /// for the one-by-one fallback through /proc/PID/ns on older kernels.
    Process(i32),
}

/// A handle on an existing namespace (an fd on `/proc/PID/ns/<kind>` or another nsfs
/// path), or on all namespaces of a process (a pidfd).
///
/// Holding the handle keeps the namespace alive, even after its last process exits.
#[derive(Debug)]
pub struct NsHandle {
    fd: OwnedFd,
    target: Target,
}

impl NsHandle {
    /// Opens `/proc/PID/ns/<kind>`.
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`] when the pid is gone (or a zombie);
    /// [`Error::NoNamespaceKind`] when the kernel has no namespace of that kind;
    /// `InvalidArgument` for a set of kinds.
    pub fn open(pid: i32, kind: Namespace) -> Result<NsHandle> {
        let fd = open_ns_file(pid, single(kind)?)?;
        Ok(NsHandle {
            fd,
            target: Target::One(kind),
        })
    }

    /// Opens a namespace file by path (`/proc/PID/ns/net`, a bind mount of one such as
    /// `/run/netns/NAME`); its kind comes from ioctl(NS_GET_NSTYPE) (4.11).
    pub fn from_path(path: &Path) -> Result<NsHandle> {
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| error::nix("open", path.display().to_string(), e))?;
        let t = sys::ns_get_nstype(fd.as_fd())
            .map_err(|e| error::sys("ioctl(NS_GET_NSTYPE)", path.display().to_string(), e))?;
        let kind = Namespace::from_bits(t as u64)
            .filter(|k| k.proc_name().is_some())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("{} is not a namespace file", path.display()))
            })?;
        Ok(NsHandle {
            fd,
            target: Target::One(kind),
        })
    }

    /// A handle on every namespace of process `pid`, through pidfd_open(2) (5.3).
    ///
    /// [`enter`](NsHandle::enter) then joins several namespaces in one setns(2) call on
    /// 5.8+, and one by one through `/proc/PID/ns` on older kernels.
    pub fn from_pid(pid: i32) -> Result<NsHandle> {
        let fd = sys::pidfd_open(pid).map_err(|e| match e {
            libc::ESRCH => Error::NoSuchProcess { pid },
            e => error::sys("pidfd_open", format!("pid {pid}"), e),
        })?;
        Ok(NsHandle {
            fd,
            target: Target::Process(pid),
        })
    }

    /// A handle from a pidfd you already hold (e.g. [`Child::pidfd`](crate::Child::pidfd)).
    /// `pid` is used only for the one-by-one fallback on kernels before 5.8.
    pub fn from_pidfd(pidfd: OwnedFd, pid: i32) -> NsHandle {
        NsHandle {
            fd: pidfd,
            target: Target::Process(pid),
        }
    }

    /// The kind of a single-namespace handle; `None` for a pidfd handle.
    pub fn kind(&self) -> Option<Namespace> {
        match self.target {
            Target::One(k) => Some(k),
            Target::Process(_) => None,
        }
    }

    /// The namespace's identity, from fstat(2) of the nsfs fd. For a pidfd handle, give
    /// the kind: it is read from `/proc/PID/ns/<kind>`.
    pub fn id(&self, kind: Namespace) -> Result<NsId> {
        match self.target {
            Target::One(k) if k == kind => {
                let st = nix::sys::stat::fstat(&self.fd)
                    .map_err(|e| error::nix("fstat", format!("{k} namespace fd"), e))?;
                Ok(NsId {
                    dev: st.st_dev,
                    ino: st.st_ino,
                })
            }
            Target::One(k) => Err(Error::InvalidArgument(format!(
                "this handle is a {k} namespace, not {kind}"
            ))),
            Target::Process(pid) => NsId::of(pid, kind),
        }
    }

    pub(crate) fn pid(&self) -> Option<i32> {
        match self.target {
            Target::Process(p) => Some(p),
            Target::One(_) => None,
        }
    }

    /// Moves the calling thread into the namespace(s), as nsenter(1) does: setns(2).
    ///
    /// `kinds` must be the handle's kind (or empty) for a namespace handle; for a pidfd
    /// handle it says which of the process's namespaces to join, all in one call on
    /// 5.8+ (atomically), one by one on older kernels (user first, mount last).
    ///
    /// setns(2) restrictions apply: joining a user or mount namespace needs a
    /// single-threaded process (use [`Spawn::join`](crate::Spawn::join) from threaded
    /// programs); joining a pid namespace affects only children created afterwards.
    pub fn enter(&self, kinds: Namespace) -> Result<()> {
        match self.target {
            Target::One(k) => {
                if !kinds.is_empty() && kinds != k {
                    return Err(Error::InvalidArgument(format!(
                        "cannot enter {kinds} through a {k} namespace handle"
                    )));
                }
                setns(self.fd.as_fd(), k)
            }
            Target::Process(pid) => {
                if kinds.is_empty() {
                    return Err(Error::InvalidArgument(
                        "entering through a pidfd needs the namespace kinds to join".into(),
                    ));
                }
                match nix::sched::setns(&self.fd, kinds.clone_flags()) {
                    Ok(()) => Ok(()),
                    // Before 5.8 a pidfd is not a namespace fd: setns says EINVAL.
                    Err(nix::Error::EINVAL) if !pidfd_setns_supported() => self.enter_each(kinds),
                    Err(nix::Error::ESRCH) => Err(Error::NoSuchProcess { pid }),
                    Err(e) => Err(setns_error(kinds, e as i32)),
                }
            }
        }
    }
}

impl NsHandle {
    /// Like [`NsHandle::enter`], but one namespace at a time through `/proc/PID/ns`
    /// (user first, mount last): what `enter` does through a pidfd on kernels before
    /// 5.8, where setns(2) does not take one. Not atomic: a failure names the kind it
    /// stopped at, and the kinds entered before it stay entered.
    ///
    /// The namespace files are all opened first; then the pidfd's process must still be
    /// alive, so the pid they were opened by was not recycled meanwhile.
    pub fn enter_each(&self, kinds: Namespace) -> Result<()> {
        let Target::Process(pid) = self.target else {
            return self.enter(kinds);
        };
        let handles: Vec<(Namespace, NsHandle)> = kinds
            .kinds()
            .map(|k| NsHandle::open(pid, k).map(|h| (k, h)))
            .collect::<Result<_>>()?;
        sys::pidfd_send_signal(self.fd.as_fd(), 0).map_err(|e| match e {
            libc::ESRCH => Error::NoSuchProcess { pid },
            e => error::sys("pidfd_send_signal", format!("pid {pid} 0"), e),
        })?;
        for (k, h) in handles {
            h.enter(k)?;
        }
        Ok(())
    }
}

impl AsFd for NsHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(crate) fn setns_error(kinds: Namespace, errno: i32) -> Error {
    if errno == libc::EINVAL && kinds.intersects(Namespace::USER | Namespace::MOUNT) {
        return Error::Sys {
            syscall: "setns",
            what: format!(
                "{kinds}: joining a user or mount namespace needs a single-threaded process; use Spawn::join"
            ),
            source: std::io::Error::from_raw_os_error(errno),
        };
    }
    error::sys("setns", kinds.to_string(), errno)
}

fn setns(fd: BorrowedFd<'_>, kind: Namespace) -> Result<()> {
    nix::sched::setns(fd, kind.clone_flags()).map_err(|e| setns_error(kind, e as i32))
}

/// Whether setns(2) accepts a pidfd (5.8+), from the kernel release.
pub(crate) fn pidfd_setns_supported() -> bool {
    kernel_at_least(5, 8)
}

/// The running kernel's (major, minor) from uname(2).
pub fn kernel_version() -> (u32, u32) {
    let u = nix::sys::utsname::uname();
    let Ok(u) = u else { return (0, 0) };
    let rel = u.release().to_string_lossy().into_owned();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}

pub(crate) fn kernel_at_least(major: u32, minor: u32) -> bool {
    kernel_version() >= (major, minor)
}

/// Moves the calling thread (process) into new namespaces of `kinds`: unshare(2).
///
/// For [`Namespace::PID`] and [`Namespace::TIME`] only children created afterwards are
/// in the new namespace. [`Namespace::USER`] and [`Namespace::MOUNT`] require a
/// single-threaded process (EINVAL otherwise); prefer [`Spawn`](crate::Spawn) in
/// threaded programs.
pub fn unshare(kinds: Namespace) -> Result<()> {
    nix::sched::unshare(kinds.clone_flags()).map_err(|e| {
        if e == nix::Error::EINVAL && kinds.intersects(Namespace::USER | Namespace::MOUNT) {
            Error::Sys {
                syscall: "unshare",
                what: format!(
                    "{kinds}: a user or mount namespace needs a single-threaded process; use Spawn"
                ),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            }
        } else {
            error::nix("unshare", kinds.to_string(), e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_order() {
        assert_eq!(Namespace::NET.proc_name(), Some("net"));
        assert_eq!((Namespace::NET | Namespace::PID).proc_name(), None);
        let all = Namespace::all();
        assert_eq!(all.kinds().count(), 8);
        assert_eq!(all.kinds().next(), Some(Namespace::USER));
        assert_eq!(all.kinds().last(), Some(Namespace::MOUNT));
        assert_eq!((Namespace::MOUNT | Namespace::PID).to_string(), "pid+mnt");
    }

    /// ENOENT on a namespace file of a live process is the kernel lacking the kind,
    /// not the process missing: a kind no kernel has, opened for ourselves.
    #[test]
    fn a_missing_namespace_kind_is_not_a_missing_process() {
        let me = std::process::id() as i32;
        let e = open_ns_file(me, "nskit-no-such-kind").unwrap_err();
        assert!(
            matches!(
                e,
                Error::NoNamespaceKind {
                    kind: "nskit-no-such-kind",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("this kernel has no nskit-no-such-kind namespace"),
            "{e}"
        );
        assert!(e.is_unsupported());
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // Every kind this kernel has opens; a kind it has, for a pid that does not
        // exist, is the missing process.
        for k in Namespace::all().kinds() {
            let name = k.proc_name().unwrap();
            if std::path::Path::new(&format!("/proc/self/ns/{name}")).exists() {
                open_ns_file(me, name).unwrap();
                let e = open_ns_file(i32::MAX, name).unwrap_err();
                assert!(matches!(e, Error::NoSuchProcess { pid: i32::MAX }), "{e:?}");
            }
        }
    }

    #[test]
    fn current_ids_are_stable() {
        assert_eq!(
            NsId::current(Namespace::NET).unwrap(),
            NsId::current(Namespace::NET).unwrap()
        );
        assert!(NsId::current(Namespace::NET | Namespace::PID).is_err());
    }
}
