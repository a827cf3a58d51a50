//! Operations on a container that runs (or ran): `exec`, `kill`, `stop`, `rm`, each
//! found through its state folder.
//!
//! The pid in a state file is a guess: the supervisor may have died and the pid been
//! reused by an unrelated process. Every operation aimed at the container's process
//! goes through [`ContainerProcess`]: a pidfd opened on the recorded pid, then
//! checked to be a member of the container's cgroup (after the open, so that the
//! check is about the process the pidfd holds), and used for the signal or the
//! namespaces.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use cgroupkit::{Cgroup, CgroupPath, Hierarchy};
use nix::sys::signal::Signal;
use nskit::NsHandle;
use oci_spec::runtime::Spec;

use crate::assembly::Paths;
use crate::error::{Error, Result};
use crate::state::{self, State, Status};
use crate::store::Store;

/// The container's first process, held by a pidfd verified to be in its cgroup.
#[derive(Debug)]
pub struct ContainerProcess {
    pidfd: OwnedFd,
    pid: i32,
    cgroup: Cgroup,
}

/// pidfd_open(2) (5.3), raw: the libc crate has no wrapper on musl.
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(r as RawFd) })
}

/// pidfd_send_signal(2) (5.1); `sig` 0 checks the process is alive.
fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: the pidfd is live for the call; a NULL siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ContainerProcess {
    /// Opens a pidfd on the container's recorded pid and checks that the process is
    /// in the container's cgroup; a pid that now names another process is refused.
    pub fn open(name: &str, st: &State, pid: i32) -> Result<ContainerProcess> {
        let gone = || Error::Container {
            name: name.into(),
            what: format!(
                "its recorded pid {pid} is no longer its process (not in cgroup {}): \
                 nothing was signalled; it has exited (see `sandbox ps`, then `sandbox gc` \
                 or `sandbox rm`)",
                st.cgroup
            ),
        };
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(gone()),
            Err(e) => return Err(Error::io("pidfd_open", format!("pid {pid}"), e)),
        };
        let h = Hierarchy::detect()?;
        let cgroup = match Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?) {
            Ok(cg) => cg,
            Err(cgroupkit::Error::NotFound { .. }) => return Err(gone()),
            Err(e) => return Err(e.into()),
        };
        let member = cgroup.procs()?.iter().any(|p| p.as_raw() == pid);
        // Alive after the membership check: the pid listed was the process the
        // pidfd holds (it cannot have been reused while that process lives).
        if !member || pidfd_send_signal(&pidfd, 0).is_err() {
            return Err(gone());
        }
        Ok(ContainerProcess { pidfd, pid, cgroup })
    }

    /// The host pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Sends `sig` through the pidfd (never to a reused pid).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        pidfd_send_signal(&self.pidfd, sig as i32)
            .map_err(|e| Error::io("pidfd_send_signal", format!("pid {}", self.pid), e))
    }

    /// Waits up to `timeout` for the process to exit (the pidfd becomes readable).
    pub fn wait_exit(&self, timeout: Duration) -> Result<bool> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [nix::poll::PollFd::new(
                self.pidfd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) if left.is_zero() => return Ok(false),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::io(
                        "poll",
                        format!("pidfd of pid {}", self.pid),
                        e.into(),
                    ));
                }
            }
        }
    }

    /// The pidfd.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// A namespace handle on the process through its pidfd.
    pub(crate) fn ns_handle(&self) -> Result<NsHandle> {
        let fd = self
            .pidfd
            .try_clone()
            .map_err(|e| Error::io("dup", format!("pidfd of pid {}", self.pid), e))?;
        Ok(NsHandle::from_pidfd(fd, self.pid))
    }
}

/// `sandbox exec NAME -- CMD`: runs CMD in the container's namespaces (its pid
/// namespace entered before the clone) and cgroup, with its privileges dropped as the
/// container's; returns its exit status. The same exec as the OCI `exec`.
pub fn exec(paths: &Paths, name: &str, args: &[String], env: &[String]) -> Result<i32> {
    let (st, pid) = running(paths, name)?;
    // A stale pid is refused before anything else (exec_in checks again, holding it).
    drop(ContainerProcess::open(name, &st, pid)?);
    let config = paths.state.join(name).join(state::CONFIG_FILE);
    let spec =
        Spec::load(&config).map_err(|e| Error::Config(format!("{}: {e}", config.display())))?;
    if args.is_empty() {
        return Err(Error::Config("no command: sandbox exec NAME -- CMD".into()));
    }
    let o = crate::oci::ExecOptions {
        args: args.to_vec(),
        env: env.to_vec(),
        ..Default::default()
    };
    crate::oci::exec::exec_in(name, &st, spec, &o)
}

/// Sends `sig` to the container's first process, through a pidfd verified to be in
/// the container's cgroup.
pub fn signal(paths: &Paths, name: &str, sig: Signal) -> Result<()> {
    let (st, pid) = running(paths, name)?;
    ContainerProcess::open(name, &st, pid)?.signal(sig)
}

/// The state folder and recorded state of the container `name` (a valid name), or
/// "no such container".
fn existing(paths: &Paths, name: &str) -> Result<(std::path::PathBuf, State)> {
    state::check_name(name)?;
    let dir = paths.state.join(name);
    let st = state::read(&dir).map_err(|_| Error::Container {
        name: name.into(),
        what: "no such container (see `sandbox ps`)".into(),
    })?;
    Ok((dir, st))
}

/// The state of a running container and the pid of its first process.
fn running(paths: &Paths, name: &str) -> Result<(State, i32)> {
    let (_, st) = existing(paths, name)?;
    match (st.pid, &st.status) {
        (Some(pid), Status::Running) => Ok((st, pid)),
        _ => Err(Error::Container {
            name: name.into(),
            what: "not running".into(),
        }),
    }
}

/// `sandbox stop`: SIGTERM, then after `grace` SIGKILL to every process of its cgroup.
pub fn stop(paths: &Paths, name: &str, grace: Duration) -> Result<()> {
    let (st, pid) = running(paths, name)?;
    let proc = ContainerProcess::open(name, &st, pid)?;
    // Gone meanwhile is fine: it is what stop asks for.
    let _ = proc.signal(Signal::SIGTERM);
    if proc.wait_exit(grace)? {
        return Ok(());
    }
    let cg = proc.cgroup();
    let h = cg.hierarchy();
    let Err(e) = cg.kill() else { return Ok(()) };
    // The supervisor sees its child die and removes the cgroup meanwhile, so the kill
    // can fail reading a file just removed: give the supervisor a moment to finish.
    let start = Instant::now();
    loop {
        if !paths.state.join(name).exists() || Cgroup::load(h, cg.path()).is_err() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(2) {
            return Err(e.into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `sandbox rm`: removes a container that is not running (with `force`, kills it
/// first).
pub fn remove(paths: &Paths, name: &str, force: bool) -> Result<()> {
    let (dir, st) = existing(paths, name)?;
    if state::supervised(&dir)? {
        if !force {
            return Err(Error::Container {
                name: name.into(),
                what: "it is running: `sandbox stop` it first, or `sandbox rm --force`".into(),
            });
        }
        let h = Hierarchy::detect()?;
        // A kill failing because the supervisor removed the cgroup meanwhile is fine.
        let killed = match Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?) {
            Ok(cg) => cg.kill(),
            Err(_) => Ok(()),
        };
        // The supervisor sees its child exit and removes the folder itself.
        let start = Instant::now();
        while dir.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !dir.exists() {
            return Ok(());
        }
        killed?;
    }
    let _lock = state::lock(&dir, false)?;
    state::release(&dir, &st)?;
    if let Some(r) = &st.image {
        let store = Store::at(&paths.store);
        if let Ok(img) = store.get(r) {
            store.remove_user(&img.key(), &st.id);
        }
    }
    state::remove_dir(&dir)
}
