//! The mounts the child makes inside its own mount namespace, and the host fact that
//! decides how it changes root.

use std::path::Path;

use nskit::{MountSpec, MsFlags};
use oci_spec::runtime::Spec;

/// The mount table the cgroup hierarchies and the initramfs check are read from (one
/// read: the kernel formats every mount for each).
pub(crate) const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Whether `/` is the initramfs (pivot_root is impossible there), from mountinfo text.
pub(crate) fn root_is_initramfs(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .any(|(a, b)| a.split(' ').nth(4) == Some("/") && b.starts_with("rootfs "))
}

/// The nskit mounts the child makes: the spec's mounts but those made on the host
/// (/dev, [`crate::rootfs::mount_dev`]), then masked and read-only paths.
pub(crate) fn mounts(spec: &Spec, rootfs: &Path) -> Vec<MountSpec> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if crate::rootfs::is_host_side(m) {
            continue;
        }
        let (flags, d, bind, rec) = crate::rootfs::mount_options(m);
        let dst = m.destination();
        let src = m.source().clone().unwrap_or_default();
        let spec = if bind {
            let b = if rec {
                MountSpec::rbind(&src, dst)
            } else {
                MountSpec::bind(&src, dst)
            };
            b.flags(flags)
        } else {
            let typ = m.typ().clone().unwrap_or_default();
            MountSpec::new(
                &typ,
                &src,
                dst,
                flags,
                (!d.is_empty()).then_some(d.as_str()),
            )
        };
        out.push(spec);
    }
    let Some(linux) = spec.linux() else {
        return out;
    };
    for p in linux.masked_paths().iter().flatten() {
        // Whether it is a file or a directory: the host's procfs and sysfs show the
        // same kernel's layout; paths the kernel lacks are skipped (as runc does).
        match std::fs::metadata(p) {
            Ok(md) if md.is_dir() => out.push(MountSpec::new(
                "tmpfs",
                "tmpfs",
                p,
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None,
            )),
            Ok(_) => out.push(MountSpec::bind("/dev/null", p)),
            Err(_) => {}
        }
    }
    for p in linux.readonly_paths().iter().flatten() {
        if Path::new(p).exists() {
            let src = rootfs.join(p.trim_start_matches('/'));
            out.push(
                MountSpec::rbind(src, p)
                    .readonly()
                    .flags(MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC),
            );
        }
    }
    out
}
