//! [`Child`]: a started child process, with its pidfd (signal, wait).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::error::{self, Error, Result};
use crate::sys;

/// A started child process, with its pidfd.
///
/// Like `std::process::Child`, dropping it neither kills nor reaps the process: call
/// [`wait`](Child::wait) (or [`kill`](Child::kill) then `wait`).
#[derive(Debug)]
pub struct Child {
    pub(super) pid: i32,
    pub(super) pidfd: OwnedFd,
    pub(super) status: Option<ExitStatus>,
    /// The parent's end of the child's stdin, with [`Stdio::Piped`](super::Stdio::Piped).
    pub stdin: Option<File>,
    /// The parent's end of the child's stdout, with [`Stdio::Piped`](super::Stdio::Piped).
    pub stdout: Option<File>,
    /// The parent's end of the child's stderr, with [`Stdio::Piped`](super::Stdio::Piped).
    pub stderr: Option<File>,
}

impl Child {
    /// The child's pid, in the parent's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd (clone3/clone `CLONE_PIDFD`): pollable for exit, and valid for
    /// [`NsHandle::from_pidfd`](crate::NsHandle::from_pidfd) via `try_clone`.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends `sig` with pidfd_send_signal(2) (5.1): race-free, it cannot hit a recycled
    /// pid. Signalling an exited (not yet reaped) child succeeds.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        if self.status.is_some() {
            return Err(Error::NoSuchProcess { pid: self.pid });
        }
        sys::pidfd_send_signal(self.pidfd.as_fd(), sig as i32).map_err(|e| match e {
            libc::ESRCH => Error::NoSuchProcess { pid: self.pid },
            e => error::sys("pidfd_send_signal", format!("pid {} {sig}", self.pid), e),
        })
    }

    /// SIGKILL through the pidfd.
    pub fn kill(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGKILL)
    }

    /// Waits for exit: waitid(P_PIDFD) (5.4), waitpid(2) before that. Returns the
    /// cached status on later calls.
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`] when the child was reaped elsewhere; an error, never a
    /// made-up success, when the kernel reports no status.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.wait_flags(libc::WEXITED)?.ok_or_else(|| Error::Sys {
            syscall: "waitid",
            what: format!(
                "P_PIDFD pid {}: returned without an exit status although it blocks until one",
                self.pid
            ),
            source: io::Error::from_raw_os_error(libc::ECHILD),
        })
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.wait_flags(libc::WEXITED | libc::WNOHANG)
    }

    fn wait_flags(&mut self, flags: libc::c_int) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        loop {
            // SAFETY: siginfo_t is plain data the kernel fills in.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: the pidfd is open; info is writable.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    flags,
                )
            };
            if r == 0 {
                // SAFETY: waitid filled a SIGCHLD siginfo (or left it zeroed with WNOHANG).
                let (pid, code, status) =
                    unsafe { (info.si_pid(), info.si_code, info.si_status()) };
                let st = exit_status(pid, code, status).map_err(|code| Error::Sys {
                    syscall: "waitid",
                    what: format!("P_PIDFD pid {}: unknown si_code {code}", self.pid),
                    source: io::Error::from_raw_os_error(libc::EPROTO),
                })?;
                if st.is_some() {
                    self.status = st;
                }
                return Ok(st);
            }
            match sys::errno() {
                libc::EINTR => continue,
                // Before 5.4 waitid does not take P_PIDFD.
                libc::EINVAL => {
                    let mut st = 0;
                    let nohang = flags & libc::WNOHANG;
                    // SAFETY: st is writable.
                    let r = unsafe { libc::waitpid(self.pid, &mut st, nohang) };
                    if r < 0 {
                        if sys::errno() == libc::EINTR {
                            continue;
                        }
                        return Err(error::sys(
                            "waitpid",
                            format!("pid {}", self.pid),
                            sys::errno(),
                        ));
                    }
                    if r == 0 {
                        return Ok(None);
                    }
                    let st = ExitStatus::from_raw(st);
                    self.status = Some(st);
                    return Ok(Some(st));
                }
                libc::ECHILD => return Err(Error::NoSuchProcess { pid: self.pid }),
                e => return Err(error::sys("waitid", format!("P_PIDFD pid {}", self.pid), e)),
            }
        }
    }
}

/// The exit status a waitid(2) siginfo reports: `Ok(None)` when it holds no child
/// (`si_pid` 0: WNOHANG and nothing exited yet), `Err(si_code)` for a code that is no
/// exit (only `WEXITED` is asked for).
fn exit_status(
    pid: libc::pid_t,
    code: libc::c_int,
    status: libc::c_int,
) -> std::result::Result<Option<ExitStatus>, libc::c_int> {
    if pid == 0 {
        return Ok(None);
    }
    let raw = match code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        code => return Err(code),
    };
    Ok(Some(ExitStatus::from_raw(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_siginfo_without_a_child_is_no_status_and_never_success() {
        assert_eq!(exit_status(0, 0, 0), Ok(None));
        assert_eq!(exit_status(0, libc::CLD_EXITED, 0), Ok(None));
        let ok = exit_status(7, libc::CLD_EXITED, 0).unwrap().unwrap();
        assert!(ok.success());
        let three = exit_status(7, libc::CLD_EXITED, 3).unwrap().unwrap();
        assert_eq!(three.code(), Some(3));
        let killed = exit_status(7, libc::CLD_KILLED, libc::SIGKILL)
            .unwrap()
            .unwrap();
        assert_eq!(killed.signal(), Some(libc::SIGKILL));
        let dumped = exit_status(7, libc::CLD_DUMPED, libc::SIGSEGV)
            .unwrap()
            .unwrap();
        assert_eq!(dumped.signal(), Some(libc::SIGSEGV));
        assert!(dumped.core_dumped());
        // A stop or trap is not an exit: an error, not a status.
        assert_eq!(
            exit_status(7, libc::CLD_STOPPED, libc::SIGSTOP),
            Err(libc::CLD_STOPPED)
        );
    }
}
