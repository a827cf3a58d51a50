//! The crate's error type: every variant names the operation and the path it concerns.

use std::io;
use std::path::PathBuf;

use crate::hierarchy::{Controller, Layout};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with the file or value concerned.
///
/// The message shows the operation and path; the underlying `io::Error`, when there is
/// one, is the [`std::error::Error::source`] and is not repeated in the message.
/// [`Error::hint`] suggests what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a cgroup or proc file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing a value to a cgroup file failed.
    #[error("cannot write {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("cannot create cgroup directory {path}")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("cannot remove cgroup directory {path}")]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A cgroup path was refused before touching the filesystem.
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A kernel file held something this crate cannot parse.
    #[error("unexpected content in {path} at line {line}: {text:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending line (truncated to 200 bytes).
        text: String,
    },
    /// No cgroup filesystem is mounted.
    #[error("no cgroup filesystem is mounted according to {mountinfo}")]
    NoCgroupFs {
        /// The mountinfo file that was read.
        mountinfo: PathBuf,
    },
    /// A controller a resource needs is not served on this host.
    #[error("the {controller} controller is not available on this host ({layout} layout)")]
    ControllerUnavailable {
        /// The controller.
        controller: Controller,
        /// The host's cgroup layout.
        layout: Layout,
    },
    /// The host cannot honour a setting: the file is absent on this kernel or layout
    /// (e.g. `memory.high` on v1, `cpu.idle` before 5.15, memsw without swap accounting).
    #[error("{controller}: {what} is not supported here ({layout} layout): {reason}")]
    Unsupported {
        /// The controller.
        controller: Controller,
        /// The setting or statistic.
        what: &'static str,
        /// The host's layout.
        layout: Layout,
        /// Why, and what would make it work (kernel version, boot option).
        reason: String,
    },
    /// The cgroup exists, but not on the hierarchy serving a controller it needs now
    /// (v1 and hybrid hosts, where each controller has its own tree).
    #[error("cgroup {path} is not in the {controller} hierarchy")]
    NotInHierarchy {
        /// The cgroup path.
        path: String,
        /// The controller.
        controller: Controller,
    },
    /// The kernel did not reach the expected state in time.
    #[error("timed out waiting for {what} ({path})")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The cgroup.
        path: String,
    },
    /// A resource value was refused before anything was written.
    #[error("invalid {what}: {reason}")]
    InvalidResource {
        /// Which setting.
        what: &'static str,
        /// Why, with the accepted range.
        reason: String,
    },
    /// A bpf(2) call for a cgroup failed (loading or attaching a device program).
    #[error("{op} for {path}")]
    Bpf {
        /// The command (BPF_PROG_LOAD, BPF_PROG_ATTACH) and what for.
        op: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The OS error (with the verifier log for a refused program).
        #[source]
        source: io::Error,
    },
    /// The cgroup does not exist on any hierarchy.
    #[error("cgroup {path:?} does not exist")]
    NotFound {
        /// The cgroup path.
        path: String,
    },
    /// The process does not exist (or exited meanwhile).
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// The pid.
        pid: i32,
    },
    /// Signalling a process of the cgroup failed (other than because it is gone).
    #[error("cannot {syscall} pid {pid}")]
    Signal {
        /// The syscall: `pidfd_open`, `pidfd_send_signal` or `kill`.
        syscall: &'static str,
        /// The pid.
        pid: i32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Kernel threads cannot be moved between cgroups by user space.
    #[error("pid {pid} ({comm}) is a kernel thread; kernel threads cannot be moved into a cgroup")]
    KernelThread {
        /// The pid.
        pid: i32,
        /// Its command name.
        comm: String,
    },
}

impl Error {
    /// The `io::ErrorKind` behind this error, if it came from the OS.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Read { source, .. }
            | Error::Write { source, .. }
            | Error::Mkdir { source, .. }
            | Error::Rmdir { source, .. }
            | Error::Bpf { source, .. }
            | Error::Signal { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// The raw errno behind this error, if it came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Read { source, .. }
            | Error::Write { source, .. }
            | Error::Mkdir { source, .. }
            | Error::Rmdir { source, .. }
            | Error::Bpf { source, .. }
            | Error::Signal { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// What a person can do about this error, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        const EBUSY: i32 = 16;
        match self {
            Error::InvalidPath { .. } => Some(
                "give a path relative to the cgroup root, such as `myapp/worker`, without `..`",
            ),
            Error::ControllerUnavailable { .. } => Some(
                "check /proc/cgroups and the cgroup mounts; on cgroup v2 the controller must be \
                 enabled in the parent's cgroup.subtree_control",
            ),
            Error::KernelThread { .. } => Some("pick a user-space process"),
            Error::NotInHierarchy { .. } => Some(
                "create the cgroup with this controller too (Cgroup::create with it in the list)",
            ),
            Error::NoSuchProcess { .. } => Some("check the pid with `ps -p PID`"),
            _ if self.io_kind() == Some(io::ErrorKind::PermissionDenied) => Some(
                "run as root (or with CAP_SYS_ADMIN), or delegate the cgroup subtree to this user",
            ),
            Error::Rmdir { .. } if self.raw_os_error() == Some(EBUSY) => {
                Some("the cgroup still holds processes or child cgroups: move or kill them first")
            }
            Error::Write { .. } if self.raw_os_error() == Some(EBUSY) => Some(
                "on cgroup v2 a cgroup with processes cannot enable controllers for children \
                 (no-internal-process rule): put the processes in a leaf cgroup",
            ),
            _ => None,
        }
    }
}
