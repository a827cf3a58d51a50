//! The crate's error type: every variant names the syscall (or child step) and the
//! path, flag or pid it concerns; ENOSYS names the feature and its minimum kernel.

use std::io;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
///
/// The message names the operation; the underlying `io::Error`, when there is one, is
/// the [`std::error::Error::source`] and is not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A syscall failed.
    #[error("{syscall}({what}) failed")]
    Sys {
        /// The syscall, e.g. `setns`.
        syscall: &'static str,
        /// Its arguments that matter: a path, a flag set, a pid.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel lacks a syscall or feature (ENOSYS, or EINVAL from an older ABI).
    #[error(
        "{feature} is not supported by this kernel ({syscall}): it needs Linux {min_kernel} or newer"
    )]
    Unsupported {
        /// The syscall that reported it.
        syscall: &'static str,
        /// The feature, e.g. `clone3 with CLONE_INTO_CGROUP`.
        feature: &'static str,
        /// The first kernel version that has it, e.g. `5.7`.
        min_kernel: &'static str,
    },
    /// The caller lacks a privilege (EPERM / EACCES).
    #[error("{syscall}({what}): permission denied; {hint}")]
    PermissionDenied {
        /// The syscall.
        syscall: &'static str,
        /// Its arguments that matter.
        what: String,
        /// What privilege is needed.
        hint: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The process is gone (ESRCH), or its /proc entry is.
    #[error("no process with pid {pid} (it exited or never existed)")]
    NoSuchProcess {
        /// The pid.
        pid: i32,
    },
    /// The kernel has no namespace of this kind: `/proc/PID/ns/KIND` is missing for
    /// a process, and so is ours (`/proc/self/ns/KIND`), so the kind is what is
    /// missing, not the process.
    #[error(
        "this kernel has no {kind} namespace ({path} and /proc/self/ns/{kind} do not exist): it needs {needs}"
    )]
    NoNamespaceKind {
        /// The /proc/PID/ns name of the kind, e.g. `time`.
        kind: &'static str,
        /// The namespace file asked for.
        path: String,
        /// What kernel has it, e.g. `Linux 5.6 or newer built with CONFIG_TIME_NS`.
        needs: &'static str,
    },
    /// An argument or combination of options was refused before any syscall.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A string given for a path, argument or environment variable holds a NUL byte.
    #[error("{what} holds a NUL byte: {value:?}")]
    Nul {
        /// Which input.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The spawned child failed before exec; `step` names what it was doing.
    #[error("child setup failed at {step}")]
    Child {
        /// The step in the child, e.g. `mount #0 (tmpfs on /tmp)` or `exec /bin/true`.
        step: String,
        /// The errno the child reported.
        #[source]
        source: io::Error,
    },
    /// A path inside a confined root resolved to a place outside of it, or through a
    /// symlink where none is allowed.
    #[error("{path:?} cannot be resolved inside root {root}")]
    Escape {
        /// The root directory.
        root: String,
        /// The path asked for, relative to the root.
        path: String,
        /// The OS error (EXDEV, ELOOP).
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The errno behind this error, if it came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Sys { source, .. }
            | Error::PermissionDenied { source, .. }
            | Error::Child { source, .. }
            | Error::Escape { source, .. } => source.raw_os_error(),
            Error::Unsupported { .. } => Some(libc::ENOSYS),
            Error::NoSuchProcess { .. } => Some(libc::ESRCH),
            Error::NoNamespaceKind { .. } => Some(libc::ENOENT),
            Error::InvalidArgument(_) | Error::Nul { .. } => Some(libc::EINVAL),
        }
    }

    /// The OS error of a failed exec in the child (the program missing, not
    /// executable, ...), as opposed to a failure of a step before it.
    pub fn exec_error(&self) -> Option<&io::Error> {
        match self {
            Error::Child { step, source } if step.starts_with(crate::spawn::EXEC_STEP) => {
                Some(source)
            }
            _ => None,
        }
    }

    /// True when the kernel lacks the feature ([`Error::Unsupported`],
    /// [`Error::NoNamespaceKind`]).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Error::Unsupported { .. } | Error::NoNamespaceKind { .. }
        )
    }
}

/// The first kernel that has `syscall`, for ENOSYS messages.
pub(crate) fn min_kernel(syscall: &'static str) -> (&'static str, &'static str) {
    match syscall {
        "clone3" => ("clone3", "5.3"),
        "pidfd_open" => ("pidfd_open", "5.3"),
        "pidfd_send_signal" => ("pidfd_send_signal", "5.1"),
        "openat2" => ("openat2 with RESOLVE_IN_ROOT", "5.6"),
        "fsopen" | "fsconfig" | "fsmount" | "move_mount" | "open_tree" => {
            ("the fd-based mount API", "5.2")
        }
        "mount_setattr" => ("mount_setattr (and idmapped mounts)", "5.12"),
        "waitid(P_PIDFD)" => ("waitid on a pidfd", "5.4"),
        _ => ("this syscall", "unknown"),
    }
}

/// Turns an errno from `syscall` into an [`Error`]: ENOSYS names the minimum kernel,
/// EPERM/EACCES say which privilege is needed.
pub(crate) fn sys(syscall: &'static str, what: impl Into<String>, errno: i32) -> Error {
    match errno {
        libc::ENOSYS => {
            let (feature, min) = min_kernel(syscall);
            Error::Unsupported {
                syscall,
                feature,
                min_kernel: min,
            }
        }
        libc::EPERM | libc::EACCES => Error::PermissionDenied {
            syscall,
            what: what.into(),
            hint: "run as root or with CAP_SYS_ADMIN (CAP_SETUID/CAP_SETGID for id maps) in the owning user namespace",
            source: io::Error::from_raw_os_error(errno),
        },
        _ => Error::Sys {
            syscall,
            what: what.into(),
            source: io::Error::from_raw_os_error(errno),
        },
    }
}

/// [`sys`] from a `nix::Errno`.
pub(crate) fn nix(syscall: &'static str, what: impl Into<String>, e: nix::Error) -> Error {
    sys(syscall, what, e as i32)
}

/// [`sys`] from an `io::Error`.
pub(crate) fn io(syscall: &'static str, what: impl Into<String>, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(n) => sys(syscall, what, n),
        None => Error::Sys {
            syscall,
            what: what.into(),
            source: e,
        },
    }
}
