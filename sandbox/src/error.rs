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

impl Error {
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
