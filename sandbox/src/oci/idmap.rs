//! Idmapped bind mounts (`mounts[].uidMappings`/`gidMappings`): a detached clone of
//! the source made idmapped through a user namespace holding the mount's maps, which
//! the container's process attaches in its own mount namespace.

use std::io::Write;
use std::path::Path;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use nskit::{DetachedMount, Namespace, NsHandle};

use super::bundle::MountIdmap;
use crate::error::{Error, Result, ioe};

/// A user namespace whose uid_map and gid_map hold `uid` and `gid` as
/// (inside, outside, count) lines: made by a short
/// child that unshares it and waits while this process writes the maps and opens
/// the namespace; the handle keeps the namespace alive after the child exits.
pub(crate) fn userns(uid: &[(u32, u32, u32)], gid: &[(u32, u32, u32)]) -> Result<NsHandle> {
    let flags = nix::fcntl::OFlag::O_CLOEXEC;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(flags).map_err(|e| Error::io("pipe2", "userns", e.into()))?;
    let (go_r, go_w) =
        nix::unistd::pipe2(flags).map_err(|e| Error::io("pipe2", "userns", e.into()))?;
    // SAFETY: the child makes raw system calls only (unshare, write, read, _exit):
    // no allocation or lock, so forking a process that may have threads is sound.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            use std::os::fd::AsRawFd;
            // SAFETY: raw syscalls on fds this process owns and a stack buffer.
            unsafe {
                // The parent's ends, copied by fork: holding go_w would keep the
                // read below from ever seeing end of file.
                libc::close(go_w.as_raw_fd());
                libc::close(ready_r.as_raw_fd());
                let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
                let b = [u8::from(ok)];
                libc::write(ready_w.as_raw_fd(), b.as_ptr().cast(), 1);
                let mut x = [0u8; 1];
                libc::read(go_r.as_raw_fd(), x.as_mut_ptr().cast(), 1);
                libc::_exit(0)
            }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(Error::io("fork", "userns holder", e.into())),
    };
    drop((ready_w, go_r));
    let made = (|| {
        let mut b = [0u8; 1];
        let n = nix::unistd::read(&ready_r, &mut b)
            .map_err(|e| Error::io("read", "userns holder", e.into()))?;
        if n != 1 || b[0] != 1 {
            return Err(Error::Config(
                "idmapped mount: unshare(CLONE_NEWUSER) failed: this kernel or its \
                 settings (user.max_user_namespaces) give no user namespaces"
                    .into(),
            ));
        }
        let pid = child.as_raw();
        for (file, maps) in [("uid_map", uid), ("gid_map", gid)] {
            let p = format!("/proc/{pid}/{file}");
            let text: String = maps
                .iter()
                .map(|(c, h, n)| format!("{c} {h} {n}\n"))
                .collect();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(ioe("write", Path::new(&p)))?;
        }
        Ok(NsHandle::open(pid, Namespace::USER)?)
    })();
    drop(go_w);
    let _ = waitpid(Pid::from_raw(child.as_raw()), None);
    made
}

/// The detached, idmapped clones of the idmapped mounts' sources, by mount index;
/// attach them with [`nskit::MountSpec::detached`].
pub(crate) fn detached_mounts(
    spec: &oci_spec::runtime::Spec,
    idmaps: &[MountIdmap],
) -> Result<Vec<(usize, DetachedMount)>> {
    let mounts = spec.mounts().clone().unwrap_or_default();
    let mut out = Vec::with_capacity(idmaps.len());
    for im in idmaps {
        let Some(m) = mounts.get(im.index) else {
            continue;
        };
        let src = m.source().clone().unwrap_or_default();
        let field = format!("mounts[{}] ({})", im.index, m.destination().display());
        // The tree an rbind copies; the idmap goes on all of it or on its top alone.
        let rbind = m.options().iter().flatten().any(|o| o == "rbind");
        let tree = DetachedMount::clone_tree(&src, rbind)
            .map_err(|e| Error::Config(format!("config.json {field}: {e}")))?;
        // The kernel shows an on-disk id as the user namespace maps it *down*
        // (inside -> outside): for hostID on disk to show as containerID, the
        // namespace maps hostID (inside) to containerID (outside).
        let inverse = |m: &[(u32, u32, u32)]| -> Vec<(u32, u32, u32)> {
            m.iter().map(|&(c, h, n)| (h, c, n)).collect()
        };
        let ns = userns(&inverse(&im.uid), &inverse(&im.gid))?;
        tree.idmap_tree(&ns, im.recursive).map_err(|e| {
            Error::Config(format!(
                "config.json {field}: the kernel refused to idmap {} ({e}): idmapped \
                 mounts need Linux 5.12 and a filesystem that supports them (ext4, xfs, \
                 btrfs; tmpfs from 6.3; overlay from 5.19){}",
                src.display(),
                if im.recursive {
                    "; ridmap of a tree needs every filesystem in it to support them"
                } else {
                    ""
                }
            ))
        })?;
        out.push((im.index, tree));
    }
    Ok(out)
}
