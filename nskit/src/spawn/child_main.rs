//! The code that runs in the child between clone and exec: async-signal-safe, raw
//! syscalls only.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use super::builder::PreExec;
use crate::sys;

/// The steps of the child between clone and exec, as reported over the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Step {
    Signals = 1,
    Sync,
    Setgroups,
    Setresgid,
    Setresuid,
    Join,
    UnshareCgroup,
    UnshareTime,
    TimeOffsets,
    EnterTime,
    Hostname,
    Domainname,
    Propagation,
    BindRoot,
    OpenRoot,
    ResolveTarget,
    Mount,
    PivotRoot,
    Chdir,
    Stdio,
    PreExec,
    Exec,
    /// Not a failure: the child reached its exec gate ([`Spawn::exec_gate`]).
    Gate,
}

pub(super) const STEPS: [Step; 23] = [
    Step::Signals,
    Step::Sync,
    Step::Setgroups,
    Step::Setresgid,
    Step::Setresuid,
    Step::Join,
    Step::UnshareCgroup,
    Step::UnshareTime,
    Step::TimeOffsets,
    Step::EnterTime,
    Step::Hostname,
    Step::Domainname,
    Step::Propagation,
    Step::BindRoot,
    Step::OpenRoot,
    Step::ResolveTarget,
    Step::Mount,
    Step::PivotRoot,
    Step::Chdir,
    Step::Stdio,
    Step::PreExec,
    Step::Exec,
    Step::Gate,
];

/// A mount, ready for the child: every string allocated.
pub(super) struct ChildMount {
    pub(super) source: Option<CString>,
    /// Relative to the root (confined) when a root is set, else as given.
    pub(super) target: CString,
    pub(super) fstype: Option<CString>,
    pub(super) flags: libc::c_ulong,
    pub(super) data: Option<CString>,
    /// A bind mount's per-mount flags (read-only, nosuid, nodev, ...; with MS_REC for
    /// an rbind), applied by a second call ([`sys::set_bind_flags`]); 0 for none.
    pub(super) remount: libc::c_ulong,
    /// Make the target directory (inside the root) when missing.
    pub(super) mkdir: bool,
    /// A detached mount to attach with move_mount(2) instead of mount(2); -1 for none.
    pub(super) detached: RawFd,
}

/// A setns for the child: the fd, its CLONE_NEW* flags, and the /proc/PID/ns paths to
/// join one by one where setns on a pidfd is refused (before 5.8).
pub(super) type PreparedJoin = (RawFd, libc::c_int, Vec<(CString, libc::c_int)>);

/// Whether the child drops its supplementary groups (setgroups(0, NULL)) before it
/// changes its gid and uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropGroups {
    /// Keep them.
    No,
    /// Drop them; a failure fails the spawn (a new user namespace that allows it).
    Yes,
    /// Drop them where allowed; where setgroups is refused (EPERM: no CAP_SETGID, or
    /// a user namespace with setgroups denied) keep them, as std's
    /// `CommandExt::uid` does.
    UnlessRefused,
}

/// Everything the child reads, prepared in the parent.
pub(super) struct Prepared {
    pub(super) candidates: Vec<CString>,
    pub(super) argv: Vec<CString>,
    pub(super) argv_ptrs: Vec<*const libc::c_char>,
    pub(super) envp: Vec<CString>,
    pub(super) envp_ptrs: Vec<*const libc::c_char>,
    pub(super) cwd: Option<CString>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) drop_groups: DropGroups,
    pub(super) joins: Vec<PreparedJoin>,
    pub(super) unshare_cgroup: bool,
    pub(super) time_offsets: Option<Vec<u8>>,
    pub(super) hostname: Option<Vec<u8>>,
    pub(super) domainname: Option<Vec<u8>>,
    pub(super) propagation: Option<libc::c_ulong>,
    pub(super) root: Option<CString>,
    pub(super) pivot_root: bool,
    pub(super) mounts: Vec<ChildMount>,
    pub(super) stdio: [Option<RawFd>; 3],
    /// The error pipe's write end; -1 for a vfork-style child, which reports in
    /// `report` instead (it shares our memory, and we resume only once it has
    /// exec'd or exited).
    pub(super) err_w: RawFd,
    /// The error pipe's read end (the parent's), which the child closes first; -1
    /// for a vfork-style child.
    pub(super) err_r: RawFd,
    /// A vfork-style child's failure: (step, index, errno), valid once `failed`.
    pub(super) report: [std::sync::atomic::AtomicU32; 3],
    pub(super) failed: std::sync::atomic::AtomicBool,
    pub(super) sync_r: Option<RawFd>,
    pub(super) sync_w: Option<RawFd>,
    /// The exec gate: its fd, and how many `pre_exec` closures run before it.
    pub(super) gate: Option<(RawFd, usize)>,
    /// How many `pre_exec` closures (at the front) run before the root change.
    pub(super) pre_pivot: usize,
    /// Set by the child once it has passed the gate: nobody reads the error pipe
    /// any more, so a failure is written to its stderr instead.
    pub(super) gated: std::sync::atomic::AtomicBool,
    /// The program as given (for the message of a failure after the gate).
    pub(super) program: CString,
}

// ----- the child: only raw syscalls from here on -----
//
// Nothing below calls a libc wrapper: musl's setgroups/setuid/setrlimit run
// `__synccall`, which takes the thread-list lock, and a child cloned while another
// thread of the parent held that lock (creating or ending a thread) waits for it
// forever (issue #12); musl's sigaction takes a lock for SIGABRT, and its open/close
// are cancellation points that read the parent thread's state. `libc::syscall` is
// the kernel call and an errno store, nothing else. No allocation, no panics.

/// Raw syscalls for the child, each `Err(errno)` on failure.
pub(super) mod raw {
    use std::ffi::CStr;

    use libc::{c_int, c_long, c_uint, c_ulong};

    use super::RawFd;

    pub(super) fn errno() -> i32 {
        // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
        unsafe { *libc::__errno_location() }
    }

    fn ret(r: c_long) -> Result<c_long, i32> {
        if r < 0 { Err(errno()) } else { Ok(r) }
    }

    /// `struct sigaction` as the kernel takes it (handler, flags, restorer, mask):
    /// all zero is SIG_DFL, no flags, an empty mask.
    const KERNEL_SIGACTION_WORDS: usize = 4;
    /// The kernel's sigset_t: 64 signals, 8 bytes (rt_sigaction's `sigsetsize`).
    const SIGSET_BYTES: usize = 8;

    /// rt_sigaction(sig, SIG_DFL).
    pub(super) fn default_action(sig: c_int) -> Result<(), i32> {
        let dfl = [0u64; KERNEL_SIGACTION_WORDS];
        // SAFETY: dfl is a readable kernel sigaction; no old action is asked for.
        ret(unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                c_long::from(sig),
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                SIGSET_BYTES,
            )
        })
        .map(drop)
    }

    /// rt_sigprocmask(SIG_SETMASK, `mask`), returning the previous mask: all 64
    /// signals, the libc-internal ones included (a libc wrapper would leave those out).
    pub(in crate::spawn) fn set_sigmask(mask: u64) -> Result<u64, i32> {
        let mut old = 0u64;
        // SAFETY: mask and old are 8-byte sigsets, readable and writable.
        ret(unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                c_long::from(libc::SIG_SETMASK),
                &raw const mask,
                &raw mut old,
                SIGSET_BYTES,
            )
        })
        .map(|_| old)
    }

    pub(super) fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, i32> {
        // SAFETY: buf is writable for buf.len() bytes.
        ret(unsafe {
            libc::syscall(
                libc::SYS_read,
                c_long::from(fd),
                buf.as_mut_ptr(),
                buf.len(),
            )
        })
        .map(|n| n as usize)
    }

    pub(super) fn write(fd: RawFd, buf: &[u8]) -> Result<usize, i32> {
        // SAFETY: buf is readable for buf.len() bytes.
        ret(unsafe { libc::syscall(libc::SYS_write, c_long::from(fd), buf.as_ptr(), buf.len()) })
            .map(|n| n as usize)
    }

    /// faccessat(AT_FDCWD, path, X_OK): executable by our real ids.
    pub(super) fn access_exec(path: &CStr) -> Result<(), i32> {
        // SAFETY: NUL-terminated path; integer arguments.
        ret(unsafe {
            libc::syscall(
                libc::SYS_faccessat,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::X_OK,
            )
        })
        .map(|_| ())
    }

    pub(super) fn close(fd: RawFd) {
        // SAFETY: closes an fd of ours; an error leaves nothing to undo.
        unsafe { libc::syscall(libc::SYS_close, c_long::from(fd)) };
    }

    /// openat(2) with O_CLOEXEC added.
    pub(super) fn openat(dir: RawFd, path: &CStr, flags: c_int) -> Result<RawFd, i32> {
        // SAFETY: path is NUL-terminated; returns a new fd or -1.
        ret(unsafe {
            libc::syscall(
                libc::SYS_openat,
                c_long::from(dir),
                path.as_ptr(),
                c_long::from(flags | libc::O_CLOEXEC),
                0 as c_long,
            )
        })
        .map(|fd| fd as RawFd)
    }

    pub(super) fn open(path: &CStr, flags: c_int) -> Result<RawFd, i32> {
        openat(libc::AT_FDCWD, path, flags)
    }

    /// openat2(2) (5.6), tried again (bounded) on EAGAIN: a `..` lookup under
    /// `RESOLVE_IN_ROOT` that raced with a rename or mount elsewhere on the system.
    pub(super) fn openat2(
        dir: RawFd,
        path: &CStr,
        how: &crate::sys::OpenHow,
    ) -> Result<RawFd, i32> {
        let mut tries = 0;
        loop {
            // SAFETY: path is NUL-terminated, `how` a valid open_how whose size is
            // passed.
            let r = ret(unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    c_long::from(dir),
                    path.as_ptr(),
                    std::ptr::from_ref(how),
                    std::mem::size_of::<crate::sys::OpenHow>(),
                )
            });
            tries += 1;
            match r {
                Err(libc::EAGAIN) if tries < 64 => {}
                r => return r.map(|fd| fd as RawFd),
            }
        }
    }

    /// fcntl(F_DUPFD_CLOEXEC).
    pub(super) fn dup_cloexec(fd: RawFd) -> Result<RawFd, i32> {
        // SAFETY: duplicates an open fd; no pointers.
        ret(unsafe {
            libc::syscall(
                libc::SYS_fcntl,
                c_long::from(fd),
                c_long::from(libc::F_DUPFD_CLOEXEC),
                0 as c_long,
            )
        })
        .map(|fd| fd as RawFd)
    }

    /// Makes `src` the fd `target`, without CLOEXEC: dup3, or clearing CLOEXEC when
    /// it already is that fd.
    pub(super) fn move_to(src: RawFd, target: RawFd) -> Result<(), i32> {
        // SAFETY: fd operations without pointers.
        ret(unsafe {
            if src == target {
                libc::syscall(
                    libc::SYS_fcntl,
                    c_long::from(target),
                    c_long::from(libc::F_SETFD),
                    0 as c_long,
                )
            } else {
                libc::syscall(
                    libc::SYS_dup3,
                    c_long::from(src),
                    c_long::from(target),
                    0 as c_long,
                )
            }
        })
        .map(drop)
    }

    /// Whether `fd` (an O_PATH fd) is a symlink: statx(AT_EMPTY_PATH, STATX_TYPE).
    pub(super) fn is_symlink(fd: RawFd) -> Result<bool, i32> {
        // SAFETY: statx is plain data the kernel fills in.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: empty NUL-terminated path with AT_EMPTY_PATH; stx is writable.
        ret(unsafe {
            libc::syscall(
                libc::SYS_statx,
                c_long::from(fd),
                c"".as_ptr(),
                c_long::from(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW),
                c_long::from(libc::STATX_TYPE),
                &raw mut stx,
            )
        })?;
        Ok(c_uint::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFLNK)
    }

    /// setgroups(0, NULL) when `yes`: no supplementary groups.
    pub(super) fn drop_groups_if(yes: bool) -> Result<(), i32> {
        if !yes {
            return Ok(());
        }
        // SAFETY: an empty list; no pointer is read.
        ret(unsafe {
            libc::syscall(
                libc::SYS_setgroups,
                0 as c_long,
                std::ptr::null::<libc::gid_t>(),
            )
        })
        .map(drop)
    }

    pub(super) fn setresgid(g: u32) -> Result<(), i32> {
        let g = c_long::from(g);
        // SAFETY: integers only.
        ret(unsafe { libc::syscall(libc::SYS_setresgid, g, g, g) }).map(drop)
    }

    pub(super) fn setresuid(u: u32) -> Result<(), i32> {
        let u = c_long::from(u);
        // SAFETY: integers only.
        ret(unsafe { libc::syscall(libc::SYS_setresuid, u, u, u) }).map(drop)
    }

    pub(super) fn setns(fd: RawFd, kinds: c_int) -> Result<(), i32> {
        // SAFETY: integers only.
        ret(unsafe { libc::syscall(libc::SYS_setns, c_long::from(fd), c_long::from(kinds)) })
            .map(drop)
    }

    pub(super) fn unshare(kinds: c_int) -> Result<(), i32> {
        // SAFETY: flags only.
        ret(unsafe { libc::syscall(libc::SYS_unshare, c_long::from(kinds)) }).map(drop)
    }

    pub(super) fn sethostname(name: &[u8]) -> Result<(), i32> {
        // SAFETY: name is readable for name.len() bytes.
        ret(unsafe { libc::syscall(libc::SYS_sethostname, name.as_ptr(), name.len()) }).map(drop)
    }

    pub(super) fn setdomainname(name: &[u8]) -> Result<(), i32> {
        // SAFETY: name is readable for name.len() bytes.
        ret(unsafe { libc::syscall(libc::SYS_setdomainname, name.as_ptr(), name.len()) }).map(drop)
    }

    /// mount(2); every pointer NUL-terminated or NULL.
    pub(super) fn mount(
        source: *const libc::c_char,
        target: *const libc::c_char,
        fstype: *const libc::c_char,
        flags: c_ulong,
        data: *const libc::c_char,
    ) -> Result<(), i32> {
        // SAFETY: the caller passes NUL-terminated strings or NULL, alive for the call.
        ret(unsafe { libc::syscall(libc::SYS_mount, source, target, fstype, flags, data) })
            .map(drop)
    }

    /// move_mount(2) of the detached mount `from` onto the directory `to_fd` (an
    /// O_PATH fd) or, when it is -1, onto the path `target` (5.2).
    pub(super) fn move_mount(
        from: RawFd,
        to_fd: RawFd,
        target: *const libc::c_char,
    ) -> Result<(), i32> {
        const MOVE_MOUNT_F_EMPTY_PATH: c_long = 0x4;
        const MOVE_MOUNT_T_SYMLINKS: c_long = 0x10;
        const MOVE_MOUNT_T_EMPTY_PATH: c_long = 0x40;
        // A /proc/self/fd/N path would name the magic link itself: the fd, directly.
        let (dir, path, flags) = if to_fd >= 0 {
            (to_fd, c"".as_ptr(), MOVE_MOUNT_T_EMPTY_PATH)
        } else {
            (libc::AT_FDCWD, target, MOVE_MOUNT_T_SYMLINKS)
        };
        // SAFETY: the paths are NUL-terminated and alive for the call; integer fds.
        ret(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                from,
                c"".as_ptr(),
                dir,
                path,
                MOVE_MOUNT_F_EMPTY_PATH | flags,
            )
        })
        .map(drop)
    }

    pub(super) fn umount_detach(target: &CStr) -> Result<(), i32> {
        // SAFETY: target is NUL-terminated.
        ret(unsafe {
            libc::syscall(
                libc::SYS_umount2,
                target.as_ptr(),
                c_long::from(libc::MNT_DETACH),
            )
        })
        .map(drop)
    }

    pub(super) fn pivot_root_dot() -> Result<(), i32> {
        // SAFETY: literal NUL-terminated paths.
        ret(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) }).map(drop)
    }

    pub(super) fn fchdir(fd: RawFd) -> Result<(), i32> {
        // SAFETY: an integer only.
        ret(unsafe { libc::syscall(libc::SYS_fchdir, c_long::from(fd)) }).map(drop)
    }

    pub(super) fn chdir(path: &CStr) -> Result<(), i32> {
        // SAFETY: path is NUL-terminated.
        ret(unsafe { libc::syscall(libc::SYS_chdir, path.as_ptr()) }).map(drop)
    }

    /// execve(2); returns only on failure, with the errno.
    pub(super) fn execve(
        path: &CStr,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> i32 {
        // SAFETY: path NUL-terminated; argv and envp NULL-terminated arrays of
        // NUL-terminated strings that live until execve replaces this address space.
        unsafe { libc::syscall(libc::SYS_execve, path.as_ptr(), argv, envp) };
        errno()
    }

    /// exit_group(2): ends the child without running anything of the parent's.
    pub(super) fn exit(code: c_int) -> ! {
        loop {
            // SAFETY: exit_group does not return.
            unsafe { libc::syscall(libc::SYS_exit_group, c_long::from(code)) };
        }
    }
}

/// Writes the (step, index, errno) record and exits 127. Never returns.
fn fail(p: &Prepared, step: Step, index: usize, errno: i32) -> ! {
    if p.err_w < 0 {
        // vfork-style child: our memory is the parent's, which reads it once we exit.
        use std::sync::atomic::Ordering;
        let [s, i, e] = &p.report;
        s.store(step as u32, Ordering::Relaxed);
        i.store(index as u32, Ordering::Relaxed);
        e.store(errno as u32, Ordering::Relaxed);
        p.failed.store(true, Ordering::Release);
        raw::exit(127)
    }
    if p.gated.load(std::sync::atomic::Ordering::Relaxed) {
        // Past the gate the parent is gone: say it on stderr (the container's), once.
        let mut msg = [0u8; 160];
        let mut n = 0;
        let parts: [&[u8]; 4] = [
            b"container process: ",
            if matches!(step, Step::Exec) {
                b"exec "
            } else {
                b"step before exec "
            },
            p.program.to_bytes(),
            b" failed: errno ",
        ];
        for part in parts {
            for b in part {
                if let Some(slot) = msg.get_mut(n) {
                    *slot = *b;
                    n += 1;
                }
            }
        }
        let mut digits = [0u8; 10];
        let mut d = 0;
        let mut v = errno.unsigned_abs();
        loop {
            if let Some(slot) = digits.get_mut(d) {
                *slot = b'0' + (v % 10) as u8;
            }
            d += 1;
            v /= 10;
            if v == 0 || d >= digits.len() {
                break;
            }
        }
        for i in (0..d).rev() {
            if let (Some(slot), Some(b)) = (msg.get_mut(n), digits.get(i)) {
                *slot = *b;
                n += 1;
            }
        }
        if let Some(slot) = msg.get_mut(n) {
            *slot = b'\n';
            n += 1;
        }
        let _ = raw::write(2, msg.get(..n).unwrap_or(&[]));
        // A shell's statuses: 127 not found, 126 found but not executable.
        raw::exit(if errno == libc::ENOENT { 127 } else { 126 })
    }
    let mut rec = [0u8; 12];
    let (a, b, c) = (
        (step as u32).to_ne_bytes(),
        (index as u32).to_ne_bytes(),
        errno.to_ne_bytes(),
    );
    for (i, byte) in a.iter().chain(b.iter()).chain(c.iter()).enumerate() {
        if let Some(slot) = rec.get_mut(i) {
            *slot = *byte;
        }
    }
    // One write of 12 bytes to a pipe is atomic (below PIPE_BUF); if it fails the
    // parent sees a short report or EOF, and the exit status.
    let _ = raw::write(p.err_w, &rec);
    raw::exit(127)
}

/// Formats `/proc/self/fd/N` into `buf` (NUL-terminated), without allocation.
fn fd_path(buf: &mut [u8; 32], fd: RawFd) -> &CStr {
    let prefix = b"/proc/self/fd/";
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        if let Some(d) = digits.get_mut(len) {
            *d = b'0' + (n % 10) as u8;
        }
        len += 1;
        n /= 10;
        if n == 0 || len >= digits.len() {
            break;
        }
    }
    let mut pos = 0;
    for b in prefix.iter().chain(digits[..len].iter().rev()) {
        if let Some(slot) = buf.get_mut(pos) {
            *slot = *b;
        }
        pos += 1;
    }
    if let Some(slot) = buf.get_mut(pos) {
        *slot = 0;
    }
    CStr::from_bytes_until_nul(buf).unwrap_or(c"/proc/self/fd/")
}

/// Opens `rel` under `root` as O_PATH, confined: openat2(RESOLVE_IN_ROOT) where the
/// kernel has it, else component by component with O_NOFOLLOW (symlinks refused).
/// Where mount `i` goes: with a root (`root_fd` >= 0) its target resolved inside it,
/// as the fd (the caller closes it) and its `/proc/self/fd/N` path in `buf`; else
/// the target as given (fd -1). Async-signal-safe.
fn mount_target(
    p: &Prepared,
    i: usize,
    root_fd: RawFd,
    target: &CStr,
    buf: &mut [u8; 32],
) -> (RawFd, *const libc::c_char) {
    if root_fd < 0 {
        return (-1, target.as_ptr());
    }
    match resolve_in_root(root_fd, target) {
        Ok(fd) => (fd, fd_path(buf, fd).as_ptr()),
        Err(e) => fail(p, Step::ResolveTarget, i, e),
    }
}

/// mkdirat(2) of `rel`'s last component in its parent, resolved inside the root;
/// an existing entry is fine. Async-signal-safe (a stack buffer).
fn mkdir_in_root(root: RawFd, rel: &CStr) -> std::result::Result<(), i32> {
    let bytes = rel.to_bytes();
    let mut parent = [0u8; 4096];
    let (dir, name) = match bytes.iter().rposition(|b| *b == b'/') {
        Some(i) => (
            bytes.get(..i).unwrap_or(b"."),
            bytes.get(i + 1..).unwrap_or(b""),
        ),
        None => (b".".as_slice(), bytes),
    };
    let dir = if dir.is_empty() { b".".as_slice() } else { dir };
    if dir.len() >= parent.len() || name.is_empty() || name.len() >= 256 {
        return Err(libc::ENAMETOOLONG);
    }
    for (slot, b) in parent.iter_mut().zip(dir) {
        *slot = *b;
    }
    let mut last = [0u8; 256];
    for (slot, b) in last.iter_mut().zip(name) {
        *slot = *b;
    }
    let pdir = CStr::from_bytes_until_nul(&parent).map_err(|_| libc::EINVAL)?;
    let leaf = CStr::from_bytes_until_nul(&last).map_err(|_| libc::EINVAL)?;
    let pfd = resolve_in_root(root, pdir)?;
    // SAFETY: pfd is an O_PATH directory fd of ours; leaf is NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mkdirat,
            libc::c_long::from(pfd),
            leaf.as_ptr(),
            0o755 as libc::c_long,
        )
    };
    let e = raw::errno();
    raw::close(pfd);
    if r < 0 && e != libc::EEXIST {
        return Err(e);
    }
    Ok(())
}

fn resolve_in_root(root: RawFd, rel: &CStr) -> std::result::Result<RawFd, i32> {
    let how = sys::OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
    };
    match raw::openat2(root, rel, &how) {
        Ok(fd) => return Ok(fd),
        Err(libc::ENOSYS) => {}
        Err(e) => return Err(e),
    }
    // Fallback: walk components in place, in a stack buffer.
    let mut comp = [0u8; 256];
    let mut cur = raw::dup_cloexec(root)?;
    for part in rel.to_bytes().split(|b| *b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        if part == b".." || part.len() >= comp.len() {
            raw::close(cur);
            return Err(libc::EXDEV);
        }
        for (i, b) in part.iter().enumerate() {
            if let Some(s) = comp.get_mut(i) {
                *s = *b;
            }
        }
        if let Some(s) = comp.get_mut(part.len()) {
            *s = 0;
        }
        let name = CStr::from_bytes_until_nul(&comp).map_err(|_| libc::EINVAL);
        let next = name.and_then(|n| raw::openat(cur, n, libc::O_PATH | libc::O_NOFOLLOW));
        raw::close(cur);
        let next = next?;
        if raw::is_symlink(next) != Ok(false) {
            raw::close(next);
            return Err(libc::ELOOP);
        }
        cur = next;
    }
    Ok(cur)
}

/// The exec gate: checks that the program can be found (so that a missing one fails
/// the spawn, not the later release), tells the parent we are ready (a `Gate`
/// record), then blocks until one byte can be read from the gate's fd, or fails
/// quietly (exit 127) on EOF: nobody will ever release us.
fn pass_gate(p: &Prepared) {
    let Some((fd, _)) = p.gate else { return };
    let mut found = libc::ENOENT;
    for c in &p.candidates {
        match check_program(c) {
            Ok(()) => {
                found = 0;
                break;
            }
            Err(libc::ENOENT) | Err(libc::ENOTDIR) => {}
            Err(e) => found = e,
        }
    }
    if found != 0 {
        fail(p, Step::Exec, 0, found);
    }
    let mut rec = [0u8; 12];
    for (slot, b) in rec.iter_mut().zip((Step::Gate as u32).to_ne_bytes()) {
        *slot = b;
    }
    if p.err_w >= 0 {
        let _ = raw::write(p.err_w, &rec);
    }
    p.gated.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut b = [0u8; 1];
    loop {
        match raw::read(fd, &mut b) {
            Ok(1) => break,
            Err(libc::EINTR) | Err(libc::EAGAIN) => continue,
            // EOF or an error: the gate will never open.
            _ => raw::exit(127),
        }
    }
    raw::close(fd);
}

/// Whether `path` can be exec'd: a regular file (not through a /proc magic link,
/// which at this point could only name an fd of ours: the gate's or the error
/// pipe's) with an x bit for us. ENOENT, EACCES or another errno as exec would
/// report it; a magic link counts as not found.
fn check_program(path: &CStr) -> Result<(), i32> {
    let how = sys::OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: sys::RESOLVE_NO_MAGICLINKS,
    };
    let fd = match raw::openat2(libc::AT_FDCWD, path, &how) {
        Ok(fd) => fd,
        Err(libc::ENOSYS) => return raw::access_exec(path),
        Err(libc::ELOOP) => return Err(libc::ENOENT),
        Err(e) => return Err(e),
    };
    // SAFETY: a zeroed stat is valid for fstat to fill; fd is ours.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_fstat, libc::c_long::from(fd), &raw mut st) };
    raw::close(fd);
    if r < 0 {
        return Err(raw::errno());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(libc::EACCES);
    }
    raw::access_exec(path)
}

/// The highest signal number (the kernel's _NSIG on Linux).
const NSIG: libc::c_int = 64;

pub(super) fn child_main(p: &Prepared, pre_exec: &mut [PreExec]) -> ! {
    // Every buffer read here was prepared by the parent before the clone and stays
    // valid in this copy (or, vfork-style, this borrow) of its address space.

    // The parent's ends of our pipes are of no use here: closed now rather than at
    // exec, so nothing before exec can reach them through /proc/self/fd.
    if p.err_r >= 0 {
        raw::close(p.err_r);
    }

    // Signals: default dispositions for all of them (handlers, and SIGPIPE, which
    // Rust ignores and an ignored signal would stay ignored across exec), then
    // unblock (the parent blocked everything across the clone, so no handler of
    // its has run here).
    for sig in 1..=NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        if let Err(e) = raw::default_action(sig) {
            fail(p, Step::Signals, sig as usize, e);
        }
    }
    if let Err(e) = raw::set_sigmask(0) {
        fail(p, Step::Signals, 0, e);
    }

    if let (Some(r), Some(w)) = (p.sync_r, p.sync_w) {
        // Closing our copy of the parent's end, so its exit gives us EOF.
        raw::close(w);
        let mut b = [0u8; 1];
        loop {
            match raw::read(r, &mut b) {
                Ok(1) => {
                    raw::close(r);
                    break;
                }
                Err(libc::EINTR) => continue,
                Ok(_) => fail(p, Step::Sync, 0, libc::EPIPE),
                Err(e) => fail(p, Step::Sync, 0, e),
            }
        }
    }

    match (
        p.drop_groups,
        raw::drop_groups_if(p.drop_groups != DropGroups::No),
    ) {
        (_, Ok(())) | (DropGroups::UnlessRefused, Err(libc::EPERM)) => {}
        (_, Err(e)) => fail(p, Step::Setgroups, 0, e),
    }
    if let Some(g) = p.gid
        && let Err(e) = raw::setresgid(g)
    {
        fail(p, Step::Setresgid, 0, e);
    }
    if let Some(u) = p.uid
        && let Err(e) = raw::setresuid(u)
    {
        fail(p, Step::Setresuid, 0, e);
    }

    for (i, (fd, kinds, fallback)) in p.joins.iter().enumerate() {
        match raw::setns(*fd, *kinds) {
            Ok(()) => continue,
            Err(libc::EINVAL) if !fallback.is_empty() => {}
            Err(e) => fail(p, Step::Join, i, e),
        }
        for (path, kind) in fallback {
            let joined = raw::open(path, libc::O_RDONLY).and_then(|nfd| {
                let r = raw::setns(nfd, *kind);
                raw::close(nfd);
                r
            });
            if let Err(e) = joined {
                fail(p, Step::Join, i, e);
            }
        }
    }

    if p.unshare_cgroup
        && let Err(e) = raw::unshare(libc::CLONE_NEWCGROUP)
    {
        fail(p, Step::UnshareCgroup, 0, e);
    }
    if let Some(text) = &p.time_offsets {
        if let Err(e) = raw::unshare(libc::CLONE_NEWTIME) {
            fail(p, Step::UnshareTime, 0, e);
        }
        let written = raw::open(c"/proc/self/timens_offsets", libc::O_WRONLY).and_then(|fd| {
            let r = raw::write(fd, text);
            raw::close(fd);
            r
        });
        if let Err(e) = written {
            fail(p, Step::TimeOffsets, 0, e);
        }
        let entered =
            raw::open(c"/proc/self/ns/time_for_children", libc::O_RDONLY).and_then(|fd| {
                let r = raw::setns(fd, libc::CLONE_NEWTIME);
                raw::close(fd);
                r
            });
        if let Err(e) = entered {
            fail(p, Step::EnterTime, 0, e);
        }
    }
    if let Some(h) = &p.hostname
        && let Err(e) = raw::sethostname(h)
    {
        fail(p, Step::Hostname, 0, e);
    }
    if let Some(d) = &p.domainname
        && let Err(e) = raw::setdomainname(d)
    {
        fail(p, Step::Domainname, 0, e);
    }
    let null = std::ptr::null::<libc::c_char>();
    if let Some(flags) = p.propagation
        && let Err(e) = raw::mount(null, c"/".as_ptr(), null, flags, null)
    {
        fail(p, Step::Propagation, 0, e);
    }

    let mut root_fd: RawFd = -1;
    if let Some(root) = &p.root {
        // pivot_root needs the new root to be a mount point.
        if p.pivot_root
            && let Err(e) = raw::mount(
                root.as_ptr(),
                root.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                null,
            )
        {
            fail(p, Step::BindRoot, 0, e);
        }
        root_fd = match raw::open(root, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) => fail(p, Step::OpenRoot, 0, e),
        };
    }
    let opt = |c: &Option<CString>| c.as_ref().map_or(null, |c| c.as_ptr());
    for (i, m) in p.mounts.iter().enumerate() {
        if m.mkdir
            && root_fd >= 0
            && let Err(e) = mkdir_in_root(root_fd, &m.target)
        {
            fail(p, Step::ResolveTarget, i, e);
        }
        let mut buf = [0u8; 32];
        let (mut tfd, target) = mount_target(p, i, root_fd, &m.target, &mut buf);
        if m.detached >= 0 {
            if let Err(e) = raw::move_mount(m.detached, tfd, target) {
                fail(p, Step::Mount, i, e);
            }
            // Attached: the fd is of no further use, and none may reach the program.
            raw::close(m.detached);
        } else if let Err(e) = raw::mount(
            opt(&m.source),
            target,
            opt(&m.fstype),
            m.flags,
            opt(&m.data),
        ) {
            fail(p, Step::Mount, i, e);
        }
        if m.remount != 0 {
            // An fd still names the covered directory: resolve again to reach the mount.
            if tfd >= 0 {
                raw::close(tfd);
            }
            let (fd, target) = mount_target(p, i, root_fd, &m.target, &mut buf);
            tfd = fd;
            // SAFETY: `target` points into `buf` or `m.target`, both NUL-terminated
            // and alive for this iteration.
            let target = unsafe { CStr::from_ptr(target) };
            if let Err(e) = sys::set_bind_flags(target, m.remount) {
                fail(p, Step::Mount, i, e);
            }
        }
        if tfd >= 0 {
            raw::close(tfd);
        }
    }
    for (i, f) in pre_exec.iter_mut().enumerate().take(p.pre_pivot) {
        if let Err(e) = f() {
            fail(
                p,
                Step::PreExec,
                i,
                e.raw_os_error().unwrap_or(libc::EINVAL),
            );
        }
    }
    if p.pivot_root {
        // The runc way: no put_old directory; the old root ends up stacked on "." and
        // is detached, so nothing in the new root leads back to it.
        let pivoted = raw::fchdir(root_fd)
            .and_then(|()| raw::pivot_root_dot())
            .and_then(|()| raw::umount_detach(c"."))
            .and_then(|()| raw::chdir(c"/"));
        if let Err(e) = pivoted {
            fail(p, Step::PivotRoot, 0, e);
        }
    }
    if root_fd >= 0 {
        raw::close(root_fd);
    }
    if let Some(cwd) = &p.cwd
        && let Err(e) = raw::chdir(cwd)
    {
        fail(p, Step::Chdir, 0, e);
    }
    for (target, src) in p.stdio.iter().enumerate() {
        let Some(src) = *src else { continue };
        if let Err(e) = raw::move_to(src, target as RawFd) {
            fail(p, Step::Stdio, target, e);
        }
    }
    let gate_at = p.gate.map_or(usize::MAX, |(_, at)| at);
    for (i, f) in pre_exec.iter_mut().enumerate().skip(p.pre_pivot) {
        if i == gate_at {
            pass_gate(p);
        }
        if let Err(e) = f() {
            fail(
                p,
                Step::PreExec,
                i,
                e.raw_os_error().unwrap_or(libc::EINVAL),
            );
        }
    }
    if gate_at >= pre_exec.len() && p.gate.is_some() {
        pass_gate(p);
    }
    let mut last = libc::ENOENT;
    for c in &p.candidates {
        let e = raw::execve(c, p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
            if e != libc::EACCES {
                break;
            }
        }
    }
    let _ = (&p.argv, &p.envp);
    fail(p, Step::Exec, 0, last)
}
