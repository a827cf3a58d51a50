//! Entering the container's working directory safely (the CVE-2024-21626 class).
//!
//! Between clone and exec the child still holds fds the runtime opened on the host
//! (the state folder's lock, the cgroup directory given to clone3): with a working
//! directory of `/proc/self/fd/N`, or an exec path through one, the container
//! process would start in the host's tree, or run a host binary. So the child:
//! 1. first of all closes those fds (closing, not close-on-exec: they are reachable
//!    until exec, and the `--init` process, which never execs, would keep them);
//! 2. once its root is in place (the last step before exec), resolves the working
//!    directory inside it with openat2(2) `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`
//!    (5.6; `..` and symlinks stay inside, `/proc/self/fd/N` and the like are
//!    refused), and fchdir(2)s to it;
//! 3. checks with getcwd(2) that the result is reachable from its root (the kernel
//!    prefixes `(unreachable)` otherwise), as runc's fix does.
//!
//! It resolves in the child, after the mounts, because the directory may be on one
//! of them (a volume, a tmpfs): resolved from the host it would be the directory
//! under the mount, and an fd opened on the host is itself outside the new root.
//! The parent uses [`nskit::Root`] (the same resolution, but allocating, which a
//! child between clone and exec must not) to make a missing directory inside the
//! overlay ([`ensure`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Makes the working directory in the mounted overlay `rootfs` when it is missing
/// there (as Docker does), resolved with [`nskit::Root`] so that the image's
/// symlinks stay inside the root; a new directory belongs to `owner` (container root
/// under a user namespace). An existing one is left as it is: the child resolves it
/// again after its mounts.
pub(crate) fn ensure(rootfs: &Path, cwd: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let root = nskit::Root::open(rootfs)?;
    match root.resolve(cwd) {
        Ok(_) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    root.create_dir_all(cwd)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EROFS) => Error::Workdir {
                path: cwd.display().to_string(),
                what: "does not exist in the read-only root filesystem (create it in the image)",
                source: std::io::Error::from_raw_os_error(libc::EROFS),
            },
            _ => e.into(),
        })?;
    if let Some((uid, gid)) = owner {
        let fd = root.resolve(cwd)?;
        nix::unistd::fchownat(
            &fd,
            "",
            Some(uid.into()),
            Some(gid.into()),
            nix::fcntl::AtFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| {
            Error::io(
                "fchownat",
                rootfs.join(cwd.strip_prefix("/").unwrap_or(cwd)),
                e.into(),
            )
        })?;
    }
    Ok(())
}

/// What failed in the child, sent over the report pipe (one byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    /// openat2 / fchdir of the directory.
    Enter = 1,
    /// getcwd found the directory outside the root.
    Outside = 2,
}

/// Prepares entering the working directory `cwd` (the spec's `process.cwd`,
/// absolute): the child's two steps and the parent's end of their report.
pub(crate) fn prepare(cwd: &Path, close: Vec<RawFd>) -> Result<(CloseFds, Enter, Report)> {
    let bytes = cwd.as_os_str().as_bytes();
    if !bytes.starts_with(b"/") {
        return Err(Error::Config(format!(
            "working directory {}: must be an absolute path inside the container",
            cwd.display()
        )));
    }
    let trimmed: &[u8] = match bytes.iter().position(|b| *b != b'/') {
        Some(i) => &bytes[i..],
        None => b".",
    };
    let rel = CString::new(trimmed).map_err(|_| {
        Error::Config(format!(
            "working directory {} holds a NUL byte",
            cwd.display()
        ))
    })?;
    // Non-blocking: the child writes its byte before it fails its step, so the byte
    // is there once the spawn has reported the failure; the read must not wait for
    // the write ends that a still-exiting child (or its --init) holds.
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| Error::io("pipe2", "working directory report", e.into()))?;
    let mut close = close;
    close.push(report_r.as_raw_fd());
    Ok((
        CloseFds(close),
        Enter { rel, report_w },
        Report {
            shown: cwd.display().to_string(),
            report_r,
        },
    ))
}

/// The runtime's fds the child closes first.
#[derive(Debug)]
pub(crate) struct CloseFds(Vec<RawFd>);

impl CloseFds {
    /// In the child, before any other step. Async-signal-safe (close(2) only).
    pub(crate) fn apply(&self) -> io::Result<()> {
        for fd in &self.0 {
            // SAFETY: the fd numbers were open in the parent when it cloned; the
            // child closes its own copies (the parent keeps its own).
            unsafe { libc::close(*fd) };
        }
        Ok(())
    }
}

/// The child's step that enters the directory.
#[derive(Debug)]
pub(crate) struct Enter {
    /// Relative to the root (no leading `/`), NUL-terminated; `.` for the root.
    rel: CString,
    /// The child writes a [`Stage`] byte here when it fails (close-on-exec).
    report_w: OwnedFd,
}

impl Enter {
    /// In the child, once its root is in place: enters the directory confined to
    /// the root and checks it is reachable from it. Async-signal-safe: raw syscalls
    /// on data prepared in the parent, a stack buffer.
    pub(crate) fn apply(&self) -> io::Result<()> {
        if let Err(e) = enter_in_root(&self.rel) {
            self.report(Stage::Enter);
            return Err(e);
        }
        if !cwd_reachable() {
            self.report(Stage::Outside);
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        // Nothing is left to report: closed now rather than at exec, so the program
        // cannot be named through it (`/proc/self/fd/N`) either.
        // SAFETY: this is the child's last step; it execs or exits next and never
        // uses or drops its copy of `report_w` again.
        unsafe { libc::syscall(libc::SYS_close, self.report_w.as_raw_fd()) };
        Ok(())
    }

    fn report(&self, stage: Stage) {
        let b = [stage as u8];
        // SAFETY: a one-byte buffer on the stack; write(2) is async-signal-safe.
        unsafe { libc::write(self.report_w.as_raw_fd(), b.as_ptr().cast(), 1) };
    }
}

/// The parent's end of the child's report.
#[derive(Debug)]
pub(crate) struct Report {
    /// The directory as given, for messages.
    shown: String,
    report_r: OwnedFd,
}

impl Report {
    /// After a failed spawn: the working directory's own error, if it is what failed.
    pub(crate) fn failure(&self, cause: &nskit::Error) -> Option<Error> {
        let mut b = [0u8; 1];
        let n = nix::unistd::read(&self.report_r, &mut b).ok()?;
        let what = match (n, b[0]) {
            (1, x) if x == Stage::Enter as u8 => {
                "cannot be entered inside the container's root (openat2 RESOLVE_IN_ROOT | \
                 RESOLVE_NO_MAGICLINKS): it must be a directory there, and /proc/*/fd \
                 paths are refused"
            }
            (1, x) if x == Stage::Outside as u8 => {
                "is outside the container's root after chdir: refused as a breakout attempt"
            }
            _ => return None,
        };
        Some(Error::Workdir {
            path: self.shown.clone(),
            what,
            source: io::Error::from_raw_os_error(cause.raw_os_error().unwrap_or(libc::EINVAL)),
        })
    }
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(root, rel, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
/// from `/` (the new root), then fchdir; plain chdir + the getcwd check on kernels
/// before 5.6.
fn enter_in_root(rel: &CString) -> io::Result<()> {
    // SAFETY: a literal NUL-terminated path.
    let root = unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if root < 0 {
        return Err(io::Error::last_os_error());
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // EAGAIN: a `..` lookup raced with a rename or mount somewhere on the system
    // (openat2(2) asks the caller to retry); bounded.
    let mut tries = 0;
    let (fd, open_err) = loop {
        // SAFETY: root is open, rel NUL-terminated, `how` a valid open_how whose size
        // is passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root,
                rel.as_ptr(),
                &raw const how,
                std::mem::size_of::<OpenHow>(),
            )
        } as RawFd;
        let e = io::Error::last_os_error();
        tries += 1;
        if fd < 0 && e.raw_os_error() == Some(libc::EAGAIN) && tries < 64 {
            continue;
        }
        break (fd, e);
    };
    // SAFETY: closing our own fd.
    unsafe { libc::close(root) };
    if fd >= 0 {
        // SAFETY: fd is the directory just opened; closed right after.
        let r = unsafe { libc::fchdir(fd) };
        let e = io::Error::last_os_error();
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        if r == 0 { Ok(()) } else { Err(e) }
    } else if open_err.raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: chdir on "/" then the NUL-terminated relative path.
        let r = unsafe {
            if libc::chdir(c"/".as_ptr()) == 0 {
                libc::chdir(rel.as_ptr())
            } else {
                -1
            }
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    } else {
        Err(open_err)
    }
}

/// Whether getcwd(2) finds the working directory reachable from the root: the
/// kernel returns a path starting with `(unreachable)` otherwise (and ENOENT for an
/// unlinked one).
fn cwd_reachable() -> bool {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is writable for its length; the raw syscall (no libc wrapper,
    // which may rewrite the result).
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    n > 0 && buf[0] == b'/'
}
