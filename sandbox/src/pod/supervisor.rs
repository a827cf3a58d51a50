//! The pod supervisor (what conmon plus the kubelet's pod worker are for podman and
//! Kubernetes): one process per pod that starts the infra container, the init
//! containers in order, the sidecars and the app containers, captures their output
//! as CRI logs, restarts them with the kubelet's back-off, runs their probes, and
//! stops the pod (SIGTERM, grace period, SIGKILL).
//!
//! Every container is an OCI container of this runtime ([`crate::oci::create`] and
//! [`crate::oci::start`] on a bundle made here), in the pod's own OCI state root;
//! app containers join the infra container's namespaces by path, as a CRI runtime
//! asks runc to. The supervisor is their parent and reaper, and a single thread:
//! `create` unshares a mount namespace around each container's assembly, which a
//! second thread would forbid.
//!
//! The supervisor runs in a mount namespace of its own (a slave of the host's): the
//! pod's tmpfs, the root filesystem overlays and the Memory emptyDirs are mounted
//! there only, so they vanish with the pod's processes even when the supervisor is
//! killed with SIGKILL (`sandbox gc` then kills the processes through the pod
//! cgroup and removes the folder).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroupkit::{Cgroup, CgroupPath, Controller, Hierarchy, Leftovers};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, MountBuilder, Spec,
    UserBuilder,
};

use super::manifest::{
    ContainerPlan, PodPlan, ProbeAction, ProbePlan, RestartPolicy, VolumeSource,
};
use super::status::{
    self, ContainerStatus, INFRA, Kind, LOGS_DIR, OCI_DIR, PLAN_FILE, Phase, PodStatus, RUN_DIR,
    STATUS_FILE, State, VOLUMES_DIR,
};
use super::status::{ATTACH_DIR, ATTACH_PIPES, ATTACH_TTY};
use crate::assembly::Paths;
use crate::error::{Error, Result, ioe};
use crate::spec::{DEFAULT_CAPS, RunOptions};
use crate::store::Store;

/// The infra program (`pause/`), built by the build script.
pub const PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sandbox-pause"));

/// The uid and gid the infra process runs as (as Kubernetes' pause image does).
pub const INFRA_UID: u32 = 65535;

/// Overrides the restart back-off's base (milliseconds; the kubelet's is 10 s): tests
/// use it to see several restarts in seconds.
pub const BACKOFF_ENV: &str = "SANDBOX_POD_BACKOFF_MS";
/// The kubelet's back-off: 10 s, doubled per restart, at most 5 min.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The back-off's cap.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long restarts with the base back-off again.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// A line longer than this is logged in parts (`P` tag), as the CRI logger does.
const LOG_LINE_MAX: usize = 16 * 1024;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Startup,
    Liveness,
    Readiness,
}

/// A probe's counters and its next run.
#[derive(Debug)]
struct ProbeRt {
    next: Instant,
    successes: u32,
    failures: u32,
}

/// One output stream of a container, turned into CRI log lines.
#[derive(Debug)]
struct LogPipe {
    fd: OwnedFd,
    stream: &'static str,
    buf: Vec<u8>,
}

/// The supervisor's view of one container.
#[derive(Debug)]
struct Ctr {
    plan: ContainerPlan,
    kind: Kind,
    /// The write end of its stdin (kept open: `stdin: true`), or the master of its
    /// terminal (`tty: true`).
    stdin: Option<OwnedFd>,
    /// `pod attach` clients listen here (the pod folder's `attach/CTR.sock`).
    attach: Option<std::os::unix::net::UnixListener>,
    /// Attached clients: they get the output and feed the stdin.
    clients: Vec<std::os::unix::net::UnixStream>,
    pipes: Vec<LogPipe>,
    log: Option<File>,
    restart_at: Option<Instant>,
    backoff: Duration,
    started: Option<Instant>,
    ever_started: bool,
    probes: Vec<(Which, ProbePlan, ProbeRt)>,
    /// Killed by a failed liveness or startup probe.
    unhealthy: bool,
}

/// The supervisor of one pod.
#[derive(Debug)]
struct Sup {
    dir: PathBuf,
    plan: PodPlan,
    st: PodStatus,
    store: Store,
    oci: PathBuf,
    run: PathBuf,
    h: Hierarchy,
    cg: Option<Cgroup>,
    ctrs: Vec<Ctr>,
    pids: HashMap<i32, usize>,
    probe_pids: HashMap<i32, (usize, Which, Instant, u64)>,
    infra: Option<i32>,
    sfd: SignalFd,
    host_pid_ns: File,
    host_net_ns: File,
    infra_net_ns: Option<File>,
    stop_requested: bool,
    stopping: bool,
    failed: Option<String>,
    stage: usize,
    apps_started: bool,
    backoff_base: Duration,
    begun: Instant,
}

fn rfc3339() -> String {
    crate::oci::rfc3339_now()
}

fn sys(op: &'static str, what: impl Into<PathBuf>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |e| Error::io(op, what, e.into())
}

/// Checks what can be checked before anything is made: the name is free, every
/// image is in the store, every hostPath passes its type check.
pub fn preflight(paths: &Paths, plan: &PodPlan) -> Result<()> {
    let dir = status::pod_dir(&paths.state, &plan.name)?;
    if dir.exists() {
        return Err(Error::Container {
            name: plan.name.clone(),
            what: "a pod of this name exists: `sandbox pod rm` it first".into(),
        });
    }
    let store = Store::at(&paths.store);
    for c in plan.all() {
        store.get(&c.image).map_err(|e| Error::Container {
            name: plan.name.clone(),
            what: format!(
                "container {:?}: image {:?} is not in the store ({e}); import it with \
                 `sandbox image import`",
                c.name, c.image
            ),
        })?;
    }
    for v in &plan.volumes {
        if let VolumeSource::HostPath { path, kind } = &v.source {
            check_host_path(&v.name, path, kind, false)?;
        }
    }
    Ok(())
}

/// The hostPath `type` check; with `create`, `DirectoryOrCreate`/`FileOrCreate` make
/// what is missing.
fn check_host_path(name: &str, path: &str, kind: &str, create: bool) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let p = Path::new(path);
    let md = std::fs::metadata(p);
    let fail = |what: &str| {
        Err(Error::Config(format!(
            "volume {name:?}: hostPath {path} {what} (type {kind})"
        )))
    };
    match (kind, &md) {
        ("", _) => Ok(()),
        ("DirectoryOrCreate", Err(_)) if create => {
            std::fs::create_dir_all(p).map_err(ioe("mkdir hostPath", p))
        }
        ("FileOrCreate", Err(_)) if create => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(drop)
            .map_err(ioe("create hostPath", p)),
        ("DirectoryOrCreate" | "FileOrCreate", Err(_)) => Ok(()),
        ("DirectoryOrCreate" | "Directory", Ok(m)) if m.is_dir() => Ok(()),
        ("FileOrCreate" | "File", Ok(m)) if m.is_file() => Ok(()),
        ("Socket", Ok(m)) if m.file_type().is_socket() => Ok(()),
        ("CharDevice", Ok(m)) if m.file_type().is_char_device() => Ok(()),
        ("BlockDevice", Ok(m)) if m.file_type().is_block_device() => Ok(()),
        (_, Err(_)) => fail("does not exist"),
        _ => fail("is not of that type"),
    }
}

/// Runs the pod in this process, which becomes its supervisor, until it ends or is
/// stopped; returns its final phase. `ready` (a pipe) receives `ok\n` once the app
/// containers run, or `failed: REASON\n` if the pod ended before; then the caller
/// may go. The pod's folder stays with its status and logs (`pod rm` removes it).
pub fn supervise(paths: &Paths, plan: PodPlan, ready: Option<OwnedFd>) -> Result<Phase> {
    let mut ready = ready.map(File::from);
    let mut sup = match Sup::setup(paths, plan) {
        Ok(s) => s,
        Err(e) => {
            if let Some(r) = ready.as_mut() {
                let _ = writeln!(r, "failed: {}", errchain::Chain(&e));
            }
            return Err(e);
        }
    };
    let r = sup.run(&mut ready);
    if let Err(e) = &r {
        sup.st.phase = Phase::Failed;
        sup.st.reason = Some(errchain::Chain(e).to_string());
    }
    let down = sup.shutdown();
    if let Some(r) = ready.as_mut() {
        let _ = writeln!(
            r,
            "failed: {}",
            sup.st.reason.clone().unwrap_or_else(|| "ended".into())
        );
    }
    r?;
    down?;
    Ok(sup.st.phase)
}

impl Sup {
    fn setup(paths: &Paths, plan: PodPlan) -> Result<Sup> {
        let root = status::pods_root(&paths.state);
        crate::state::create_root(&paths.state)?;
        crate::state::create_root(&root)?;
        let dir = status::pod_dir(&paths.state, &plan.name)?;
        std::fs::create_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Container {
                    name: plan.name.clone(),
                    what: "a pod of this name exists: `sandbox pod rm` it first".into(),
                }
            } else {
                Error::io("mkdir", &dir, e)
            }
        })?;
        // From here a failure removes the folder (the guard below).
        let made = FolderGuard(Some(dir.clone()));
        let lock = crate::state::lock(&dir, true)?;
        // The lock lives as long as the process: an fd without CLOEXEC would leak
        // into containers, so it is kept open by forgetting the File (CLOEXEC set).
        std::mem::forget(lock);
        crate::state::restrict(&dir, None)?;
        let id = crate::assembly::random_hex(6);
        let me = std::process::id() as i32;
        let st = PodStatus {
            name: plan.name.clone(),
            namespace: plan.namespace.clone(),
            id: id.clone(),
            supervisor: me,
            supervisor_start: crate::oci::proc_start_time(me),
            infra_pid: None,
            cgroup: format!("sandbox-pod-{}-{id}", plan.name),
            phase: Phase::Pending,
            reason: None,
            created: rfc3339(),
            finished: false,
            containers: plan
                .init_containers
                .iter()
                .map(|c| (c, if c.sidecar { Kind::Sidecar } else { Kind::Init }))
                .chain(plan.containers.iter().map(|c| (c, Kind::App)))
                .map(|(c, kind)| ContainerStatus {
                    name: c.name.clone(),
                    kind,
                    image: c.image.clone(),
                    state: State::Waiting,
                    reason: None,
                    pid: None,
                    restarts: 0,
                    exit_code: None,
                    oom_killed: false,
                    ready: false,
                    started: false,
                    started_at: None,
                    finished_at: None,
                    exec_probe_cpu_usec: None,
                })
                .collect(),
        };
        status::write_json(&dir, PLAN_FILE, &plan)?;
        status::write_json(&dir, STATUS_FILE, &st)?;
        for d in [LOGS_DIR, OCI_DIR, RUN_DIR, VOLUMES_DIR] {
            let p = dir.join(d);
            std::fs::create_dir(&p).map_err(ioe("mkdir", &p))?;
        }
        // Signals first: none is lost once children exist.
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(sys("sigprocmask", "supervisor signals"))?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(sys("signalfd", "supervisor signals"))?;
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(sys("prctl(PR_SET_CHILD_SUBREAPER)", "supervisor"))?;
        let open = |p: &str| File::open(p).map_err(ioe("open", Path::new(p)));
        let host_pid_ns = open("/proc/self/ns/pid")?;
        let host_net_ns = open("/proc/self/ns/net")?;
        // A mount namespace of our own, receiving the host's mounts (slave) and
        // showing none of ours to it.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(sys("unshare(CLONE_NEWNS)", "supervisor"))?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(sys("mount(MS_REC|MS_SLAVE)", "/"))?;
        let run = dir.join(RUN_DIR);
        nskit::MountSpec::new(
            "tmpfs",
            "sandbox-pod",
            &run,
            nskit::MsFlags::MS_NOSUID | nskit::MsFlags::MS_NODEV,
            Some("mode=711"),
        )
        .mount()?;
        let backoff_base = std::env::var(BACKOFF_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(BACKOFF_BASE);
        let ctrs = plan
            .all()
            .zip(st.containers.iter())
            .map(|(c, s)| Ctr {
                plan: c.clone(),
                kind: s.kind,
                stdin: None,
                attach: None,
                clients: Vec::new(),
                pipes: Vec::new(),
                log: None,
                restart_at: None,
                backoff: backoff_base,
                started: None,
                ever_started: false,
                probes: Vec::new(),
                unhealthy: false,
            })
            .collect();
        let sup = Sup {
            oci: dir.join(OCI_DIR),
            run,
            store: Store::at(&paths.store),
            h: Hierarchy::detect()?,
            cg: None,
            ctrs,
            pids: HashMap::new(),
            probe_pids: HashMap::new(),
            infra: None,
            sfd,
            host_pid_ns,
            host_net_ns,
            infra_net_ns: None,
            stop_requested: false,
            stopping: false,
            failed: None,
            stage: 0,
            apps_started: false,
            backoff_base,
            begun: Instant::now(),
            dir,
            plan,
            st,
        };
        made.disarm();
        Ok(sup)
    }

    fn save(&self) -> Result<()> {
        status::write_json(&self.dir, STATUS_FILE, &self.st)
    }

    /// The pod cgroup, with the pod's limits: the sum of its containers' where every
    /// one has a limit (else none at the pod level), at least the largest init
    /// container's, as the kubelet sizes it.
    fn make_cgroup(&mut self) -> Result<()> {
        let (cpu, mem) = pod_limits(&self.plan);
        let mut r = LinuxResourcesBuilder::default();
        if let Some(m) = cpu {
            r = r.cpu(
                LinuxCpuBuilder::default()
                    .quota((m * crate::spec::CPU_PERIOD_USEC / 1000).max(1000) as i64)
                    .period(crate::spec::CPU_PERIOD_USEC)
                    .build()
                    .map_err(|e| Error::Config(format!("pod cpu: {e}")))?,
            );
        }
        if let Some(b) = mem {
            r = r.memory(
                LinuxMemoryBuilder::default()
                    .limit(b as i64)
                    .build()
                    .map_err(|e| Error::Config(format!("pod memory: {e}")))?,
            );
        }
        let lr = r
            .build()
            .map_err(|e| Error::Config(format!("pod resources: {e}")))?;
        let mut res = crate::assembly::resources(Some(&lr))?;
        res.devices = None;
        let controllers: Vec<Controller> = [Controller::Cpu, Controller::Memory, Controller::Pids]
            .into_iter()
            .filter(|c| self.h.mount_for(*c).is_some())
            .collect();
        let path = CgroupPath::new(&self.st.cgroup)?;
        let cg = Cgroup::create(&self.h, &path, &controllers)?;
        let cg = self.cg.insert(cg);
        cg.apply(&res)?;
        Ok(())
    }

    /// The infra container: the pause program alone on a tmpfs root, holding the
    /// pod's namespaces.
    fn start_infra(&mut self) -> Result<()> {
        let b = self.run.join(INFRA);
        let rootfs = b.join("rootfs");
        for d in ["", "dev", "proc", "sys"] {
            let p = rootfs.join(d);
            std::fs::create_dir_all(&p).map_err(ioe("mkdir", &p))?;
        }
        let pause = rootfs.join("pause");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o555)
                .open(&pause)
                .map_err(ioe("create", &pause))?;
            f.write_all(PAUSE).map_err(ioe("write", &pause))?;
        }
        let o = RunOptions {
            args: vec!["/pause".into()],
            hostname: Some(self.plan.hostname.clone()),
            user: Some((INFRA_UID, INFRA_UID)),
            ..RunOptions::default()
        };
        let mut spec = crate::spec::build(&o, INFRA, &rootfs)?;
        let mut kinds = vec![LinuxNamespaceType::Mount, LinuxNamespaceType::Ipc];
        if self.plan.share_process_namespace {
            kinds.push(LinuxNamespaceType::Pid);
        }
        if self.plan.host_network {
            spec.set_hostname(None);
        } else {
            kinds.push(LinuxNamespaceType::Network);
            kinds.push(LinuxNamespaceType::Uts);
        }
        set_namespaces(&mut spec, kinds.into_iter().map(|k| (k, None)).collect())?;
        // The mounts it needs: /proc for nothing, /dev for the null device.
        if let Some(p) = spec.process_mut() {
            let none = std::collections::HashSet::<Capability>::new;
            p.set_capabilities(Some(
                LinuxCapabilitiesBuilder::default()
                    .bounding(none())
                    .effective(none())
                    .permitted(none())
                    .inheritable(none())
                    .ambient(none())
                    .build()
                    .map_err(|e| Error::Config(format!("infra capabilities: {e}")))?,
            ));
        }
        self.set_cgroup(&mut spec, INFRA);
        let pid = self.create_and_start(INFRA, &b, &spec, [None, None, None], None)?;
        self.infra = Some(pid);
        self.st.infra_pid = Some(pid);
        if !self.plan.host_network {
            let p = format!("/proc/{pid}/ns/net");
            self.infra_net_ns = Some(File::open(&p).map_err(ioe("open", Path::new(&p)))?);
        }
        self.save()
    }

    fn set_cgroup(&self, spec: &mut Spec, name: &str) {
        if let Some(l) = spec.linux_mut() {
            l.set_cgroups_path(Some(PathBuf::from(format!("/{}/{name}", self.st.cgroup))));
        }
    }

    /// `oci create` + `oci start` of the bundle `b` (config.json written here) with
    /// `stdio` as the process's fds 0, 1, 2 (none: /dev/null); back in the host's
    /// pid namespace for our later children.
    fn create_and_start(
        &self,
        id: &str,
        b: &Path,
        spec: &Spec,
        stdio: [Option<RawFd>; 3],
        console: Option<&Path>,
    ) -> Result<i32> {
        spec.save(b.join("config.json"))
            .map_err(|e| Error::Config(format!("writing config.json of {id}: {e}")))?;
        let null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(ioe("open", Path::new("/dev/null")))?;
        // The process's 0-2: the log pipes (or the terminal's), else /dev/null; never
        // the supervisor's own, which stay as they are for its other threads.
        let fds = stdio.map(|fd| fd.unwrap_or(null.as_raw_fd()));
        let created = crate::oci::create(
            &self.oci,
            &crate::oci::CreateOptions {
                id: id.into(),
                bundle: b.to_path_buf(),
                pid_file: None,
                console_socket: console.map(Path::to_path_buf),
                no_pivot: false,
                no_new_keyring: false,
                stdio: Some(fds),
            },
        );
        self.reset_pid_ns();
        let pid = created?;
        if let Err(e) = crate::oci::start(&self.oci, id) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
            let _ = crate::oci::delete(&self.oci, id, true);
            return Err(e);
        }
        Ok(pid)
    }

    /// Joining a pid namespace (a container of a shared pod, an exec) moves where our
    /// later children go: back to ours.
    fn reset_pid_ns(&self) {
        let _ = nix::sched::setns(
            self.host_pid_ns.as_fd(),
            nix::sched::CloneFlags::CLONE_NEWPID,
        );
    }

    /// The volumes: disk emptyDirs in the pod's folder, Memory ones as tmpfs in
    /// the supervisor's namespace, hostPaths checked (and made when asked).
    fn make_volumes(&mut self) -> Result<()> {
        for v in &self.plan.volumes {
            match &v.source {
                VolumeSource::EmptyDir => {
                    let p = self.dir.join(VOLUMES_DIR).join(&v.name);
                    make_world_dir(&p)?;
                }
                VolumeSource::Memory { size_bytes } => {
                    let p = self.run.join("volumes").join(&v.name);
                    std::fs::create_dir_all(&p).map_err(ioe("mkdir", &p))?;
                    let mut data = "mode=1777".to_string();
                    if let Some(b) = size_bytes {
                        data.push_str(&format!(",size={b}"));
                    }
                    nskit::MountSpec::new(
                        "tmpfs",
                        "sandbox-pod-volume",
                        &p,
                        nskit::MsFlags::MS_NOSUID | nskit::MsFlags::MS_NODEV,
                        Some(&data),
                    )
                    .mount()?;
                }
                VolumeSource::HostPath { path, kind } => {
                    check_host_path(&v.name, path, kind, true)?;
                }
            }
        }
        Ok(())
    }

    fn volume_path(&self, name: &str) -> Result<PathBuf> {
        let v = self
            .plan
            .volumes
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| Error::Config(format!("volume {name:?} is not declared")))?;
        Ok(match &v.source {
            VolumeSource::EmptyDir => self.dir.join(VOLUMES_DIR).join(name),
            VolumeSource::Memory { .. } => self.run.join("volumes").join(name),
            VolumeSource::HostPath { path, .. } => PathBuf::from(path),
        })
    }

    /// A subPath of a volume, resolved inside it (a symlink in the volume cannot
    /// lead out) and bound on a staging folder of ours: the container's mount takes
    /// the staging folder, never the path again.
    fn sub_path(&self, ctr: &str, i: usize, vol: &Path, sub: &str) -> Result<PathBuf> {
        let root = nskit::Root::open(vol)?;
        let sp = Path::new("/").join(sub);
        let refused = |e: Error| Error::Container {
            name: ctr.into(),
            what: format!(
                "volumeMount subPath {sub:?} cannot be resolved inside its volume (a \
                 symlink leading out of it?): {}",
                errchain::Chain(&e)
            ),
        };
        match root.resolve(&sp) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                root.create_dir_all(&sp).map_err(|e| refused(e.into()))?
            }
            Err(e) => return Err(refused(e.into())),
        }
        let fd = root.resolve(&sp).map_err(|e| refused(e.into()))?;
        let stage = self.run.join(ctr).join("subpaths").join(i.to_string());
        let is_dir = nix::sys::stat::fstat(&fd)
            .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .unwrap_or(true);
        if let Some(parent) = stage.parent() {
            std::fs::create_dir_all(parent).map_err(ioe("mkdir", parent))?;
        }
        if !stage.exists() {
            if is_dir {
                std::fs::create_dir(&stage).map_err(ioe("mkdir", &stage))?;
            } else {
                std::fs::write(&stage, b"").map_err(ioe("create", &stage))?;
            }
            let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            nskit::MountSpec::bind(&via, &stage).mount()?;
        }
        Ok(stage)
    }

    /// The bundle of container `i`: its root filesystem (image layers under the
    /// pod's init layer, an upper layer on the pod's tmpfs), made on its first start,
    /// and its spec.
    fn bundle(&self, i: usize) -> Result<(PathBuf, Spec)> {
        let c = &self.ctrs[i].plan;
        let b = self.run.join(&c.name);
        let rootfs = b.join("rootfs");
        let img = self.store.get(&c.image)?;
        let config = self.store.config(&img)?;
        let icfg = config.as_ref().and_then(|c| c.config().clone());
        if !rootfs.exists() {
            self.store
                .add_user(&img, &status::image_user_id(&self.st.id, i), &self.dir)?;
            let mut lowers = self.store.lowers(&img)?;
            let init = b.join("init");
            for d in ["etc", "dev", "proc", "sys"] {
                let p = init.join(d);
                std::fs::create_dir_all(&p).map_err(ioe("mkdir", &p))?;
            }
            let h = &self.plan.hostname;
            let files: [(&str, Vec<u8>); 3] = [
                ("etc/hostname", format!("{h}\n").into_bytes()),
                (
                    "etc/hosts",
                    format!(
                        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                         127.0.1.1\t{h}\n"
                    )
                    .into_bytes(),
                ),
                (
                    "etc/resolv.conf",
                    std::fs::read("/etc/resolv.conf").unwrap_or_default(),
                ),
            ];
            for (f, data) in files {
                let p = init.join(f);
                std::fs::write(&p, data).map_err(ioe("write", &p))?;
            }
            lowers.insert(0, init.clone());
            std::fs::create_dir_all(&rootfs).map_err(ioe("mkdir", &rootfs))?;
            if c.security.read_only_root {
                // No upper layer: the root is read-only from the start. The mount
                // points of its volumes are made in the (pod's) init layer first.
                for m in &c.mounts {
                    let p = init.join(m.path.trim_start_matches('/'));
                    let mut src = self.volume_path(&m.volume)?;
                    if let Some(sub) = &m.sub_path {
                        src = src.join(sub);
                    }
                    if std::fs::metadata(&src).is_ok_and(|md| !md.is_dir()) {
                        if let Some(parent) = p.parent() {
                            std::fs::create_dir_all(parent).map_err(ioe("mkdir", parent))?;
                        }
                        std::fs::write(&p, b"").map_err(ioe("create", &p))?;
                    } else {
                        std::fs::create_dir_all(&p).map_err(ioe("mkdir", &p))?;
                    }
                }
                crate::rootfs::mount_overlay(&lowers, None, &rootfs)?;
            } else {
                let (upper, work) = (b.join("upper"), b.join("work"));
                for d in [&upper, &work] {
                    std::fs::create_dir(d).map_err(ioe("mkdir", d))?;
                }
                crate::rootfs::mount_overlay(&lowers, Some((&upper, &work)), &rootfs)?;
            }
        }
        // The command as Kubernetes makes it: command replaces the entrypoint and
        // drops the image's cmd; args replace the cmd.
        let entry = icfg
            .as_ref()
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default();
        let cmd = icfg
            .as_ref()
            .and_then(|c| c.cmd().clone())
            .unwrap_or_default();
        let args: Vec<String> = match (&c.command, &c.args) {
            (Some(co), Some(a)) => co.iter().chain(a).cloned().collect(),
            (Some(co), None) => co.clone(),
            (None, Some(a)) => entry.iter().chain(a).cloned().collect(),
            (None, None) => entry.iter().chain(&cmd).cloned().collect(),
        };
        if args.is_empty() {
            return Err(Error::Config(format!(
                "container {:?}: no command (none in the pod, none in image {:?})",
                c.name, c.image
            )));
        }
        let mut env: Vec<String> = icfg
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_default();
        env.extend(c.env.iter().map(|(k, v)| format!("{k}={v}")));
        let image_user = icfg
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default();
        let (iu, ig) = parse_image_user(&image_user).ok_or_else(|| {
            Error::Config(format!(
                "container {:?}: image user {image_user:?} is not numeric: set \
                 securityContext.runAsUser",
                c.name
            ))
        })?;
        let uid = c.security.run_as_user.unwrap_or(iu);
        let gid = c.security.run_as_group.unwrap_or(ig);
        if c.security.run_as_non_root && uid == 0 {
            return Err(Error::Config(format!(
                "container {:?}: runAsNonRoot, but it would run as uid 0 (set runAsUser)",
                c.name
            )));
        }
        let workdir = c.working_dir.clone().or_else(|| {
            icfg.as_ref()
                .and_then(|c| c.working_dir().clone())
                .filter(|w| !w.is_empty())
                .map(|w| {
                    if w.starts_with('/') {
                        w
                    } else {
                        format!("/{w}")
                    }
                })
        });
        let o = RunOptions {
            args,
            hostname: Some(self.plan.hostname.clone()),
            env,
            workdir,
            user: Some((uid, gid)),
            read_only: c.security.read_only_root,
            ..RunOptions::default()
        };
        let mut spec = crate::spec::build(&o, &c.name, &rootfs)?;
        spec.set_hostname(None);
        // Namespaces: the infra's net, ipc, uts (and pid when shared) by path.
        let infra = self
            .infra
            .ok_or_else(|| Error::Config("the infra container is not running".into()))?;
        let by = |n: &str| Some(PathBuf::from(format!("/proc/{infra}/ns/{n}")));
        let mut ns = vec![
            (LinuxNamespaceType::Mount, None),
            (LinuxNamespaceType::Cgroup, None),
            (LinuxNamespaceType::Ipc, by("ipc")),
        ];
        if self.plan.share_process_namespace {
            ns.push((LinuxNamespaceType::Pid, by("pid")));
        } else {
            ns.push((LinuxNamespaceType::Pid, None));
        }
        if !self.plan.host_network {
            ns.push((LinuxNamespaceType::Network, by("net")));
            ns.push((LinuxNamespaceType::Uts, by("uts")));
        }
        set_namespaces(&mut spec, ns)?;
        self.set_cgroup(&mut spec, &c.name);
        // Resources.
        let mut r = LinuxResourcesBuilder::default();
        let mut cpu = LinuxCpuBuilder::default();
        let mut any_cpu = false;
        if let Some(m) = c.cpu_limit_milli {
            cpu = cpu
                .quota((m * crate::spec::CPU_PERIOD_USEC / 1000).max(1000) as i64)
                .period(crate::spec::CPU_PERIOD_USEC);
            any_cpu = true;
        }
        if let Some(m) = c.cpu_request_milli.or(c.cpu_limit_milli) {
            cpu = cpu.shares((m * 1024 / 1000).max(2));
            any_cpu = true;
        }
        if any_cpu {
            r = r.cpu(
                cpu.build()
                    .map_err(|e| Error::Config(format!("cpu of {}: {e}", c.name)))?,
            );
        }
        if let Some(b) = c.memory_limit_bytes {
            r = r.memory(
                LinuxMemoryBuilder::default()
                    .limit(b as i64)
                    .swap(b as i64)
                    .build()
                    .map_err(|e| Error::Config(format!("memory of {}: {e}", c.name)))?,
            );
        }
        if let Some(l) = spec.linux_mut() {
            let keep = l.resources().clone().unwrap_or_default();
            let mut new = r
                .build()
                .map_err(|e| Error::Config(format!("resources of {}: {e}", c.name)))?;
            new.set_devices(keep.devices().clone());
            new.set_pids(*keep.pids());
            l.set_resources(Some(new));
        }
        // Volumes.
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (k, m) in c.mounts.iter().enumerate() {
            let mut src = self.volume_path(&m.volume)?;
            if let Some(sub) = &m.sub_path {
                src = self.sub_path(&c.name, k, &src, sub)?;
            }
            let mut opts = vec!["rbind".to_string(), "nosuid".into(), "nodev".into()];
            if m.read_only {
                opts.push("ro".into());
            }
            mounts.push(
                MountBuilder::default()
                    .destination(&m.path)
                    .typ("bind")
                    .source(src)
                    .options(opts)
                    .build()
                    .map_err(|e| Error::Config(format!("volumeMount {}: {e}", m.path)))?,
            );
        }
        spec.set_mounts(Some(mounts));
        // securityContext.
        if let Some(p) = spec.process_mut() {
            p.set_no_new_privileges(Some(!c.security.allow_privilege_escalation));
            p.set_user(
                UserBuilder::default()
                    .uid(uid)
                    .gid(gid)
                    .build()
                    .map_err(|e| Error::Config(format!("user of {}: {e}", c.name)))?,
            );
            let mut bounding: std::collections::HashSet<Capability> =
                DEFAULT_CAPS.iter().copied().collect();
            for d in &c.security.cap_drop {
                if d == "ALL" {
                    bounding.clear();
                } else if let Some(cap) = super::manifest::capability(d) {
                    bounding.remove(&cap);
                }
            }
            for a in &c.security.cap_add {
                if a == "ALL" {
                    return Err(Error::Config(format!(
                        "container {:?}: capabilities.add ALL is privileged: refused",
                        c.name
                    )));
                } else if let Some(cap) = super::manifest::capability(a) {
                    bounding.insert(cap);
                }
            }
            let own = if uid == 0 {
                bounding.clone()
            } else {
                std::collections::HashSet::new()
            };
            p.set_capabilities(Some(
                LinuxCapabilitiesBuilder::default()
                    .bounding(bounding)
                    .effective(own.clone())
                    .permitted(own)
                    .inheritable(std::collections::HashSet::<Capability>::new())
                    .ambient(std::collections::HashSet::<Capability>::new())
                    .build()
                    .map_err(|e| Error::Config(format!("capabilities of {}: {e}", c.name)))?,
            ));
        }
        Ok((b, spec))
    }

    /// Starts container `i`: pipes for its output (and stdin), its bundle, its
    /// process.
    fn start(&mut self, i: usize) -> Result<()> {
        let (b, mut spec) = self.bundle(i)?;
        let name = self.ctrs[i].plan.name.clone();
        let tty = self.ctrs[i].plan.tty;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(sys("pipe2", format!("stdio of {name}")))
        };
        if self.ctrs[i].attach.is_none() {
            let d = self.dir.join(ATTACH_DIR);
            std::fs::create_dir_all(&d).map_err(ioe("mkdir", &d))?;
            let p = d.join(format!("{name}.sock"));
            let _ = std::fs::remove_file(&p);
            let l = std::os::unix::net::UnixListener::bind(&p).map_err(ioe("bind", &p))?;
            l.set_nonblocking(true)
                .map_err(ioe("fcntl(O_NONBLOCK)", &p))?;
            self.ctrs[i].attach = Some(l);
        }
        let log_path = self.dir.join(LOGS_DIR).join(format!("{name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(ioe("open", &log_path))?;
        let (pid, pipes, stdin) = if tty {
            // A terminal made in the container (its devpts); its master comes back
            // over a socket of ours, as with runc's --console-socket.
            if let Some(p) = spec.process_mut() {
                p.set_terminal(Some(true));
            }
            let sock = self.run.join(format!("{name}.console"));
            let _ = std::fs::remove_file(&sock);
            let l = std::os::unix::net::UnixListener::bind(&sock).map_err(ioe("bind", &sock))?;
            let pid = self.create_and_start(&name, &b, &spec, [None, None, None], Some(&sock));
            let _ = std::fs::remove_file(&sock);
            let pid = pid?;
            let master = match recv_master(&l) {
                Ok(m) => m,
                Err(e) => {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
                    let _ = crate::oci::delete(&self.oci, &name, true);
                    return Err(Error::io("recvmsg", &sock, e));
                }
            };
            let _ = nix::fcntl::fcntl(
                &master,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            let out = master
                .try_clone()
                .map_err(ioe("dup", Path::new("terminal master")))?;
            let pipes = vec![LogPipe {
                fd: out,
                stream: "stdout",
                buf: Vec::new(),
            }];
            (pid, pipes, Some(master))
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let stdin = if self.ctrs[i].plan.stdin {
                Some(pipe()?)
            } else {
                None
            };
            let pid = self.create_and_start(
                &name,
                &b,
                &spec,
                [
                    stdin.as_ref().map(|(r, _)| r.as_raw_fd()),
                    Some(out_w.as_raw_fd()),
                    Some(err_w.as_raw_fd()),
                ],
                None,
            );
            drop((out_w, err_w));
            let pid = pid?;
            for fd in [&out_r, &err_r] {
                let _ = nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
            }
            let pipes = vec![
                LogPipe {
                    fd: out_r,
                    stream: "stdout",
                    buf: Vec::new(),
                },
                LogPipe {
                    fd: err_r,
                    stream: "stderr",
                    buf: Vec::new(),
                },
            ];
            (pid, pipes, stdin.map(|(_, w)| w))
        };
        let now = Instant::now();
        let c = &mut self.ctrs[i];
        c.pipes = pipes;
        c.stdin = stdin;
        c.log = Some(log);
        c.started = Some(now);
        c.restart_at = None;
        c.unhealthy = false;
        if c.ever_started {
            self.st.containers[i].restarts += 1;
        }
        c.ever_started = true;
        c.probes = [
            (Which::Startup, &c.plan.startup_probe),
            (Which::Liveness, &c.plan.liveness_probe),
            (Which::Readiness, &c.plan.readiness_probe),
        ]
        .into_iter()
        .filter_map(|(w, p)| {
            p.clone().map(|p| {
                let next = now + Duration::from_secs(u64::from(p.initial_delay_secs));
                (
                    w,
                    p,
                    ProbeRt {
                        next,
                        successes: 0,
                        failures: 0,
                    },
                )
            })
        })
        .collect();
        let s = &mut self.st.containers[i];
        s.state = State::Running;
        s.pid = Some(pid);
        s.reason = None;
        s.oom_killed = false;
        s.started_at = Some(rfc3339());
        s.started = c.plan.startup_probe.is_none();
        s.ready = s.started && c.plan.readiness_probe.is_none();
        self.pids.insert(pid, i);
        self.save()
    }

    /// Restarts container `i`. A start that fails now (its image or a volume changed
    /// under it) counts as an exit with status 128 and is retried per the policy with
    /// the back-off, as the kubelet does, instead of failing the whole pod.
    fn restart(&mut self, i: usize) -> Result<()> {
        let Err(e) = self.start(i) else {
            return Ok(());
        };
        let msg = errchain::Chain(&e).to_string();
        self.exited(i, 128)?;
        let s = &mut self.st.containers[i];
        s.reason = Some(format!("StartError: {msg}"));
        self.save()
    }

    /// Container `i`'s process exited with `code`: its status, its OCI container
    /// removed, its restart scheduled when the policy asks.
    fn exited(&mut self, i: usize, code: i32) -> Result<()> {
        let name = self.ctrs[i].plan.name.clone();
        let oom = self.oom_kills(&name) > 0;
        let _ = crate::oci::delete(&self.oci, &name, true);
        self.drain(i);
        let c = &mut self.ctrs[i];
        c.stdin = None;
        // Attached clients see the end (as `kubectl attach` does).
        c.clients.clear();
        let ran = c.started.map(|s| s.elapsed()).unwrap_or_default();
        let s = &mut self.st.containers[i];
        s.state = State::Terminated;
        s.pid = None;
        s.exit_code = Some(code);
        s.oom_killed = oom;
        s.ready = false;
        s.finished_at = Some(rfc3339());
        s.reason = Some(
            if oom {
                "OOMKilled"
            } else if c.unhealthy {
                "Unhealthy"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .into(),
        );
        let restart = !self.stopping
            && match c.kind {
                Kind::Sidecar => true,
                Kind::Init => code != 0 && self.plan.restart_policy != RestartPolicy::Never,
                Kind::App => match self.plan.restart_policy {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => code != 0,
                    RestartPolicy::Never => false,
                },
            };
        if c.kind == Kind::Init && code != 0 && !restart && !self.stopping {
            self.failed = Some(format!("init container {name:?} failed (exit {code})"));
        }
        if restart {
            if ran >= BACKOFF_RESET {
                c.backoff = self.backoff_base;
            }
            let delay = c.backoff;
            c.restart_at = Some(Instant::now() + delay);
            c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
            s.state = State::Waiting;
            s.reason = Some("CrashLoopBackOff".into());
        }
        self.save()
    }

    /// The OOM kills counted in the container's cgroup (memory.events on v2,
    /// memory.oom_control on v1).
    fn oom_kills(&self, name: &str) -> u64 {
        let Ok(path) = CgroupPath::new(&format!("{}/{name}", self.st.cgroup)) else {
            return 0;
        };
        let Ok(cg) = Cgroup::load(&self.h, &path) else {
            return 0;
        };
        let Ok(d) = cg.dir_for(Controller::Memory) else {
            return 0;
        };
        ["memory.events", "memory.oom_control"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(d.file(f)).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.strip_prefix("oom_kill "))
                    .filter_map(|n| n.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0)
    }

    /// Reads what container `i`'s pipes hold into its log; a pipe at EOF is closed.
    fn drain(&mut self, i: usize) {
        let c = &mut self.ctrs[i];
        let Some(log) = c.log.as_mut() else { return };
        let mut keep = Vec::new();
        for mut p in std::mem::take(&mut c.pipes) {
            let mut eof = false;
            let mut buf = [0u8; 16384];
            loop {
                match nix::unistd::read(&p.fd, &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        p.buf.extend_from_slice(&buf[..n]);
                        c.clients.retain_mut(|cl| write_nonblocking(cl, &buf[..n]));
                    }
                    Err(nix::Error::EINTR) => {}
                    // A terminal's master reads EIO once its slave is closed.
                    Err(nix::Error::EIO) => {
                        eof = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            write_cri(log, p.stream, &mut p.buf, eof);
            if !eof {
                keep.push(p);
            }
        }
        c.pipes = keep;
    }

    /// Waits up to `timeout` for a signal or output, and handles what came: output
    /// to the logs, exited children reaped, a stop request noted.
    fn pump(&mut self, timeout: Duration) -> Result<()> {
        let mut fds = vec![libc::pollfd {
            fd: self.sfd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut owners = Vec::new();
        for (i, c) in self.ctrs.iter().enumerate() {
            for p in &c.pipes {
                fds.push(libc::pollfd {
                    fd: p.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                owners.push(i);
            }
        }
        let n_pipes = fds.len();
        let mut attach_owners = Vec::new();
        for (i, c) in self.ctrs.iter().enumerate() {
            let fds_of = c
                .attach
                .iter()
                .map(|l| l.as_raw_fd())
                .chain(c.clients.iter().map(|cl| cl.as_raw_fd()));
            for fd in fds_of {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                attach_owners.push(i);
            }
        }
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: fds is a live array of fds.len() pollfds whose fds we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(Error::io("poll", &self.dir, e));
        }
        let mut attach_ready: Vec<usize> = fds[n_pipes..]
            .iter()
            .zip(&attach_owners)
            .filter(|(f, _)| f.revents != 0)
            .map(|(_, i)| *i)
            .collect();
        attach_ready.dedup();
        for i in attach_ready {
            self.serve_attach(i);
        }
        let mut ready: Vec<usize> = fds[1..n_pipes]
            .iter()
            .zip(&owners)
            .filter(|(f, _)| f.revents != 0)
            .map(|(_, i)| *i)
            .collect();
        ready.dedup();
        for i in ready {
            self.drain(i);
        }
        if fds[0].revents != 0 {
            while let Ok(Some(si)) = self.sfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(_) => self.stop_requested = true,
                    Err(_) => {}
                }
            }
        }
        self.reap()
    }

    /// Accepts `pod attach` clients of container `i` and passes what they send to
    /// its stdin (a client that ends is dropped).
    ///
    /// Each client first gets one byte: [`ATTACH_TTY`] with the terminal's master
    /// (SCM_RIGHTS), through which it passes its window size on (TIOCSWINSZ: the
    /// kernel then signals SIGWINCH to the container's foreground), or
    /// [`ATTACH_PIPES`] for a container without a terminal.
    fn serve_attach(&mut self, i: usize) {
        let c = &mut self.ctrs[i];
        if let Some(l) = &c.attach {
            while let Ok((cl, _)) = l.accept() {
                let sent = match (c.plan.tty, c.stdin.as_ref()) {
                    // SAFETY: both fds are open (the client's socket, the master).
                    (true, Some(m)) => unsafe {
                        crate::oci::console::send_fd_with(
                            cl.as_raw_fd(),
                            &[ATTACH_TTY],
                            m.as_raw_fd(),
                        )
                    },
                    _ => nix::unistd::write(&cl, &[ATTACH_PIPES])
                        .map(drop)
                        .map_err(std::io::Error::from),
                };
                if sent.is_ok() && cl.set_nonblocking(true).is_ok() {
                    c.clients.push(cl);
                }
            }
        }
        let stdin = c.stdin.as_ref();
        c.clients.retain_mut(|cl| {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            loop {
                match cl.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => {
                        if let Some(fd) = stdin {
                            let _ = nix::unistd::write(fd, &buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        });
    }

    fn reap(&mut self) -> Result<()> {
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is valid; wait4 fills it.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 with live out-pointers (nix has no wrapper returning the
            // rusage, which the exec probes' cost is measured with).
            let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut ru) };
            if pid == 0 {
                return Ok(());
            }
            if pid < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ECHILD) => return Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => return Err(Error::io("wait4", &self.dir, e)),
                }
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            if Some(pid) == self.infra {
                self.infra = None;
                self.st.infra_pid = None;
                if !self.stopping {
                    self.failed = Some(format!("the infra process exited ({code})"));
                }
            } else if let Some(i) = self.pids.remove(&pid) {
                self.exited(i, code)?;
            } else if let Some((i, which, _, spawn_usec)) = self.probe_pids.remove(&pid) {
                self.st.containers[i].exec_probe_cpu_usec = Some(spawn_usec + cpu_usec(&ru));
                self.probe_result(i, which, code == 0)?;
            }
        }
    }

    /// Whether container `i`'s process runs.
    fn running(&self, i: usize) -> bool {
        self.st.containers[i].state == State::Running
    }

    /// SIGTERM to the containers `idx`, then SIGKILL (their cgroups) after `grace`.
    fn terminate(&mut self, idx: &[usize], grace: Duration) -> Result<()> {
        for &i in idx {
            self.ctrs[i].restart_at = None;
            if let Some(pid) = self.st.containers[i].pid {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let until = Instant::now() + grace;
        while idx.iter().any(|&i| self.running(i)) && Instant::now() < until {
            self.pump(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
            )?;
        }
        for &i in idx {
            if self.running(i) {
                let name = &self.ctrs[i].plan.name;
                if let Ok(p) = CgroupPath::new(&format!("{}/{name}", self.st.cgroup))
                    && let Ok(cg) = Cgroup::load(&self.h, &p)
                {
                    let _ = cg.kill();
                }
            }
        }
        let until = Instant::now() + Duration::from_secs(10);
        while idx.iter().any(|&i| self.running(i)) && Instant::now() < until {
            self.pump(Duration::from_millis(100))?;
        }
        for &i in idx {
            self.ctrs[i].restart_at = None;
            if self.st.containers[i].state == State::Waiting && self.ctrs[i].ever_started {
                self.st.containers[i].state = State::Terminated;
            }
        }
        self.save()
    }

    fn run(&mut self, ready: &mut Option<File>) -> Result<()> {
        self.make_cgroup()?;
        self.start_infra()?;
        self.make_volumes()?;
        let n_init = self.plan.init_containers.len();
        loop {
            if self.stop_requested {
                self.st.phase = Phase::Stopped;
                self.st.reason = Some("stopped".into());
                return Ok(());
            }
            if let Some(f) = self.failed.take() {
                self.st.phase = Phase::Failed;
                self.st.reason = Some(f);
                return Ok(());
            }
            if let Some(d) = self.plan.active_deadline_secs
                && self.begun.elapsed() >= Duration::from_secs(d)
            {
                self.st.phase = Phase::Failed;
                self.st.reason = Some("DeadlineExceeded".into());
                return Ok(());
            }
            // Init containers in order; sidecars once started.
            while self.stage < n_init {
                let i = self.stage;
                let s = &self.st.containers[i];
                let done = match self.ctrs[i].kind {
                    Kind::Sidecar => s.started && s.state == State::Running,
                    _ => s.state == State::Terminated && s.exit_code == Some(0),
                };
                if done {
                    self.stage += 1;
                    continue;
                }
                if !self.ctrs[i].ever_started {
                    self.start(i)?;
                }
                break;
            }
            if self.stage == n_init && !self.apps_started {
                for i in n_init..self.ctrs.len() {
                    self.start(i)?;
                }
                self.apps_started = true;
                self.st.phase = Phase::Running;
                self.save()?;
                if let Some(mut r) = ready.take() {
                    let _ = writeln!(r, "ok");
                }
            }
            // Restarts due.
            let now = Instant::now();
            for i in 0..self.ctrs.len() {
                if self.ctrs[i].restart_at.is_some_and(|t| t <= now) {
                    self.restart(i)?;
                }
            }
            self.run_probes()?;
            // Done: every app container exited for good.
            if self.apps_started
                && self.ctrs[n_init..]
                    .iter()
                    .zip(&self.st.containers[n_init..])
                    .all(|(c, s)| s.state == State::Terminated && c.restart_at.is_none())
            {
                let ok = self.st.containers[n_init..]
                    .iter()
                    .all(|s| s.exit_code == Some(0));
                self.st.phase = if ok { Phase::Succeeded } else { Phase::Failed };
                return Ok(());
            }
            let wake = self.next_wake();
            self.pump(wake)?;
        }
    }

    /// How long until the next timer (restart, probe, deadline), at most 1 s.
    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let mut t = now + Duration::from_secs(1);
        for c in &self.ctrs {
            if let Some(r) = c.restart_at {
                t = t.min(r);
            }
            for (_, _, rt) in &c.probes {
                t = t.min(rt.next);
            }
        }
        for (_, _, deadline, _) in self.probe_pids.values() {
            t = t.min(*deadline);
        }
        t.saturating_duration_since(now)
    }

    fn run_probes(&mut self) -> Result<()> {
        let now = Instant::now();
        // Exec probes past their timeout fail (killed).
        let late: Vec<i32> = self
            .probe_pids
            .iter()
            .filter(|(_, (_, _, d, _))| *d <= now)
            .map(|(p, _)| *p)
            .collect();
        for pid in late {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for i in 0..self.ctrs.len() {
            if !self.running(i) || self.stopping {
                continue;
            }
            let started = self.st.containers[i].started;
            for k in 0..self.ctrs[i].probes.len() {
                let (which, plan, rt) = &self.ctrs[i].probes[k];
                let which = *which;
                if rt.next > now
                    || (which == Which::Startup && started)
                    || (which != Which::Startup && !started)
                    || self
                        .probe_pids
                        .values()
                        .any(|(pi, w, _, _)| *pi == i && *w == which)
                {
                    continue;
                }
                let plan = plan.clone();
                self.ctrs[i].probes[k].2.next =
                    now + Duration::from_secs(u64::from(plan.period_secs));
                let timeout = Duration::from_secs(u64::from(plan.timeout_secs));
                match &plan.action {
                    ProbeAction::Exec(cmd) => match self.exec_probe(i, cmd) {
                        Ok((pid, cost)) => {
                            self.probe_pids.insert(pid, (i, which, now + timeout, cost));
                        }
                        Err(_) => self.probe_result(i, which, false)?,
                    },
                    ProbeAction::TcpSocket { host, port } => {
                        let ok = self.connect(host, *port, timeout).is_some();
                        self.probe_result(i, which, ok)?;
                    }
                    ProbeAction::HttpGet { host, port, path } => {
                        let ok = self.http_get(host, *port, path, timeout);
                        self.probe_result(i, which, ok)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts an exec probe in container `i` (its namespaces and cgroup, as `pod
    /// exec`); returns its pid, reaped by the loop.
    fn exec_probe(&mut self, i: usize, cmd: &[String]) -> Result<(i32, u64)> {
        let before = self_cpu_usec();
        let name = self.ctrs[i].plan.name.clone();
        let pid_file = self.run.join(format!("{name}.probe.pid"));
        let r = crate::oci::exec(
            &self.oci,
            &name,
            &crate::oci::ExecOptions {
                args: cmd.to_vec(),
                detach: true,
                pid_file: Some(pid_file.clone()),
                ..Default::default()
            },
        );
        self.reset_pid_ns();
        r?;
        let text = std::fs::read_to_string(&pid_file).map_err(ioe("read", &pid_file))?;
        let pid = text
            .trim()
            .parse()
            .map_err(|_| Error::Config(format!("{}: not a pid", pid_file.display())))?;
        Ok((pid, self_cpu_usec().saturating_sub(before)))
    }

    /// A TCP connection to `host:port` from the pod's network namespace.
    fn connect(&self, host: &str, port: u16, timeout: Duration) -> Option<std::net::TcpStream> {
        let addr: std::net::IpAddr = host.parse().ok()?;
        let sa = std::net::SocketAddr::new(addr, port);
        if let Some(ns) = &self.infra_net_ns {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        }
        // The socket belongs to the namespace it was made in.
        let s = std::net::TcpStream::connect_timeout(&sa, timeout);
        if self.infra_net_ns.is_some() {
            let _ = nix::sched::setns(
                self.host_net_ns.as_fd(),
                nix::sched::CloneFlags::CLONE_NEWNET,
            );
        }
        s.ok()
    }

    /// An HTTP GET; success is a status 200..400.
    fn http_get(&self, host: &str, port: u16, path: &str, timeout: Duration) -> bool {
        use std::io::Read;
        let Some(mut s) = self.connect(host, port, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_write_timeout(Some(timeout));
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: sandbox-probe/1.0\r\n\
             Connection: close\r\n\r\n"
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            match s.read(&mut head[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        let text = String::from_utf8_lossy(&head[..n]);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (200..400).contains(&c))
    }

    fn probe_result(&mut self, i: usize, which: Which, ok: bool) -> Result<()> {
        if !self.running(i) {
            return Ok(());
        }
        let Some(k) = self.ctrs[i].probes.iter().position(|(w, _, _)| *w == which) else {
            return Ok(());
        };
        let (_, plan, rt) = &mut self.ctrs[i].probes[k];
        if ok {
            rt.successes += 1;
            rt.failures = 0;
        } else {
            rt.failures += 1;
            rt.successes = 0;
        }
        let (succ, fail) = (
            rt.successes >= plan.success_threshold,
            rt.failures >= plan.failure_threshold,
        );
        let s = &mut self.st.containers[i];
        let mut kill = false;
        match which {
            Which::Startup if succ => {
                s.started = true;
                s.ready = self.ctrs[i].plan.readiness_probe.is_none();
            }
            Which::Readiness if succ => s.ready = true,
            Which::Readiness if fail => s.ready = false,
            Which::Startup | Which::Liveness if fail => kill = true,
            _ => {}
        }
        if kill {
            // As the kubelet: the container is killed (grace, then SIGKILL) and
            // restarted per the policy.
            self.ctrs[i].unhealthy = true;
            if let Some(pid) = s.pid {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        self.save()
    }

    /// Stops everything left (app containers, then sidecars in reverse order, then
    /// the infra), releases the pod's cgroup and mounts, and marks the pod finished.
    fn shutdown(&mut self) -> Result<()> {
        self.stopping = true;
        let grace = Duration::from_secs(self.plan.grace_secs);
        let n_init = self.plan.init_containers.len();
        let apps: Vec<usize> = (n_init..self.ctrs.len()).collect();
        let mut first: Option<Error> = None;
        if let Err(e) = self.terminate(&apps, grace) {
            first.get_or_insert(e);
        }
        let side: Vec<usize> = (0..n_init).rev().collect();
        for i in side {
            if let Err(e) = self.terminate(&[i], grace) {
                first.get_or_insert(e);
            }
        }
        if let Some(pid) = self.infra {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            let until = Instant::now() + Duration::from_secs(5);
            while self.infra.is_some() && Instant::now() < until {
                if let Err(e) = self.pump(Duration::from_millis(50)) {
                    first.get_or_insert(e);
                    break;
                }
            }
            if let Some(pid) = self.infra {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
                self.infra = None;
            }
        }
        let _ = crate::oci::delete(&self.oci, INFRA, true);
        for c in &self.ctrs {
            let _ = crate::oci::delete(&self.oci, &c.plan.name, true);
        }
        if let Some(cg) = self.cg.take()
            && let Err(e) = cg.delete_recursive(Leftovers::Kill)
        {
            first.get_or_insert(e.into());
        }
        // The containers' cgroups also made the pod's folder on hierarchies the pod
        // cgroup does not use (v1 devices, freezer): found by path, removed too.
        if let Ok(p) = CgroupPath::new(&self.st.cgroup)
            && let Ok(cg) = Cgroup::load(&self.h, &p)
            && let Err(e) = cg.delete_recursive(Leftovers::Kill)
        {
            first.get_or_insert(e.into());
        }
        for (i, c) in self.ctrs.iter().enumerate() {
            if let Ok(img) = self.store.get(&c.plan.image) {
                self.store
                    .remove_user(&img.key(), &status::image_user_id(&self.st.id, i));
            }
        }
        // Our mount namespace goes with us; the tmpfs is let go now all the same.
        let _ = nix::mount::umount2(&self.run, nix::mount::MntFlags::MNT_DETACH);
        self.st.infra_pid = None;
        self.st.finished = true;
        for s in &mut self.st.containers {
            s.pid = None;
            s.ready = false;
            if s.state == State::Running {
                s.state = State::Terminated;
            }
        }
        if let Err(e) = self.save() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }
}

/// The pod cgroup's CPU (millicores) and memory (bytes) limits, as the kubelet sizes
/// them: the sum over the containers that run together (app containers and
/// sidecars), at least the largest init container's; none where a container has no
/// limit (the pod as a whole is then unbounded for that resource).
pub fn pod_limits(plan: &PodPlan) -> (Option<u64>, Option<u64>) {
    let sum = |f: fn(&ContainerPlan) -> Option<u64>| -> Option<u64> {
        let run: Option<u64> = plan
            .all()
            .filter(|c| c.sidecar || plan.containers.iter().any(|a| a.name == c.name))
            .map(f)
            .sum();
        let init = plan
            .init_containers
            .iter()
            .filter(|c| !c.sidecar)
            .map(f)
            .try_fold(0u64, |m, v| v.map(|v| m.max(v)));
        match (run, init) {
            (Some(r), Some(i)) => Some(r.max(i)),
            _ => None,
        }
    };
    (sum(|c| c.cpu_limit_milli), sum(|c| c.memory_limit_bytes))
}

/// User plus system time in `ru`, microseconds.
fn cpu_usec(ru: &libc::rusage) -> u64 {
    let us = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// This process's CPU time so far, microseconds.
fn self_cpu_usec() -> u64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a live out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    cpu_usec(&ru)
}

/// Writes all of `data` to an attached client; false once it is gone (or too slow
/// to keep up: a client never blocks the supervisor).
fn write_nonblocking(cl: &mut std::os::unix::net::UnixStream, data: &[u8]) -> bool {
    let mut off = 0;
    while off < data.len() {
        match cl.write(&data[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Accepts the container's connection on its console socket and receives the
/// terminal's master (SCM_RIGHTS), which the child sent before its exec.
fn recv_master(l: &std::os::unix::net::UnixListener) -> std::io::Result<OwnedFd> {
    let (s, _) = l.accept()?;
    let mut data = [0u8; 256];
    match crate::oci::console::recv_fd(s.as_raw_fd(), &mut data)? {
        (_, Some(fd)) => Ok(fd),
        (_, None) => Err(std::io::Error::other("no terminal master was sent")),
    }
}

/// Removes a folder unless disarmed.
struct FolderGuard(Option<PathBuf>);

impl FolderGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for FolderGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A folder every user of the pod may write (as the kubelet makes an emptyDir).
fn make_world_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).map_err(ioe("mkdir", p))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).map_err(ioe("chmod", p))
}

/// The image's `User` when numeric (`UID[:GID]`); empty is root.
fn parse_image_user(u: &str) -> Option<(u32, u32)> {
    if u.is_empty() {
        return Some((0, 0));
    }
    let (a, b) = u.split_once(':').unwrap_or((u, "0"));
    let uid = a.parse().ok()?;
    let gid = if b.is_empty() { 0 } else { b.parse().ok()? };
    Some((uid, gid))
}

/// Replaces the spec's namespaces with `ns` (a path: join that one).
fn set_namespaces(spec: &mut Spec, ns: Vec<(LinuxNamespaceType, Option<PathBuf>)>) -> Result<()> {
    let list = ns
        .into_iter()
        .map(|(t, p)| {
            let mut b = LinuxNamespaceBuilder::default().typ(t);
            if let Some(p) = p {
                b = b.path(p);
            }
            b.build()
                .map_err(|e| Error::Config(format!("namespace {t:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(l) = spec.linux_mut() {
        l.set_namespaces(Some(list));
    }
    Ok(())
}

/// Writes the complete lines of `buf` to `log` in the CRI format (`TIME STREAM F
/// TEXT`); a line longer than [`LOG_LINE_MAX`], or what is left at EOF, goes as a
/// partial (`P`).
fn write_cri(log: &mut File, stream: &str, buf: &mut Vec<u8>, eof: bool) {
    let mut out = Vec::new();
    let mut start = 0;
    let ts = rfc3339();
    while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
        let line = &buf[start..start + nl];
        out.extend_from_slice(format!("{ts} {stream} F ").as_bytes());
        out.extend_from_slice(line);
        out.push(b'\n');
        start += nl + 1;
    }
    buf.drain(..start);
    while buf.len() > LOG_LINE_MAX || (eof && !buf.is_empty()) {
        let n = buf.len().min(LOG_LINE_MAX);
        out.extend_from_slice(format!("{ts} {stream} P ").as_bytes());
        out.extend_from_slice(&buf[..n]);
        out.push(b'\n');
        buf.drain(..n);
    }
    if !out.is_empty() {
        let _ = log.write_all(&out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        let mut f = File::create(&p).unwrap();
        let mut buf = b"one\ntwo\npar".to_vec();
        write_cri(&mut f, "stdout", &mut buf, false);
        assert_eq!(buf, b"par");
        write_cri(&mut f, "stdout", &mut buf, true);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(" stdout F one"), "{}", lines[0]);
        assert!(lines[2].ends_with(" stdout P par"), "{}", lines[2]);
        assert!(lines[0].contains('T') && lines[0].split(' ').next().unwrap().ends_with('Z'));
    }

    #[test]
    fn image_user() {
        assert_eq!(parse_image_user(""), Some((0, 0)));
        assert_eq!(parse_image_user("1000:1000"), Some((1000, 1000)));
        assert_eq!(parse_image_user("nobody"), None);
    }

    #[test]
    fn pod_limits_sum_and_cover_init() {
        let y = |extra: &str| {
            format!(
                "apiVersion: v1
kind: Pod
metadata: {{name: p}}
spec:
  initContainers:
  - name: i
    image: b
    resources: {{limits: {{cpu: '3', memory: 10Mi}}}}
  - name: s
    image: b
    restartPolicy: Always
    resources: {{limits: {{cpu: 100m, memory: 1Mi}}}}
  containers:
  - name: a
    image: b
    resources: {{limits: {{cpu: 200m, memory: 2Mi}}}}
  - name: c
    image: b
{extra}"
            )
        };
        let p = super::super::manifest::parse(
            &y("    resources: {limits: {cpu: 300m, memory: 20Mi}}\n"),
            "p",
        )
        .unwrap();
        // cpu: max(100m + 200m + 300m, 3) = 3000m; memory: 1 + 2 + 20 Mi.
        assert_eq!(pod_limits(&p), (Some(3000), Some(23 << 20)));
        let p = super::super::manifest::parse(&y(""), "p").unwrap();
        assert_eq!(pod_limits(&p), (None, None));
    }

    #[test]
    fn pause_is_small() {
        assert!(PAUSE.len() < 100 * 1024, "{} bytes", PAUSE.len());
        assert_eq!(&PAUSE[..4], b"\x7fELF");
    }
}
