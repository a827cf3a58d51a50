//! pivot_root(2) the runc way, detaching the old root.

use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::error::{self, Result};

/// Makes `new_root` the process's root with pivot_root(2) and detaches the old root
/// (the runc way: `pivot_root(".", ".")` then `umount2(".", MNT_DETACH)`), so no path
/// leads back to it. `new_root` must be a mount point (bind it onto itself first) and
/// its parent mount not shared ([`set_propagation`](super::set_propagation) private on `/` first). Changes
/// the cwd to the new `/`.
///
/// Needs a mount namespace of its own; it fails with EINVAL when the current root is
/// the initramfs `rootfs`, which cannot be pivoted away from.
pub fn pivot_root(new_root: impl AsRef<Path>) -> Result<()> {
    let r = new_root.as_ref();
    let fd = open(
        r,
        OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| error::nix("open", r.display().to_string(), e))?;
    nix::unistd::fchdir(&fd).map_err(|e| error::nix("fchdir", r.display().to_string(), e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| error::nix("pivot_root", format!("{} (\".\", \".\")", r.display()), e))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| error::nix("umount2", "old root (MNT_DETACH)", e))?;
    nix::unistd::chdir("/").map_err(|e| error::nix("chdir", "/", e))
}
