//! The hooks that run inside the container's namespaces, from its process between
//! clone and exec: `createContainer` (after the mounts, before the root change; the
//! path resolves in the runtime's mount namespace) and `startContainer` (after
//! `start` opens the gate, before the program; the path resolves in the container).
//!
//! Everything is prepared in the parent (paths, argv, envp, the state JSON); the
//! child runs each hook with raw syscalls only: fork (clone), the state on a pipe
//! as the hook's stdin, wait with the hook's timeout (SIGKILL past it).

use std::ffi::CString;
use std::io;

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// One hook, ready for the child.
struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    timeout_ns: u64,
}

/// Hooks of one kind, with the state JSON they read: the container's host pid is
/// not known before the clone, so the child records it ([`record_pid`]) and writes
/// it between the two halves of the JSON.
pub struct ChildHooks {
    hooks: Vec<Prepared>,
    before_pid: Vec<u8>,
    after_pid: Vec<u8>,
    pid: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

/// The pid placeholder in the state JSON given to [`ChildHooks::new`].
pub const PID_PLACEHOLDER: i32 = i32::MAX;

/// In the child, before its root change: reads its pid in the host's pid namespace
/// from the host's /proc (`/proc/self`, still reachable) into `pid`.
pub fn record_pid(pid: &std::sync::atomic::AtomicI32) -> io::Result<()> {
    let mut buf = [0u8; 16];
    // SAFETY: NUL-terminated literal; buf is writable for its length.
    let n = unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            libc::AT_FDCWD,
            c"/proc/self".as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n <= 0 {
        return Err(io::Error::last_os_error());
    }
    let mut v: i32 = 0;
    for b in buf.iter().take(n as usize) {
        if !b.is_ascii_digit() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        v = v.saturating_mul(10).saturating_add(i32::from(b - b'0'));
    }
    pid.store(v, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

// SAFETY: the raw pointers point into CStrings owned by the same `Prepared`, which
// moves with them and is never mutated; nothing is shared between threads.
unsafe impl Send for ChildHooks {}
// SAFETY: as above: read-only data.
unsafe impl std::marker::Sync for ChildHooks {}

/// Default timeout of a hook that names none.
const DEFAULT_TIMEOUT_S: u64 = 60;

impl ChildHooks {
    /// Prepares `hooks` (of kind `kind`, for messages) with `state` on their stdin;
    /// `state` holds [`PID_PLACEHOLDER`] where the pid goes, which the child takes
    /// from `pid`.
    pub fn new(
        kind: &str,
        hooks: &[Hook],
        state: &[u8],
        pid: std::sync::Arc<std::sync::atomic::AtomicI32>,
    ) -> Result<ChildHooks> {
        let mark = PID_PLACEHOLDER.to_string();
        let at = state
            .windows(mark.len())
            .position(|w| w == mark.as_bytes())
            .ok_or_else(|| Error::Config("hook state without a pid".into()))?;
        let before_pid = state.get(..at).unwrap_or_default().to_vec();
        let after_pid = state.get(at + mark.len()..).unwrap_or_default().to_vec();
        let c = |what: &str, s: &[u8]| {
            CString::new(s).map_err(|_| Error::Config(format!("hooks.{kind} {what} holds NUL")))
        };
        let mut out = Vec::new();
        for h in hooks {
            let path = c("path", h.path().as_os_str().as_encoded_bytes())?;
            let mut argv: Vec<CString> = Vec::new();
            for a in h.args().iter().flatten() {
                argv.push(c("args", a.as_bytes())?);
            }
            if argv.is_empty() {
                argv.push(path.clone());
            }
            let mut envp: Vec<CString> = Vec::new();
            for e in h.env().iter().flatten() {
                envp.push(c("env", e.as_bytes())?);
            }
            let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
            argv_ptrs.push(std::ptr::null());
            let mut envp_ptrs: Vec<_> = envp.iter().map(|a| a.as_ptr()).collect();
            envp_ptrs.push(std::ptr::null());
            let secs = h
                .timeout()
                .filter(|t| *t > 0)
                .map_or(DEFAULT_TIMEOUT_S, |t| t as u64);
            out.push(Prepared {
                path,
                _argv: argv,
                argv_ptrs,
                _envp: envp,
                envp_ptrs,
                timeout_ns: secs * 1_000_000_000,
            });
        }
        Ok(ChildHooks {
            hooks: out,
            before_pid,
            after_pid,
            pid,
        })
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// In the child: runs every hook in order; the first failure is the error
    /// (ECHILD for a non-zero exit, ETIMEDOUT past the timeout). Async-signal-safe.
    pub fn run(&self) -> io::Result<()> {
        let mut digits = [0u8; 12];
        let mut n = 0;
        let mut v = self.pid.load(std::sync::atomic::Ordering::Relaxed).max(0) as u32;
        loop {
            if let Some(d) = digits.get_mut(n) {
                *d = b'0' + (v % 10) as u8;
            }
            n += 1;
            v /= 10;
            if v == 0 || n >= digits.len() {
                break;
            }
        }
        digits[..n].reverse();
        let parts: [&[u8]; 3] = [
            &self.before_pid,
            digits.get(..n).unwrap_or(&[]),
            &self.after_pid,
        ];
        for h in &self.hooks {
            run_one(h, &parts)?;
        }
        Ok(())
    }
}

fn now_ns() -> u64 {
    // SAFETY: a zeroed timespec for clock_gettime to fill.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn run_one(h: &Prepared, state: &[&[u8]; 3]) -> io::Result<()> {
    let err = io::Error::last_os_error;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: raw syscalls on our own fds and prepared, NUL-terminated buffers; the
    // forked child only dups, execs or exits.
    unsafe {
        if libc::syscall(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(err());
        }
        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0);
        if pid < 0 {
            return Err(err());
        }
        if pid == 0 {
            libc::syscall(libc::SYS_dup3, fds[0], 0, 0);
            libc::syscall(
                libc::SYS_execve,
                h.path.as_ptr(),
                h.argv_ptrs.as_ptr(),
                h.envp_ptrs.as_ptr(),
            );
            libc::syscall(libc::SYS_exit_group, 127);
        }
        libc::syscall(libc::SYS_close, fds[0]);
        // A hook that does not read its stdin (or exits first) must not kill us
        // with SIGPIPE: ignored around the write.
        let ign = KSigaction {
            handler: libc::SIG_IGN,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        let mut old = KSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        libc::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGPIPE,
            &raw const ign,
            &raw mut old,
            8usize,
        );
        'parts: for part in state {
            let mut off = 0;
            while off < part.len() {
                let rest = part.get(off..).unwrap_or(&[]);
                let n = libc::syscall(libc::SYS_write, fds[1], rest.as_ptr(), rest.len());
                if n <= 0 {
                    break 'parts;
                }
                off += n as usize;
            }
        }
        libc::syscall(libc::SYS_close, fds[1]);
        libc::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGPIPE,
            &raw const old,
            std::ptr::null_mut::<KSigaction>(),
            8usize,
        );
        let deadline = now_ns() + h.timeout_ns;
        let mut status: libc::c_int = 0;
        loop {
            let r = libc::syscall(
                libc::SYS_wait4,
                pid,
                &raw mut status,
                libc::WNOHANG,
                std::ptr::null_mut::<libc::rusage>(),
            );
            if r == pid {
                break;
            }
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(err());
            }
            if now_ns() > deadline {
                libc::syscall(libc::SYS_kill, pid, libc::SIGKILL);
                libc::syscall(
                    libc::SYS_wait4,
                    pid,
                    &raw mut status,
                    0,
                    std::ptr::null_mut::<libc::rusage>(),
                );
                return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 5_000_000,
            };
            libc::syscall(
                libc::SYS_nanosleep,
                &raw const ts,
                std::ptr::null_mut::<libc::timespec>(),
            );
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
    }
    Ok(())
}

/// The kernel's `struct sigaction` on x86_64 (handler, flags, restorer, mask).
#[repr(C)]
struct KSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The child's side of the wait for the runtime's prestart/createRuntime hooks.
#[derive(Debug, Clone, Copy)]
pub struct Sync {
    /// Where the child writes its host pid (4 bytes).
    pub pid_w: i32,
    /// Where the runtime answers one byte once its hooks succeeded (EOF: failed).
    pub ack_r: i32,
    /// The runtime's ends, which the child closes first (or EOF could never come).
    pub close: [i32; 2],
}

impl Sync {
    /// In the child: sends its pid, waits for the runtime's hooks. Async-signal-safe.
    pub fn wait_for_runtime(&self, pid: &std::sync::atomic::AtomicI32) -> io::Result<()> {
        let b = pid.load(std::sync::atomic::Ordering::Relaxed).to_ne_bytes();
        let mut ack = [0u8; 1];
        // SAFETY: raw syscalls on the child's copies of the pipes and stack buffers.
        let n = unsafe {
            for fd in self.close {
                libc::syscall(libc::SYS_close, fd);
            }
            libc::syscall(libc::SYS_write, self.pid_w, b.as_ptr(), b.len());
            libc::syscall(libc::SYS_close, self.pid_w);
            let n = libc::syscall(libc::SYS_read, self.ack_r, ack.as_mut_ptr(), 1usize);
            libc::syscall(libc::SYS_close, self.ack_r);
            n
        };
        if n == 1 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ECANCELED))
        }
    }
}

impl std::fmt::Debug for ChildHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildHooks")
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}
