//! The OCI runtime: the lifecycle of the runtime spec with runc's verbs, over the same
//! assembly as `sandbox run` ([`crate::assembly`]).
//!
//! - `create` reads the bundle, makes the state folder (`ROOT/ID`), the cgroup and
//!   the container's process, which waits at an exec gate: a FIFO in the state
//!   folder, `exec.fifo`, opened read-write by the process. `create` then exits:
//!   nothing of the runtime stays behind, and the caller (a containerd shim, conmon)
//!   is the subreaper that reaps the container.
//! - `start` writes one byte into the FIFO: the process execs.
//! - `state`, `kill`, `delete`, `pause`, `resume`, `ps`, `list` find the container
//!   through its state file; its pid is checked against the recorded start time (a
//!   reused pid is another process) and signals go through a pidfd.
//! - Operations on one container are serialised by a flock on its folder.
//!
//! Mounts the runtime makes on the host side (the container's `/dev` tmpfs on the
//! bundle's rootfs) are made in a private mount namespace of `create`'s own, which
//! the container's namespace copies: nothing appears in the host's mount table.

pub mod bundle;
pub mod child_hooks;
pub mod console;
pub(crate) mod exec;
mod hooks;
pub(crate) mod idmap;

pub use exec::{ExecOptions, exec};

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroupkit::{Cgroup, CgroupPath, FreezerState, Hierarchy, Leftovers};
use nix::sys::signal::Signal;
use nskit::{Namespace, NsHandle};
use oci_spec::runtime::Spec;
use serde::Serialize;

use crate::assembly::spawn::{Launch, kinds_of, launch, userns_owner};
use crate::assembly::{Guard, now_secs, place, random_hex};
use crate::error::{Error, Result, ioe};
use crate::lifecycle::ContainerProcess;
use crate::state::{self, State, Status};

/// The exec gate in a container's folder.
pub const EXEC_FIFO: &str = "exec.fifo";
/// The spec the container was created from, in its folder.
pub const OCI_CONFIG: &str = "config.json";
/// Where relative (and absent) `linux.cgroupsPath`s go, under each hierarchy root.
pub const CGROUP_PARENT: &str = "sandbox";

/// `create`'s options.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// The container id.
    pub id: String,
    /// The bundle folder (config.json and the rootfs).
    pub bundle: PathBuf,
    /// Where to write the container's pid.
    pub pid_file: Option<PathBuf>,
    /// The caller's socket for the terminal's master (`process.terminal`).
    pub console_socket: Option<PathBuf>,
    /// `--no-pivot`: change the root with MS_MOVE and chroot (a root on a ramfs).
    pub no_pivot: bool,
    /// `--no-new-keyring`: keep the caller's session keyring.
    pub no_new_keyring: bool,
    /// The process's stdin, stdout and stderr (fds the caller keeps open during
    /// `create`); None: this process's own 0-2, as the runtime's command line has it.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
}

/// The OCI state of a container (`sandbox state`), as runc prints it.
#[derive(Clone, Debug, Serialize)]
pub struct OciState {
    /// The runtime-spec version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// creating, created, running, paused or stopped.
    pub status: String,
    /// The container's first process (host pid); 0 once stopped.
    pub pid: i32,
    /// The bundle folder.
    pub bundle: PathBuf,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The owner (runc prints the user that created it; root here).
    pub owner: String,
    /// The spec's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Now, as RFC 3339 in UTC with nanoseconds.
pub fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_nanos())
}

/// `secs` since the epoch as RFC 3339 UTC (civil-from-days, Howard Hinnant's).
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The start time of `pid` (field 22 of /proc/PID/stat) and whether it is a zombie.
fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

/// The start time of `pid`, to tell it from a later process with the same pid.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(s, _)| s)
}

/// Whether the container's recorded process still runs (same start time, not a
/// zombie).
fn process_alive(st: &State) -> bool {
    match (st.pid, st.pid_start) {
        (Some(pid), Some(start)) => {
            matches!(proc_stat(pid), Some((s, false)) if s == start)
        }
        _ => false,
    }
}

/// The OCI status of a container from its state and the kernel.
pub(crate) fn status_of(dir: &Path, st: &State) -> &'static str {
    match st.status {
        Status::Creating => {
            // The creating process may have died part-way.
            let creator = proc_stat(st.supervisor).is_some_and(|(_, z)| !z);
            if creator && state::lock(dir, false).ok().flatten().is_none() {
                "creating"
            } else {
                "stopped"
            }
        }
        Status::Created if process_alive(st) => "created",
        Status::Running if process_alive(st) => match frozen(st) {
            Some(true) => "paused",
            _ => "running",
        },
        _ => "stopped",
    }
}

fn frozen(st: &State) -> Option<bool> {
    let h = Hierarchy::detect().ok()?;
    let cg = Cgroup::load(&h, &CgroupPath::new(&st.cgroup).ok()?).ok()?;
    Some(cg.freezer_state().ok()? == FreezerState::Frozen)
}

pub(crate) fn not_found(id: &str) -> Error {
    Error::Container {
        name: id.into(),
        what: "container does not exist".into(),
    }
}

/// The folder and state of container `id`, with its lock held.
fn open(root: &Path, id: &str) -> Result<(PathBuf, State, Option<File>)> {
    state::check_name(id)?;
    let dir = root.join(id);
    if !dir.is_dir() {
        return Err(not_found(id));
    }
    let lock = state::lock(&dir, true)?;
    let st = state::read(&dir).map_err(|_| not_found(id))?;
    Ok((dir, st, lock))
}

/// The cgroup path of a container: `linux.cgroupsPath` when absolute, else under
/// [`CGROUP_PARENT`] (the spec lets the runtime place relative paths).
fn cgroup_path(spec: &Spec, id: &str) -> Result<String> {
    let p = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let text = match &p {
        Some(p) => p.to_string_lossy().into_owned(),
        None => String::new(),
    };
    if text.contains(':') {
        return Err(Error::Config(format!(
            "linux.cgroupsPath {text:?} is a systemd slice:prefix:name path; this runtime \
             manages cgroupfs paths only (give a path like /pods/{id})"
        )));
    }
    let rel = match p {
        Some(p) if p.is_absolute() => text.trim_start_matches('/').to_string(),
        Some(_) if !text.is_empty() => format!("{CGROUP_PARENT}/{text}"),
        _ => format!("{CGROUP_PARENT}/{id}"),
    };
    CgroupPath::new(&rel).map_err(|e| Error::Config(format!("linux.cgroupsPath {text:?}: {e}")))?;
    Ok(rel)
}

/// Runs `f` in a private mount namespace of this process (slave of the host's, so
/// nothing made there shows on the host), then returns to the host's.
fn in_private_mounts<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    use nix::sched::{CloneFlags, setns, unshare};
    let host =
        File::open("/proc/self/ns/mnt").map_err(ioe("open", Path::new("/proc/self/ns/mnt")))?;
    let cwd = File::open(".").ok();
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::io("unshare(CLONE_NEWNS)", "/proc/self/ns/mnt", e.into()))?;
    let r = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| Error::io("mount(MS_REC|MS_SLAVE)", "/", e.into()))
    .and_then(|()| f());
    if let Err(e) = setns(host.as_fd(), CloneFlags::CLONE_NEWNS) {
        let back = Error::io("setns back to the host's", "/proc/self/ns/mnt", e.into());
        // The first failure is the cause; not returning is reported with it.
        return Err(match r {
            Ok(_) => back,
            Err(first) => Error::Config(format!("{first}; then {back}")),
        });
    }
    if let Some(c) = cwd {
        let _ = nix::unistd::fchdir(c.as_fd());
    }
    r
}

/// The devices every container gets (runtime spec, "Default Devices"): name,
/// major, minor (the host's nodes of these numbers are bound in).
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The bundle's root filesystem made ready on the host side, inside the private
/// mount namespace: mount points (made inside the root, never through its
/// symlinks), the /dev tmpfs with the default devices, the working directory.
fn prepare_rootfs(rootfs: &Path, spec: &Spec, owner: Option<(u32, u32)>) -> Result<()> {
    // The root becomes a mount of its own (as runc makes it): pivot_root needs one,
    // and so does the MS_MOVE used where / is an initramfs.
    nskit::MountSpec::rbind(rootfs, rootfs).mount()?;
    let root = nskit::Root::open(rootfs)?;
    // /dev must be a directory of the root itself: through a symlink the host-side
    // steps below would land outside it.
    match std::fs::symlink_metadata(rootfs.join("dev")) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(Error::Config(format!(
                "{}/dev is not a directory (a symlink?): refused",
                rootfs.display()
            )));
        }
        Err(_) => root.create_dir_all("/dev")?,
    }
    for m in spec.mounts().iter().flatten() {
        let dst = m.destination();
        if dst.starts_with("/dev") {
            continue;
        }
        let file_bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        let src_is_file = file_bind
            && m.source()
                .as_deref()
                .is_some_and(|s| s.exists() && !s.is_dir());
        match root.resolve(dst) {
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        if src_is_file {
            let parent = dst.parent().unwrap_or(Path::new("/"));
            root.create_dir_all(parent)?;
            let pfd = root.resolve(parent)?;
            let name = dst.file_name().unwrap_or_default();
            let fd = nix::fcntl::openat(
                &pfd,
                name,
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_EXCL
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC
                    | nix::fcntl::OFlag::O_WRONLY,
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            );
            match fd {
                Ok(_) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(Error::io("create mount point", dst, e.into())),
            }
        } else {
            root.create_dir_all(dst)?;
        }
    }
    crate::rootfs::mount_dev(rootfs, spec, owner)?;
    // A fresh tmpfs of ours at rootfs/dev: nothing in it can redirect a path. The
    // host's nodes are bound in (as `sandbox run` does), not made with mknod: a bind
    // mount has flags of its own, so they work under a user namespace and even when
    // the spec's /dev tmpfs is `nodev`.
    let dev = rootfs.join("dev");
    for (name, _, _) in DEFAULT_DEVICES {
        let p = dev.join(name);
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        std::fs::write(&p, b"").map_err(ioe("create", &p))?;
        let host = Path::new("/dev").join(name);
        nskit::MountSpec::bind(&host, &p)
            .flags(nskit::MsFlags::MS_NOSUID | nskit::MsFlags::MS_NOEXEC)
            .mount()?;
    }
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        make_device(&root, d, owner)?;
    }
    if let Some(p) = spec.process() {
        crate::assembly::workdir::ensure(rootfs, p.cwd(), owner)?;
    }
    Ok(())
}

/// A `linux.devices` node in the container's /dev tmpfs (resolved inside the root;
/// parents made), with its mode and owner. A node that exists (a default device)
/// is replaced.
fn make_device(
    root: &nskit::Root,
    d: &oci_spec::runtime::LinuxDevice,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag};
    use oci_spec::runtime::LinuxDeviceType as T;
    let p = d.path();
    let kind = match d.typ() {
        T::C | T::U => SFlag::S_IFCHR,
        T::B => SFlag::S_IFBLK,
        T::P => SFlag::S_IFIFO,
        T::A => return Err(Error::Config("linux.devices: type a is not a node".into())),
    };
    let parent = p.parent().unwrap_or(Path::new("/dev"));
    root.create_dir_all(parent)?;
    let pfd = root.resolve(parent)?;
    let name = p.file_name().unwrap_or_default();
    // A default device bound there is unmounted first (our own bind).
    let host_view = root.path().join(p.strip_prefix("/").unwrap_or(p));
    let _ = nix::mount::umount2(&host_view, nix::mount::MntFlags::MNT_DETACH);
    let _ = nix::unistd::unlinkat(&pfd, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666));
    let (maj, min) = (
        u64::try_from(d.major()).unwrap_or(0),
        u64::try_from(d.minor()).unwrap_or(0),
    );
    nix::sys::stat::mknodat(&pfd, name, kind, mode, nix::sys::stat::makedev(maj, min))
        .map_err(|e| Error::io("mknod linux.devices", p, e.into()))?;
    let fd = nix::fcntl::openat(
        &pfd,
        name,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open linux.devices", p, e.into()))?;
    // The mode without the umask, through /proc/self/fd (fchmod refuses O_PATH fds).
    let via = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    std::fs::set_permissions(
        &via,
        std::os::unix::fs::PermissionsExt::from_mode(mode.bits()),
    )
    .map_err(|e| Error::io("chmod linux.devices", p, e))?;
    let (u, g) = match owner {
        Some((ou, og)) => (d.uid().unwrap_or(0) + ou, d.gid().unwrap_or(0) + og),
        None => (d.uid().unwrap_or(0), d.gid().unwrap_or(0)),
    };
    nix::unistd::fchownat(
        &fd,
        "",
        Some(u.into()),
        Some(g.into()),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| Error::io("chown linux.devices", p, e.into()))
}

/// Writes `linux.sysctl` (checked by [`bundle::check`] to be namespaced) in the
/// container's namespaces: a forked helper enters its network and IPC namespaces
/// and writes /proc/sys (procfs answers for the writer's namespaces).
fn apply_sysctls(pid: i32, sysctl: &std::collections::HashMap<String, String>) -> Result<()> {
    if sysctl.is_empty() {
        return Ok(());
    }
    let mut items: Vec<(String, String, &str)> = Vec::new();
    for (k, v) in sysctl {
        let ns = if k.starts_with("net.") { "net" } else { "ipc" };
        items.push((format!("/proc/sys/{}", k.replace('.', "/")), v.clone(), ns));
    }
    let nsfiles: Vec<(File, nix::sched::CloneFlags)> = ["net", "ipc"]
        .into_iter()
        .filter(|n| items.iter().any(|i| i.2 == *n))
        .map(|n| {
            let p = format!("/proc/{pid}/ns/{n}");
            let flag = if n == "net" {
                nix::sched::CloneFlags::CLONE_NEWNET
            } else {
                nix::sched::CloneFlags::CLONE_NEWIPC
            };
            File::open(&p)
                .map(|f| (f, flag))
                .map_err(|e| Error::io("open", p, e))
        })
        .collect::<Result<_>>()?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe2", "sysctl report", e.into()))?;
    // SAFETY: the runtime is single-threaded here (the CLI makes no threads), so the
    // child may allocate; it only enters namespaces, writes files and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let mut msg = String::new();
            for (f, flag) in &nsfiles {
                if let Err(e) = nix::sched::setns(f.as_fd(), *flag) {
                    msg = format!("setns({flag:?}): {e}");
                }
            }
            if msg.is_empty() {
                for (path, value, _) in &items {
                    if let Err(e) = std::fs::write(path, value) {
                        msg = format!("write {path} = {value:?}: {e}");
                        break;
                    }
                }
            }
            let _ = nix::unistd::write(&w, msg.as_bytes());
            // SAFETY: _exit skips the parent's atexit handlers and buffers.
            unsafe { libc::_exit(i32::from(!msg.is_empty())) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(w);
            let mut msg = String::new();
            let _ = std::io::Read::read_to_string(&mut File::from(r), &mut msg);
            let _ = nix::sys::wait::waitpid(child, None);
            if msg.is_empty() {
                Ok(())
            } else {
                Err(Error::Config(format!("linux.sysctl: {msg}")))
            }
        }
        Err(e) => Err(Error::io("fork", "sysctl helper", e.into())),
    }
}

/// The namespaces to join: the spec's `linux.namespaces[].path`.
fn joins(spec: &Spec) -> Result<Vec<(NsHandle, Namespace)>> {
    let mut out = Vec::new();
    for n in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let Some(p) = n.path() else { continue };
        let kind = crate::assembly::ns_kind(n.typ());
        let h = NsHandle::from_path(p).map_err(|e| {
            Error::Config(format!(
                "linux.namespaces {:?} path {}: {e}",
                n.typ(),
                p.display()
            ))
        })?;
        if h.kind().is_some_and(|k| k != kind) {
            return Err(Error::Config(format!(
                "linux.namespaces {:?} path {} is a namespace of another kind",
                n.typ(),
                p.display()
            )));
        }
        out.push((h, kind));
    }
    Ok(out)
}

/// The state JSON given to hooks and printed by `state`.
fn oci_state(dir: &Path, st: &State) -> OciState {
    let status = status_of(dir, st);
    let bundle = st.bundle.clone().unwrap_or_else(|| dir.to_path_buf());
    OciState {
        oci_version: bundle::OCI_VERSION.into(),
        id: st.name.clone(),
        status: status.into(),
        pid: if status == "stopped" {
            0
        } else {
            st.pid.unwrap_or(0)
        },
        rootfs: std::fs::read(dir.join(OCI_CONFIG))
            .ok()
            .and_then(|t| serde_json::from_slice::<Spec>(&t).ok())
            .and_then(|s| bundle::rootfs(&bundle, &s).ok())
            .unwrap_or_else(|| dir.join(state::ROOTFS_DIR)),
        bundle,
        created: st
            .created_at
            .clone()
            .unwrap_or_else(|| rfc3339(st.created, 0)),
        owner: String::new(),
        annotations: st.annotations.clone(),
    }
}

fn state_json(dir: &Path, st: &State) -> Vec<u8> {
    serde_json::to_vec(&oci_state(dir, st)).unwrap_or_default()
}

/// Writes `text` to `path` atomically (temp file + rename), as callers read pid
/// files as soon as `create` returns.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(ioe("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(ioe("rename", path))
}

/// `sandbox create`: assembles the container of `o.bundle` and leaves its process
/// waiting for `start`. Returns its pid. On any failure nothing is left: no state,
/// cgroup, process or mount.
pub fn create(root: &Path, o: &CreateOptions) -> Result<i32> {
    let child = create_child(root, o, &[])?;
    // The caller reaps the process: not waited for here.
    Ok(child.pid())
}

/// `sandbox run --bundle`: create, start, wait (signals forwarded), delete; returns
/// the exit status (128+N for signal N). With `detach`, returns once started.
pub fn run(root: &Path, o: &CreateOptions, detach: bool) -> Result<i32> {
    let fwd = nskit::forward::Forwarder::new(&crate::assembly::spawn::FORWARDED)?;
    let mut child = create_child(root, o, &[fwd.as_fd().as_raw_fd()])?;
    let started = start(root, &o.id);
    if let Err(e) = started {
        let _ = delete(root, &o.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let status = child.wait_forwarding(&fwd);
    drop(fwd);
    let deleted = delete(root, &o.id, true);
    let code = crate::assembly::exit_code(status?);
    if let Some(w) = deleted? {
        return Err(w);
    }
    Ok(code)
}

fn create_child(root: &Path, o: &CreateOptions, extra_held: &[i32]) -> Result<nskit::Child> {
    state::check_name(&o.id)?;
    let bundle = o
        .bundle
        .canonicalize()
        .map_err(|e| Error::io("open bundle", &o.bundle, e))?;
    let (spec, idmaps) = bundle::load_with_idmaps(&bundle)?;
    let rootfs = bundle::rootfs(&bundle, &spec)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("config.json process: missing".into()))?;
    let terminal = process.terminal().unwrap_or(false);
    match (terminal, &o.console_socket) {
        (true, None) => {
            return Err(Error::Config(
                "config.json process.terminal is true: give --console-socket for its master".into(),
            ));
        }
        (false, Some(_)) => {
            return Err(Error::Config(
                "--console-socket given but process.terminal is false: no terminal to send".into(),
            ));
        }
        _ => {}
    }
    let cgroup = cgroup_path(&spec, &o.id)?;
    let joins = joins(&spec)?;
    state::create_root(root)?;
    let dir = root.join(&o.id);
    let st = State {
        name: o.id.clone(),
        id: random_hex(6),
        supervisor: std::process::id() as i32,
        pid: None,
        cgroup,
        image: None,
        command: process.args().clone().unwrap_or_default(),
        status: Status::Creating,
        keep: false,
        created: now_secs(),
        bundle: Some(bundle.clone()),
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        pid_start: None,
        created_at: Some(rfc3339_now()),
        no_new_keyring: o.no_new_keyring,
    };
    let lock = place(root, &dir, &st).map_err(|e| match e {
        Error::Container { name, .. } => Error::Container {
            name,
            what: "a container with this id exists already".into(),
        },
        e => e,
    })?;
    let mut g = Guard {
        dir: dir.clone(),
        state: st,
        store: None,
        image: None,
        cgroup: None,
        armed: true,
    };
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Config("config.json linux: missing".into()))?;
    let owner = userns_owner(linux, kinds_of(linux));
    state::restrict(&dir, owner)?;
    spec.save(dir.join(OCI_CONFIG))
        .map_err(|e| Error::Config(format!("writing config.json: {e}")))?;

    let fifo = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::io("mkfifo", &fifo, e.into()))?;
    let gate: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(ioe("open", &fifo))?
        .into();
    let console = match &o.console_socket {
        Some(p) => Some(console::Console::connect(p, console::size_of(process))?),
        None => None,
    };
    // The child closes its copy of the console socket itself, once the master is
    // sent; the runtime's copy goes with the spawn.
    let mut held: Vec<i32> = lock.iter().map(AsRawFd::as_raw_fd).collect();
    held.extend_from_slice(extra_held);
    // Hooks around the child's root change: prestart and createRuntime run here, in
    // the runtime's namespaces, while the child waits (after its mounts, before
    // pivot_root) for them; then createContainer runs in the child. startContainer
    // runs in the child after `start`.
    let (container_hooks, runtime_hooks) = match spec.hooks() {
        Some(h) => {
            let mut st = oci_state(&dir, &g.state);
            st.pid = child_hooks::PID_PLACEHOLDER;
            st.status = "creating".into();
            let creating = serde_json::to_vec(&st).unwrap_or_default();
            st.status = "created".into();
            let created = serde_json::to_vec(&st).unwrap_or_default();
            let pid = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
            let runtime: Vec<(&'static str, Vec<oci_spec::runtime::Hook>)> = vec![
                ("prestart", h.prestart().clone().unwrap_or_default()),
                (
                    "createRuntime",
                    h.create_runtime().clone().unwrap_or_default(),
                ),
            ];
            let (sync, thread) = if runtime.iter().any(|(_, l)| !l.is_empty()) {
                let pipe = || {
                    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .map_err(|e| Error::io("pipe2", "hook sync", e.into()))
                };
                let ((sync_r, sync_w), (ack_r, ack_w)) = (pipe()?, pipe()?);
                let fds = child_hooks::Sync {
                    pid_w: sync_w.as_raw_fd(),
                    ack_r: ack_r.as_raw_fd(),
                    close: [sync_r.as_raw_fd(), ack_w.as_raw_fd()],
                };
                let template = creating.clone();
                // Started inside the private mount namespace (unshare refuses a
                // process with a second thread) and joined before leaving it.
                let t: Box<dyn FnOnce() -> Result<()> + Send> = Box::new(move || {
                    let mut b = [0u8; 4];
                    let mut r = File::from(sync_r);
                    // EOF: the child failed before its hooks; its spawn reports it.
                    if std::io::Read::read_exact(&mut r, &mut b).is_err() {
                        return Ok(());
                    }
                    let json = String::from_utf8_lossy(&template).replace(
                        &child_hooks::PID_PLACEHOLDER.to_string(),
                        &i32::from_ne_bytes(b).to_string(),
                    );
                    for (kind, list) in &runtime {
                        hooks::run(kind, list, json.as_bytes())?;
                    }
                    let _ = nix::unistd::write(&ack_w, &[1]);
                    Ok(())
                });
                // The child's ends stay ours until the spawn returns.
                (Some((fds, sync_w, ack_r)), Some(t))
            } else {
                (None, None)
            };
            let hooks = crate::assembly::spawn::ContainerHooks {
                create: child_hooks::ChildHooks::new(
                    "createContainer",
                    h.create_container().as_deref().unwrap_or_default(),
                    &creating,
                    pid.clone(),
                )?,
                start: child_hooks::ChildHooks::new(
                    "startContainer",
                    h.start_container().as_deref().unwrap_or_default(),
                    &created,
                    pid.clone(),
                )?,
                sync,
                pid,
            };
            (Some(hooks), thread)
        }
        None => (None, None),
    };
    let child = in_private_mounts(|| {
        prepare_rootfs(&rootfs, &spec, owner)?;
        // Before any thread starts: making each user namespace forks.
        let detached = idmap::detached_mounts(&spec, &idmaps)?;
        let thread = runtime_hooks.map(std::thread::spawn);
        let launched = launch(
            &mut g,
            &held,
            &spec,
            &rootfs,
            Launch {
                gate,
                console,
                init: false,
                loopback: true,
                joins,
                freezer: true,
                hooks: container_hooks,
                no_pivot: o.no_pivot,
                detached,
                stdio: o.stdio,
                keyring: if o.no_new_keyring {
                    None
                } else {
                    Some(crate::assembly::spawn::session_keyring_name(&o.id)?)
                },
            },
        );
        // Joined before we leave the mount namespace (setns needs one thread); it
        // ends once the child answered or went away.
        let hooked = match thread {
            Some(t) => t
                .join()
                .map_err(|_| Error::Config("the runtime hooks' thread panicked".into()))
                .and_then(|r| r),
            None => Ok(()),
        };
        match (launched, hooked) {
            (Ok(c), Ok(())) => Ok(c),
            // A hook's own failure says more than the child's "cancelled".
            (Ok(mut c), Err(e)) => {
                let _ = c.kill();
                let _ = c.wait();
                Err(e)
            }
            (Err(_), Err(e)) => Err(e),
            // The child's hooks step: say which hooks.
            (Err(e), Ok(())) if e.to_string().contains("pre_pivot closure") => {
                Err(Error::Config(format!(
                    "hooks.createContainer (or the wait for prestart/createRuntime) failed: \
                     {} (ECHILD: a hook exited non-zero; ETIMEDOUT: past its timeout)",
                    errchain::Chain(&e)
                )))
            }
            (Err(e), Ok(())) => Err(e),
        }
    })?;
    state::write(&dir, &g.state)?;
    let pid = child.pid();
    if let Some(s) = linux.sysctl() {
        apply_sysctls(pid, s)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        let p = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&p, adj.to_string()).map_err(|e| {
            Error::io(
                "write process.oomScoreAdj (raising it needs CAP_SYS_RESOURCE)",
                p,
                e,
            )
        })?;
    }
    if let Some(p) = &o.pid_file {
        write_atomic(p, &pid.to_string())?;
    }
    g.armed = false;
    drop(lock);
    Ok(child)
}

/// `sandbox start`: lets a created container's process exec.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let (dir, mut st, _lock) = open(root, id)?;
    let status = status_of(&dir, &st);
    if status != "created" {
        return Err(Error::Container {
            name: id.into(),
            what: format!("cannot start a container that is {status}: only a created one"),
        });
    }
    let fifo = dir.join(EXEC_FIFO);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(Error::Container {
                name: id.into(),
                what: "its process exited before start".into(),
            });
        }
        Err(e) => return Err(Error::io("open", &fifo, e)),
    };
    f.write_all(b"1").map_err(ioe("write", &fifo))?;
    drop(f);
    let _ = std::fs::remove_file(&fifo);
    st.status = Status::Running;
    state::write(&dir, &st)?;
    if let Some(h) = load_spec(&dir).and_then(|s| s.hooks().clone())
        && let Some(list) = h.poststart()
    {
        // poststart runs once the program is executing (runtime spec); the gate only
        // let the process go on (startContainer hooks may still run).
        if let Some(pid) = st.pid {
            wait_for_exec(pid);
        }
        // A failed poststart hook is reported, the container keeps running (spec).
        // The state as of the start: running (a short program may be gone by now).
        let mut os = oci_state(&dir, &st);
        os.status = "running".into();
        os.pid = st.pid.unwrap_or(0);
        hooks::run(
            "poststart",
            list,
            &serde_json::to_vec(&os).unwrap_or_default(),
        )?;
    }
    Ok(())
}

/// Waits (bounded) until `pid` runs another program than this runtime's (its
/// /proc/PID/exe is another file), or is gone.
fn wait_for_exec(pid: i32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/self/exe") else {
        return;
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        match std::fs::metadata(format!("/proc/{pid}/exe")) {
            Ok(md) if md.dev() == me.dev() && md.ino() == me.ino() => {}
            _ => return,
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(crate) fn load_spec(dir: &Path) -> Option<Spec> {
    let t = std::fs::read(dir.join(OCI_CONFIG)).ok()?;
    serde_json::from_slice(&t).ok()
}

/// `sandbox state`.
pub fn state(root: &Path, id: &str) -> Result<OciState> {
    state::check_name(id)?;
    let dir = root.join(id);
    let st = state::read(&dir).map_err(|_| not_found(id))?;
    Ok(oci_state(&dir, &st))
}

/// `sandbox list`: every container under `root`.
pub fn list(root: &Path) -> Result<Vec<OciState>> {
    Ok(state::list(root)?
        .into_iter()
        .filter_map(|e| e.state.map(|s| oci_state(&e.dir, &s)))
        .collect())
}

/// `sandbox kill`: `sig` to the container's process, or with `all` to every process
/// in its cgroup.
pub fn kill(root: &Path, id: &str, sig: Signal, all: bool) -> Result<()> {
    let (dir, st, _lock) = open(root, id)?;
    let status = status_of(&dir, &st);
    if status == "stopped" || status == "creating" {
        return Err(Error::Container {
            name: id.into(),
            what: "container not running".into(),
        });
    }
    if all {
        let h = Hierarchy::detect()?;
        let cg = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?)?;
        if sig == Signal::SIGKILL {
            return cg.kill().map_err(|e| {
                stuck(
                    id,
                    &cg,
                    e,
                    "a process in D state dies when its system call returns",
                )
            });
        }
        // Through pidfds checked against a second listing of the cgroup (its
        // sub-cgroups included); one that is gone meanwhile is fine.
        cg.signal(sig as i32)?;
        return Ok(());
    }
    let pid = st.pid.ok_or_else(|| not_found(id))?;
    ContainerProcess::open(id, &st, pid)?.signal(sig)
}

/// The error for a cgroup whose processes outlived SIGKILL (cgroupkit gives up
/// after its settle timeout rather than hang): names each process left, its state
/// and where in the kernel it waits, so the operator sees what holds the container
/// (a process in D state dies only when its system call returns).
fn stuck(id: &str, cg: &Cgroup, e: cgroupkit::Error, then: &str) -> Error {
    if !matches!(e, cgroupkit::Error::Timeout { .. }) {
        return e.into();
    }
    Error::Container {
        name: id.into(),
        what: format!(
            "SIGKILL was sent to every process of cgroup {}, but after {} s{}; {then}",
            cg.path(),
            cgroupkit::SETTLE_TIMEOUT.as_secs(),
            match remaining(cg) {
                r if r.is_empty() => " it is still populated".to_string(),
                r => r,
            }
        ),
    }
}

/// ": these processes remain: pid 12 (cat) in state D, waiting in the kernel at
/// request_wait_answer, ..." for the processes still in `cg`; empty if none.
fn remaining(cg: &Cgroup) -> String {
    let Ok(pids) = cg.all_procs() else {
        return String::new();
    };
    let list: Vec<String> = pids
        .iter()
        .map(|p| {
            let pid = p.as_raw();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // comm is between the first '(' and the last ')'; the state follows.
            let comm = stat
                .find('(')
                .zip(stat.rfind(')'))
                .map(|(a, b)| &stat[a + 1..b])
                .unwrap_or("?");
            let state = stat
                .rfind(')')
                .and_then(|b| stat[b + 1..].split_whitespace().next())
                .unwrap_or("?");
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            match wchan.trim() {
                "" | "0" => format!("pid {pid} ({comm}) in state {state}"),
                w => format!("pid {pid} ({comm}) in state {state}, waiting in the kernel at {w}"),
            }
        })
        .collect();
    if list.is_empty() {
        String::new()
    } else {
        format!(": these processes remain: {}", list.join(", "))
    }
}

/// How long `delete` waits for the container's cgroup to empty and go.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// `sandbox delete`: removes a stopped (or created; with `force`, any) container:
/// its processes, cgroup and state. With `force`, a container that does not exist
/// is not an error (the containerd shim deletes twice). Returns a failed poststop
/// hook, which the spec makes a warning.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<Option<Error>> {
    state::check_name(id)?;
    let dir = root.join(id);
    if !dir.is_dir() {
        return if force { Ok(None) } else { Err(not_found(id)) };
    }
    let _lock = state::lock(&dir, true)?;
    let Ok(st) = state::read(&dir) else {
        // A folder without state: a create killed before it wrote any.
        return state::remove_dir(&dir).map(|()| None);
    };
    let status = status_of(&dir, &st);
    if matches!(status, "running" | "paused" | "creating") && !force {
        return Err(Error::Container {
            name: id.into(),
            what: format!("cannot delete a container that is {status}: stop it, or delete --force"),
        });
    }
    let h = Hierarchy::detect()?;
    let start = Instant::now();
    if let Ok(cg) = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?) {
        if status != "stopped" {
            cg.kill().map_err(|e| {
                stuck(
                    id,
                    &cg,
                    e,
                    "the state is kept: run delete --force again once they have gone",
                )
            })?;
        }
        let left = loop {
            match Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?) {
                Ok(cg) => match cg.delete_recursive(Leftovers::Kill) {
                    Ok(()) => break None,
                    Err(e) if start.elapsed() >= DELETE_TIMEOUT => break Some(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                },
                Err(_) => break None,
            }
        };
        if let Some(e) = left {
            let remain = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?)
                .map(|cg| remaining(&cg))
                .unwrap_or_default();
            return Err(Error::Container {
                name: id.into(),
                what: format!(
                    "its cgroup {} could not be removed within {} s ({e}){remain}; \
                     run delete --force again later",
                    st.cgroup,
                    DELETE_TIMEOUT.as_secs()
                ),
            });
        }
    }
    let mut hook_failure = None;
    if let Some(h) = load_spec(&dir).and_then(|s| s.hooks().clone())
        && let Some(list) = h.poststop()
    {
        let mut gone = st.clone();
        gone.status = Status::Exited(0);
        hook_failure = hooks::run("poststop", list, &state_json(&dir, &gone)).err();
    }
    state::remove_dir(&dir)?;
    // Our own parent of relative cgroup paths goes once empty (EBUSY while another
    // container uses it: fine).
    if st.cgroup.starts_with(&format!("{CGROUP_PARENT}/"))
        && let Ok(cg) = Cgroup::load(&h, &CgroupPath::new(CGROUP_PARENT)?)
    {
        let _ = cg.delete();
    }
    // The container is gone either way; a failed hook is a warning (spec).
    Ok(hook_failure)
}

/// `sandbox pause`/`resume`: freezes or thaws the container's cgroup.
pub fn set_paused(root: &Path, id: &str, paused: bool) -> Result<()> {
    let (dir, st, _lock) = open(root, id)?;
    let status = status_of(&dir, &st);
    let expected = if paused { "running" } else { "paused" };
    if status != expected {
        return Err(Error::Container {
            name: id.into(),
            what: format!("container is {status}, not {expected}"),
        });
    }
    let h = Hierarchy::detect()?;
    let cg = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?)?;
    if paused {
        cg.freeze()?;
    } else {
        cg.thaw()?;
    }
    Ok(())
}

/// `sandbox ps ID`: the host pids in the container's cgroup.
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    state::check_name(id)?;
    let dir = root.join(id);
    let st = state::read(&dir).map_err(|_| not_found(id))?;
    let h = Hierarchy::detect()?;
    let cg = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?)?;
    let mut v: Vec<i32> = cg.procs()?.into_iter().map(|p| p.as_raw()).collect();
    v.sort_unstable();
    Ok(v)
}

/// Namespace kinds in the runtime spec's words, for `features`.
pub const NAMESPACES: [&str; 8] = [
    "cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time",
];

/// `sandbox features`: what this runtime implements (runtime-spec features.md).
pub fn features() -> serde_json::Value {
    let caps = crate::security::CAP_NAMES.to_vec();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": bundle::OCI_VERSION,
        "hooks": [
            "prestart", "createRuntime", "createContainer", "startContainer", "poststart",
            "poststop"
        ],
        "mountOptions": [
            "bind", "rbind", "ro", "rro", "rw", "nosuid", "suid", "nodev", "dev", "noexec",
            "exec", "noatime", "nodiratime", "relatime", "strictatime", "sync", "dirsync",
            "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
            "runbindable", "idmap", "ridmap"
        ],
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                    "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"
                ],
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "knownFlags": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
                ],
            },
            "mountExtensions": { "idmap": { "enabled": bundle::has_mount_setattr() } },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features.runtime": "sandbox",
        }
    })
}

/// `sandbox update`: applies `r` to a live container's cgroup. On cgroup v2 a
/// memory limit below what the container uses now is refused (it would be an OOM
/// kill, not a resize).
pub fn update(root: &Path, id: &str, r: &oci_spec::runtime::LinuxResources) -> Result<()> {
    let (dir, st, _lock) = open(root, id)?;
    let status = status_of(&dir, &st);
    if !matches!(status, "running" | "created" | "paused") {
        return Err(Error::Container {
            name: id.into(),
            what: format!("cannot update a container that is {status}"),
        });
    }
    let mut res = crate::assembly::resources(Some(r))?;
    if r.devices().is_none() {
        // Not asked to change: the device rules stay as they are.
        res.devices = None;
    }
    let h = Hierarchy::detect()?;
    let cg = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?)?;
    let v2_memory = h
        .mount_for(cgroupkit::Controller::Memory)
        .is_some_and(|m| m.version == cgroupkit::Version::V2);
    if v2_memory && let Some(cgroupkit::Limit::Bytes(max)) = res.memory.as_ref().and_then(|m| m.max)
    {
        let used = cg.memory_stat()?.current_bytes;
        if max < used {
            return Err(Error::Config(format!(
                "linux.resources.memory.limit {max} is below the container's current usage \
                 {used} bytes: refused (it would OOM-kill the container rather than resize \
                 it); free memory in the container first or give a larger limit"
            )));
        }
    }
    cg.apply(&res)?;
    if let Some(u) = r.unified() {
        crate::assembly::apply_unified(&cg, u)?;
    }
    // The recorded spec follows, so that `state`/`exec` see the new limits.
    if let Some(mut spec) = load_spec(&dir)
        && let Some(mut linux) = spec.linux().clone()
    {
        linux.set_resources(Some(r.clone()));
        spec.set_linux(Some(linux));
        let _ = spec.save(dir.join(OCI_CONFIG));
    }
    Ok(())
}

/// `sandbox events --stats`: the container's cgroup statistics, in the shape of
/// runc's `events --stats` (`type`, `id`, `data`).
pub fn stats(root: &Path, id: &str) -> Result<serde_json::Value> {
    state::check_name(id)?;
    let dir = root.join(id);
    let st = state::read(&dir).map_err(|_| not_found(id))?;
    let h = Hierarchy::detect()?;
    let cg = Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?)?;
    let mut data = serde_json::Map::new();
    if let Ok(c) = cg.cpu_stat() {
        data.insert(
            "cpu".into(),
            serde_json::json!({
                "usage": {
                    "total": c.usage_usec.map(|u| u * 1000),
                    "user": c.user_usec.map(|u| u * 1000),
                    "kernel": c.system_usec.map(|u| u * 1000),
                },
                "throttling": {
                    "periods": c.nr_periods,
                    "throttledPeriods": c.nr_throttled,
                    "throttledTime": c.throttled_usec * 1000,
                },
            }),
        );
    }
    if let Ok(m) = cg.memory_stat() {
        let limit = match cg.memory_limits().ok().and_then(|l| l.max) {
            Some(cgroupkit::Limit::Bytes(b)) => Some(b),
            _ => None,
        };
        data.insert(
            "memory".into(),
            serde_json::json!({
                "usage": { "usage": m.current_bytes, "max": m.peak_bytes, "limit": limit },
                "raw": m.stat,
            }),
        );
    }
    if let Ok(p) = cg.pids_stat() {
        data.insert("pids".into(), serde_json::json!({ "current": p.current }));
    }
    Ok(serde_json::json!({ "type": "stats", "id": id, "data": data }))
}

/// `sandbox spec`: writes a default config.json into `bundle` (refusing to replace
/// one): a shell in `rootfs`, the namespaces, mounts, capabilities, masked and
/// read-only paths of runc's default spec, Docker's seccomp profile. `rootless`
/// adds a user namespace (container ids 0..65536 on host 100000..165536).
pub fn write_default_spec(bundle: &Path, rootless: bool) -> Result<()> {
    let opts = crate::spec::RunOptions {
        args: vec!["sh".into()],
        userns: rootless,
        ..Default::default()
    };
    let mut spec = crate::spec::build(&opts, "sandbox", Path::new("rootfs"))?;
    if let Some(mut p) = spec.process().clone() {
        p.set_terminal(Some(true));
        spec.set_process(Some(p));
    }
    // The device binds of `sandbox run` are made as default devices here, and /dev
    // is not `nodev` (as runc's), so that `linux.devices` nodes work.
    let mounts: Vec<_> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() != Some("bind"))
        .cloned()
        .map(|mut m| {
            if m.destination() == Path::new("/dev") {
                let o: Vec<String> = m
                    .options()
                    .iter()
                    .flatten()
                    .filter(|o| *o != "nodev")
                    .cloned()
                    .collect();
                m.set_options(Some(o));
            }
            m
        })
        .collect();
    spec.set_mounts(Some(mounts));
    if let Some(mut l) = spec.linux().clone() {
        l.set_cgroups_path(None);
        spec.set_linux(Some(l));
    }
    let p = bundle.join("config.json");
    let text = serde_json::to_vec_pretty(&spec).map_err(|source| Error::Json {
        path: p.clone(),
        source,
    })?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Config(format!("{} exists already: remove it first", p.display()))
            } else {
                Error::io("create", &p, e)
            }
        })?;
    f.write_all(&text).map_err(ioe("write", &p))
}
