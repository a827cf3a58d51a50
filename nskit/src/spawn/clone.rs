//! The clone wrappers: clone3 (5.3) or clone(2) without `CLONE_VM` (fork-like, for
//! children the parent must act on before exec), and clone(2) with
//! `CLONE_VM | CLONE_VFORK` on a stack of its own (as posix_spawn). Signals are all
//! blocked across each.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::builder::PreExec;
use super::child_main::{Prepared, child_main, raw};
use crate::error::{self, Error, Result};
use crate::namespace::Namespace;
use crate::sys;

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2, 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}
const CLONE_ARGS_SIZE_VER0: usize = 64;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Blocks every signal (the libc-internal ones too, which `pthread_sigmask` leaves
/// out) for the lifetime of the guard, restoring the old mask on drop: no handler of
/// ours runs in the child before it has reset them, nor on a vfork-style child's stack.
struct SigBlock(Option<u64>);
impl SigBlock {
    fn new() -> SigBlock {
        SigBlock(raw::set_sigmask(!0).ok())
    }
}
impl Drop for SigBlock {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            let _ = raw::set_sigmask(old);
        }
    }
}

/// clone3 (or clone) and run the child. Returns (pid, pidfd, placed in cgroup).
pub(super) fn clone_child(
    flags: u64,
    cgroup: Option<RawFd>,
    force_clone2: bool,
    p: &Prepared,
    pre_exec: &mut [PreExec],
) -> Result<(i32, OwnedFd, bool)> {
    let mut pidfd: libc::c_int = -1;
    let _mask = SigBlock::new();
    let mut placed = false;
    let mut ret: libc::c_long = -1;
    if !force_clone2 {
        let mut args = CloneArgs {
            flags: flags | libc::CLONE_PIDFD as u64,
            pidfd: (&raw mut pidfd) as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        let mut size = CLONE_ARGS_SIZE_VER0;
        if let Some(cg) = cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = cg as u64;
            size = std::mem::size_of::<CloneArgs>();
        }
        // SAFETY: without CLONE_VM clone3 duplicates the address space like fork(2),
        // so the child runs on its own copy of this stack and needs none of its own;
        // `args` is a valid clone_args of `size` bytes. The child only runs
        // `child_main`, which never returns.
        ret = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, size) };
        if ret == 0 {
            child_main(p, pre_exec);
        }
        let mut err = if ret < 0 { sys::errno() } else { 0 };
        // E2BIG: a 5.3-5.6 kernel that does not know the cgroup field; the parent
        // then writes cgroup.procs instead.
        if ret < 0 && err == libc::E2BIG && cgroup.is_some() {
            args.flags &= !CLONE_INTO_CGROUP;
            args.cgroup = 0;
            // SAFETY: as above, with the version-0 size.
            ret = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, CLONE_ARGS_SIZE_VER0) };
            if ret == 0 {
                child_main(p, pre_exec);
            }
            err = if ret < 0 { sys::errno() } else { 0 };
        }
        if ret < 0 && err != libc::ENOSYS {
            return Err(clone_error("clone3", flags, cgroup.is_some(), err));
        }
        placed = ret > 0 && args.flags & CLONE_INTO_CGROUP != 0;
    }
    if ret < 0 {
        // clone(2): with a NULL stack it returns 0 in the child like fork(2);
        // CLONE_PIDFD (5.2) stores the pidfd through the parent_tid argument.
        // SAFETY: as for clone3: no CLONE_VM, so the child has its own copy of the
        // address space; the child only runs `child_main`, which never returns.
        ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags as libc::c_ulong)
                    | libc::CLONE_PIDFD as libc::c_ulong
                    | libc::SIGCHLD as libc::c_ulong,
                0usize,
                &raw mut pidfd,
                0usize,
                0usize,
            )
        };
        if ret == 0 {
            child_main(p, pre_exec);
        }
        if ret < 0 {
            return Err(clone_error("clone", flags, false, sys::errno()));
        }
    }
    // SAFETY: CLONE_PIDFD made the kernel store a new pidfd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret as i32, pidfd, placed))
}

/// The stack of a vfork-style child: `child_main` needs a few KiB; the rest is margin.
const VFORK_STACK: usize = 256 * 1024;

/// clone(2) with `CLONE_VM | CLONE_VFORK` (as posix_spawn does): returns once the
/// child has exec'd or exited. Returns (pid, pidfd, false).
pub(super) fn vfork_child(flags: u64, p: &Prepared) -> Result<(i32, OwnedFd, bool)> {
    extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&Prepared` passed to clone below; the parent is
        // suspended (CLONE_VFORK) until this child execs or exits, so it stays alive.
        let p = unsafe { &*arg.cast::<Prepared>() };
        child_main(p, &mut [])
    }
    let Ok(ns_flags) = libc::c_int::try_from(flags) else {
        return Err(Error::InvalidArgument(format!(
            "clone flags {flags:#x} do not fit clone(2)"
        )));
    };
    // SAFETY: an anonymous private mapping; checked for MAP_FAILED below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            VFORK_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(error::sys("mmap", "the child's stack", sys::errno()));
    }
    let mut pidfd: libc::c_int = -1;
    let ret = {
        let _mask = SigBlock::new();
        // SAFETY: `stack` is a fresh mapping of VFORK_STACK bytes (stacks grow down,
        // so the top is passed); `start` only runs `child_main`, which never returns
        // and touches nothing of ours but reads of `p`; CLONE_VFORK keeps this frame
        // (and `p`, `stack`) alive until the child no longer uses them. CLONE_PIDFD
        // stores the pidfd through the parent_tid argument. All signals are blocked
        // across the call, so no handler of ours runs on the child's stack.
        unsafe {
            libc::clone(
                start,
                stack.cast::<u8>().add(VFORK_STACK).cast(),
                ns_flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                std::ptr::from_ref(p).cast_mut().cast(),
                &raw mut pidfd,
            )
        }
    };
    let err = sys::errno();
    // SAFETY: the mapping made above; the child has exec'd or exited (CLONE_VFORK).
    unsafe { libc::munmap(stack, VFORK_STACK) };
    if ret < 0 {
        return Err(clone_error("clone", flags, false, err));
    }
    // SAFETY: CLONE_PIDFD made the kernel store a new pidfd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret, pidfd, false))
}

fn clone_error(syscall: &'static str, flags: u64, cgroup: bool, errno: i32) -> Error {
    let kinds = Namespace::from_bits_truncate(flags);
    match errno {
        libc::EINVAL if kinds.contains(Namespace::USER) && kinds.contains(Namespace::PID) => {
            error::sys(syscall, format!("{kinds}"), errno)
        }
        libc::ENOSPC | libc::EUSERS => Error::Sys {
            syscall,
            what: format!("{kinds}: namespace limit reached (see /proc/sys/user/max_*_namespaces)"),
            source: io::Error::from_raw_os_error(errno),
        },
        libc::EBADF | libc::EOPNOTSUPP | libc::EBUSY if cgroup => Error::Sys {
            syscall,
            what: format!(
                "{kinds}, CLONE_INTO_CGROUP: the fd must be a cgroup v2 directory opened O_RDONLY|O_DIRECTORY, without controllers-in-use conflicts"
            ),
            source: io::Error::from_raw_os_error(errno),
        },
        _ => error::sys(syscall, format!("{kinds}"), errno),
    }
}
