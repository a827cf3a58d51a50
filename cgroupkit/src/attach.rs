//! Putting tasks into a cgroup beyond [`Cgroup::add_process`]: one thread at a time,
//! and a process being spawned, before it runs a single instruction of the new program.
//!
//! A spawner opens [`SpawnHandles`] in the parent (before the clone), then takes its
//! [`Placement`] ([`SpawnHandles::placement`]): one of
//! - [`Placement::CloneInto`]: the directory fd for clone3(2)'s `cgroup` with
//!   `CLONE_INTO_CGROUP` (pure cgroup v2, kernel 5.7+; nskit's `Spawn::cgroup`),
//! - [`Placement::JoinSelf`]: the handles, whose [`SpawnHandles::join_self`] the child
//!   calls before exec (every layout; nskit's `Spawn::pre_exec`): it writes `0` ("the
//!   writer") to each pre-opened file with the raw write(2) syscall and nothing else,
//!   so it is safe between clone and exec, even in a threaded parent, or
//! - [`Placement::Both`] on a hybrid host: clone3 places the child in the cgroup's
//!   v2 directory (the unified hierarchy is the kernel's default one, which is all
//!   `CLONE_INTO_CGROUP` needs) and the child joins the v1 hierarchies itself.
//!
//! `cgctl run` and `sandbox run` both start their child this way.
//!
//! On a v1 hierarchy the file is `tasks`, not `cgroup.procs`: a forked child has one
//! thread, so moving that thread moves the whole process, and the kernel moves the
//! writing thread itself without taking the global `cgroup_threadgroup_rwsem` for
//! writing, whose percpu-rwsem write side waits for an RCU grace period (measured on
//! a 6.18 hybrid host: `cgroup.procs` 13-17 ms, `tasks` 0.03 ms). v2 takes
//! `cgroup.procs` (its `cgroup.threads` only works inside a threaded subtree), and
//! so paid that grace period on hybrid hosts too, for each container of a pod
//! started one after the other (5-16 ms each), until the v2 part moved to clone3:
//! `CLONE_INTO_CGROUP` takes the same lock for reading only, as any fork does.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::cgroup::{CGROUP_PROCS, CGROUP_THREADS, Cgroup, TASKS};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hierarchy::Version;
use crate::proc::Pid;

const ESRCH: i32 = 3;

/// File descriptors, opened `O_CLOEXEC` in the parent, that place a child into a
/// cgroup at spawn time. See the [module docs](self).
///
/// # Examples
/// ```no_run
/// use std::os::unix::process::CommandExt;
/// use cgroupkit::{Cgroup, CgroupPath, Hierarchy};
/// let h = Hierarchy::detect()?;
/// let cg = Cgroup::create(&h, &CgroupPath::new("demo/job")?, &[])?;
/// let handles = cg.spawn_handles()?;
/// let mut cmd = std::process::Command::new("sleep");
/// cmd.arg("1");
/// // SAFETY: join_self only makes write(2) syscalls, which is async-signal-safe.
/// unsafe { cmd.pre_exec(move || handles.join_self()) };
/// cmd.status().expect("sleep runs");
/// # Ok::<(), cgroupkit::Error>(())
/// ```
///
/// With a spawner that has clone3 (nskit), the whole choice:
/// ```text
/// match cg.spawn_handles()?.placement(true) {
///     Placement::CloneInto(dir) => { spawn.cgroup(dir); }
///     // SAFETY: join_self makes only write(2) syscalls on fds opened beforehand.
///     Placement::JoinSelf(h) => unsafe { spawn.pre_exec(move || h.join_self()); },
///     Placement::Both { clone_into, join } => {
///         spawn.cgroup(clone_into);
///         // SAFETY: as above.
///         unsafe { spawn.pre_exec(move || join.join_self()); }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct SpawnHandles {
    /// The cgroup's directory on the v2 hierarchy, when it has one.
    dir: Option<OwnedFd>,
    /// `tasks` (v1) or `cgroup.procs` (v2) of every hierarchy the cgroup spans,
    /// opened for writing.
    procs: Vec<OwnedFd>,
    /// Which of `procs` is the v2 `cgroup.procs`.
    v2: Option<usize>,
}

impl SpawnHandles {
    /// The cgroup's directory for clone3's `cgroup` field with `CLONE_INTO_CGROUP`
    /// (kernel 5.7+): `Some` only when the cgroup lives on the v2 hierarchy alone
    /// (pure v2), since clone3 can place a child in one cgroup only.
    pub fn clone_into_fd(&self) -> Option<BorrowedFd<'_>> {
        self.dir.as_ref().map(AsFd::as_fd)
    }

    /// How many hierarchies [`SpawnHandles::join_self`] writes to.
    pub fn joins(&self) -> usize {
        self.procs.len()
    }

    /// How the child gets into the cgroup when `clone_into` is allowed:
    /// [`Placement::CloneInto`] with the directory fd when the cgroup lives on the v2
    /// hierarchy alone, [`Placement::Both`] when it spans v1 hierarchies and the v2
    /// one (hybrid), else (or without `clone_into`) [`Placement::JoinSelf`] with
    /// these handles. (A spawner whose clone3 refuses `CLONE_INTO_CGROUP` at run
    /// time, as on 5.3-5.6, writes the child's pid to `cgroup.procs` through the
    /// directory fd itself; nskit does.)
    pub fn placement(mut self, clone_into: bool) -> Placement {
        if !clone_into {
            self.dir = None;
            return Placement::JoinSelf(self);
        }
        match (self.dir.take(), self.v2) {
            (Some(dir), _) if self.procs.len() == 1 => Placement::CloneInto(dir),
            (Some(dir), Some(i)) => {
                // The v2 part is clone3's; the child writes only the v1 `tasks`.
                self.procs.remove(i);
                self.v2 = None;
                Placement::Both {
                    clone_into: dir,
                    join: self,
                }
            }
            _ => Placement::JoinSelf(self),
        }
    }

    /// Moves the calling process into the cgroup on every hierarchy, by writing `0`
    /// to each pre-opened `tasks` (v1) or `cgroup.procs` (v2).
    ///
    /// The caller must be single-threaded, as a child between clone and exec is: on
    /// v1 only the calling thread is moved (see the [module docs](self)).
    ///
    /// Async-signal-safe: no allocation, no locks, nothing but the write(2) syscall
    /// (made directly, not through libc's wrapper); errno is read back as the error
    /// (an `io::Error` from a raw OS error does not allocate). Meant for
    /// `CommandExt::pre_exec` or a cloned child before exec.
    pub fn join_self(&self) -> std::io::Result<()> {
        for fd in &self.procs {
            loop {
                // SAFETY: the fd is open for the lifetime of `self` (OwnedFd), and the
                // buffer is a one-byte static; a raw write(2) is async-signal-safe.
                let n = unsafe {
                    libc::syscall(libc::SYS_write, fd.as_raw_fd(), b"0".as_ptr(), 1usize)
                };
                if n == 1 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// [`SpawnHandles::join_self`], then closes every handle's fd in the calling
    /// process with the raw close(2) syscall: for a child that must not keep them
    /// until exec (close-on-exec is not enough where a process of the child never
    /// execs, as a container's init, or where anything before exec could reach them
    /// through `/proc/self/fd`). Async-signal-safe, as `join_self`.
    ///
    /// # Safety
    /// The fds are closed behind the handles' back: the calling process must not use
    /// or drop these handles afterwards (a cloned child that then execs or exits;
    /// the parent's copies are its own and stay valid).
    pub unsafe fn join_self_and_close(&self) -> std::io::Result<()> {
        let joined = self.join_self();
        for fd in self.procs.iter().chain(&self.dir) {
            // SAFETY: the caller promises these handles are not used or dropped in
            // this process afterwards, so nothing closes or uses the numbers again.
            unsafe { libc::syscall(libc::SYS_close, fd.as_raw_fd()) };
        }
        joined
    }
}

/// How a spawned child is put into its cgroup; see [`SpawnHandles::placement`].
#[derive(Debug)]
pub enum Placement {
    /// The cgroup's directory, opened `O_RDONLY | O_DIRECTORY`, for clone3's `cgroup`
    /// field with `CLONE_INTO_CGROUP` (5.7+): the child starts in the cgroup.
    CloneInto(OwnedFd),
    /// Handles for [`SpawnHandles::join_self`], called in the child before exec.
    JoinSelf(SpawnHandles),
    /// A hybrid host: the cgroup's v2 directory for clone3 (as `CloneInto`) and the
    /// handles of its v1 hierarchies for [`SpawnHandles::join_self`] (as `JoinSelf`).
    Both {
        /// The v2 directory, `O_RDONLY | O_DIRECTORY`, for `CLONE_INTO_CGROUP`.
        clone_into: OwnedFd,
        /// The v1 `tasks` files.
        join: SpawnHandles,
    },
}

impl Cgroup {
    /// Moves one thread (not its whole process) into the cgroup: v1 `tasks` on each
    /// hierarchy; v2 `cgroup.threads`, which the kernel accepts only within a
    /// threaded subtree (cgroup.type `threaded`) of the thread's own domain.
    pub fn add_thread(&self, tid: Pid) -> Result<()> {
        for d in self.dirs() {
            let file = d.file(match d.version {
                Version::V1 => TASKS,
                Version::V2 => CGROUP_THREADS,
            });
            fsutil::write(&file, &tid.to_string()).map_err(|e| {
                if e.raw_os_error() == Some(ESRCH) {
                    Error::NoSuchProcess { pid: tid.as_raw() }
                } else {
                    e
                }
            })?;
        }
        Ok(())
    }

    /// Opens the handles a spawner needs to start a child inside this cgroup; see
    /// [`SpawnHandles`]. Every fd is `O_CLOEXEC`, so none leaks into the new program.
    pub fn spawn_handles(&self) -> Result<SpawnHandles> {
        let mut procs = Vec::with_capacity(self.dirs().len());
        let (mut dir, mut v2) = (None, None);
        for d in self.dirs() {
            let path = d.file(match d.version {
                Version::V1 => TASKS,
                Version::V2 => CGROUP_PROCS,
            });
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|source| Error::Write {
                    path: path.clone(),
                    value: "0".to_owned(),
                    source,
                })?;
            if d.version == Version::V2 {
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&d.path)
                    .map_err(|source| Error::Read {
                        path: d.path.clone(),
                        source,
                    })?;
                dir = Some(OwnedFd::from(f));
                v2 = Some(procs.len());
            }
            procs.push(OwnedFd::from(f));
        }
        Ok(SpawnHandles { dir, procs, v2 })
    }
}
