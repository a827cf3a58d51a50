//! The container's root filesystem, made on the host before the clone: a tmpfs of the
//! container's own (the state folder's `layers/`) holding an init layer (hostname,
//! hosts, resolv.conf and every mount point outside /dev) that goes on top of the
//! image layers, and the upper layer; the overlay at `layers/rootfs`, `nodev`; and on
//! it the container's /dev, a tmpfs holding mount points and bind mounts of the
//! host's device nodes. The child's recursive bind of the root takes /dev along, so it
//! mounts only what belongs to its own namespaces (/proc, /sys, devpts, mqueue, ...).

use std::path::{Path, PathBuf};

use nskit::{MountSpec, MsFlags, Root};
use oci_spec::runtime::{Mount, Spec};

use crate::error::{Error, Result, ioe};
use crate::spec::{DEV, DEVICES};

fn mkdirs(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(ioe("mkdir", p))
}

fn write(p: &Path, text: &[u8]) -> Result<()> {
    if let Some(d) = p.parent() {
        mkdirs(d)?;
    }
    std::fs::write(p, text).map_err(ioe("write", p))
}

fn symlink(target: &str, p: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, p).map_err(ioe("symlink", p))
}

/// `dest` inside `layer`, refusing `..`.
fn inside(layer: &Path, dest: &Path) -> Result<PathBuf> {
    let mut out = layer.to_path_buf();
    for c in dest.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => {
                return Err(Error::Config(format!(
                    "mount destination {} must be absolute without ..",
                    dest.display()
                )));
            }
        }
    }
    Ok(out)
}

/// mount(2) flags and filesystem data of an OCI mount's options, and whether it is a
/// bind (`rbind`: recursive).
pub fn mount_options(m: &Mount) -> (MsFlags, String, bool, bool) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut bind = m.typ().as_deref() == Some("bind");
    let mut rec = false;
    for o in m.options().iter().flatten() {
        match o.as_str() {
            // An rbind's flags go to every mount below it (mount_setattr with
            // AT_RECURSIVE, which `rro` needs: checked when the spec is read).
            "ro" | "rro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                rec = true;
            }
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            // The defaults: flags not set; private is the propagation every mount
            // of the container's namespace has (its root is made rprivate).
            "rw" | "suid" | "dev" | "exec" | "atime" => {}
            // Idmapped binds: made by the runtime (oci::bundle::MountIdmap).
            "idmap" | "ridmap" => {}
            // Propagation: applied after the mount (see `assembly::mounts`).
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "unbindable"
            | "runbindable" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","), bind, rec)
}

fn is_dev_tmpfs(m: &Mount) -> bool {
    m.destination() == Path::new(DEV) && m.typ().as_deref() == Some("tmpfs")
}

/// A bind of one of [`DEVICES`] onto the same path.
fn is_device_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        && m.source().as_deref() == Some(m.destination().as_path())
        && DEVICES
            .iter()
            .any(|d| m.destination() == Path::new(DEV).join(d).as_path())
}

/// Whether [`mount_dev`] makes this mount on the host (the child skips it).
pub fn is_host_side(m: &Mount) -> bool {
    is_dev_tmpfs(m) || is_device_bind(m)
}

/// Mounts the container's own tmpfs at `layers` (an empty directory), which holds its
/// init, upper and work directories and the overlay mount point. Mode 0711: the child
/// under `--userns` (not host root) must traverse it to reach the rootfs; nobody but
/// root can list it.
pub fn mount_layers(layers: &Path) -> Result<()> {
    MountSpec::new(
        "tmpfs",
        "sandbox-layers",
        layers,
        MsFlags::empty(),
        Some("mode=711"),
    )
    .mount()?;
    Ok(())
}

/// Writes the init layer for `spec` into `layer` (an empty directory).
///
/// Mount points are made here, in a layer of our own, so that a symlink in the
/// image cannot redirect one: the init layer's directory hides whatever the image
/// has at that path. Those under /dev are made in the /dev tmpfs ([`mount_dev`]).
/// The working directory is not made here: a directory here would hide an image's
/// symlink there, which must resolve (inside the root) instead; it is made in the
/// overlay when missing.
pub fn write_init_layer(layer: &Path, spec: &Spec, owner: Option<(u32, u32)>) -> Result<()> {
    let hostname = spec.hostname().clone().unwrap_or_default();
    write(
        &layer.join("etc/hostname"),
        format!("{hostname}\n").as_bytes(),
    )?;
    write(
        &layer.join("etc/hosts"),
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
            .as_bytes(),
    )?;
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    write(&layer.join("etc/resolv.conf"), &resolv)?;
    mkdirs(&layer.join("dev"))?;
    mkdirs(&layer.join("proc"))?;
    mkdirs(&layer.join("sys"))?;
    for m in spec.mounts().iter().flatten() {
        if m.destination().starts_with(DEV) && spec_has_dev_tmpfs(spec) {
            continue;
        }
        let p = inside(layer, m.destination())?;
        if p.exists() {
            continue;
        }
        if is_file_bind(m) {
            write(&p, b"")?;
        } else {
            mkdirs(&p)?;
        }
    }
    if let Some((uid, gid)) = owner {
        chown_tree(layer, uid, gid)?;
    }
    Ok(())
}

/// A bind mount of a file (its mount point is a file).
fn is_file_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        && m.source()
            .as_deref()
            .is_some_and(|s| s.exists() && !s.is_dir())
}

fn spec_has_dev_tmpfs(spec: &Spec) -> bool {
    spec.mounts().iter().flatten().any(is_dev_tmpfs)
}

/// Mounts the container's /dev on `rootfs/dev` (a directory of the init layer): the
/// spec's /dev tmpfs (owned by the container's root under a user namespace), the
/// mount points of the spec's other mounts under /dev, the usual symlinks (ptmx, fd,
/// stdin, stdout, stderr), and bind mounts of the host's [`DEVICES`] made `nosuid`
/// and `noexec` (a bind takes its source's flags, and the host's /dev has neither).
/// Targets are resolved inside `rootfs` (openat2 `RESOLVE_IN_ROOT`).
pub fn mount_dev(rootfs: &Path, spec: &Spec, owner: Option<(u32, u32)>) -> Result<()> {
    let mounts: Vec<&Mount> = spec.mounts().iter().flatten().collect();
    let Some(dev) = mounts.iter().find(|m| is_dev_tmpfs(m)) else {
        return Ok(());
    };
    let root = Root::open(rootfs)?;
    let (flags, mut data, _, _) = mount_options(dev);
    if let Some((uid, gid)) = owner {
        data.push_str(&format!(",uid={uid},gid={gid}"));
    }
    let src = dev.source().clone().unwrap_or_else(|| "tmpfs".into());
    MountSpec::new(
        "tmpfs",
        &src,
        DEV,
        flags,
        Some(data.trim_start_matches(',')),
    )
    .mount_in(&root)?;
    // A fresh tmpfs of ours: nothing in it can redirect a path.
    let d = rootfs.join("dev");
    for m in mounts.iter().filter(|m| m.destination().starts_with(DEV)) {
        if is_dev_tmpfs(m) {
            continue;
        }
        let p = inside(rootfs, m.destination())?;
        if is_file_bind(m) {
            write(&p, b"")?;
        } else {
            mkdirs(&p)?;
        }
    }
    symlink("pts/ptmx", &d.join("ptmx"))?;
    symlink("/proc/self/fd", &d.join("fd"))?;
    symlink("/proc/self/fd/0", &d.join("stdin"))?;
    symlink("/proc/self/fd/1", &d.join("stdout"))?;
    symlink("/proc/self/fd/2", &d.join("stderr"))?;
    if let Some((uid, gid)) = owner {
        chown_tree(&d, uid, gid)?;
    }
    for m in mounts.iter().filter(|m| is_device_bind(m)) {
        let dst = m.destination();
        let (flags, ..) = mount_options(m);
        // nskit sets a bind's per-mount flags with its second call.
        MountSpec::bind(dst, dst).flags(flags).mount_in(&root)?;
    }
    Ok(())
}

/// Sets the per-mount flags of the mount at `at` (a bind remount).
fn remount(at: &Path, flags: MsFlags, shown: &Path) -> Result<()> {
    nix::mount::mount(
        None::<&str>,
        at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .map_err(|e| Error::io("mount (bind remount)", shown, e.into()))
}

/// Chowns every entry under `p` (not following symlinks).
pub fn chown_tree(p: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(ioe("lchown", p))?;
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).map_err(ioe("read_dir", p))?.flatten() {
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Mounts the overlay: `lowers` top first; without `upper` it is read-only.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<()> {
    let mut o = nskit::Overlay::new();
    for l in lowers {
        o.lower(l);
    }
    if let Some((u, w)) = upper {
        o.upper(u, w);
    }
    o.mount(target)?;
    // nodev: a device node the container makes (it has CAP_MKNOD) cannot be opened;
    // there is no devices cgroup to refuse it.
    remount(target, MsFlags::MS_NODEV, target)
}
