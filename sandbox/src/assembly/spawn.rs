//! The container's start on the host side: its rootfs (layers tmpfs, init layer,
//! overlay, /dev), its cgroup, the spawn of its first process into new namespaces,
//! and the supervision loop that forwards signals until it exits.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use cgroupkit::{Cgroup, CgroupPath, Controller, Hierarchy, Layout};
use nix::sys::signal::Signal;
use nskit::{Child, IdMap, Namespace, Spawn};
use oci_spec::runtime::{Linux, Spec};

use super::mounts::{MOUNTINFO, mounts, root_is_initramfs};
use super::resources::{ns_kind, resources};
use super::workdir;
use super::{Guard, RunConfig, Source};
use crate::error::{Error, Result, ioe};
use crate::security;
use crate::state::{self, Status};

/// The signals `sandbox run` forwards to the container.
const FORWARDED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

fn sigset(extra: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: plain-data sigset initialised by sigemptyset, then sigaddset.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in FORWARDED.iter().chain(extra) {
            libc::sigaddset(&mut s, *sig);
        }
        s
    }
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

/// The status a shell would report: the code, or 128+N when killed by signal N.
pub fn exit_code(st: ExitStatus) -> i32 {
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// The namespaces the spec asks for.
fn kinds_of(linux: &Linux) -> Namespace {
    linux
        .namespaces()
        .iter()
        .flatten()
        .fold(Namespace::empty(), |k, n| k | ns_kind(n.typ()))
}

/// The host uid and gid that container root maps to, with a user namespace.
fn userns_owner(linux: &Linux, kinds: Namespace) -> Option<(u32, u32)> {
    kinds
        .contains(Namespace::USER)
        .then(|| {
            linux.uid_mappings().as_ref().and_then(|m| {
                m.iter()
                    .find(|m| m.container_id() == 0)
                    .map(|m| m.host_id())
            })
        })
        .flatten()
        .map(|u| (u, u))
}

/// The root filesystem on the host: the image's layers (registered as used by this
/// container) or the given directory, under an init layer, with an upper layer unless
/// read-only, and the container's /dev on it. Returns the overlay's mount point.
fn make_rootfs(
    g: &mut Guard<'_>,
    cfg: &RunConfig,
    spec: &Spec,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf> {
    let dir = g.dir.clone();
    let rootfs = dir.join(state::ROOTFS_DIR);
    let mut lowers = match &cfg.source {
        Source::Image(r) => {
            let img = g.store.get(r)?;
            g.store.add_user(&img, &g.state.id, &dir)?;
            let l = g.store.lowers(&img)?;
            g.image = Some(img);
            l
        }
        Source::Rootfs(d) => vec![d.canonicalize().map_err(ioe("open rootfs", d))?],
    };
    let layers = dir.join(state::LAYERS_DIR);
    std::fs::create_dir(&layers).map_err(ioe("mkdir", &layers))?;
    crate::rootfs::mount_layers(&layers)?;
    let init = layers.join("init");
    std::fs::create_dir(&init).map_err(ioe("mkdir", &init))?;
    crate::rootfs::write_init_layer(&init, spec, owner)?;
    lowers.insert(0, init);
    std::fs::create_dir(&rootfs).map_err(ioe("mkdir", &rootfs))?;
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if readonly {
        crate::rootfs::mount_overlay(&lowers, None, &rootfs)?;
    } else {
        let (upper, work) = (layers.join("upper"), layers.join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir(d).map_err(ioe("mkdir", d))?;
        }
        if let Some((u, gid)) = owner {
            std::os::unix::fs::chown(&upper, Some(u), Some(gid)).map_err(ioe("chown", &upper))?;
        }
        crate::rootfs::mount_overlay(&lowers, Some((&upper, &work)), &rootfs)?;
    }
    crate::rootfs::mount_dev(&rootfs, spec, owner)?;
    if let Some(p) = spec.process() {
        workdir::ensure(&rootfs, p.cwd(), owner)?;
    }
    Ok(rootfs)
}

/// The container's cgroup (cpu, memory, pids, devices where mounted) with the spec's limits,
/// kept in the guard so that a failed start removes it.
fn make_cgroup<'g>(g: &'g mut Guard<'_>, h: &Hierarchy, linux: &Linux) -> Result<&'g Cgroup> {
    let controllers: Vec<Controller> = [
        Controller::Cpu,
        Controller::Memory,
        Controller::Pids,
        Controller::Devices,
    ]
    .into_iter()
    .filter(|c| h.mount_for(*c).is_some())
    .collect();
    let cg = Cgroup::create(h, &CgroupPath::new(&g.state.cgroup)?, &controllers)?;
    let res = resources(linux.resources().as_ref());
    let cg = g.cgroup.insert(cg);
    cg.apply(&res?)?;
    Ok(cg)
}

/// The spawn of the container's first process: command, environment, namespaces,
/// cgroup, id maps, root change, mounts and the confinement steps before exec, the
/// last of them entering the working directory (see [`workdir`]); `held` are the
/// runtime's fds the child must close. Returns the spawn and the report of the
/// working directory step.
#[allow(clippy::too_many_arguments)]
fn build_spawn(
    held: &[RawFd],
    cfg: &RunConfig,
    spec: &Spec,
    linux: &Linux,
    kinds: Namespace,
    cg: &Cgroup,
    h: &Hierarchy,
    mountinfo: &str,
    rootfs: &Path,
    dir: &Path,
) -> Result<(Spawn, workdir::Report)> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("the spec has no process".into()))?;
    let args = process.args().clone().unwrap_or_default();
    let Some(prog) = args.first() else {
        return Err(Error::Config("the spec's process has no args".into()));
    };
    let mut sp = Spawn::new(prog);
    sp.args(&args[1..]).env_clear();
    for e in process.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            sp.env(k, v);
        }
    }
    let mut confine = security::from_spec(spec)?;
    confine.init = cfg.init;
    confine.loopback = kinds.contains(Namespace::NET);
    let mut close = held.to_vec();
    let handles = cg.spawn_handles()?;
    let mut ns = kinds;
    if let (Some(fd), Layout::V2) = (handles.clone_into_fd(), h.layout()) {
        let fd = fd.try_clone_to_owned().map_err(ioe("dup", dir))?;
        // clone3 places the child with it; the child has no use for it after.
        close.push(fd.as_raw_fd());
        sp.cgroup(fd);
    } else {
        if ns.contains(Namespace::CGROUP) {
            ns -= Namespace::CGROUP;
            confine.unshare_cgroup = true;
        }
        confine.cgroup = Some(handles);
    }
    sp.namespaces(ns);
    if ns.contains(Namespace::UTS)
        && let Some(hn) = spec.hostname()
    {
        sp.hostname(hn);
    }
    for m in linux.uid_mappings().iter().flatten() {
        sp.uid_map(IdMap::new(m.container_id(), m.host_id(), m.size()));
    }
    for m in linux.gid_mappings().iter().flatten() {
        sp.gid_map(IdMap::new(m.container_id(), m.host_id(), m.size()));
    }
    sp.root(rootfs);
    if root_is_initramfs(mountinfo) {
        confine.move_root = Some(
            CString::new(rootfs.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::Config("rootfs path holds NUL".into()))?,
        );
    } else {
        sp.pivot_root(true);
    }
    for m in mounts(spec, rootfs) {
        sp.mount(m);
    }
    // The working directory is entered by the last step, after the root change
    // (which Confine does itself where / is the initramfs); the runtime's fds are
    // closed by the first, before Confine's init forks and keeps what is open.
    let (close, enter, report) = workdir::prepare(process.cwd(), close)?;
    // SAFETY: the three steps are async-signal-safe (raw syscalls on data prepared
    // here, stack buffers).
    unsafe {
        sp.pre_exec(move || close.apply());
        sp.pre_exec(move || confine.apply());
        sp.pre_exec(move || enter.apply());
    }
    Ok((sp, report))
}

/// Waits for the container's first process, forwarding [`FORWARDED`] signals to it.
fn supervise(child: &mut Child, fwd: &libc::sigset_t) -> Result<ExitStatus> {
    loop {
        let ts = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: fwd is a valid set; info is plain data written by the kernel.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigtimedwait(fwd, &mut info, &ts)
        };
        if sig > 0
            && sig != libc::SIGCHLD
            && let Ok(s) = Signal::try_from(sig)
        {
            let _ = child.signal(s);
        }
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
    }
}

/// Assembles the container recorded in `g`, starts it and waits for it to exit.
pub(super) fn start_and_wait(
    g: &mut Guard<'_>,
    held: &[RawFd],
    cfg: &RunConfig,
    spec: &Spec,
) -> Result<i32> {
    let dir = g.dir.clone();
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Config("the spec has no linux section".into()))?;
    let kinds = kinds_of(linux);
    let owner = userns_owner(linux, kinds);
    state::restrict(&dir, owner)?;

    let rootfs = make_rootfs(g, cfg, spec, owner)?;
    spec.save(dir.join(state::CONFIG_FILE))
        .map_err(|e| Error::Config(format!("writing config.json: {e}")))?;

    let mountinfo =
        std::fs::read_to_string(MOUNTINFO).map_err(ioe("read", Path::new(MOUNTINFO)))?;
    let h = Hierarchy::from_mountinfo_text(&mountinfo, Path::new(MOUNTINFO))?;
    let cg = make_cgroup(g, &h, linux)?;
    let (mut sp, report) = build_spawn(
        held, cfg, spec, linux, kinds, cg, &h, &mountinfo, &rootfs, &dir,
    )?;

    let fwd = sigset(&[libc::SIGCHLD]);
    let mut old: libc::sigset_t = unsafe_zeroed_sigset();
    // SAFETY: valid sigsets; blocks the forwarded signals and SIGCHLD in this thread
    // so that sigtimedwait receives them (the child resets its mask).
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &fwd, &mut old) };
    let spawned = sp.spawn();
    // Drops the child's steps, and with them the parent's write end of the report.
    drop(sp);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            // SAFETY: restores the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            return Err(report.failure(&e).unwrap_or(e.into()));
        }
    };
    g.state.pid = Some(child.pid());
    g.state.status = Status::Running;
    state::write(&dir, &g.state)?;
    let status = supervise(&mut child, &fwd)?;
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    Ok(exit_code(status))
}
