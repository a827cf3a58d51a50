//! The state directory: one folder per container under the state root (default
//! `/run/sandbox`), locked (flock on the folder itself) by the supervising `sandbox
//! run` for its lifetime, holding `state.json` and `layers/`: a tmpfs of the
//! container's own holding `config.json` (the OCI spec), the init layer, the upper
//! layer and its work directory, and the overlay mount point `layers/rootfs/` (with
//! the container's `/dev` tmpfs mounted on it). What is made and removed on every run
//! lives on that tmpfs: on a disk filesystem each new inode and directory costs (ext4
//! scans recently deleted inodes on create, and discards each freed block), which
//! measured 15-20 ms per run on ext4 here; a tmpfs is released whole by one unmount,
//! and its pages are charged to the container's memory cgroup as it writes.
//!
//! A container whose lock can be taken has lost its supervisor: `sandbox gc` releases
//! what it left (processes, cgroup, overlay mount, state), found through its own
//! state only.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cgroupkit::{Cgroup, CgroupPath, Hierarchy, Leftovers};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ioe};

/// Default state root.
pub const DEFAULT_STATE_ROOT: &str = "/run/sandbox";
/// Environment variable overriding the state root.
pub const STATE_ROOT_ENV: &str = "SANDBOX_ROOT";
/// File names in a container's folder.
pub const STATE_FILE: &str = "state.json";
/// The OCI spec, inside [`LAYERS_DIR`] (`sandbox exec` reads it while the container
/// runs).
pub const CONFIG_FILE: &str = "layers/config.json";
/// The per-container tmpfs holding the init, upper and work directories.
pub const LAYERS_DIR: &str = "layers";
/// The overlay mount point, inside [`LAYERS_DIR`].
pub const ROOTFS_DIR: &str = "layers/rootfs";

/// Where a container is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being assembled.
    Creating,
    /// Assembled; its process waits at the exec gate for `start` (OCI `created`).
    Created,
    /// Its process runs.
    Running,
    /// Its process exited with this status (kept with `--keep`).
    Exited(i32),
}

/// `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// Container name.
    pub name: String,
    /// Random id, part of the cgroup name.
    pub id: String,
    /// The supervising `sandbox run`.
    pub supervisor: i32,
    /// The container's first process (host pid), once started.
    pub pid: Option<i32>,
    /// The cgroup path (relative to each hierarchy root).
    pub cgroup: String,
    /// The image (store key) the rootfs is made from, if any.
    pub image: Option<String>,
    /// The command.
    pub command: Vec<String>,
    /// Status.
    pub status: Status,
    /// Kept after exit (`--keep`).
    pub keep: bool,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The OCI bundle of a container made by `sandbox create` (none for `sandbox
    /// run`). Such a container has no supervisor: its caller (a containerd shim,
    /// conmon) reaps it, so `gc` leaves it to `sandbox delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// The spec's annotations (OCI state).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The start time of `pid` (field 22 of /proc/PID/stat, in clock ticks since
    /// boot): a pid whose start time differs is another process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// Creation time with nanoseconds (RFC 3339, UTC), for the OCI state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Created with `--no-new-keyring`: its processes (and `exec`'s) keep the
    /// caller's session keyring.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_keyring: bool,
}

/// The state root from `--root`, `$SANDBOX_ROOT` or the default.
///
/// A relative one is made absolute against the working directory here, once: the
/// paths recorded below it (a bundle's `root.path`, a pod's bundles) are read later
/// by processes with another working directory.
pub fn state_root(flag: Option<PathBuf>) -> PathBuf {
    let p = flag
        .or_else(|| std::env::var_os(STATE_ROOT_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT));
    std::path::absolute(&p).unwrap_or(p)
}

/// The mode of the state root: host users may pass through it but not list it;
/// each container's folder below is 0700 ([`restrict`]), so the root filesystems
/// mounted there, with the image's setuid files and devices, are out of their
/// reach (the CVE-2021-41091 class). 0711 rather than 0700: a container in a user
/// namespace resolves its own folder as its mapped root.
pub const STATE_ROOT_MODE: u32 = 0o711;
/// The mode of a container's folder.
pub const CONTAINER_DIR_MODE: u32 = 0o700;

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::symlink_metadata(p).map_err(ioe("stat", p))?;
    if md.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(ioe("chmod", p))?;
    }
    Ok(())
}

/// Creates the state root (0711), or sets that mode on an existing one.
pub fn create_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(STATE_ROOT_MODE)
        .create(root)
        .map_err(ioe("mkdir", root))?;
    set_mode(root, STATE_ROOT_MODE)
}

/// Makes a container's folder 0700, owned by the container's root (`owner`, its
/// user namespace's root on the host) when it has one, before its root filesystem
/// is mounted in it.
pub fn restrict(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    set_mode(dir, CONTAINER_DIR_MODE)?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(dir, Some(u), Some(g)).map_err(ioe("chown", dir))?;
    }
    Ok(())
}

/// Checks a container name: `[A-Za-z0-9_.-]`, 1..=64, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Container {
            name: name.into(),
            what: "invalid name: use 1-64 of A-Z a-z 0-9 _ . - (not starting with .)".into(),
        })
    }
}

/// Takes an exclusive flock on the container folder `path` itself (no lock file to
/// create and remove); `block` waits for it.
pub fn lock(path: &Path, block: bool) -> Result<Option<File>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(ioe("open", path))?;
    let op = libc::LOCK_EX | if block { 0 } else { libc::LOCK_NB };
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(Error::io("flock", path, e));
    }
    Ok(Some(f))
}

/// Reads a container's state.
pub fn read(dir: &Path) -> Result<State> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read(&p).map_err(ioe("read", &p))?;
    serde_json::from_slice(&text).map_err(|source| Error::Json { path: p, source })
}

/// Writes a container's state atomically (temp file + rename).
pub fn write(dir: &Path, st: &State) -> Result<()> {
    let p = dir.join(STATE_FILE);
    let tmp = dir.join(".state.json.tmp");
    let text = serde_json::to_vec(st).map_err(|source| Error::Json {
        path: p.clone(),
        source,
    })?;
    std::fs::write(&tmp, text).map_err(ioe("write", &tmp))?;
    std::fs::rename(&tmp, &p).map_err(ioe("rename", &p))
}

/// Whether the container's supervisor still holds its lock.
pub fn supervised(dir: &Path) -> Result<bool> {
    Ok(lock(dir, false)?.is_none())
}

/// One container as listed by `ps`.
#[derive(Debug)]
pub struct Entry {
    /// Its folder.
    pub dir: PathBuf,
    /// Its state, when readable.
    pub state: Option<State>,
    /// Whether its supervisor is alive.
    pub supervised: bool,
}

/// Every container folder under `root`.
pub fn list(root: &Path) -> Result<Vec<Entry>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read_dir", root, e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let dir = e.path();
        // The pods' folder (`sandbox pod`): no container, and never collected as one.
        if !dir.is_dir() || e.file_name() == crate::pod::status::PODS_DIR {
            continue;
        }
        out.push(Entry {
            state: read(&dir).ok(),
            supervised: supervised(&dir)?,
            dir,
        });
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

/// Unmounts `path` (detached, with every mount below it) if it is a mount point; not
/// being one is fine. A symlink is not followed.
pub fn unmount(path: &Path) -> Result<()> {
    match nix::mount::umount2(
        path,
        nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
    ) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io("umount2", path, e.into())),
    }
}

/// Releases what a container holds on the host: kills what is left in its cgroup,
/// removes the cgroup, unmounts its rootfs (and /dev on it). A kept container keeps
/// its layers (the upper layer holds its writes) until [`remove_dir`]; any other
/// loses them here, the whole mount tree in one unmount. Each step runs even if an
/// earlier one failed; the first error is returned.
pub fn release(dir: &Path, st: &State) -> Result<()> {
    let mut first: Option<Error> = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    note(release_cgroup(&st.cgroup));
    note(release_mounts(dir, st));
    first.map_or(Ok(()), Err)
}

/// The mount half of [`release`].
pub fn release_mounts(dir: &Path, st: &State) -> Result<()> {
    if st.keep {
        unmount(&dir.join(ROOTFS_DIR))
    } else {
        unmount(&dir.join(LAYERS_DIR))
    }
}

fn release_cgroup(path: &str) -> Result<()> {
    let h = Hierarchy::detect()?;
    let cp = CgroupPath::new(path)?;
    match Cgroup::load(&h, &cp) {
        Ok(cg) => Ok(cg.delete_recursive(Leftovers::Kill)?),
        Err(cgroupkit::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes a container's folder (after [`release`]), its layers tmpfs first.
pub fn remove_dir(dir: &Path) -> Result<()> {
    unmount(&dir.join(LAYERS_DIR))?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove_dir_all", dir, e)),
    }
}

/// What `gc` did to one container.
#[derive(Debug)]
pub struct Collected {
    /// The container's folder.
    pub dir: PathBuf,
    /// Its name, if its state was readable.
    pub name: Option<String>,
}

/// Releases and removes every container under `root` whose supervisor is gone
/// (kept, exited containers stay: `sandbox rm` removes them).
pub fn gc(root: &Path) -> Result<Vec<Collected>> {
    let mut out = Vec::new();
    for e in list(root)? {
        if e.supervised {
            continue;
        }
        // Made by `create`: its caller owns it and ends it with `delete`.
        if e.state.as_ref().is_some_and(|s| s.bundle.is_some()) {
            continue;
        }
        let Some(_lock) = lock(&e.dir, false)? else {
            continue;
        };
        match &e.state {
            Some(st) if st.keep && matches!(st.status, Status::Exited(_)) => {
                release(&e.dir, st)?;
                continue;
            }
            Some(st) => release(&e.dir, st)?,
            None => unmount(&e.dir.join(LAYERS_DIR))?,
        }
        remove_dir(&e.dir)?;
        out.push(Collected {
            name: e.state.map(|s| s.name),
            dir: e.dir,
        });
    }
    Ok(out)
}
