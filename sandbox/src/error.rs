//! The sandbox's error type: each variant names the operation and the path.

use std::path::PathBuf;

/// A sandbox result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with the operation and path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or system call on a path failed.
    #[error("{op} {}", path.display())]
    Io {
        /// The operation (syscall or action).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A namespace, mount or spawn step failed (nskit).
    #[error(transparent)]
    Ns(#[from] nskit::Error),
    /// A cgroup operation failed (cgroupkit).
    #[error(transparent)]
    Cgroup(#[from] cgroupkit::Error),
    /// The OCI spec or an option is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An image or layer problem (format, digest, missing blob).
    #[error("image: {0}")]
    Image(String),
    /// A container name that exists / does not exist.
    #[error("container {name:?}: {what}")]
    Container {
        /// The container name.
        name: String,
        /// What is wrong and what to do.
        what: String,
    },
    /// The container's working directory could not be entered safely.
    #[error("working directory {path:?} {what}")]
    Workdir {
        /// The directory, as given (inside the container).
        path: String,
        /// What is wrong.
        what: &'static str,
        /// The errno the child reported.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be read or written.
    #[error("JSON {}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// The status of `sandbox run` when the container could not be started (docker's).
pub const EXIT_RUNTIME: i32 = 125;
/// The status when the command exists but cannot be executed (a shell's).
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// The status when the command is not found (a shell's).
pub const EXIT_NOT_FOUND: i32 = 127;

impl Error {
    /// The exit status a front end reports for this error: 127 when the container's
    /// command was not found, 126 when it could not be executed (as a shell
    /// reports them), 125 for a failure of the runtime itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Ns(e) => match e.exec_error() {
                Some(s) if s.kind() == std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                Some(_) => EXIT_CANNOT_EXEC,
                None => EXIT_RUNTIME,
            },
            _ => EXIT_RUNTIME,
        }
    }

    /// An [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// `map_err` helper: `.map_err(ioe("mkdir", &p))`.
pub(crate) fn ioe<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}
