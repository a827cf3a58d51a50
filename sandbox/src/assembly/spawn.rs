//! The container's start on the host side: its rootfs (layers tmpfs, init layer,
//! overlay, /dev), its cgroup, the spawn of its first process into new namespaces,
//! and the supervision loop that forwards signals until it exits.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use cgroupkit::{Cgroup, CgroupPath, Controller, Hierarchy, Placement};
use nix::sys::signal::Signal;
use nskit::forward::Forwarder;
use nskit::{IdMap, Namespace, Spawn};
use oci_spec::runtime::{Linux, Spec};

use super::mounts::{MOUNTINFO, mounts, root_is_initramfs};
use super::resources::{ns_kind, resources};
use super::workdir;
use super::{Guard, RunConfig, Source};
use crate::error::{Error, Result, ioe};
use crate::security;
use crate::state::{self, Status};

/// The signals `sandbox run` forwards to the container.
pub(crate) const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The status a shell would report: the code, or 128+N when killed by signal N.
pub fn exit_code(st: ExitStatus) -> i32 {
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// The namespaces the spec asks for.
pub(crate) fn kinds_of(linux: &Linux) -> Namespace {
    linux
        .namespaces()
        .iter()
        .flatten()
        .fold(Namespace::empty(), |k, n| k | ns_kind(n.typ()))
}

/// The host uid and gid that container root maps to, with a user namespace.
pub(crate) fn userns_owner(linux: &Linux, kinds: Namespace) -> Option<(u32, u32)> {
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
            let store = g
                .store
                .ok_or_else(|| Error::Config("an image needs the store".into()))?;
            let img = store.get(r)?;
            store.add_user(&img, &g.state.id, &dir)?;
            let l = store.lowers(&img)?;
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
fn make_cgroup<'g>(
    g: &'g mut Guard<'_>,
    h: &Hierarchy,
    linux: &Linux,
    freezer: bool,
) -> Result<&'g Cgroup> {
    // Refused fields are refused before anything is made.
    let res = resources(linux.resources().as_ref())?;
    let mut wanted = vec![
        Controller::Cpu,
        Controller::Memory,
        Controller::Pids,
        Controller::Devices,
    ];
    // `pause`/`resume` of OCI containers: a v1 freezer cgroup is one more directory
    // to make, join and remove on every start.
    if freezer {
        wanted.push(Controller::Freezer);
    }
    if res.cpuset.is_some() {
        wanted.push(Controller::Cpuset);
    }
    if res.io.is_some() {
        wanted.push(Controller::Io);
    }
    if res.hugetlb.is_some() {
        wanted.push(Controller::Hugetlb);
    }
    let unified = linux
        .resources()
        .as_ref()
        .and_then(|r| r.unified().clone())
        .unwrap_or_default();
    for k in unified.keys() {
        if let Some(c) = super::resources::unified_controller(k)?
            && !wanted.contains(&c)
        {
            wanted.push(c);
        }
    }
    let controllers: Vec<Controller> = wanted
        .into_iter()
        .filter(|c| h.mount_for(*c).is_some())
        .collect();
    let path = CgroupPath::new(&g.state.cgroup)?;
    // A cgroup of its own: one that exists already may hold processes that are not
    // the container's, which a failed start or `delete` would kill.
    if Cgroup::load(h, &path).is_ok() {
        return Err(Error::Config(format!(
            "linux.cgroupsPath: the cgroup {} exists already; give each container a cgroup \
             of its own",
            g.state.cgroup
        )));
    }
    let cg = Cgroup::create(h, &path, &controllers)?;
    let cg = g.cgroup.insert(cg);
    cg.apply(&res)?;
    super::resources::apply_unified(cg, &unified)?;
    Ok(cg)
}

/// A spawn of `process`'s program with its arguments and only its environment.
pub(crate) fn process_spawn(process: &oci_spec::runtime::Process) -> Result<Spawn> {
    let args = process.args().clone().unwrap_or_default();
    let Some(prog) = args.first() else {
        return Err(Error::Config(
            "process.args is empty: name the program".into(),
        ));
    };
    let mut sp = Spawn::new(prog);
    sp.args(&args[1..]).env_clear();
    for e in process.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            sp.env(k, v);
        }
    }
    Ok(sp)
}

/// The spawn of the container's first process: command, environment, namespaces,
/// cgroup, id maps, root change, mounts and the confinement steps before exec, the
/// last of them entering the working directory (see [`workdir`]); `held` are the
/// runtime's fds the child must close. Returns the spawn and the report of the
/// working directory step.
#[allow(clippy::too_many_arguments)]
fn build_spawn(
    held: &[RawFd],
    launch: Launch,
    spec: &Spec,
    linux: &Linux,
    kinds: Namespace,
    cg: &Cgroup,
    mountinfo: &str,
    rootfs: &Path,
    detached: &[(usize, nskit::DetachedMount)],
) -> Result<(Spawn, workdir::Report, Vec<std::os::fd::OwnedFd>)> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("the spec has no process".into()))?;
    let mut sp = process_spawn(process)?;
    if let Some(fds) = launch.stdio {
        for (i, fd) in fds.into_iter().enumerate() {
            // Our own copy, moved onto the stream by the child.
            let own = nix::fcntl::fcntl(
                // SAFETY: the caller keeps its fds open for the spawn (CreateOptions).
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3),
            )
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", format!("stdio fd {fd}"), e.into()))?;
            // SAFETY: fcntl returned a new fd that nothing else owns.
            let own = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(own) };
            let s = nskit::Stdio::Fd(own);
            match i {
                0 => sp.stdin(s),
                1 => sp.stdout(s),
                _ => sp.stderr(s),
            };
        }
    }
    let mut confine = security::from_spec(spec)?;
    confine.init = launch.init;
    confine.session_keyring = launch.keyring.clone();
    confine.loopback = kinds.contains(Namespace::NET) && launch.loopback;
    let mut close = held.to_vec();
    let mut ns = kinds;
    match cg.spawn_handles()?.placement(true) {
        Placement::CloneInto(dir) => {
            // clone3 places the child with it; the child has no use for it after.
            close.push(dir.as_raw_fd());
            sp.cgroup(dir);
        }
        Placement::Both { clone_into, join } => {
            close.push(clone_into.as_raw_fd());
            sp.cgroup(clone_into);
            // The child joins the v1 hierarchies, then unshares (as below).
            if ns.contains(Namespace::CGROUP) {
                ns -= Namespace::CGROUP;
                confine.unshare_cgroup = true;
            }
            confine.cgroup = Some(join);
        }
        Placement::JoinSelf(handles) => {
            // The child joins first, then unshares: its cgroup namespace is rooted
            // at the container's cgroup.
            if ns.contains(Namespace::CGROUP) {
                ns -= Namespace::CGROUP;
                confine.unshare_cgroup = true;
            }
            confine.cgroup = Some(handles);
        }
    }
    sp.namespaces(ns);
    if ns.contains(Namespace::TIME) {
        for (name, o) in linux.time_offsets().iter().flatten() {
            let clock = match name.as_str() {
                "monotonic" => nskit::TimeClock::Monotonic,
                "boottime" => nskit::TimeClock::Boottime,
                other => {
                    return Err(Error::Config(format!(
                        "linux.timeOffsets {other:?}: only monotonic and boottime can be offset"
                    )));
                }
            };
            sp.time_offset(clock, o.secs().unwrap_or(0), o.nanosecs().unwrap_or(0));
        }
    }
    for (handle, kind) in launch.joins {
        sp.join(handle, kind);
    }
    if ns.contains(Namespace::UTS)
        && let Some(dn) = spec.domainname()
    {
        sp.domainname(dn);
    }
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
    // A slave (or shared) propagation asked for, on the root or on a mount, needs the
    // namespace's mounts kept as slaves of the host's from the start (made private
    // first, they could never receive events again); else all private.
    let wants_events = |w: &str| {
        crate::oci::bundle::propagation_flags(w)
            .is_some_and(|f| f & (libc::MS_SLAVE | libc::MS_SHARED) != 0)
    };
    if linux
        .rootfs_propagation()
        .as_deref()
        .is_some_and(wants_events)
        || spec
            .mounts()
            .iter()
            .flatten()
            .any(|m| m.options().iter().flatten().any(|o| wants_events(o)))
    {
        sp.propagation(nskit::Propagation::Slave);
    }
    sp.root(rootfs);
    if launch.no_pivot || root_is_initramfs(mountinfo) {
        confine.move_root = Some(
            CString::new(rootfs.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::Config("rootfs path holds NUL".into()))?,
        );
    } else {
        sp.pivot_root(true);
    }
    for m in mounts(spec, rootfs, cg, detached) {
        sp.mount(m);
    }
    // The working directory is entered by the last step, after the root change
    // (which Confine does itself where / is the initramfs); the runtime's fds are
    // closed by the first, before Confine's init forks and keeps what is open.
    let (close, enter, report) = workdir::prepare(process.cwd(), close)?;
    // Under no_new_privs the filter goes on after the gate, as late as possible (as
    // runc orders it): the gate's own reads are then not subject to it. Without
    // no_new_privs installing a filter needs CAP_SYS_ADMIN, which confine drops.
    let late_seccomp = if confine.no_new_privs {
        confine.seccomp.take()
    } else {
        None
    };
    exec_steps(&mut sp, close, launch.console, confine, enter);
    let mut start_hooks = None;
    let mut keep_until_spawned = Vec::new();
    if let Some(h) = launch.hooks {
        let (pid, create) = (h.pid, h.create);
        let sync = h.sync.map(|(fds, pid_w, ack_r)| {
            keep_until_spawned.push(pid_w);
            keep_until_spawned.push(ack_r);
            fds
        });
        // SAFETY: raw syscalls on prepared data (see child_hooks).
        unsafe {
            sp.pre_pivot(move || {
                crate::oci::child_hooks::record_pid(&pid)?;
                if let Some(s) = &sync {
                    s.wait_for_runtime(&pid)?;
                }
                create.run()
            });
        }
        start_hooks = Some(h.start);
    }
    sp.exec_gate(launch.gate);
    if let Some(h) = start_hooks.filter(|h| !h.is_empty()) {
        // SAFETY: as above.
        unsafe {
            sp.pre_exec(move || h.run());
        }
    }
    if let Some(p) = late_seccomp {
        // SAFETY: as above.
        unsafe {
            sp.pre_exec(move || p.install());
        }
    }
    Ok((sp, report, keep_until_spawned))
}

/// How the container's process is started.
/// The session keyring of container `name`: `_ses.NAME`, as runc names it.
pub(crate) fn session_keyring_name(name: &str) -> Result<CString> {
    CString::new(format!("_ses.{name}"))
        .map_err(|_| Error::Config(format!("container name {name:?} holds NUL")))
}

/// The child's last steps before exec, in this order for the container's process
/// and for `exec` alike: close the runtime's fds (before anything forks and keeps
/// them), take the terminal, confine (credentials, capabilities, seccomp), enter the
/// working directory (resolved in the new root).
pub(crate) fn exec_steps(
    sp: &mut Spawn,
    close: workdir::CloseFds,
    console: Option<crate::oci::console::Console>,
    confine: security::Confine,
    enter: workdir::Enter,
) {
    // SAFETY: every step is async-signal-safe (raw syscalls on data prepared before
    // the clone, stack buffers).
    unsafe {
        sp.pre_exec(move || close.apply());
        if let Some(c) = console {
            sp.pre_exec(move || c.apply());
        }
        sp.pre_exec(move || confine.apply());
        sp.pre_exec(move || enter.apply());
    }
}

pub(crate) struct Launch {
    /// The exec gate ([`nskit::Spawn::exec_gate`]): the process waits there, created,
    /// until a byte can be read from it (`start`).
    pub gate: std::os::fd::OwnedFd,
    /// A terminal made inside the container, its master sent over a socket.
    pub console: Option<crate::oci::console::Console>,
    /// A tiny PID 1 (`sandbox run --init`).
    pub init: bool,
    /// Bring `lo` up in a new network namespace.
    pub loopback: bool,
    /// Namespaces to join (the spec's `linux.namespaces[].path`).
    pub joins: Vec<(nskit::NsHandle, Namespace)>,
    /// Join the freezer (v1) too, for pause/resume.
    pub freezer: bool,
    /// `createContainer` hooks (before the root change) and `startContainer` hooks
    /// (after the gate), with where the child records its host pid for them.
    pub hooks: Option<ContainerHooks>,
    /// Change the root with MS_MOVE and chroot, never pivot_root (`--no-pivot`:
    /// for roots on a ramfs, where pivot_root fails; less isolating).
    pub no_pivot: bool,
    /// The session keyring the process joins ([`security::Confine::session_keyring`]);
    /// None keeps the caller's.
    pub keyring: Option<CString>,
    /// Idmapped mounts made beforehand, by index in the spec's `mounts`
    /// ([`crate::oci::idmap`]): the child attaches them in their place.
    pub detached: Vec<(usize, nskit::DetachedMount)>,
    /// The process's fds 0-2, when not this process's own.
    pub stdio: Option<[RawFd; 3]>,
}

/// The hooks run by the container's process itself.
pub(crate) struct ContainerHooks {
    /// Written by the child before its root change, read by both kinds.
    pub pid: std::sync::Arc<std::sync::atomic::AtomicI32>,
    /// `createContainer`.
    pub create: crate::oci::child_hooks::ChildHooks,
    /// `startContainer`.
    pub start: crate::oci::child_hooks::ChildHooks,
    /// The pipes to the runtime's thread that runs prestart/createRuntime while
    /// the child waits (the fds the child uses, and the runtime's owned copies of
    /// the child's ends, closed once spawned).
    pub sync: Option<(
        crate::oci::child_hooks::Sync,
        std::os::fd::OwnedFd,
        std::os::fd::OwnedFd,
    )>,
}

/// Assembles the container recorded in `g` on the root filesystem `rootfs`: its
/// cgroup, then its process, which waits created at the gate. Sets the pid and the
/// status in `g.state` (the caller writes it).
pub(crate) fn launch(
    g: &mut Guard<'_>,
    held: &[RawFd],
    spec: &Spec,
    rootfs: &Path,
    launch: Launch,
) -> Result<nskit::Child> {
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Config("the spec has no linux section".into()))?;
    let mut kinds = kinds_of(linux);
    for (_, k) in &launch.joins {
        kinds -= *k;
    }
    let mut launch = launch;
    // setns(2) into a pid namespace moves only the caller's later children: the
    // runtime enters it before the clone so that the container's process is in it
    // (nskit's join, made by the child, would put only the child's children there).
    if let Some(i) = launch.joins.iter().position(|(_, k)| *k == Namespace::PID) {
        let (h, _) = launch.joins.remove(i);
        nix::sched::setns(h.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| Error::io("setns(CLONE_NEWPID)", "linux.namespaces pid path", e.into()))?;
    }
    let mountinfo =
        std::fs::read_to_string(MOUNTINFO).map_err(ioe("read", Path::new(MOUNTINFO)))?;
    let h = Hierarchy::from_mountinfo_text(&mountinfo, Path::new(MOUNTINFO))?;
    let cg = make_cgroup(g, &h, linux, launch.freezer)?;
    // Attached by the child: open until the spawn has returned.
    let detached = std::mem::take(&mut launch.detached);
    let (mut sp, report, keep) = build_spawn(
        held, launch, spec, linux, kinds, cg, &mountinfo, rootfs, &detached,
    )?;
    let spawned = sp.spawn();
    drop(detached);
    // Drops the child's steps, and with them the parent's write end of the report;
    // and our copies of the child's ends of the hook pipes.
    drop(sp);
    drop(keep);
    let child = spawned.map_err(|e| report.failure(&e).unwrap_or(e.into()))?;
    g.state.pid = Some(child.pid());
    g.state.pid_start = crate::oci::proc_start_time(child.pid());
    g.state.status = Status::Created;
    // The caller records it: `sandbox run` starts it at once (one write, not two).
    Ok(child)
}

/// Assembles the container recorded in `g`, starts it and waits for it to exit:
/// `create` and `start` in one process, which stays as the supervisor.
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
    // Blocked (and read from a signalfd) before the child exists, so that none is
    // lost nor kills the supervisor meanwhile; the child starts with an empty mask
    // and closes the signalfd first, with the runtime's other fds.
    let fwd = Forwarder::new(&FORWARDED)?;
    let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe2", "exec gate", e.into()))?;
    let mut held = held.to_vec();
    held.push(fwd.as_fd().as_raw_fd());
    held.push(gate_w.as_raw_fd());
    let mut child = launch(
        g,
        &held,
        spec,
        &rootfs,
        Launch {
            gate: gate_r,
            console: None,
            init: cfg.init,
            loopback: true,
            joins: Vec::new(),
            freezer: false,
            hooks: None,
            no_pivot: false,
            keyring: Some(session_keyring_name(&g.state.name)?),
            detached: Vec::new(),
            stdio: None,
        },
    )?;
    nix::unistd::write(&gate_w, b"1").map_err(|e| Error::io("write", "exec gate", e.into()))?;
    drop(gate_w);
    g.state.status = Status::Running;
    state::write(&dir, &g.state)?;
    let status = child.wait_forwarding(&fwd)?;
    // The mask as it was (cleanup follows; let a signal stop the supervisor then).
    drop(fwd);
    Ok(exit_code(status))
}
