//! The container's root filesystem: an init layer (hostname, hosts, resolv.conf,
//! /dev device files and every mount point) on top of the image layers, a
//! per-container upper layer, overlaid at the state folder's `rootfs/`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::{Error, Result, ioe};
use crate::spec::DEVICES;

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

/// Writes the init layer for `spec` into `layer` (an empty directory).
///
/// Mount points are made here, in a layer of our own, so that a symlink in the
/// image cannot redirect one: the init layer's directory hides whatever the image
/// has at that path.
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
    let dev = layer.join("dev");
    for d in ["pts", "shm", "mqueue"] {
        mkdirs(&dev.join(d))?;
    }
    for d in DEVICES {
        write(&dev.join(d), b"")?;
    }
    symlink("pts/ptmx", &dev.join("ptmx"))?;
    symlink("/proc/self/fd", &dev.join("fd"))?;
    symlink("/proc/self/fd/0", &dev.join("stdin"))?;
    symlink("/proc/self/fd/1", &dev.join("stdout"))?;
    symlink("/proc/self/fd/2", &dev.join("stderr"))?;
    mkdirs(&layer.join("proc"))?;
    mkdirs(&layer.join("sys"))?;
    for m in spec.mounts().iter().flatten() {
        let p = inside(layer, m.destination())?;
        let file_bind = m.typ().as_deref() == Some("bind")
            && m.source()
                .as_deref()
                .is_some_and(|s| s.exists() && !s.is_dir());
        if p.exists() {
            continue;
        }
        if file_bind {
            write(&p, b"")?;
        } else {
            mkdirs(&p)?;
        }
    }
    if let Some(p) = spec.process() {
        let cwd = inside(layer, p.cwd())?;
        mkdirs(&cwd)?;
    }
    if let Some((uid, gid)) = owner {
        chown_tree(layer, uid, gid)?;
    }
    Ok(())
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
    Ok(())
}
