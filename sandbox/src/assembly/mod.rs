//! Assembling and supervising one container, all-or-nothing: state folder, rootfs
//! overlay, cgroup, then clone into new namespaces with mounts, pivot_root and
//! dropped privileges; on any failure everything made so far is undone.
//!
//! - this module: [`run`], the state folder and the guard that undoes a start;
//! - `spawn`: the rootfs on the host, the cgroup, the child's spawn and its
//!   supervision (signals forwarded, exit status);
//! - `mounts`: the mounts the child makes in its own namespace;
//! - `workdir`: entering the working directory inside the root, fds closed first;
//! - `resources`: the spec's resources and namespaces in cgroupkit/nskit terms.

mod mounts;
mod resources;
pub(crate) mod spawn;
pub(crate) mod workdir;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use cgroupkit::{Cgroup, Leftovers};

use crate::error::{Error, Result, ioe};
use crate::spec::{self, RunOptions};
use crate::state::{self, State, Status};
use crate::store::{Image, Store};

pub use resources::resources;
pub(crate) use resources::{apply_unified, ns_kind};
pub use spawn::exit_code;

/// Where state and images live.
#[derive(Clone, Debug)]
pub struct Paths {
    /// State root (`/run/sandbox`).
    pub state: PathBuf,
    /// Layer store root (`/var/lib/sandbox`).
    pub store: PathBuf,
}

/// Where the root filesystem comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// An imported image, `NAME[:TAG]`.
    Image(String),
    /// A directory used as the single lower layer.
    Rootfs(PathBuf),
}

/// `sandbox run` options that are not part of the spec.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Container name (default: `c-<id>`).
    pub name: Option<String>,
    /// Root filesystem source.
    pub source: Source,
    /// A tiny PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    /// Keep the container (state and upper layer) after it exits.
    pub keep: bool,
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // SAFETY: b is a writable buffer of b.len() bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id());
        return format!("{:0w$x}", t & ((1u128 << (bytes * 8)) - 1), w = bytes * 2);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Undoes a container start unless disarmed.
pub(crate) struct Guard<'a> {
    pub(crate) dir: PathBuf,
    pub(crate) state: State,
    pub(crate) store: Option<&'a Store>,
    pub(crate) image: Option<Image>,
    pub(crate) cgroup: Option<Cgroup>,
    pub(crate) armed: bool,
}

impl Guard<'_> {
    pub(crate) fn teardown(&mut self, remove: bool) -> Result<()> {
        let mut first = None;
        // The cgroup is removed through the handle made at start (no new lookup);
        // without one, this start made none (cgroupkit undoes a partial create), and
        // a cgroup found by name could be someone else's.
        let released = match self.cgroup.take() {
            Some(cg) => {
                // The parents this start made go too (a failed start leaves no
                // empty cgroup); one that another container uses now stays (EBUSY).
                let made = cg.created().to_vec();
                let deleted = cg.delete_recursive(Leftovers::Kill).map_err(Error::from);
                for d in made.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
                let unmounted = state::release_mounts(&self.dir, &self.state);
                deleted.and(unmounted)
            }
            None => state::release_mounts(&self.dir, &self.state),
        };
        if let Err(e) = released {
            first.get_or_insert(e);
        }
        if remove {
            if let (Some(img), Some(store)) = (&self.image, self.store) {
                store.remove_user(&img.key(), &self.state.id);
            }
            if let Err(e) = state::remove_dir(&self.dir) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.teardown(true);
        }
    }
}

/// `opts` completed from the image's configuration, as Docker reads it: the
/// command is the image's Entrypoint followed by the arguments given, or by its Cmd
/// when none are; its Env comes first (a `--env` of the same name wins); its
/// WorkingDir (relative: from /) and User apply when `--workdir`/`--user` are absent.
/// A User that is a name (not UID[:GID]) is refused: naming the flag that overrides it.
fn with_image_config(
    opts: &RunOptions,
    config: Option<&oci_spec::image::Config>,
    image: &str,
) -> Result<RunOptions> {
    let mut o = opts.clone();
    let Some(c) = config else {
        return Ok(o);
    };
    let entrypoint = c.entrypoint().clone().unwrap_or_default();
    let args = if o.args.is_empty() {
        c.cmd().clone().unwrap_or_default()
    } else {
        o.args.clone()
    };
    o.args = entrypoint.into_iter().chain(args).collect();
    if o.args.is_empty() {
        return Err(Error::Config(format!(
            "image {image} names no command (no Entrypoint or Cmd): give one after --"
        )));
    }
    let mut env = c.env().clone().unwrap_or_default();
    spec::merge_env(&mut env, &o.env)?;
    o.env = env;
    if o.workdir.is_none() {
        o.workdir = c.working_dir().clone().filter(|w| !w.is_empty()).map(|w| {
            if w.starts_with('/') {
                w
            } else {
                format!("/{w}")
            }
        });
    }
    if o.user.is_none()
        && let Some(u) = c.user().as_deref().filter(|u| !u.is_empty())
    {
        let (uid, gid) = u.split_once(':').unwrap_or((u, ""));
        let uid: u32 = uid.parse().map_err(|_| {
            Error::Config(format!(
                "image {image}: its User {u:?} is a name, which this runtime does not \
                 look up in the image's /etc/passwd: give --user UID:GID"
            ))
        })?;
        let gid: u32 = if gid.is_empty() {
            uid
        } else {
            gid.parse().map_err(|_| {
                Error::Config(format!(
                    "image {image}: its User {u:?} names a group, which this runtime \
                     does not look up: give --user UID:GID"
                ))
            })?
        };
        o.user = Some((uid, gid));
    }
    Ok(o)
}

/// Creates, runs and removes one container; returns its exit status.
pub fn run(paths: &Paths, cfg: &RunConfig, opts: &RunOptions) -> Result<i32> {
    let id = random_hex(6);
    let name = cfg.name.clone().unwrap_or_else(|| format!("c-{id}"));
    state::check_name(&name)?;
    state::create_root(&paths.state)?;
    let store = Store::at(&paths.store);
    let dir = paths.state.join(&name);
    let rootfs = dir.join(state::ROOTFS_DIR);
    let spec = match &cfg.source {
        Source::Image(r) => {
            let img = store.get(r)?;
            let config = store.config(&img)?.and_then(|c| c.config().clone());
            spec::build(
                &with_image_config(opts, config.as_ref(), r)?,
                &name,
                &rootfs,
            )?
        }
        Source::Rootfs(_) => spec::build(opts, &name, &rootfs)?,
    };

    let st = State {
        name: name.clone(),
        id: id.clone(),
        supervisor: std::process::id() as i32,
        pid: None,
        cgroup: format!("sandbox-{name}-{id}"),
        image: match &cfg.source {
            Source::Image(r) => Some(r.clone()),
            Source::Rootfs(_) => None,
        },
        command: opts.args.clone(),
        status: Status::Creating,
        keep: cfg.keep,
        created: now_secs(),
        bundle: None,
        annotations: Default::default(),
        pid_start: None,
        created_at: Some(crate::oci::rfc3339_now()),
        no_new_keyring: false,
    };
    let lock = place(&paths.state, &dir, &st)?;
    let mut g = Guard {
        dir: dir.clone(),
        state: st,
        store: Some(&store),
        image: None,
        cgroup: None,
        armed: true,
    };
    // The lock is the runtime's only fd on the host's tree that the child inherits.
    let held: Vec<_> = lock.iter().map(AsRawFd::as_raw_fd).collect();
    let code = spawn::start_and_wait(&mut g, &held, cfg, &spec)?;
    g.state.status = Status::Exited(code);
    g.armed = false;
    if cfg.keep {
        state::write(&g.dir, &g.state)?;
        g.teardown(false)?;
    } else {
        g.teardown(true)?;
    }
    drop(lock);
    Ok(code)
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Makes the container's folder `dir` under `root` holding `st`: made under a hidden
/// name, locked, then renamed into place without replacing, so that gc never sees a
/// container folder that nobody holds and that has no state. Returns the lock.
pub(crate) fn place(root: &Path, dir: &Path, st: &State) -> Result<Option<std::fs::File>> {
    let tmp = root.join(format!(".{}.{}", st.name, st.id));
    std::fs::create_dir(&tmp).map_err(ioe("mkdir", &tmp))?;
    let lock = state::lock(&tmp, true)?;
    let placed = state::write(&tmp, st).and_then(|()| rename_noreplace(&tmp, dir, &st.name));
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(lock)
}

/// renameat2(RENAME_NOREPLACE) through the raw syscall (musl's libc lacks a wrapper).
fn rename_noreplace(from: &Path, to: &Path, name: &str) -> Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Config(format!("{} holds NUL", p.display())))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: NUL-terminated paths; AT_FDCWD for both directories.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => Err(Error::Container {
            name: name.into(),
            what: "the name is in use: pick another or `sandbox rm` it".into(),
        }),
        _ => Err(Error::io("renameat2", to, e)),
    }
}
