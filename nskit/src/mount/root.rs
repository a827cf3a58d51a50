//! [`Root`]: paths resolved inside a directory (openat2 `RESOLVE_IN_ROOT`, 5.6, or a
//! stricter walk), as a container's root filesystem.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use super::cpath;
use crate::error::{self, Error, Result};
use crate::sys;

/// A directory that paths are resolved inside of, as the root of a container's
/// filesystem: `..` and absolute symlinks stay inside it.
///
/// Resolution is openat2(2) with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` (5.6). On
/// older kernels each component is opened with `O_NOFOLLOW` and any symlink or `..` is
/// refused (stricter, never weaker).
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    pub(super) path: PathBuf,
}

impl Root {
    /// Opens the root directory (`O_PATH | O_DIRECTORY`).
    pub fn open(path: impl AsRef<Path>) -> Result<Root> {
        let path = path.as_ref().to_owned();
        let fd = open(
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| error::nix("open", path.display().to_string(), e))?;
        Ok(Root { fd, path })
    }

    /// The root's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `path` (absolute or relative, both taken inside the root) as an `O_PATH`
    /// fd, confined to the root.
    ///
    /// # Errors
    /// [`Error::Escape`] when the fallback walk meets a symlink or `..`; an openat2
    /// failure (ENOENT, ...) otherwise.
    pub fn resolve(&self, path: impl AsRef<Path>) -> Result<OwnedFd> {
        self.open_in(path.as_ref(), OFlag::O_PATH)
    }

    fn open_in(&self, path: &Path, flags: OFlag) -> Result<OwnedFd> {
        let rel = relative(path);
        let c = cpath("path", &rel)?;
        match sys::openat2(
            self.fd.as_fd(),
            &c,
            flags.bits(),
            sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(fd),
            Err(libc::ENOSYS) => self.walk(&rel, flags),
            Err(e @ (libc::EXDEV | libc::ELOOP)) => Err(Error::Escape {
                root: self.path.display().to_string(),
                path: path.display().to_string(),
                source: std::io::Error::from_raw_os_error(e),
            }),
            Err(e) => Err(error::sys(
                "openat2",
                format!(
                    "{} in root {} (RESOLVE_IN_ROOT)",
                    path.display(),
                    self.path.display()
                ),
                e,
            )),
        }
    }

    fn walk(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd> {
        let escape = |e: i32| Error::Escape {
            root: self.path.display().to_string(),
            path: rel.display().to_string(),
            source: std::io::Error::from_raw_os_error(e),
        };
        let mut cur = nix::unistd::dup(&self.fd).map_err(|e| error::nix("dup", "root fd", e))?;
        for comp in rel.components() {
            match comp {
                Component::Normal(n) => {
                    let next = nix::fcntl::openat(
                        &cur,
                        n,
                        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| error::nix("openat", rel.display().to_string(), e))?;
                    let st = nix::sys::stat::fstat(&next)
                        .map_err(|e| error::nix("fstat", rel.display().to_string(), e))?;
                    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                        return Err(escape(libc::ELOOP));
                    }
                    cur = next;
                }
                Component::CurDir => {}
                _ => return Err(escape(libc::EXDEV)),
            }
        }
        if flags.contains(OFlag::O_PATH) {
            Ok(cur)
        } else {
            nix::fcntl::openat(&cur, ".", flags | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| error::nix("openat", rel.display().to_string(), e))
        }
    }

    /// Creates `path` and its missing parents inside the root (mkdirat(2) on confined
    /// fds), as a mount point.
    pub fn create_dir_all(&self, path: impl AsRef<Path>) -> Result<()> {
        let rel = relative(path.as_ref());
        let mut done = PathBuf::new();
        for comp in rel.components() {
            let Component::Normal(n) = comp else { continue };
            let parent = self.resolve(&done)?;
            match nix::sys::stat::mkdirat(&parent, n, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => {
                    return Err(error::nix(
                        "mkdirat",
                        format!("{}/{}", self.path.display(), done.join(n).display()),
                        e,
                    ));
                }
            }
            done.push(n);
        }
        Ok(())
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn relative(p: &Path) -> PathBuf {
    let r = p.strip_prefix("/").unwrap_or(p);
    if r.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        r.to_owned()
    }
}
