//! The mounts the child makes inside its own mount namespace, and the host fact that
//! decides how it changes root.

use std::path::Path;

use cgroupkit::Cgroup;
use nskit::{MountSpec, MsFlags};
use oci_spec::runtime::{Mount, Spec};

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

/// A `cgroup` (or `cgroup2`) mount: the container's own cgroup directories bound in
/// (as runc does without a cgroup namespace, and what a cgroup namespace would show
/// with one), never the host's whole tree. On pure v2 the one directory goes at the
/// destination; on v1 and hybrid hosts a tmpfs there holds one directory per
/// hierarchy the container's cgroup spans (`cpu`, `memory`, ..., `unified`), made
/// read-only after when the mount is.
fn cgroup_mounts(m: &Mount, cg: &Cgroup, out: &mut Vec<MountSpec>) {
    let dst = m.destination();
    let (flags, ..) = crate::rootfs::mount_options(m);
    let bind_flags =
        flags & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let dirs = cg.dirs();
    if let [d] = dirs
        && d.version == cgroupkit::Version::V2
    {
        out.push(MountSpec::rbind(&d.path, dst).flags(bind_flags));
        return;
    }
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    out.push(MountSpec::new(
        "tmpfs",
        "cgroup",
        dst,
        base,
        Some("mode=755"),
    ));
    for d in dirs {
        let Some(name) = d.mount_point.file_name() else {
            continue;
        };
        out.push(
            MountSpec::bind(&d.path, dst.join(name))
                .flags(bind_flags)
                .create_dir(),
        );
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        out.push(MountSpec::new(
            "tmpfs",
            "cgroup",
            dst,
            base | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            Some("mode=755"),
        ));
    }
}

/// The nskit mounts the child makes: the spec's mounts but those made on the host
/// (/dev, [`crate::rootfs::mount_dev`]), then masked and read-only paths.
pub(crate) fn mounts(
    spec: &Spec,
    rootfs: &Path,
    cg: &Cgroup,
    detached: &[(usize, nskit::DetachedMount)],
) -> Vec<MountSpec> {
    let mut out = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if crate::rootfs::is_host_side(m) {
            continue;
        }
        if matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")) {
            cgroup_mounts(m, cg, &mut out);
            continue;
        }
        let (flags, d, bind, rec) = crate::rootfs::mount_options(m);
        let dst = m.destination();
        let src = m.source().clone().unwrap_or_default();
        let ms = if let Some((_, d)) = detached.iter().find(|(at, _)| *at == i) {
            // An idmapped clone of the source, made by the runtime: attached in
            // its place, with the bind's flags after.
            let f = if rec { flags | MsFlags::MS_REC } else { flags };
            MountSpec::detached(d, dst).flags(f)
        } else if bind {
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
        out.push(ms);
        // A propagation other than the default private: changed on the new mount.
        if let Some(flags) = m
            .options()
            .iter()
            .flatten()
            .filter(|o| !matches!(o.as_str(), "private" | "rprivate"))
            .find_map(|o| crate::oci::bundle::propagation_flags(o))
        {
            out.push(MountSpec::new(
                "none",
                "none",
                dst,
                MsFlags::from_bits_truncate(flags),
                None,
            ));
        }
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
    // root.readonly: the root itself, once everything is mounted on it (as runc
    // remounts "/" after its mounts); what is mounted on it keeps its own flags.
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        out.push(MountSpec::new(
            "none",
            "none",
            "/",
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None,
        ));
    }
    out
}
