//! Dropping privileges between clone and exec: capabilities (bounding set, then
//! capset), no_new_privs, every fd above stdio marked close-on-exec, the spec's
//! seccomp filter last ([`crate::seccomp`]); optionally a tiny PID 1 that reaps zombies.
//!
//! [`Confine`] is prepared in the parent (every buffer allocated there) and
//! [`Confine::apply`] runs in the cloned child through nskit's `pre_exec`: raw
//! syscalls only, async-signal-safe.

use std::ffi::CString;
use std::io;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, PosixRlimitType, Spec};

use crate::error::{Error, Result};
use crate::seccomp;

/// Capability names in kernel order (`include/uapi/linux/capability.h`).
pub const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capability's number, from its OCI name (`CAP_CHOWN` -> 0).
pub fn cap_number(c: &Capability) -> Option<u32> {
    let name = serde_json::to_value(c).ok()?;
    let name = name.as_str()?;
    CAP_NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// A set of capabilities as the kernel's 64-bit mask.
pub fn cap_mask<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> u64 {
    caps.into_iter()
        .filter_map(cap_number)
        .fold(0u64, |m, n| m | (1u64 << n))
}

/// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Everything the child does between its mounts and exec, prepared in the parent.
#[derive(Debug)]
pub struct Confine {
    /// The bounding set, as a mask; every other capability is dropped from it.
    pub caps: u64,
    /// The effective, permitted, inheritable and ambient sets, as masks.
    pub sets: CapSets,
    /// Supplementary groups besides the gid (`process.user.additionalGids`).
    pub groups: Vec<u32>,
    /// `process.rlimits`: (RLIMIT_* number, soft, hard), set with prlimit64(2).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// `process.user.umask`.
    pub umask: Option<u32>,
    /// `linux.rootfsPropagation` as mount(2) flags, applied to `/` after the root
    /// change; 0 for none.
    pub root_propagation: libc::c_ulong,
    /// `linux.personality`'s domain (personality(2)), if given.
    pub personality: Option<libc::c_ulong>,
    /// Highest capability number of the kernel.
    pub last_cap: u32,
    /// `setresgid`/`setresuid` (and setgroups to just the gid) when not root.
    pub user: Option<(u32, u32)>,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// The seccomp filter (`linux.seccomp`), compiled in the parent.
    pub seccomp: Option<seccomp::Program>,
    /// The cgroup's `tasks`/`cgroup.procs` fds to write "0" to, then close (v1 and
    /// hybrid hosts, or pure v2 without clone3's placement).
    pub cgroup: Option<cgroupkit::SpawnHandles>,
    /// unshare(CLONE_NEWCGROUP) after joining the cgroup.
    pub unshare_cgroup: bool,
    /// Where pivot_root cannot work (/ is the initramfs): move this mount onto / and
    /// chroot into it.
    pub move_root: Option<CString>,
    /// Bring `lo` up (a new network namespace).
    pub loopback: bool,
    /// Join this session keyring (made if missing) instead of keeping the caller's:
    /// keys are not namespaced, so a container that kept the runtime's session
    /// keyring could read and link the host's keys (runc does the same; `create
    /// --no-new-keyring` opts out).
    pub session_keyring: Option<CString>,
    /// Fork: the parent stays as PID 1 reaping zombies and forwarding signals, the
    /// child goes on to exec.
    pub init: bool,
}

/// The capability sets of the process besides the bounding set, as masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Effective.
    pub effective: u64,
    /// Permitted.
    pub permitted: u64,
    /// Inheritable.
    pub inheritable: u64,
    /// Ambient (each must also be permitted and inheritable).
    pub ambient: u64,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn check(r: libc::c_long) -> io::Result<()> {
    if r < 0 { Err(last_err()) } else { Ok(()) }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_SETPERM: libc::c_long = 5;
/// A new session keyring's permissions (possessor: all; its user: view, read,
/// link) plus search for its user, so that the process can still search it after
/// changing uid (as runc sets it).
const SESSION_KEYRING_PERM: libc::c_long = 0x3f1b_0000;

/// Joins (or makes) the session keyring `name` and sets its permissions. A kernel
/// without keys (ENOSYS) has nothing to isolate. Async-signal-safe.
fn join_session_keyring(name: &CString) -> io::Result<()> {
    // SAFETY: a NUL-terminated name and integer arguments.
    let id = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if id < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOSYS) {
            Ok(())
        } else {
            Err(e)
        };
    }
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, SESSION_KEYRING_PERM) })?;
    Ok(())
}
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

impl Confine {
    /// Applies every step. Async-signal-safe: raw syscalls on data prepared in the
    /// parent; no allocation, no locks.
    pub fn apply(&self) -> io::Result<()> {
        if let Some(name) = &self.session_keyring {
            join_session_keyring(name)?;
        }
        if self.root_propagation != 0 {
            // SAFETY: NUL-terminated literal; NULL source, type and data are allowed
            // for a propagation change.
            check(unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    self.root_propagation,
                    std::ptr::null(),
                )
            } as libc::c_long)?;
        }
        if let Some(p) = self.personality {
            // SAFETY: integer argument only.
            check(unsafe { libc::syscall(libc::SYS_personality, p) })?;
        }
        // Non-dumpable until exec: other processes of the container cannot open
        // /proc/PID/exe (the sandbox binary) of this one; exec resets it.
        // SAFETY: prctl with integer arguments only.
        unsafe {
            check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) as libc::c_long)?;
        }
        if let Some(h) = &self.cgroup {
            // Closed right after joining, not left to close-on-exec: an `--init`
            // never execs, and nothing of the runtime stays reachable in the
            // container through /proc/self/fd until exec.
            // SAFETY: the child never uses or drops these handles again (it execs
            // or exits); the parent keeps its own fds.
            unsafe { h.join_self_and_close()? };
        }
        if self.unshare_cgroup {
            // SAFETY: unshare takes flags only.
            check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } as libc::c_long)?;
        }
        if let Some(root) = &self.move_root {
            // SAFETY: NUL-terminated paths; the runc "no pivot" sequence.
            unsafe {
                check(libc::chdir(root.as_ptr()) as libc::c_long)?;
                check(libc::mount(
                    c".".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_MOVE,
                    std::ptr::null(),
                ) as libc::c_long)?;
                check(libc::chroot(c".".as_ptr()) as libc::c_long)?;
                check(libc::chdir(c"/".as_ptr()) as libc::c_long)?;
            }
        }
        if self.loopback {
            loopback_up()?;
        }
        // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: it goes on
        // before the capabilities are dropped (as runc orders it), else it would
        // fail with EACCES; with no_new_privs, as late as possible (below).
        if !self.no_new_privs
            && let Some(p) = &self.seccomp
        {
            p.install()?;
        }
        for cap in 0..=self.last_cap.min(63) {
            if self.caps & (1u64 << cap) == 0 {
                // SAFETY: integer arguments only.
                let r =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    return Err(last_err());
                }
            }
        }
        // SAFETY: integer arguments only.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
        }
        for (res, soft, hard) in &self.rlimits {
            let lim = [*soft, *hard];
            // SAFETY: prlimit64 on ourselves (pid 0) with a two-u64 struct rlimit64.
            check(unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    *res as libc::c_long,
                    lim.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                )
            })?;
        }
        if let Some(m) = self.umask {
            // SAFETY: integer argument only.
            unsafe { libc::syscall(libc::SYS_umask, m as libc::c_long) };
        }
        if let Some((uid, gid)) = self.user {
            // Keep the permitted set across the uid change (a capset follows).
            // SAFETY: integer arguments only.
            check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } as libc::c_long)?;
            let mut groups = [0 as libc::gid_t; 65];
            groups[0] = gid;
            let mut n = 1;
            for g in self.groups.iter().take(64) {
                if let Some(slot) = groups.get_mut(n) {
                    *slot = *g;
                    n += 1;
                }
            }
            // SAFETY: groups holds n entries; raw syscalls (the libc wrappers would
            // signal other threads, which the child does not have).
            unsafe {
                check(libc::syscall(libc::SYS_setgroups, n, groups.as_ptr()))?;
                check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
                check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
            }
        }
        let set = |m: u64| (m as u32, (m >> 32) as u32);
        let (e, p, i) = (
            set(self.sets.effective & self.caps),
            set(self.sets.permitted & self.caps),
            set(self.sets.inheritable),
        );
        let mut hdr = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: e.0,
                permitted: p.0,
                inheritable: i.0,
            },
            CapData {
                effective: e.1,
                permitted: p.1,
                inheritable: i.1,
            },
        ];
        // SAFETY: header and a two-element data array as capset(2) v3 expects.
        check(unsafe { libc::syscall(libc::SYS_capset, &raw mut hdr, data.as_ptr()) })?;
        for cap in 0..=self.last_cap.min(63) {
            if self.sets.ambient & (1u64 << cap) != 0 {
                // SAFETY: integer arguments only.
                check(unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                } as libc::c_long)?;
            }
        }
        if self.no_new_privs {
            // SAFETY: integer arguments only.
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as libc::c_long)?;
        }
        // Every fd above stdio is closed by exec (nskit's error pipe included, which
        // must survive until then).
        // SAFETY: integer arguments only.
        check(unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC)
        })?;
        if self.no_new_privs
            && let Some(p) = &self.seccomp
        {
            p.install()?;
        }
        if self.init {
            init_fork()?;
        }
        Ok(())
    }
}

/// `struct ifreq` with the flags member (`<net/if.h>`).
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    pad: [u8; 22],
}

/// Sets IFF_UP on `lo` with SIOCGIFFLAGS/SIOCSIFFLAGS. Async-signal-safe.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket with integer arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_err());
    }
    let mut req = IfReqFlags {
        name: [0; 16],
        flags: 0,
        pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: req is a valid ifreq for both ioctls; fd is ours and closed after.
    let r = unsafe {
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &raw mut req);
        if r == 0 {
            req.flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &raw mut req);
        }
        r
    };
    let e = last_err();
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if r != 0 { Err(e) } else { Ok(()) }
}

/// Forks; the parent becomes the container's PID 1: it reaps every child, forwards
/// signals to the main child and exits with its status (128+N for signal N). The
/// child returns and goes on to exec. Async-signal-safe.
pub fn init_fork() -> io::Result<()> {
    // SAFETY: plain-data sigsets initialised by sigfillset / sigprocmask.
    let (all, old) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
        (all, old)
    };
    // SAFETY: clone without CLONE_VM and a NULL stack behaves as fork(2).
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid < 0 {
        let e = last_err();
        // SAFETY: restoring the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        return Err(e);
    }
    if pid == 0 {
        // SAFETY: restoring the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        return Ok(());
    }
    let child = pid as libc::pid_t;
    // The init never execs: it drops every fd (nskit's error pipe included, so the
    // parent sees EOF when the child execs).
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    loop {
        // SAFETY: info is plain data written by the kernel; `all` is a valid set.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(&all, &mut info)
        };
        if sig < 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            loop {
                let mut st: libc::c_int = 0;
                // SAFETY: st is writable.
                let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
                if r <= 0 {
                    break;
                }
                if r == child {
                    let code = if libc::WIFSIGNALED(st) {
                        128 + libc::WTERMSIG(st)
                    } else {
                        libc::WEXITSTATUS(st)
                    };
                    // SAFETY: _exit is async-signal-safe.
                    unsafe { libc::_exit(code) };
                }
            }
        } else {
            // SAFETY: integer arguments only.
            unsafe { libc::kill(child, sig) };
        }
    }
}

/// The [`Confine`] the spec asks for (capabilities, user, no_new_privs, seccomp).
pub fn from_spec(spec: &Spec) -> Result<Confine> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("the spec has no process".into()))?;
    let c = process.capabilities().as_ref();
    let mask = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>| {
        c.and_then(|c| f(c).as_ref()).map(cap_mask).unwrap_or(0)
    };
    let caps = mask(LinuxCapabilities::bounding);
    let u = process.user();
    let groups = u.additional_gids().clone().unwrap_or_default();
    let user = (u.uid() != 0 || u.gid() != 0 || !groups.is_empty()).then_some((u.uid(), u.gid()));
    let mut rlimits = Vec::new();
    for r in process.rlimits().iter().flatten() {
        rlimits.push((rlimit_number(r.typ()), r.soft(), r.hard()));
    }
    Ok(Confine {
        caps,
        sets: CapSets {
            effective: mask(LinuxCapabilities::effective),
            permitted: mask(LinuxCapabilities::permitted),
            inheritable: mask(LinuxCapabilities::inheritable),
            ambient: mask(LinuxCapabilities::ambient),
        },
        groups,
        rlimits,
        umask: u.umask(),
        root_propagation: spec
            .linux()
            .as_ref()
            .and_then(|l| l.rootfs_propagation().as_deref())
            .and_then(crate::oci::bundle::propagation_flags)
            .unwrap_or(0),
        personality: spec
            .linux()
            .as_ref()
            .and_then(|l| l.personality().as_ref())
            .map(|p| match p.domain() {
                oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008,
                oci_spec::runtime::LinuxPersonalityDomain::PerLinux => 0,
            }),
        last_cap: last_cap(),
        user,
        no_new_privs: process.no_new_privileges().unwrap_or(true),
        seccomp: spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(|s| seccomp::Profile::from_oci(s)?.compile())
            .transpose()?,
        cgroup: None,
        unshare_cgroup: false,
        move_root: None,
        loopback: false,
        session_keyring: None,
        init: false,
    })
}

/// The RLIMIT_* number of an OCI rlimit type.
fn rlimit_number(t: PosixRlimitType) -> u32 {
    use PosixRlimitType as T;
    (match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_mask() {
        // CapEff of a root process in a default Docker container.
        assert_eq!(cap_mask(crate::spec::DEFAULT_CAPS.iter()), 0xa804_25fb);
    }
}
