//! Assembling and supervising one container, all-or-nothing: state folder, rootfs
//! overlay, cgroup, then clone into new namespaces with mounts, pivot_root and
//! dropped privileges; on any failure everything made so far is undone.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use cgroupkit::{
    Cgroup, CgroupPath, Controller, Cpu, CpuQuota, Hierarchy, Layout, Leftovers, Limit, Memory,
    Pids, Resources,
};
use nix::sys::signal::Signal;
use nskit::{IdMap, MountSpec, MsFlags, Namespace, NsHandle, NsId, Spawn};
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};

use crate::error::{Error, Result, ioe};
use crate::security;
use crate::spec::{self, RunOptions};
use crate::state::{self, State, Status};
use crate::store::{Image, Store};

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

fn random_hex(bytes: usize) -> String {
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

/// The mount table the cgroup hierarchies and the initramfs check are read from (one
/// read: the kernel formats every mount for each).
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Whether `/` is the initramfs (pivot_root is impossible there), from mountinfo text.
fn root_is_initramfs(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .any(|(a, b)| a.split(' ').nth(4) == Some("/") && b.starts_with("rootfs "))
}

/// Undoes a container start unless disarmed.
struct Guard<'a> {
    dir: PathBuf,
    state: State,
    store: &'a Store,
    image: Option<Image>,
    cgroup: Option<Cgroup>,
    armed: bool,
}

impl Guard<'_> {
    fn teardown(&mut self, remove: bool) -> Result<()> {
        let mut first = None;
        // The cgroup is removed through the handle made at start (no new lookup),
        // or found by name if the start failed before that.
        let released = match self.cgroup.take() {
            Some(cg) => {
                let deleted = cg.delete_recursive(Leftovers::Kill).map_err(Error::from);
                let unmounted = state::release_mounts(&self.dir, &self.state);
                deleted.and(unmounted)
            }
            None => state::release(&self.dir, &self.state),
        };
        if let Err(e) = released {
            first.get_or_insert(e);
        }
        if remove {
            if let Some(img) = &self.image {
                self.store.remove_user(&img.key(), &self.state.id);
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

/// The status a shell would report: the code, or 128+N when killed by signal N.
pub fn exit_code(st: ExitStatus) -> i32 {
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// cgroupkit resources for the spec's `linux.resources`, with the device allow-list
/// ([`crate::devices`]) always.
pub fn resources(r: Option<&LinuxResources>) -> Result<Resources> {
    let mut out = Resources::default();
    out.devices = Some(crate::devices::for_spec(
        r.and_then(|r| r.devices().as_ref()),
    )?);
    let Some(r) = r else { return Ok(out) };
    if let Some(c) = r.cpu()
        && let Some(q) = c.quota()
        && q > 0
    {
        let period = c.period().unwrap_or(spec::CPU_PERIOD_USEC);
        out.cpu = Some(Cpu::with_quota(CpuQuota::new(q as u64, period)?));
    }
    if let Some(m) = r.memory()
        && let Some(l) = m.limit()
        && l > 0
    {
        out.memory = Some(Memory::with_max(Limit::Bytes(l as u64)));
    }
    if let Some(p) = r.pids()
        && p.limit() > 0
    {
        out.pids = Some(Pids::with_max(p.limit() as u64)?);
    }
    Ok(out)
}

fn ns_kind(t: LinuxNamespaceType) -> Namespace {
    match t {
        LinuxNamespaceType::Mount => Namespace::MOUNT,
        LinuxNamespaceType::Cgroup => Namespace::CGROUP,
        LinuxNamespaceType::Uts => Namespace::UTS,
        LinuxNamespaceType::Ipc => Namespace::IPC,
        LinuxNamespaceType::User => Namespace::USER,
        LinuxNamespaceType::Pid => Namespace::PID,
        LinuxNamespaceType::Network => Namespace::NET,
        LinuxNamespaceType::Time => Namespace::TIME,
    }
}

/// The nskit mounts the child makes: the spec's mounts but those made on the host
/// (/dev, [`crate::rootfs::mount_dev`]), then masked and read-only paths.
fn mounts(spec: &Spec, rootfs: &Path) -> Vec<MountSpec> {
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

/// Creates, runs and removes one container; returns its exit status.
pub fn run(paths: &Paths, cfg: &RunConfig, opts: &RunOptions) -> Result<i32> {
    let id = random_hex(6);
    let name = cfg.name.clone().unwrap_or_else(|| format!("c-{id}"));
    state::check_name(&name)?;
    std::fs::create_dir_all(&paths.state).map_err(ioe("mkdir", &paths.state))?;
    let store = Store::at(&paths.store);
    let dir = paths.state.join(&name);
    let rootfs = dir.join(state::ROOTFS_DIR);
    let spec = spec::build(opts, &name, &rootfs)?;

    // Made under a hidden name, locked, then renamed into place without replacing:
    // gc never sees a container folder that nobody holds and that has no state.
    let tmp = paths.state.join(format!(".{name}.{id}"));
    std::fs::create_dir(&tmp).map_err(ioe("mkdir", &tmp))?;
    let lock = state::lock(&tmp, true)?;
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
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    };
    let placed = state::write(&tmp, &st).and_then(|()| rename_noreplace(&tmp, &dir, &name));
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let mut g = Guard {
        dir: dir.clone(),
        state: st,
        store: &store,
        image: None,
        cgroup: None,
        armed: true,
    };
    let code = start_and_wait(&mut g, cfg, &spec)?;
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

fn start_and_wait(g: &mut Guard<'_>, cfg: &RunConfig, spec: &Spec) -> Result<i32> {
    let dir = g.dir.clone();
    let rootfs = dir.join(state::ROOTFS_DIR);
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Config("the spec has no linux section".into()))?;
    let kinds = linux
        .namespaces()
        .iter()
        .flatten()
        .fold(Namespace::empty(), |k, n| k | ns_kind(n.typ()));
    let userns_root = kinds
        .contains(Namespace::USER)
        .then(|| {
            linux.uid_mappings().as_ref().and_then(|m| {
                m.iter()
                    .find(|m| m.container_id() == 0)
                    .map(|m| m.host_id())
            })
        })
        .flatten();
    let owner = userns_root.map(|u| (u, u));

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
    spec.save(dir.join(state::CONFIG_FILE))
        .map_err(|e| Error::Config(format!("writing config.json: {e}")))?;

    let mountinfo =
        std::fs::read_to_string(MOUNTINFO).map_err(ioe("read", Path::new(MOUNTINFO)))?;
    let h = Hierarchy::from_mountinfo_text(&mountinfo, Path::new(MOUNTINFO))?;
    let controllers: Vec<Controller> = [
        Controller::Cpu,
        Controller::Memory,
        Controller::Pids,
        Controller::Devices,
    ]
    .into_iter()
    .filter(|c| h.mount_for(*c).is_some())
    .collect();
    let cg = Cgroup::create(&h, &CgroupPath::new(&g.state.cgroup)?, &controllers)?;
    let res = resources(linux.resources().as_ref());
    g.cgroup = Some(cg);
    let cg = g
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::Config("cgroup".into()))?;
    cg.apply(&res?)?;

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
    sp.current_dir(process.cwd());
    let mut confine = security::from_spec(spec)?;
    confine.init = cfg.init;
    confine.loopback = kinds.contains(Namespace::NET);
    let handles = cg.spawn_handles()?;
    let mut ns = kinds;
    if let (Some(fd), Layout::V2) = (handles.clone_into_fd(), h.layout()) {
        sp.cgroup(fd.try_clone_to_owned().map_err(ioe("dup", &dir))?);
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
    sp.root(&rootfs);
    if root_is_initramfs(&mountinfo) {
        confine.move_root = Some(
            CString::new(rootfs.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::Config("rootfs path holds NUL".into()))?,
        );
    } else {
        sp.pivot_root(true);
    }
    for m in mounts(spec, &rootfs) {
        sp.mount(m);
    }
    // SAFETY: Confine::apply is async-signal-safe (raw syscalls on data prepared here).
    unsafe { sp.pre_exec(move || confine.apply()) };

    let fwd = sigset(&[libc::SIGCHLD]);
    let mut old: libc::sigset_t = unsafe_zeroed_sigset();
    // SAFETY: valid sigsets; blocks the forwarded signals and SIGCHLD in this thread
    // so that sigtimedwait receives them (the child resets its mask).
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &fwd, &mut old) };
    let mut child = sp.spawn()?;
    g.state.pid = Some(child.pid());
    g.state.status = Status::Running;
    state::write(&dir, &g.state)?;
    let status = loop {
        let ts = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: fwd is a valid set; info is plain data written by the kernel.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigtimedwait(&fwd, &mut info, &ts)
        };
        if sig > 0
            && sig != libc::SIGCHLD
            && let Ok(s) = Signal::try_from(sig)
        {
            let _ = child.signal(s);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
    };
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    Ok(exit_code(status))
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

/// `sandbox exec NAME -- CMD`: runs CMD in the container's namespaces and cgroup,
/// with its privileges dropped as the container's; returns its exit status.
pub fn exec(paths: &Paths, name: &str, args: &[String], env: &[String]) -> Result<i32> {
    let (st, pid) = running(paths, name)?;
    let config = paths.state.join(name).join(state::CONFIG_FILE);
    let spec =
        Spec::load(&config).map_err(|e| Error::Config(format!("{}: {e}", config.display())))?;
    let Some(prog) = args.first() else {
        return Err(Error::Config("no command: sandbox exec NAME -- CMD".into()));
    };
    let mut kinds = Namespace::empty();
    for k in [
        Namespace::USER,
        Namespace::MOUNT,
        Namespace::UTS,
        Namespace::IPC,
        Namespace::NET,
        Namespace::PID,
        Namespace::CGROUP,
    ] {
        if NsId::of(pid, k)? != NsId::current(k)? {
            kinds |= k;
        }
    }
    let handle = NsHandle::from_pid(pid)?;
    let h = Hierarchy::detect()?;
    let cg = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?)?;
    let mut confine = security::from_spec(&spec)?;
    confine.cgroup = Some(cg.spawn_handles()?);
    confine.init = true;
    if kinds.contains(Namespace::USER) {
        let u = spec
            .process()
            .as_ref()
            .map(|p| (p.user().uid(), p.user().gid()));
        confine.user = Some(u.unwrap_or((0, 0)));
    }
    let mut sp = Spawn::new(prog);
    sp.args(&args[1..]).env_clear();
    for e in spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
        .iter()
        .chain(env)
    {
        if let Some((k, v)) = e.split_once('=') {
            sp.env(k, v);
        }
    }
    sp.join(handle, kinds);
    // SAFETY: Confine::apply is async-signal-safe.
    unsafe { sp.pre_exec(move || confine.apply()) };
    let mut child = sp.spawn()?;
    let _ = child.pidfd().as_fd();
    Ok(exit_code(child.wait()?))
}

/// Sends `sig` to the container's first process.
pub fn signal(paths: &Paths, name: &str, sig: Signal) -> Result<()> {
    let (_, pid) = running(paths, name)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .map_err(|e| Error::io("kill", paths.state.join(name), e.into()))
}

/// The state of a running container and the pid of its first process.
fn running(paths: &Paths, name: &str) -> Result<(State, i32)> {
    state::check_name(name)?;
    let dir = paths.state.join(name);
    let st = state::read(&dir).map_err(|_| Error::Container {
        name: name.into(),
        what: "no such container (see `sandbox ps`)".into(),
    })?;
    match (st.pid, &st.status) {
        (Some(pid), Status::Running) => Ok((st, pid)),
        _ => Err(Error::Container {
            name: name.into(),
            what: "not running".into(),
        }),
    }
}

/// `sandbox stop`: SIGTERM, then after `grace` SIGKILL to every process of its cgroup.
pub fn stop(paths: &Paths, name: &str, grace: std::time::Duration) -> Result<()> {
    let (st, pid) = running(paths, name)?;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    let start = std::time::Instant::now();
    while start.elapsed() < grace {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let h = Hierarchy::detect()?;
    let cg = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?)?;
    let Err(e) = cg.kill() else { return Ok(()) };
    // The supervisor sees its child die and removes the cgroup meanwhile, so the kill
    // can fail reading a file just removed: give the supervisor a moment to finish.
    let start = std::time::Instant::now();
    loop {
        if !paths.state.join(name).exists() || Cgroup::load(&h, cg.path()).is_err() {
            return Ok(());
        }
        if start.elapsed() > std::time::Duration::from_secs(2) {
            return Err(e.into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `sandbox rm`: removes a container that is not running (with `force`, kills it
/// first).
pub fn remove(paths: &Paths, name: &str, force: bool) -> Result<()> {
    state::check_name(name)?;
    let dir = paths.state.join(name);
    let st = state::read(&dir).map_err(|_| Error::Container {
        name: name.into(),
        what: "no such container (see `sandbox ps`)".into(),
    })?;
    if state::supervised(&dir)? {
        if !force {
            return Err(Error::Container {
                name: name.into(),
                what: "it is running: `sandbox stop` it first, or `sandbox rm --force`".into(),
            });
        }
        let h = Hierarchy::detect()?;
        // A kill failing because the supervisor removed the cgroup meanwhile is fine.
        let killed = match Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?) {
            Ok(cg) => cg.kill(),
            Err(_) => Ok(()),
        };
        // The supervisor sees its child exit and removes the folder itself.
        let start = std::time::Instant::now();
        while dir.exists() && start.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if !dir.exists() {
            return Ok(());
        }
        killed?;
    }
    let _lock = state::lock(&dir, false)?;
    state::release(&dir, &st)?;
    if let Some(r) = &st.image {
        let store = Store::at(&paths.store);
        if let Ok(img) = store.get(r) {
            store.remove_user(&img.key(), &st.id);
        }
    }
    state::remove_dir(&dir)
}
