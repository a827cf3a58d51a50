//! Passing signals on to a child while waiting for it: the one loop of every
//! supervisor (`cgctl run`, `sandbox run`).
//!
//! A [`Forwarder`] blocks the signals to pass on in the calling thread and reads them
//! from a signalfd; [`Child::wait_forwarding`] polls that signalfd together with the
//! child's pidfd (readable once it exits, kernel 5.3) and sends each signal on with
//! pidfd_send_signal, so never to a recycled pid. SIGCHLD is neither blocked nor
//! needed, so other children and handlers of the program are left alone.
//!
//! ```no_run
//! use nix::sys::signal::Signal;
//! use nskit::forward::Forwarder;
//! // Before the spawn, so that no signal sent meanwhile takes its default action.
//! let fwd = Forwarder::new(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP])?;
//! let mut child = nskit::Spawn::new("sleep").arg("5").spawn()?;
//! let status = child.wait_forwarding(&fwd)?;
//! drop(fwd); // the signal mask as it was
//! println!("{status}");
//! # Ok::<(), nskit::Error>(())
//! ```

use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::Child;
use crate::error::{self, Result};

/// The signals a supervisor passes on, blocked in the thread that made it and read
/// from a signalfd; dropping it restores that thread's signal mask.
///
/// Make it before spawning (the child starts with an empty signal mask either way)
/// and in the thread that waits; in a program with other threads, block the same
/// signals in them too (or make it before starting them), or a process-directed
/// signal may be delivered to another thread instead.
#[derive(Debug)]
pub struct Forwarder {
    sfd: SignalFd,
    old: SigSet,
    skip_kernel_sent: bool,
    /// The signal mask is per thread: restore it in the thread that set it.
    _not_send: PhantomData<*const ()>,
}

impl Forwarder {
    /// Blocks `signals` in the calling thread and opens a signalfd on them
    /// (`pthread_sigmask`, `signalfd(2)`).
    pub fn new(signals: &[Signal]) -> Result<Forwarder> {
        let mut mask = SigSet::empty();
        for &s in signals {
            mask.add(s);
        }
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
            .map_err(|e| error::nix("pthread_sigmask", "SIG_BLOCK", e))?;
        match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
            Ok(sfd) => Ok(Forwarder {
                sfd,
                old,
                skip_kernel_sent: false,
                _not_send: PhantomData,
            }),
            Err(e) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                Err(error::nix("signalfd", "SFD_CLOEXEC|SFD_NONBLOCK", e))
            }
        }
    }

    /// Leaves out signals the kernel sent (`si_code` `SI_KERNEL`): ^C, ^\ and hangups
    /// of the terminal, which already went to its whole foreground process group. Set
    /// it when the child shares the supervisor's process group (a plain command, as
    /// `cgctl run` starts), so that it does not get them twice; leave it off when the
    /// child runs in a session of its own.
    pub fn skip_kernel_sent(mut self, yes: bool) -> Forwarder {
        self.skip_kernel_sent = yes;
        self
    }

    /// The next pending signal, if any (the signalfd is non-blocking).
    fn next(&self) -> Result<Option<(Signal, bool)>> {
        loop {
            match self.sfd.read_signal() {
                Ok(Some(info)) => {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    return Ok(Some((sig, info.ssi_code == libc::SI_KERNEL)));
                }
                Ok(None) => return Ok(None),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(error::nix("read", "signalfd", e)),
            }
        }
    }
}

/// The signalfd, for a spawner that closes the runtime's fds in its child before exec
/// (it is close-on-exec already).
impl AsFd for Forwarder {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sfd.as_fd()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Signals still pending are delivered now, with their usual effect.
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// How long to sleep between exit checks where the pidfd cannot be polled (5.2).
const POLL_FALLBACK_MS: u16 = 20;

impl Child {
    /// Waits for the child to exit, passing on each signal `fwd` receives meanwhile
    /// through the pidfd ([`Child::signal`]); returns its exit status. Signals that
    /// arrive once it has exited are discarded (there is no one to pass them to).
    ///
    /// Polls the signalfd and the pidfd (readable at exit, kernel 5.3; on a 5.2
    /// kernel, where a pidfd cannot be polled, exit is checked every 20 ms).
    pub fn wait_forwarding(&mut self, fwd: &Forwarder) -> Result<ExitStatus> {
        let mut pidfd_polls = true;
        loop {
            if let Some(st) = self.try_wait()? {
                while fwd.next()?.is_some() {}
                return Ok(st);
            }
            let exited = {
                let mut fds = vec![PollFd::new(fwd.sfd.as_fd(), PollFlags::POLLIN)];
                if pidfd_polls {
                    fds.push(PollFd::new(self.pidfd(), PollFlags::POLLIN));
                }
                let timeout = if pidfd_polls {
                    PollTimeout::NONE
                } else {
                    PollTimeout::from(POLL_FALLBACK_MS)
                };
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(error::nix("poll", "signalfd and pidfd", e)),
                }
                fds.get(1)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            while let Some((sig, kernel_sent)) = fwd.next()? {
                if !(fwd.skip_kernel_sent && kernel_sent) {
                    // Exited meanwhile: the next try_wait sees it.
                    let _ = self.signal(sig);
                }
            }
            if exited && self.try_wait()?.is_none() {
                // A pidfd that reports readable before exit cannot be polled here.
                pidfd_polls = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    #[test]
    fn a_signal_to_the_supervisor_reaches_the_child_and_its_status_comes_back() {
        let fwd = Forwarder::new(&[Signal::SIGTERM, Signal::SIGUSR1]).unwrap();
        let mut child = crate::Spawn::new("sh")
            .args([
                "-c",
                "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done",
            ])
            .stdout(crate::Stdio::Null)
            .spawn()
            .unwrap();
        // Thread-directed, to this (blocked, waiting) thread: the test harness's other
        // threads do not block SIGTERM, and a process-directed one could land there.
        // SAFETY: pthread_self has no preconditions. (As usize: musl's pthread_t
        // is a pointer, which is not Send.)
        let me = unsafe { libc::pthread_self() } as usize;
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: `me` is the test thread, alive until the child exits (it waits).
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGTERM) };
        });
        let t0 = Instant::now();
        let st = child.wait_forwarding(&fwd).unwrap();
        sender.join().unwrap();
        assert_eq!(st.code(), Some(42), "{st:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(fwd);

        // A child killed by a signal: its status says which.
        let fwd = Forwarder::new(&[Signal::SIGUSR1]).unwrap();
        let mut child = crate::Spawn::new("sleep").arg("30").spawn().unwrap();
        child.kill().unwrap();
        let st = child.wait_forwarding(&fwd).unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL));
    }
}
