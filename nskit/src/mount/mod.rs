//! Mounts: bind, tmpfs, proc, sysfs, devpts, mqueue, read-only remounts, propagation,
//! unmount, pivot_root, overlay, and the fd-based mount API (5.2+) with idmapped
//! mounts (5.12+), with the classic mount(2) calls where the kernel lacks it.
//!
//! Everything here acts on the **calling process's** mount namespace. Run it in a
//! child with its own mount namespace ([`Spawn`](crate::Spawn) with
//! [`Namespace::MOUNT`](crate::Namespace::MOUNT), or after
//! [`unshare`](crate::unshare)) unless you mean to change the host's mounts.

mod classic;
mod fd_api;
mod overlay;
mod pivot;
mod root;

pub use classic::{MountSpec, Propagation, remount_readonly, set_propagation, unmount};
pub use fd_api::{DetachedMount, bind};
pub use overlay::Overlay;
pub use pivot::pivot_root;
pub use root::Root;

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use nix::mount::MsFlags;

use crate::error::{Error, Result};

pub(crate) fn cpath(what: &'static str, p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Nul {
        what,
        value: p.display().to_string(),
    })
}

pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    // A decimal fd never holds a NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

pub(crate) fn cwd_fd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a sentinel the kernel accepts wherever a dirfd is taken; it
    // is never closed.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}
