//! Loading with aya without its parse of the whole kernel BTF.
//!
//! `aya::EbpfLoader::new()` parses /sys/kernel/btf/vmlinux whatever BTF is handed to
//! it afterwards (aya-rs/aya#1172): ~30 MB of heap and ~200 ms here, the peak RSS of
//! a process that loads a program. Our loaders hand aya a stub BTF holding only the
//! attach targets (`.btf(Some(..))` and each program's `load`), so that parse is
//! wasted: [`without_vmlinux`] runs the load on a thread with its own mount
//! namespace in which an empty tmpfs file covers /sys/kernel/btf/vmlinux, and `new()`
//! finds nothing to parse. The namespace goes with the thread; the programs, maps
//! and links it made are fds of the process and stay.

use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// The directory aya reads `vmlinux` from.
const SYS_BTF: &str = "/sys/kernel/btf";

/// Runs `f` on a new thread that sees an empty /sys/kernel/btf/vmlinux. Without
/// CAP_SYS_ADMIN (or if any step fails) `f` runs on that thread with the real file,
/// as without this function; the returned flag says whether the cover was in place.
pub(crate) fn without_vmlinux<T: Send>(f: impl FnOnce() -> T + Send) -> (T, bool) {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let ok = cover().is_ok();
            (f(), ok)
        });
        match h.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// On the calling thread: a private mount namespace with a tmpfs over
/// /sys/kernel/btf holding an empty `vmlinux`.
fn cover() -> std::io::Result<()> {
    // CLONE_FS: this thread's root and cwd become its own, which the new mount
    // namespace requires in a multi-threaded process.
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)?;
    // Nothing mounted here propagates back to the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some("probes-btf-stub"),
        SYS_BTF,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )?;
    std::fs::write(Path::new(SYS_BTF).join("vmlinux"), b"")
}
