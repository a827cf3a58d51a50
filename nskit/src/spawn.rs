//! [`Spawn`]: start a program in new (or joined) namespaces, like
//! `std::process::Command`, safely from multi-threaded programs.
//!
//! # How the child is made
//!
//! Everything the child needs (argv, envp, paths, mount arguments, id-map text, time
//! offsets) is allocated in the parent **before** the clone. The child is created by
//! clone3(2) (5.3) without `CLONE_VM`, which behaves like fork(2): no stack is needed
//! and the call returns 0 in the child. `CLONE_PIDFD` returns a pidfd,
//! `CLONE_INTO_CGROUP` (5.7) places the child in a cgroup v2 directory before it runs.
//! Where clone3 is missing (ENOSYS: kernels before 5.3, or a seccomp profile that
//! hides it, as Docker's does) the fallback is clone(2) through `syscall(SYS_clone)`
//! with `CLONE_PIDFD` (5.2), and the cgroup is joined by writing `cgroup.procs` before
//! the child is released.
//!
//! Between clone and exec the child makes only raw syscalls (`syscall(SYS_...)`), never
//! a libc wrapper: no allocation, no locks, no panics. (musl's `setgroups`, `setuid`
//! and `setrlimit` run `__synccall`, which takes the thread-list lock: a child cloned
//! while another thread held it waited for it forever.) All 64 signals, libc's
//! internal ones too, are blocked in the parent across the clone, so no signal handler
//! of the parent runs in the child; the child sets every signal to its default
//! (rt_sigaction, SIGPIPE included, which Rust ignores) and unblocks them all. A failure
//! is reported as a fixed-size record `(step, index, errno)` over a `CLOEXEC` pipe,
//! after which the child calls `exit_group(127)`; an EOF on that pipe means the exec
//! succeeded. A second pipe holds the child until the parent has written
//! `uid_map`/`gid_map` (and `setgroups`) and placed it in its cgroup. Whatever fails
//! after the clone, the parent SIGKILLs the child through its pidfd and reaps it
//! before returning the error: a failed spawn leaves no process behind.
//!
//! When the parent has nothing to do between clone and exec (no user namespace, no
//! cgroup fd, no namespaces to join, no `pre_exec` closures) and the child enters no
//! time namespace (setns to one needs an unshared mm), the child is made the
//! way posix_spawn(3) makes it: clone(2) with `CLONE_VM | CLONE_VFORK` on a stack of
//! its own. The parent's page tables are not copied and the parent sleeps until the
//! child has exec'd (or failed), so the cost no longer grows with the parent's memory.
//! The child still runs only the async-signal-safe steps above; it shares the
//! parent's memory, so those steps write nothing but their own stack and fds, and a
//! failure record, which it leaves in shared memory instead of the pipe (as
//! posix_spawn does): the parent then neither makes the pipe nor waits for the
//! exec to close it.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::error::{self, Error, Result};
use crate::mount::{MountSpec, Propagation};
use crate::namespace::{Namespace, NsHandle};
use crate::sys;

/// One line of a `uid_map` / `gid_map`: `count` ids starting at `inside` in the new user
/// namespace map to ids starting at `outside` in the parent's (user_namespaces(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (in the parent user namespace).
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

impl IdMap {
    /// `count` ids from `inside` to `outside`.
    pub fn new(inside: u32, outside: u32, count: u32) -> IdMap {
        IdMap {
            inside,
            outside,
            count,
        }
    }
}

/// What to write to `/proc/PID/setgroups` before `gid_map` (3.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetGroups {
    /// `deny` when the parent is unprivileged (the kernel requires it then), else leave
    /// `allow`.
    #[default]
    Auto,
    /// Always write `deny`: setgroups(2) is refused inside the namespace.
    Deny,
    /// Never write `deny` (needs CAP_SETGID in the parent user namespace).
    Allow,
}

/// Where a standard stream of the child goes.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The parent's stream (the default).
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A new pipe; the parent's end is in [`Child::stdin`] / `stdout` / `stderr`.
    Piped,
    /// This fd (dup2'd onto the stream).
    Fd(OwnedFd),
}

/// The clocks a time namespace can offset (time_namespaces(7), 5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeClock {
    /// `CLOCK_MONOTONIC` (and its raw/coarse variants).
    Monotonic,
    /// `CLOCK_BOOTTIME`.
    Boottime,
}

type PreExec = Box<dyn FnMut() -> io::Result<()> + Send + Sync>;

/// A builder for a child process in new or joined namespaces, in the spirit of
/// `std::process::Command`.
///
/// # Examples
///
/// ```no_run
/// use nskit::{Namespace, Spawn, MountSpec};
///
/// // `hostname` in new uts+pid+mount namespaces with a private /tmp.
/// let mut child = Spawn::new("hostname")
///     .namespaces(Namespace::UTS | Namespace::PID | Namespace::MOUNT)
///     .hostname("box")
///     .mount(MountSpec::tmpfs("/tmp"))
///     .spawn()?;
/// assert!(child.wait()?.success());
/// # Ok::<(), nskit::Error>(())
/// ```
pub struct Spawn {
    program: OsString,
    arg0: Option<OsString>,
    args: Vec<OsString>,
    env: Option<Vec<(OsString, OsString)>>,
    env_changes: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    namespaces: Namespace,
    uid_map: Vec<IdMap>,
    gid_map: Vec<IdMap>,
    setgroups: SetGroups,
    uid: Option<u32>,
    gid: Option<u32>,
    hostname: Option<OsString>,
    domainname: Option<OsString>,
    time_offsets: Vec<(TimeClock, i64, u32)>,
    cgroup: Option<OwnedFd>,
    stdio: [Stdio; 3],
    propagation: Option<Propagation>,
    root: Option<PathBuf>,
    pivot_root: bool,
    mounts: Vec<MountSpec>,
    joins: Vec<(NsHandle, Namespace)>,
    pre_exec: Vec<PreExec>,
    force_clone2: bool,
}

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawn")
            .field("program", &self.program)
            .field("arg0", &self.arg0)
            .field("args", &self.args)
            .field("namespaces", &self.namespaces)
            .field("uid_map", &self.uid_map)
            .field("gid_map", &self.gid_map)
            .field("hostname", &self.hostname)
            .field("root", &self.root)
            .field("mounts", &self.mounts)
            .field("pre_exec", &self.pre_exec.len())
            .finish_non_exhaustive()
    }
}

/// A started child process, with its pidfd.
///
/// Like `std::process::Child`, dropping it neither kills nor reaps the process: call
/// [`wait`](Child::wait) (or [`kill`](Child::kill) then `wait`).
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    /// The parent's end of the child's stdin, with [`Stdio::Piped`].
    pub stdin: Option<File>,
    /// The parent's end of the child's stdout, with [`Stdio::Piped`].
    pub stdout: Option<File>,
    /// The parent's end of the child's stderr, with [`Stdio::Piped`].
    pub stderr: Option<File>,
}

/// How [`Error::Child`]'s step begins when the exec itself failed.
pub(crate) const EXEC_STEP: &str = "exec ";

/// The steps of the child between clone and exec, as reported over the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Signals = 1,
    Sync,
    Setgroups,
    Setresgid,
    Setresuid,
    Join,
    UnshareCgroup,
    UnshareTime,
    TimeOffsets,
    EnterTime,
    Hostname,
    Domainname,
    Propagation,
    BindRoot,
    OpenRoot,
    ResolveTarget,
    Mount,
    PivotRoot,
    Chdir,
    Stdio,
    PreExec,
    Exec,
}

const STEPS: [Step; 22] = [
    Step::Signals,
    Step::Sync,
    Step::Setgroups,
    Step::Setresgid,
    Step::Setresuid,
    Step::Join,
    Step::UnshareCgroup,
    Step::UnshareTime,
    Step::TimeOffsets,
    Step::EnterTime,
    Step::Hostname,
    Step::Domainname,
    Step::Propagation,
    Step::BindRoot,
    Step::OpenRoot,
    Step::ResolveTarget,
    Step::Mount,
    Step::PivotRoot,
    Step::Chdir,
    Step::Stdio,
    Step::PreExec,
    Step::Exec,
];

/// A mount, ready for the child: every string allocated.
struct ChildMount {
    source: Option<CString>,
    /// Relative to the root (confined) when a root is set, else as given.
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
    data: Option<CString>,
    /// A bind mount with MS_RDONLY needs a second, remount call.
    remount_ro: bool,
}

/// A setns for the child: the fd, its CLONE_NEW* flags, and the /proc/PID/ns paths to
/// join one by one where setns on a pidfd is refused (before 5.8).
type PreparedJoin = (RawFd, libc::c_int, Vec<(CString, libc::c_int)>);

/// Everything the child reads, prepared in the parent.
struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    uid: Option<u32>,
    gid: Option<u32>,
    drop_groups: bool,
    joins: Vec<PreparedJoin>,
    unshare_cgroup: bool,
    time_offsets: Option<Vec<u8>>,
    hostname: Option<Vec<u8>>,
    domainname: Option<Vec<u8>>,
    propagation: Option<libc::c_ulong>,
    root: Option<CString>,
    pivot_root: bool,
    mounts: Vec<ChildMount>,
    stdio: [Option<RawFd>; 3],
    /// The error pipe's write end; -1 for a vfork-style child, which reports in
    /// `report` instead (it shares our memory, and we resume only once it has
    /// exec'd or exited).
    err_w: RawFd,
    /// A vfork-style child's failure: (step, index, errno), valid once `failed`.
    report: [std::sync::atomic::AtomicU32; 3],
    failed: std::sync::atomic::AtomicBool,
    sync_r: Option<RawFd>,
    sync_w: Option<RawFd>,
}

fn cstring(what: &'static str, s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::Nul {
        what,
        value: s.to_string_lossy().into_owned(),
    })
}

impl Spawn {
    /// A builder for `program` (searched in `PATH` when it has no `/`), with no
    /// arguments, the parent's environment, stdio and namespaces.
    pub fn new(program: impl AsRef<OsStr>) -> Spawn {
        Spawn {
            program: program.as_ref().to_owned(),
            arg0: None,
            args: Vec::new(),
            env: None,
            env_changes: Vec::new(),
            cwd: None,
            namespaces: Namespace::empty(),
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            setgroups: SetGroups::Auto,
            uid: None,
            gid: None,
            hostname: None,
            domainname: None,
            time_offsets: Vec::new(),
            cgroup: None,
            stdio: [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit],
            propagation: None,
            root: None,
            pivot_root: false,
            mounts: Vec::new(),
            joins: Vec::new(),
            pre_exec: Vec::new(),
            force_clone2: false,
        }
    }

    /// `argv[0]` as the program will see it (default: the program as given to
    /// [`Spawn::new`]), e.g. the name a user typed where the program is a resolved path.
    pub fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Spawn {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Adds an argument (`argv[1]`, ...).
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Spawn {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Spawn {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Spawn {
        self.env_changes
            .push((key.as_ref().to_owned(), Some(val.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable of the child.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Spawn {
        self.env_changes.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child with an empty environment (plus what [`env`](Spawn::env) adds).
    pub fn env_clear(&mut self) -> &mut Spawn {
        self.env = Some(Vec::new());
        self.env_changes.clear();
        self
    }

    /// The child's working directory: chdir(2) after mounts and pivot_root, so a
    /// relative-to-new-root path such as `/` works.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Spawn {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// New namespaces for the child (clone3 flags). [`Namespace::TIME`] is created in
    /// the child with unshare(2) so that offsets can be set (5.6); [`Namespace::CGROUP`]
    /// together with [`cgroup`](Spawn::cgroup) is created after the child is in that
    /// cgroup, so the cgroup is the root it sees.
    pub fn namespaces(&mut self, kinds: Namespace) -> &mut Spawn {
        self.namespaces |= kinds;
        self
    }

    /// Adds a `uid_map` line (needs [`Namespace::USER`]). Without any, a new user
    /// namespace maps root inside to the caller's euid (as `unshare -r`).
    ///
    /// Root writes the map itself; an unprivileged caller mapping more than its own id
    /// uses newuidmap(1) when it is installed (package `uidmap`).
    pub fn uid_map(&mut self, map: IdMap) -> &mut Spawn {
        self.uid_map.push(map);
        self
    }

    /// Adds a `gid_map` line (needs [`Namespace::USER`]); see [`uid_map`](Spawn::uid_map).
    pub fn gid_map(&mut self, map: IdMap) -> &mut Spawn {
        self.gid_map.push(map);
        self
    }

    /// What to write to `/proc/PID/setgroups` before `gid_map`.
    pub fn setgroups(&mut self, policy: SetGroups) -> &mut Spawn {
        self.setgroups = policy;
        self
    }

    /// The uid the child switches to (setresuid(2)) before exec. In a new user namespace
    /// the default is 0 when 0 is mapped.
    pub fn uid(&mut self, uid: u32) -> &mut Spawn {
        self.uid = Some(uid);
        self
    }

    /// The gid the child switches to (setresgid(2)) before exec; see [`uid`](Spawn::uid).
    pub fn gid(&mut self, gid: u32) -> &mut Spawn {
        self.gid = Some(gid);
        self
    }

    /// The hostname in the child's new UTS namespace (sethostname(2)).
    pub fn hostname(&mut self, name: impl AsRef<OsStr>) -> &mut Spawn {
        self.hostname = Some(name.as_ref().to_owned());
        self
    }

    /// The NIS domain name in the child's new UTS namespace (setdomainname(2)).
    pub fn domainname(&mut self, name: impl AsRef<OsStr>) -> &mut Spawn {
        self.domainname = Some(name.as_ref().to_owned());
        self
    }

    /// An offset of `clock` in the child's new time namespace (needs
    /// [`Namespace::TIME`], 5.6): written to `/proc/self/timens_offsets` by the child
    /// after unshare(CLONE_NEWTIME), before it enters the namespace with setns(2).
    pub fn time_offset(&mut self, clock: TimeClock, secs: i64, nanos: u32) -> &mut Spawn {
        self.time_offsets.push((clock, secs, nanos));
        self
    }

    /// Starts the child in this cgroup v2 directory: an fd opened `O_RDONLY |
    /// O_DIRECTORY` (not `O_PATH`). clone3 `CLONE_INTO_CGROUP` (5.7); otherwise the
    /// parent writes the pid to `cgroup.procs` before releasing the child.
    pub fn cgroup(&mut self, dir: OwnedFd) -> &mut Spawn {
        self.cgroup = Some(dir);
        self
    }

    /// The child's stdin.
    pub fn stdin(&mut self, s: Stdio) -> &mut Spawn {
        self.stdio[0] = s;
        self
    }

    /// The child's stdout.
    pub fn stdout(&mut self, s: Stdio) -> &mut Spawn {
        self.stdio[1] = s;
        self
    }

    /// The child's stderr.
    pub fn stderr(&mut self, s: Stdio) -> &mut Spawn {
        self.stdio[2] = s;
        self
    }

    /// The propagation of every mount in the child's new mount namespace, set
    /// recursively on `/` first. Default with [`Namespace::MOUNT`]: private, so that
    /// nothing the child mounts reaches the parent's namespace (as `unshare -m`).
    pub fn propagation(&mut self, p: Propagation) -> &mut Spawn {
        self.propagation = Some(p);
        self
    }

    /// A root filesystem directory: mount targets are resolved inside it with
    /// openat2(RESOLVE_IN_ROOT) (5.6), so a symlink in it cannot point a mount outside.
    /// Older kernels: the path is walked one component at a time and symlinks are
    /// refused (ELOOP).
    pub fn root(&mut self, dir: impl AsRef<Path>) -> &mut Spawn {
        self.root = Some(dir.as_ref().to_owned());
        self
    }

    /// After the mounts, make [`root`](Spawn::root) the child's `/` with pivot_root(2)
    /// and detach the old root (umount2 MNT_DETACH), leaving no path to it.
    pub fn pivot_root(&mut self, yes: bool) -> &mut Spawn {
        self.pivot_root = yes;
        self
    }

    /// A mount made by the child in its new mount namespace (needs
    /// [`Namespace::MOUNT`]), in order, with mount(2).
    pub fn mount(&mut self, m: MountSpec) -> &mut Spawn {
        self.mounts.push(m);
        self
    }

    /// Joins existing namespaces in the child with setns(2) before exec (as nsenter(1)
    /// does), which is safe from threaded programs. With a pidfd handle several kinds
    /// are joined in one call (5.8+), one by one on older kernels.
    ///
    /// Joining a pid namespace affects only the child's own children (setns(2)).
    pub fn join(&mut self, ns: NsHandle, kinds: Namespace) -> &mut Spawn {
        self.joins.push((ns, kinds));
        self
    }

    /// Runs `f` in the child just before exec.
    ///
    /// # Safety
    /// `f` runs in the child of a clone of a possibly multi-threaded process: it must
    /// only do async-signal-safe work (raw syscalls; no allocation, locks, I/O through
    /// std buffers, or panics), as for `std::os::unix::process::CommandExt::pre_exec`.
    pub unsafe fn pre_exec<F>(&mut self, f: F) -> &mut Spawn
    where
        F: FnMut() -> io::Result<()> + Send + Sync + 'static,
    {
        self.pre_exec.push(Box::new(f));
        self
    }

    /// Uses clone(2) even where clone3 is available (to test the fallback path).
    #[doc(hidden)]
    pub fn force_clone2(&mut self, yes: bool) -> &mut Spawn {
        self.force_clone2 = yes;
        self
    }

    /// Spawns and waits.
    pub fn status(&mut self) -> Result<ExitStatus> {
        self.spawn()?.wait()
    }

    /// Spawns with stdout and stderr piped, waits, and returns the exit status and both
    /// outputs.
    pub fn output(&mut self) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
        self.stdio[1] = Stdio::Piped;
        self.stdio[2] = Stdio::Piped;
        let mut child = self.spawn()?;
        let err = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut e) = err {
                let _ = io::Read::read_to_end(&mut e, &mut buf);
            }
            buf
        });
        let mut out = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            io::Read::read_to_end(&mut o, &mut out)
                .map_err(|e| error::io("read", "child stdout", e))?;
        }
        let err = reader.join().unwrap_or_default();
        Ok((child.wait()?, out, err))
    }

    fn validate(&self) -> Result<()> {
        let ns = self.namespaces;
        let need = |cond: bool, what: &str, kind: Namespace| {
            if cond && !ns.contains(kind) {
                Err(Error::InvalidArgument(format!(
                    "{what} needs a new {kind} namespace (Namespace::{kind:?}); without it the parent's would change"
                )))
            } else {
                Ok(())
            }
        };
        need(
            !self.uid_map.is_empty() || !self.gid_map.is_empty(),
            "an id map",
            Namespace::USER,
        )?;
        need(
            self.hostname.is_some() || self.domainname.is_some(),
            "a hostname or domain name",
            Namespace::UTS,
        )?;
        need(
            !self.time_offsets.is_empty(),
            "a time offset",
            Namespace::TIME,
        )?;
        need(
            !self.mounts.is_empty() || self.pivot_root || self.propagation.is_some(),
            "a mount, propagation change or pivot_root",
            Namespace::MOUNT,
        )?;
        if self.pivot_root && self.root.is_none() {
            return Err(Error::InvalidArgument(
                "pivot_root needs a root directory (Spawn::root)".into(),
            ));
        }
        if let Some(r) = self.root.as_deref().filter(|r| !r.is_absolute()) {
            return Err(Error::InvalidArgument(format!(
                "root {} must be an absolute path",
                r.display()
            )));
        }
        for (h, kinds) in &self.joins {
            if let Some(k) = h.kind() {
                if !kinds.is_empty() && *kinds != k {
                    return Err(Error::InvalidArgument(format!(
                        "cannot join {kinds} through a {k} namespace handle"
                    )));
                }
            } else if kinds.is_empty() {
                return Err(Error::InvalidArgument(
                    "joining through a pidfd needs the namespace kinds".into(),
                ));
            }
            if kinds.intersects(ns) {
                return Err(Error::InvalidArgument(format!(
                    "cannot both create and join a {} namespace",
                    *kinds & ns
                )));
            }
        }
        Ok(())
    }

    fn prepare(
        &self,
        err_w: RawFd,
        sync: Option<(RawFd, RawFd)>,
        stdio: [Option<RawFd>; 3],
    ) -> Result<Prepared> {
        let prog = cstring("program", &self.program)?;
        let candidates = if self.program.as_bytes().contains(&b'/') {
            vec![prog.clone()]
        } else {
            let path = self.env_value(OsStr::new("PATH")).unwrap_or_else(|| {
                OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            });
            let mut c = Vec::new();
            for dir in path.as_bytes().split(|b| *b == b':') {
                let dir = if dir.is_empty() { b".".as_slice() } else { dir };
                let mut p = dir.to_vec();
                p.push(b'/');
                p.extend_from_slice(self.program.as_bytes());
                c.push(cstring("PATH entry", OsStr::from_bytes(&p))?);
            }
            // When the child sees the same filesystem as we do, search PATH here
            // (each failed execve in the child costs a path walk); otherwise the child
            // tries every entry in its own view.
            let same_view = self.root.is_none()
                && self.mounts.is_empty()
                && !self.joins.iter().any(|(h, k)| {
                    k.contains(Namespace::MOUNT) || h.kind() == Some(Namespace::MOUNT)
                });
            if same_view
                && let Some(found) = c.iter().find(|p| {
                    // SAFETY: p is NUL-terminated; access only reads the path.
                    unsafe { libc::access(p.as_ptr(), libc::X_OK) == 0 }
                })
            {
                c = vec![found.clone()];
            }
            c
        };
        let mut argv = vec![match &self.arg0 {
            Some(a) => cstring("argv[0]", a)?,
            None => prog,
        }];
        for a in &self.args {
            argv.push(cstring("argument", a)?);
        }
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp = Vec::new();
        for (k, v) in self.env_vars() {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstring("environment variable", OsStr::from_bytes(&kv))?);
        }
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());

        let new_user = self.namespaces.contains(Namespace::USER);
        let uid = self.uid.or_else(|| {
            (new_user && self.uid_map_or_default().iter().any(|m| m.inside == 0)).then_some(0)
        });
        let gid = self.gid.or_else(|| {
            (new_user && self.gid_map_or_default().iter().any(|m| m.inside == 0)).then_some(0)
        });
        let drop_groups = new_user && self.setgroups_deny() == Some(false);

        let mut joins = Vec::new();
        for (h, kinds) in &self.joins {
            let kinds = if kinds.is_empty() {
                h.kind().unwrap_or(*kinds)
            } else {
                *kinds
            };
            let mut fallback = Vec::new();
            if let Some(pid) = h.pid() {
                for k in kinds.kinds() {
                    let name = k.proc_name().unwrap_or("");
                    fallback.push((
                        cstring("ns path", OsStr::new(&format!("/proc/{pid}/ns/{name}")))?,
                        k.bits() as libc::c_int,
                    ));
                }
            }
            joins.push((h.as_fd().as_raw_fd(), kinds.bits() as libc::c_int, fallback));
        }

        let time_offsets = if self.time_offsets.is_empty() {
            None
        } else {
            let mut s = String::new();
            for (clock, secs, nanos) in &self.time_offsets {
                if *nanos >= 1_000_000_000 {
                    return Err(Error::InvalidArgument(format!(
                        "time offset nanoseconds {nanos} must be below 1e9"
                    )));
                }
                let name = match clock {
                    TimeClock::Monotonic => "monotonic",
                    TimeClock::Boottime => "boottime",
                };
                s.push_str(&format!("{name} {secs} {nanos}\n"));
            }
            Some(s.into_bytes())
        };

        let propagation = if self.namespaces.contains(Namespace::MOUNT) {
            Some(
                self.propagation
                    .unwrap_or(Propagation::Private)
                    .flags()
                    .bits()
                    | libc::MS_REC,
            )
        } else {
            None
        };

        let mut mounts = Vec::new();
        for m in &self.mounts {
            let target = if self.root.is_some() {
                let rel = m.target.strip_prefix("/").unwrap_or(&m.target);
                let rel = if rel.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    rel
                };
                cstring("mount target", rel.as_os_str())?
            } else {
                cstring("mount target", m.target.as_os_str())?
            };
            let flags = m.flags.bits();
            let is_bind = flags & libc::MS_BIND != 0;
            mounts.push(ChildMount {
                source: m
                    .source
                    .as_deref()
                    .map(|s| cstring("mount source", s))
                    .transpose()?,
                target,
                fstype: m
                    .fstype
                    .as_deref()
                    .map(|s| cstring("filesystem type", OsStr::new(s)))
                    .transpose()?,
                flags: if is_bind {
                    flags & !libc::MS_RDONLY
                } else {
                    flags
                },
                data: m
                    .data
                    .as_deref()
                    .map(|s| cstring("mount data", OsStr::new(s)))
                    .transpose()?,
                remount_ro: is_bind && flags & libc::MS_RDONLY != 0,
            });
        }

        Ok(Prepared {
            candidates,
            argv,
            argv_ptrs,
            envp,
            envp_ptrs,
            cwd: self
                .cwd
                .as_deref()
                .map(|p| cstring("working directory", p.as_os_str()))
                .transpose()?,
            uid,
            gid,
            drop_groups,
            joins,
            unshare_cgroup: self.namespaces.contains(Namespace::CGROUP) && self.cgroup.is_some(),
            time_offsets,
            hostname: self.hostname.as_ref().map(|h| h.as_bytes().to_vec()),
            domainname: self.domainname.as_ref().map(|h| h.as_bytes().to_vec()),
            propagation,
            root: self
                .root
                .as_deref()
                .map(|p| cstring("root", p.as_os_str()))
                .transpose()?,
            pivot_root: self.pivot_root,
            mounts,
            stdio,
            err_w,
            report: Default::default(),
            failed: std::sync::atomic::AtomicBool::new(false),
            sync_r: sync.map(|s| s.0),
            sync_w: sync.map(|s| s.1),
        })
    }

    fn env_vars(&self) -> Vec<(OsString, OsString)> {
        let mut vars: Vec<(OsString, OsString)> = match &self.env {
            Some(v) => v.clone(),
            None => std::env::vars_os().collect(),
        };
        for (k, v) in &self.env_changes {
            vars.retain(|(kk, _)| kk != k);
            if let Some(v) = v {
                vars.push((k.clone(), v.clone()));
            }
        }
        vars
    }

    fn env_value(&self, key: &OsStr) -> Option<OsString> {
        self.env_vars()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn uid_map_or_default(&self) -> Vec<IdMap> {
        if self.uid_map.is_empty() {
            // SAFETY: geteuid has no preconditions.
            vec![IdMap::new(0, unsafe { libc::geteuid() }, 1)]
        } else {
            self.uid_map.clone()
        }
    }

    fn gid_map_or_default(&self) -> Vec<IdMap> {
        if self.gid_map.is_empty() {
            // SAFETY: getegid has no preconditions.
            vec![IdMap::new(0, unsafe { libc::getegid() }, 1)]
        } else {
            self.gid_map.clone()
        }
    }

    /// Some(true): write deny; Some(false): allowed (groups can be dropped).
    fn setgroups_deny(&self) -> Option<bool> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Some(match self.setgroups {
            SetGroups::Deny => true,
            SetGroups::Allow => false,
            SetGroups::Auto => !root,
        })
    }

    /// Starts the child.
    ///
    /// # Errors
    /// A bad combination of options ([`Error::InvalidArgument`]) before anything
    /// happens; a failed clone, id-map write or cgroup placement (the child is then
    /// killed and reaped); a failed step in the child ([`Error::Child`], naming it).
    pub fn spawn(&mut self) -> Result<Child> {
        self.validate()?;
        let need_sync = self.namespaces.contains(Namespace::USER) || self.cgroup.is_some();
        // The vfork-style clone suspends us until the child execs, so it is only for
        // children that need nothing from us before then (see the module docs).
        let vfork = !need_sync
            && self.pre_exec.is_empty()
            && self.joins.is_empty()
            // Entering a time namespace needs an mm of our own (EUSERS otherwise).
            && !self.namespaces.contains(Namespace::TIME)
            && !self.force_clone2;
        // A vfork-style child reports a failure in shared memory, not over a pipe.
        let err_pipe = if vfork {
            None
        } else {
            Some(sys::pipe().map_err(|e| error::sys("pipe2", "error pipe", e))?)
        };
        let sync = if need_sync {
            Some(sys::pipe().map_err(|e| error::sys("pipe2", "sync pipe", e))?)
        } else {
            None
        };
        // Stdio: (child end, parent end).
        let mut child_ends: Vec<OwnedFd> = Vec::new();
        let mut parent_ends: [Option<File>; 3] = [None, None, None];
        let mut stdio_raw: [Option<RawFd>; 3] = [None, None, None];
        for (i, s) in self.stdio.iter_mut().enumerate() {
            match std::mem::take(s) {
                Stdio::Inherit => {}
                Stdio::Null => {
                    let f = std::fs::OpenOptions::new()
                        .read(i == 0)
                        .write(i != 0)
                        .open("/dev/null")
                        .map_err(|e| error::io("open", "/dev/null", e))?;
                    let fd = OwnedFd::from(f);
                    stdio_raw[i] = Some(fd.as_raw_fd());
                    child_ends.push(fd);
                }
                Stdio::Piped => {
                    let (r, w) = sys::pipe().map_err(|e| error::sys("pipe2", "stdio pipe", e))?;
                    let (c, p) = if i == 0 { (r, w) } else { (w, r) };
                    stdio_raw[i] = Some(c.as_raw_fd());
                    child_ends.push(c);
                    parent_ends[i] = Some(File::from(p));
                }
                Stdio::Fd(fd) => {
                    stdio_raw[i] = Some(fd.as_raw_fd());
                    child_ends.push(fd);
                }
            }
        }
        let prepared = self.prepare(
            err_pipe.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
            sync.as_ref().map(|(r, w)| (r.as_raw_fd(), w.as_raw_fd())),
            stdio_raw,
        )?;

        let mut clone_flags = (self.namespaces - Namespace::TIME).bits();
        if prepared.unshare_cgroup {
            clone_flags &= !(libc::CLONE_NEWCGROUP as u64);
        }
        let cgroup_fd = self.cgroup.as_ref().map(|f| f.as_raw_fd());
        let (pid, pidfd, placed) = if vfork {
            vfork_child(clone_flags, &prepared)?
        } else {
            clone_child(
                clone_flags,
                cgroup_fd,
                self.force_clone2,
                &prepared,
                &mut self.pre_exec,
            )?
        };
        // The child's copies keep the child ends open; ours go now, so EOF works.
        let err_r = err_pipe.map(|(r, w)| {
            drop(w);
            r
        });
        drop(child_ends);
        let sync_w = sync.map(|(r, w)| {
            drop(r);
            w
        });
        let mut child = Child {
            pid,
            pidfd,
            status: None,
            stdin: parent_ends[0].take(),
            stdout: parent_ends[1].take(),
            stderr: parent_ends[2].take(),
        };
        match self.release(pid, placed, sync_w, err_r, &prepared) {
            Ok(()) => Ok(child),
            Err(e) => {
                // Whatever failed after the clone, the child does not outlive the
                // spawn: SIGKILL through the pidfd (it cannot hit a recycled pid),
                // then reap it. A child that reported a failed step has exited or
                // is exiting already; the kill is then a no-op.
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// The parent's side after the clone: id maps and cgroup, the child released,
    /// then the child's report read. `Ok` once the child has exec'd.
    fn release(
        &self,
        pid: i32,
        placed: bool,
        sync_w: Option<OwnedFd>,
        err_r: Option<OwnedFd>,
        prepared: &Prepared,
    ) -> Result<()> {
        self.setup_parent_side(pid, placed)?;
        if let Some(w) = sync_w {
            sys::write_all(&w, &[1]).map_err(|e| error::sys("write", "sync pipe", e))?;
        }
        let Some(err_r) = err_r else {
            // vfork-style: the child has exec'd (no report) or failed and exited.
            use std::sync::atomic::Ordering;
            if !prepared.failed.load(Ordering::Acquire) {
                return Ok(());
            }
            let [step, index, errno] = &prepared.report;
            return Err(Error::Child {
                step: self.describe(step.load(Ordering::Relaxed), index.load(Ordering::Relaxed)),
                source: io::Error::from_raw_os_error(errno.load(Ordering::Relaxed) as i32),
            });
        };
        let mut rec = [0u8; 12];
        let n =
            sys::read_full(&err_r, &mut rec).map_err(|e| error::sys("read", "error pipe", e))?;
        if n == 0 {
            return Ok(());
        }
        if n != rec.len() {
            return Err(Error::Child {
                step: "an unknown step (short report)".into(),
                source: io::Error::from_raw_os_error(libc::EIO),
            });
        }
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&rec[i * 4..i * 4 + 4]);
            b
        };
        Err(Error::Child {
            step: self.describe(u32::from_ne_bytes(word(0)), u32::from_ne_bytes(word(1))),
            source: io::Error::from_raw_os_error(i32::from_ne_bytes(word(2))),
        })
    }

    fn describe(&self, step: u32, index: u32) -> String {
        let i = index as usize;
        let Some(s) = STEPS.iter().find(|s| **s as u32 == step) else {
            return format!("unknown step {step}");
        };
        match s {
            Step::Signals if i == 0 => "unblocking signals (rt_sigprocmask)".into(),
            Step::Signals => format!("resetting signal {i} to SIG_DFL (rt_sigaction)"),
            Step::Sync => "waiting for the parent (it went away)".into(),
            Step::Setgroups => "setgroups(0, NULL)".into(),
            Step::Setresgid => format!("setresgid({})", self.gid.unwrap_or(0)),
            Step::Setresuid => format!("setresuid({})", self.uid.unwrap_or(0)),
            Step::Join => match self.joins.get(i) {
                Some((_, k)) => format!("setns #{i} ({k})"),
                None => format!("setns #{i}"),
            },
            Step::UnshareCgroup => "unshare(CLONE_NEWCGROUP)".into(),
            Step::UnshareTime => "unshare(CLONE_NEWTIME) (time namespaces need Linux 5.6)".into(),
            Step::TimeOffsets => "writing /proc/self/timens_offsets".into(),
            Step::EnterTime => "setns(/proc/self/ns/time_for_children)".into(),
            Step::Hostname => format!(
                "sethostname({:?})",
                self.hostname.as_deref().unwrap_or_default()
            ),
            Step::Domainname => format!(
                "setdomainname({:?})",
                self.domainname.as_deref().unwrap_or_default()
            ),
            Step::Propagation => "mount(\"/\", MS_REC | propagation)".into(),
            Step::BindRoot => format!(
                "bind-mounting root {:?} onto itself",
                self.root.as_deref().unwrap_or(Path::new(""))
            ),
            Step::OpenRoot => format!(
                "open root {:?}",
                self.root.as_deref().unwrap_or(Path::new(""))
            ),
            Step::ResolveTarget => match self.mounts.get(i) {
                Some(m) => format!(
                    "resolving mount #{i} target {} inside the root (openat2 RESOLVE_IN_ROOT)",
                    m.target.display()
                ),
                None => format!("resolving mount #{i} target"),
            },
            Step::Mount => match self.mounts.get(i) {
                Some(m) => format!("mount #{i} ({m})"),
                None => format!("mount #{i}"),
            },
            Step::PivotRoot => "pivot_root(\".\", \".\") into the root".into(),
            Step::Chdir => format!("chdir({:?})", self.cwd.as_deref().unwrap_or(Path::new(""))),
            Step::Stdio => format!("dup2 onto fd {i}"),
            Step::PreExec => format!("pre_exec closure #{i}"),
            Step::Exec => format!("{EXEC_STEP}{:?}", self.program),
        }
    }

    fn setup_parent_side(&self, pid: i32, placed: bool) -> Result<()> {
        if let Some(cg) = self.cgroup.as_ref().filter(|_| !placed) {
            {
                let f = nix::fcntl::openat(
                    cg,
                    "cgroup.procs",
                    nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| error::nix("openat", "cgroup.procs", e))?;
                sys::write_all(&f, pid.to_string().as_bytes())
                    .map_err(|e| error::sys("write", format!("cgroup.procs <- {pid}"), e))?;
            }
        }
        if !self.namespaces.contains(Namespace::USER) {
            return Ok(());
        }
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        // SAFETY: getegid has no preconditions.
        let egid = unsafe { libc::getegid() };
        let uids = self.uid_map_or_default();
        let gids = self.gid_map_or_default();
        let own = |maps: &[IdMap], me: u32| {
            maps.len() == 1 && maps[0].count == 1 && maps[0].outside == me
        };
        if euid != 0 && !(own(&uids, euid) && own(&gids, egid)) {
            return new_id_maps(pid, &uids, &gids);
        }
        if self.setgroups_deny() == Some(true) {
            write_proc(pid, "setgroups", b"deny")?;
        }
        write_proc(pid, "uid_map", map_text(&uids).as_bytes())?;
        write_proc(pid, "gid_map", map_text(&gids).as_bytes())?;
        Ok(())
    }
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect()
}

fn write_proc(pid: i32, file: &str, text: &[u8]) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    // One write(2): the kernel takes an id map in a single write only.
    std::fs::write(&path, text).map_err(|e| {
        error::io(
            "write",
            format!("{path} <- {:?}", String::from_utf8_lossy(text).trim_end()),
            e,
        )
    })
}

/// newuidmap(1)/newgidmap(1) for an unprivileged caller (shadow's `uidmap` package).
fn new_id_maps(pid: i32, uids: &[IdMap], gids: &[IdMap]) -> Result<()> {
    for (tool, maps) in [("newuidmap", uids), ("newgidmap", gids)] {
        let mut cmd = std::process::Command::new(tool);
        cmd.arg(pid.to_string());
        for m in maps {
            cmd.args([
                m.inside.to_string(),
                m.outside.to_string(),
                m.count.to_string(),
            ]);
        }
        let st = cmd.status().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::PermissionDenied {
                    syscall: "write",
                    what: format!("/proc/{pid}/uid_map"),
                    hint: "an unprivileged caller can map only its own id; install newuidmap/newgidmap (Debian package uidmap) and grant ranges in /etc/subuid and /etc/subgid",
                    source: e,
                }
            } else {
                error::io("exec", tool, e)
            }
        })?;
        if !st.success() {
            return Err(Error::Sys {
                syscall: "write",
                what: format!("{tool} {pid} ... ({st}): check /etc/subuid and /etc/subgid"),
                source: io::Error::from_raw_os_error(libc::EPERM),
            });
        }
    }
    Ok(())
}

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2, 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}
const CLONE_ARGS_SIZE_VER0: usize = 64;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Blocks every signal (the libc-internal ones too, which `pthread_sigmask` leaves
/// out) for the lifetime of the guard, restoring the old mask on drop: no handler of
/// ours runs in the child before it has reset them, nor on a vfork-style child's stack.
struct SigBlock(Option<u64>);
impl SigBlock {
    fn new() -> SigBlock {
        SigBlock(raw::set_sigmask(!0).ok())
    }
}
impl Drop for SigBlock {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            let _ = raw::set_sigmask(old);
        }
    }
}

/// clone3 (or clone) and run the child. Returns (pid, pidfd, placed in cgroup).
fn clone_child(
    flags: u64,
    cgroup: Option<RawFd>,
    force_clone2: bool,
    p: &Prepared,
    pre_exec: &mut [PreExec],
) -> Result<(i32, OwnedFd, bool)> {
    let mut pidfd: libc::c_int = -1;
    let _mask = SigBlock::new();
    let mut placed = false;
    let mut ret: libc::c_long = -1;
    if !force_clone2 {
        let mut args = CloneArgs {
            flags: flags | libc::CLONE_PIDFD as u64,
            pidfd: (&raw mut pidfd) as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        let mut size = CLONE_ARGS_SIZE_VER0;
        if let Some(cg) = cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = cg as u64;
            size = std::mem::size_of::<CloneArgs>();
        }
        // SAFETY: without CLONE_VM clone3 duplicates the address space like fork(2),
        // so the child runs on its own copy of this stack and needs none of its own;
        // `args` is a valid clone_args of `size` bytes. The child only runs
        // `child_main`, which never returns.
        ret = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, size) };
        if ret == 0 {
            child_main(p, pre_exec);
        }
        let mut err = if ret < 0 { sys::errno() } else { 0 };
        // E2BIG: a 5.3-5.6 kernel that does not know the cgroup field; the parent
        // then writes cgroup.procs instead.
        if ret < 0 && err == libc::E2BIG && cgroup.is_some() {
            args.flags &= !CLONE_INTO_CGROUP;
            args.cgroup = 0;
            // SAFETY: as above, with the version-0 size.
            ret = unsafe { libc::syscall(libc::SYS_clone3, &raw mut args, CLONE_ARGS_SIZE_VER0) };
            if ret == 0 {
                child_main(p, pre_exec);
            }
            err = if ret < 0 { sys::errno() } else { 0 };
        }
        if ret < 0 && err != libc::ENOSYS {
            return Err(clone_error("clone3", flags, cgroup.is_some(), err));
        }
        placed = ret > 0 && args.flags & CLONE_INTO_CGROUP != 0;
    }
    if ret < 0 {
        // clone(2): with a NULL stack it returns 0 in the child like fork(2);
        // CLONE_PIDFD (5.2) stores the pidfd through the parent_tid argument.
        // SAFETY: as for clone3: no CLONE_VM, so the child has its own copy of the
        // address space; the child only runs `child_main`, which never returns.
        ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags as libc::c_ulong)
                    | libc::CLONE_PIDFD as libc::c_ulong
                    | libc::SIGCHLD as libc::c_ulong,
                0usize,
                &raw mut pidfd,
                0usize,
                0usize,
            )
        };
        if ret == 0 {
            child_main(p, pre_exec);
        }
        if ret < 0 {
            return Err(clone_error("clone", flags, false, sys::errno()));
        }
    }
    // SAFETY: CLONE_PIDFD made the kernel store a new pidfd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret as i32, pidfd, placed))
}

/// The stack of a vfork-style child: `child_main` needs a few KiB; the rest is margin.
const VFORK_STACK: usize = 256 * 1024;

/// clone(2) with `CLONE_VM | CLONE_VFORK` (as posix_spawn does): returns once the
/// child has exec'd or exited. Returns (pid, pidfd, false).
fn vfork_child(flags: u64, p: &Prepared) -> Result<(i32, OwnedFd, bool)> {
    extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&Prepared` passed to clone below; the parent is
        // suspended (CLONE_VFORK) until this child execs or exits, so it stays alive.
        let p = unsafe { &*arg.cast::<Prepared>() };
        child_main(p, &mut [])
    }
    let Ok(ns_flags) = libc::c_int::try_from(flags) else {
        return Err(Error::InvalidArgument(format!(
            "clone flags {flags:#x} do not fit clone(2)"
        )));
    };
    // SAFETY: an anonymous private mapping; checked for MAP_FAILED below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            VFORK_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(error::sys("mmap", "the child's stack", sys::errno()));
    }
    let mut pidfd: libc::c_int = -1;
    let ret = {
        let _mask = SigBlock::new();
        // SAFETY: `stack` is a fresh mapping of VFORK_STACK bytes (stacks grow down,
        // so the top is passed); `start` only runs `child_main`, which never returns
        // and touches nothing of ours but reads of `p`; CLONE_VFORK keeps this frame
        // (and `p`, `stack`) alive until the child no longer uses them. CLONE_PIDFD
        // stores the pidfd through the parent_tid argument. All signals are blocked
        // across the call, so no handler of ours runs on the child's stack.
        unsafe {
            libc::clone(
                start,
                stack.cast::<u8>().add(VFORK_STACK).cast(),
                ns_flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                std::ptr::from_ref(p).cast_mut().cast(),
                &raw mut pidfd,
            )
        }
    };
    let err = sys::errno();
    // SAFETY: the mapping made above; the child has exec'd or exited (CLONE_VFORK).
    unsafe { libc::munmap(stack, VFORK_STACK) };
    if ret < 0 {
        return Err(clone_error("clone", flags, false, err));
    }
    // SAFETY: CLONE_PIDFD made the kernel store a new pidfd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret, pidfd, false))
}

fn clone_error(syscall: &'static str, flags: u64, cgroup: bool, errno: i32) -> Error {
    let kinds = Namespace::from_bits_truncate(flags);
    match errno {
        libc::EINVAL if kinds.contains(Namespace::USER) && kinds.contains(Namespace::PID) => {
            error::sys(syscall, format!("{kinds}"), errno)
        }
        libc::ENOSPC | libc::EUSERS => Error::Sys {
            syscall,
            what: format!("{kinds}: namespace limit reached (see /proc/sys/user/max_*_namespaces)"),
            source: io::Error::from_raw_os_error(errno),
        },
        libc::EBADF | libc::EOPNOTSUPP | libc::EBUSY if cgroup => Error::Sys {
            syscall,
            what: format!(
                "{kinds}, CLONE_INTO_CGROUP: the fd must be a cgroup v2 directory opened O_RDONLY|O_DIRECTORY, without controllers-in-use conflicts"
            ),
            source: io::Error::from_raw_os_error(errno),
        },
        _ => error::sys(syscall, format!("{kinds}"), errno),
    }
}

// ----- the child: only raw syscalls from here on -----
//
// Nothing below calls a libc wrapper: musl's setgroups/setuid/setrlimit run
// `__synccall`, which takes the thread-list lock, and a child cloned while another
// thread of the parent held that lock (creating or ending a thread) waits for it
// forever (issue #12); musl's sigaction takes a lock for SIGABRT, and its open/close
// are cancellation points that read the parent thread's state. `libc::syscall` is
// the kernel call and an errno store, nothing else. No allocation, no panics.

/// Raw syscalls for the child, each `Err(errno)` on failure.
mod raw {
    use std::ffi::CStr;

    use libc::{c_int, c_long, c_uint, c_ulong};

    use super::RawFd;

    pub(super) fn errno() -> i32 {
        // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
        unsafe { *libc::__errno_location() }
    }

    fn ret(r: c_long) -> Result<c_long, i32> {
        if r < 0 { Err(errno()) } else { Ok(r) }
    }

    /// `struct sigaction` as the kernel takes it (handler, flags, restorer, mask):
    /// all zero is SIG_DFL, no flags, an empty mask.
    const KERNEL_SIGACTION_WORDS: usize = 4;
    /// The kernel's sigset_t: 64 signals, 8 bytes (rt_sigaction's `sigsetsize`).
    const SIGSET_BYTES: usize = 8;

    /// rt_sigaction(sig, SIG_DFL).
    pub(super) fn default_action(sig: c_int) -> Result<(), i32> {
        let dfl = [0u64; KERNEL_SIGACTION_WORDS];
        // SAFETY: dfl is a readable kernel sigaction; no old action is asked for.
        ret(unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                c_long::from(sig),
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                SIGSET_BYTES,
            )
        })
        .map(drop)
    }

    /// rt_sigprocmask(SIG_SETMASK, `mask`), returning the previous mask: all 64
    /// signals, the libc-internal ones included (a libc wrapper would leave those out).
    pub(super) fn set_sigmask(mask: u64) -> Result<u64, i32> {
        let mut old = 0u64;
        // SAFETY: mask and old are 8-byte sigsets, readable and writable.
        ret(unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                c_long::from(libc::SIG_SETMASK),
                &raw const mask,
                &raw mut old,
                SIGSET_BYTES,
            )
        })
        .map(|_| old)
    }

    pub(super) fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, i32> {
        // SAFETY: buf is writable for buf.len() bytes.
        ret(unsafe {
            libc::syscall(
                libc::SYS_read,
                c_long::from(fd),
                buf.as_mut_ptr(),
                buf.len(),
            )
        })
        .map(|n| n as usize)
    }

    pub(super) fn write(fd: RawFd, buf: &[u8]) -> Result<usize, i32> {
        // SAFETY: buf is readable for buf.len() bytes.
        ret(unsafe { libc::syscall(libc::SYS_write, c_long::from(fd), buf.as_ptr(), buf.len()) })
            .map(|n| n as usize)
    }

    pub(super) fn close(fd: RawFd) {
        // SAFETY: closes an fd of ours; an error leaves nothing to undo.
        unsafe { libc::syscall(libc::SYS_close, c_long::from(fd)) };
    }

    /// openat(2) with O_CLOEXEC added.
    pub(super) fn openat(dir: RawFd, path: &CStr, flags: c_int) -> Result<RawFd, i32> {
        // SAFETY: path is NUL-terminated; returns a new fd or -1.
        ret(unsafe {
            libc::syscall(
                libc::SYS_openat,
                c_long::from(dir),
                path.as_ptr(),
                c_long::from(flags | libc::O_CLOEXEC),
                0 as c_long,
            )
        })
        .map(|fd| fd as RawFd)
    }

    pub(super) fn open(path: &CStr, flags: c_int) -> Result<RawFd, i32> {
        openat(libc::AT_FDCWD, path, flags)
    }

    /// openat2(2) (5.6).
    pub(super) fn openat2(
        dir: RawFd,
        path: &CStr,
        how: &crate::sys::OpenHow,
    ) -> Result<RawFd, i32> {
        // SAFETY: path is NUL-terminated, `how` a valid open_how whose size is passed.
        ret(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                c_long::from(dir),
                path.as_ptr(),
                std::ptr::from_ref(how),
                std::mem::size_of::<crate::sys::OpenHow>(),
            )
        })
        .map(|fd| fd as RawFd)
    }

    /// fcntl(F_DUPFD_CLOEXEC).
    pub(super) fn dup_cloexec(fd: RawFd) -> Result<RawFd, i32> {
        // SAFETY: duplicates an open fd; no pointers.
        ret(unsafe {
            libc::syscall(
                libc::SYS_fcntl,
                c_long::from(fd),
                c_long::from(libc::F_DUPFD_CLOEXEC),
                0 as c_long,
            )
        })
        .map(|fd| fd as RawFd)
    }

    /// Makes `src` the fd `target`, without CLOEXEC: dup3, or clearing CLOEXEC when
    /// it already is that fd.
    pub(super) fn move_to(src: RawFd, target: RawFd) -> Result<(), i32> {
        // SAFETY: fd operations without pointers.
        ret(unsafe {
            if src == target {
                libc::syscall(
                    libc::SYS_fcntl,
                    c_long::from(target),
                    c_long::from(libc::F_SETFD),
                    0 as c_long,
                )
            } else {
                libc::syscall(
                    libc::SYS_dup3,
                    c_long::from(src),
                    c_long::from(target),
                    0 as c_long,
                )
            }
        })
        .map(drop)
    }

    /// Whether `fd` (an O_PATH fd) is a symlink: statx(AT_EMPTY_PATH, STATX_TYPE).
    pub(super) fn is_symlink(fd: RawFd) -> Result<bool, i32> {
        // SAFETY: statx is plain data the kernel fills in.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: empty NUL-terminated path with AT_EMPTY_PATH; stx is writable.
        ret(unsafe {
            libc::syscall(
                libc::SYS_statx,
                c_long::from(fd),
                c"".as_ptr(),
                c_long::from(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW),
                c_long::from(libc::STATX_TYPE),
                &raw mut stx,
            )
        })?;
        Ok(c_uint::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFLNK)
    }

    /// setgroups(0, NULL): no supplementary groups.
    pub(super) fn drop_groups() -> Result<(), i32> {
        // SAFETY: an empty list; no pointer is read.
        ret(unsafe {
            libc::syscall(
                libc::SYS_setgroups,
                0 as c_long,
                std::ptr::null::<libc::gid_t>(),
            )
        })
        .map(drop)
    }

    pub(super) fn setresgid(g: u32) -> Result<(), i32> {
        let g = c_long::from(g);
        // SAFETY: integers only.
        ret(unsafe { libc::syscall(libc::SYS_setresgid, g, g, g) }).map(drop)
    }

    pub(super) fn setresuid(u: u32) -> Result<(), i32> {
        let u = c_long::from(u);
        // SAFETY: integers only.
        ret(unsafe { libc::syscall(libc::SYS_setresuid, u, u, u) }).map(drop)
    }

    pub(super) fn setns(fd: RawFd, kinds: c_int) -> Result<(), i32> {
        // SAFETY: integers only.
        ret(unsafe { libc::syscall(libc::SYS_setns, c_long::from(fd), c_long::from(kinds)) })
            .map(drop)
    }

    pub(super) fn unshare(kinds: c_int) -> Result<(), i32> {
        // SAFETY: flags only.
        ret(unsafe { libc::syscall(libc::SYS_unshare, c_long::from(kinds)) }).map(drop)
    }

    pub(super) fn sethostname(name: &[u8]) -> Result<(), i32> {
        // SAFETY: name is readable for name.len() bytes.
        ret(unsafe { libc::syscall(libc::SYS_sethostname, name.as_ptr(), name.len()) }).map(drop)
    }

    pub(super) fn setdomainname(name: &[u8]) -> Result<(), i32> {
        // SAFETY: name is readable for name.len() bytes.
        ret(unsafe { libc::syscall(libc::SYS_setdomainname, name.as_ptr(), name.len()) }).map(drop)
    }

    /// mount(2); every pointer NUL-terminated or NULL.
    pub(super) fn mount(
        source: *const libc::c_char,
        target: *const libc::c_char,
        fstype: *const libc::c_char,
        flags: c_ulong,
        data: *const libc::c_char,
    ) -> Result<(), i32> {
        // SAFETY: the caller passes NUL-terminated strings or NULL, alive for the call.
        ret(unsafe { libc::syscall(libc::SYS_mount, source, target, fstype, flags, data) })
            .map(drop)
    }

    pub(super) fn umount_detach(target: &CStr) -> Result<(), i32> {
        // SAFETY: target is NUL-terminated.
        ret(unsafe {
            libc::syscall(
                libc::SYS_umount2,
                target.as_ptr(),
                c_long::from(libc::MNT_DETACH),
            )
        })
        .map(drop)
    }

    pub(super) fn pivot_root_dot() -> Result<(), i32> {
        // SAFETY: literal NUL-terminated paths.
        ret(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) }).map(drop)
    }

    pub(super) fn fchdir(fd: RawFd) -> Result<(), i32> {
        // SAFETY: an integer only.
        ret(unsafe { libc::syscall(libc::SYS_fchdir, c_long::from(fd)) }).map(drop)
    }

    pub(super) fn chdir(path: &CStr) -> Result<(), i32> {
        // SAFETY: path is NUL-terminated.
        ret(unsafe { libc::syscall(libc::SYS_chdir, path.as_ptr()) }).map(drop)
    }

    /// execve(2); returns only on failure, with the errno.
    pub(super) fn execve(
        path: &CStr,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> i32 {
        // SAFETY: path NUL-terminated; argv and envp NULL-terminated arrays of
        // NUL-terminated strings that live until execve replaces this address space.
        unsafe { libc::syscall(libc::SYS_execve, path.as_ptr(), argv, envp) };
        errno()
    }

    /// exit_group(2): ends the child without running anything of the parent's.
    pub(super) fn exit(code: c_int) -> ! {
        loop {
            // SAFETY: exit_group does not return.
            unsafe { libc::syscall(libc::SYS_exit_group, c_long::from(code)) };
        }
    }
}

/// Writes the (step, index, errno) record and exits 127. Never returns.
fn fail(p: &Prepared, step: Step, index: usize, errno: i32) -> ! {
    if p.err_w < 0 {
        // vfork-style child: our memory is the parent's, which reads it once we exit.
        use std::sync::atomic::Ordering;
        let [s, i, e] = &p.report;
        s.store(step as u32, Ordering::Relaxed);
        i.store(index as u32, Ordering::Relaxed);
        e.store(errno as u32, Ordering::Relaxed);
        p.failed.store(true, Ordering::Release);
        raw::exit(127)
    }
    let mut rec = [0u8; 12];
    let (a, b, c) = (
        (step as u32).to_ne_bytes(),
        (index as u32).to_ne_bytes(),
        errno.to_ne_bytes(),
    );
    for (i, byte) in a.iter().chain(b.iter()).chain(c.iter()).enumerate() {
        if let Some(slot) = rec.get_mut(i) {
            *slot = *byte;
        }
    }
    // One write of 12 bytes to a pipe is atomic (below PIPE_BUF); if it fails the
    // parent sees a short report or EOF, and the exit status.
    let _ = raw::write(p.err_w, &rec);
    raw::exit(127)
}

/// Formats `/proc/self/fd/N` into `buf` (NUL-terminated), without allocation.
fn fd_path(buf: &mut [u8; 32], fd: RawFd) -> &CStr {
    let prefix = b"/proc/self/fd/";
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        if let Some(d) = digits.get_mut(len) {
            *d = b'0' + (n % 10) as u8;
        }
        len += 1;
        n /= 10;
        if n == 0 || len >= digits.len() {
            break;
        }
    }
    let mut pos = 0;
    for b in prefix.iter().chain(digits[..len].iter().rev()) {
        if let Some(slot) = buf.get_mut(pos) {
            *slot = *b;
        }
        pos += 1;
    }
    if let Some(slot) = buf.get_mut(pos) {
        *slot = 0;
    }
    CStr::from_bytes_until_nul(buf).unwrap_or(c"/proc/self/fd/")
}

/// Opens `rel` under `root` as O_PATH, confined: openat2(RESOLVE_IN_ROOT) where the
/// kernel has it, else component by component with O_NOFOLLOW (symlinks refused).
fn resolve_in_root(root: RawFd, rel: &CStr) -> std::result::Result<RawFd, i32> {
    let how = sys::OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
    };
    match raw::openat2(root, rel, &how) {
        Ok(fd) => return Ok(fd),
        Err(libc::ENOSYS) => {}
        Err(e) => return Err(e),
    }
    // Fallback: walk components in place, in a stack buffer.
    let mut comp = [0u8; 256];
    let mut cur = raw::dup_cloexec(root)?;
    for part in rel.to_bytes().split(|b| *b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        if part == b".." || part.len() >= comp.len() {
            raw::close(cur);
            return Err(libc::EXDEV);
        }
        for (i, b) in part.iter().enumerate() {
            if let Some(s) = comp.get_mut(i) {
                *s = *b;
            }
        }
        if let Some(s) = comp.get_mut(part.len()) {
            *s = 0;
        }
        let name = CStr::from_bytes_until_nul(&comp).map_err(|_| libc::EINVAL);
        let next = name.and_then(|n| raw::openat(cur, n, libc::O_PATH | libc::O_NOFOLLOW));
        raw::close(cur);
        let next = next?;
        if raw::is_symlink(next) != Ok(false) {
            raw::close(next);
            return Err(libc::ELOOP);
        }
        cur = next;
    }
    Ok(cur)
}

/// The highest signal number (the kernel's _NSIG on Linux).
const NSIG: libc::c_int = 64;

fn child_main(p: &Prepared, pre_exec: &mut [PreExec]) -> ! {
    // Every buffer read here was prepared by the parent before the clone and stays
    // valid in this copy (or, vfork-style, this borrow) of its address space.

    // Signals: default dispositions for all of them (handlers, and SIGPIPE, which
    // Rust ignores and an ignored signal would stay ignored across exec), then
    // unblock (the parent blocked everything across the clone, so no handler of
    // its has run here).
    for sig in 1..=NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        if let Err(e) = raw::default_action(sig) {
            fail(p, Step::Signals, sig as usize, e);
        }
    }
    if let Err(e) = raw::set_sigmask(0) {
        fail(p, Step::Signals, 0, e);
    }

    if let (Some(r), Some(w)) = (p.sync_r, p.sync_w) {
        // Closing our copy of the parent's end, so its exit gives us EOF.
        raw::close(w);
        let mut b = [0u8; 1];
        loop {
            match raw::read(r, &mut b) {
                Ok(1) => break,
                Err(libc::EINTR) => continue,
                Ok(_) => fail(p, Step::Sync, 0, libc::EPIPE),
                Err(e) => fail(p, Step::Sync, 0, e),
            }
        }
    }

    if p.drop_groups
        && let Err(e) = raw::drop_groups()
    {
        fail(p, Step::Setgroups, 0, e);
    }
    if let Some(g) = p.gid
        && let Err(e) = raw::setresgid(g)
    {
        fail(p, Step::Setresgid, 0, e);
    }
    if let Some(u) = p.uid
        && let Err(e) = raw::setresuid(u)
    {
        fail(p, Step::Setresuid, 0, e);
    }

    for (i, (fd, kinds, fallback)) in p.joins.iter().enumerate() {
        match raw::setns(*fd, *kinds) {
            Ok(()) => continue,
            Err(libc::EINVAL) if !fallback.is_empty() => {}
            Err(e) => fail(p, Step::Join, i, e),
        }
        for (path, kind) in fallback {
            let joined = raw::open(path, libc::O_RDONLY).and_then(|nfd| {
                let r = raw::setns(nfd, *kind);
                raw::close(nfd);
                r
            });
            if let Err(e) = joined {
                fail(p, Step::Join, i, e);
            }
        }
    }

    if p.unshare_cgroup
        && let Err(e) = raw::unshare(libc::CLONE_NEWCGROUP)
    {
        fail(p, Step::UnshareCgroup, 0, e);
    }
    if let Some(text) = &p.time_offsets {
        if let Err(e) = raw::unshare(libc::CLONE_NEWTIME) {
            fail(p, Step::UnshareTime, 0, e);
        }
        let written = raw::open(c"/proc/self/timens_offsets", libc::O_WRONLY).and_then(|fd| {
            let r = raw::write(fd, text);
            raw::close(fd);
            r
        });
        if let Err(e) = written {
            fail(p, Step::TimeOffsets, 0, e);
        }
        let entered =
            raw::open(c"/proc/self/ns/time_for_children", libc::O_RDONLY).and_then(|fd| {
                let r = raw::setns(fd, libc::CLONE_NEWTIME);
                raw::close(fd);
                r
            });
        if let Err(e) = entered {
            fail(p, Step::EnterTime, 0, e);
        }
    }
    if let Some(h) = &p.hostname
        && let Err(e) = raw::sethostname(h)
    {
        fail(p, Step::Hostname, 0, e);
    }
    if let Some(d) = &p.domainname
        && let Err(e) = raw::setdomainname(d)
    {
        fail(p, Step::Domainname, 0, e);
    }
    let null = std::ptr::null::<libc::c_char>();
    if let Some(flags) = p.propagation
        && let Err(e) = raw::mount(null, c"/".as_ptr(), null, flags, null)
    {
        fail(p, Step::Propagation, 0, e);
    }

    let mut root_fd: RawFd = -1;
    if let Some(root) = &p.root {
        // pivot_root needs the new root to be a mount point.
        if p.pivot_root
            && let Err(e) = raw::mount(
                root.as_ptr(),
                root.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                null,
            )
        {
            fail(p, Step::BindRoot, 0, e);
        }
        root_fd = match raw::open(root, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) => fail(p, Step::OpenRoot, 0, e),
        };
    }
    let opt = |c: &Option<CString>| c.as_ref().map_or(null, |c| c.as_ptr());
    for (i, m) in p.mounts.iter().enumerate() {
        let mut buf = [0u8; 32];
        let mut tfd = -1;
        let target = if root_fd >= 0 {
            tfd = match resolve_in_root(root_fd, &m.target) {
                Ok(fd) => fd,
                Err(e) => fail(p, Step::ResolveTarget, i, e),
            };
            fd_path(&mut buf, tfd).as_ptr()
        } else {
            m.target.as_ptr()
        };
        if let Err(e) = raw::mount(
            opt(&m.source),
            target,
            opt(&m.fstype),
            m.flags,
            opt(&m.data),
        ) {
            fail(p, Step::Mount, i, e);
        }
        if m.remount_ro {
            let target = if tfd >= 0 {
                // The fd still names the covered directory: reopen to reach the mount.
                raw::close(tfd);
                tfd = match resolve_in_root(root_fd, &m.target) {
                    Ok(fd) => fd,
                    Err(e) => fail(p, Step::ResolveTarget, i, e),
                };
                fd_path(&mut buf, tfd).as_ptr()
            } else {
                m.target.as_ptr()
            };
            let flags = libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | (m.flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC));
            if let Err(e) = raw::mount(null, target, null, flags, null) {
                fail(p, Step::Mount, i, e);
            }
        }
        if tfd >= 0 {
            raw::close(tfd);
        }
    }
    if p.pivot_root {
        // The runc way: no put_old directory; the old root ends up stacked on "." and
        // is detached, so nothing in the new root leads back to it.
        let pivoted = raw::fchdir(root_fd)
            .and_then(|()| raw::pivot_root_dot())
            .and_then(|()| raw::umount_detach(c"."))
            .and_then(|()| raw::chdir(c"/"));
        if let Err(e) = pivoted {
            fail(p, Step::PivotRoot, 0, e);
        }
    }
    if root_fd >= 0 {
        raw::close(root_fd);
    }
    if let Some(cwd) = &p.cwd
        && let Err(e) = raw::chdir(cwd)
    {
        fail(p, Step::Chdir, 0, e);
    }
    for (target, src) in p.stdio.iter().enumerate() {
        let Some(src) = *src else { continue };
        if let Err(e) = raw::move_to(src, target as RawFd) {
            fail(p, Step::Stdio, target, e);
        }
    }
    for (i, f) in pre_exec.iter_mut().enumerate() {
        if let Err(e) = f() {
            fail(
                p,
                Step::PreExec,
                i,
                e.raw_os_error().unwrap_or(libc::EINVAL),
            );
        }
    }
    let mut last = libc::ENOENT;
    for c in &p.candidates {
        let e = raw::execve(c, p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
            if e != libc::EACCES {
                break;
            }
        }
    }
    let _ = (&p.argv, &p.envp);
    fail(p, Step::Exec, 0, last)
}

impl Child {
    /// The child's pid, in the parent's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd (clone3/clone `CLONE_PIDFD`): pollable for exit, and valid for
    /// [`NsHandle::from_pidfd`] via `try_clone`.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends `sig` with pidfd_send_signal(2) (5.1): race-free, it cannot hit a recycled
    /// pid. Signalling an exited (not yet reaped) child succeeds.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        if self.status.is_some() {
            return Err(Error::NoSuchProcess { pid: self.pid });
        }
        sys::pidfd_send_signal(self.pidfd.as_fd(), sig as i32).map_err(|e| match e {
            libc::ESRCH => Error::NoSuchProcess { pid: self.pid },
            e => error::sys("pidfd_send_signal", format!("pid {} {sig}", self.pid), e),
        })
    }

    /// SIGKILL through the pidfd.
    pub fn kill(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGKILL)
    }

    /// Waits for exit: waitid(P_PIDFD) (5.4), waitpid(2) before that. Returns the
    /// cached status on later calls.
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`] when the child was reaped elsewhere; an error, never a
    /// made-up success, when the kernel reports no status.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.wait_flags(libc::WEXITED)?.ok_or_else(|| Error::Sys {
            syscall: "waitid",
            what: format!(
                "P_PIDFD pid {}: returned without an exit status although it blocks until one",
                self.pid
            ),
            source: io::Error::from_raw_os_error(libc::ECHILD),
        })
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.wait_flags(libc::WEXITED | libc::WNOHANG)
    }

    fn wait_flags(&mut self, flags: libc::c_int) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        loop {
            // SAFETY: siginfo_t is plain data the kernel fills in.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: the pidfd is open; info is writable.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    flags,
                )
            };
            if r == 0 {
                // SAFETY: waitid filled a SIGCHLD siginfo (or left it zeroed with WNOHANG).
                let (pid, code, status) =
                    unsafe { (info.si_pid(), info.si_code, info.si_status()) };
                let st = exit_status(pid, code, status).map_err(|code| Error::Sys {
                    syscall: "waitid",
                    what: format!("P_PIDFD pid {}: unknown si_code {code}", self.pid),
                    source: io::Error::from_raw_os_error(libc::EPROTO),
                })?;
                if st.is_some() {
                    self.status = st;
                }
                return Ok(st);
            }
            match sys::errno() {
                libc::EINTR => continue,
                // Before 5.4 waitid does not take P_PIDFD.
                libc::EINVAL => {
                    let mut st = 0;
                    let nohang = flags & libc::WNOHANG;
                    // SAFETY: st is writable.
                    let r = unsafe { libc::waitpid(self.pid, &mut st, nohang) };
                    if r < 0 {
                        if sys::errno() == libc::EINTR {
                            continue;
                        }
                        return Err(error::sys(
                            "waitpid",
                            format!("pid {}", self.pid),
                            sys::errno(),
                        ));
                    }
                    if r == 0 {
                        return Ok(None);
                    }
                    let st = ExitStatus::from_raw(st);
                    self.status = Some(st);
                    return Ok(Some(st));
                }
                libc::ECHILD => return Err(Error::NoSuchProcess { pid: self.pid }),
                e => return Err(error::sys("waitid", format!("P_PIDFD pid {}", self.pid), e)),
            }
        }
    }
}

/// The exit status a waitid(2) siginfo reports: `Ok(None)` when it holds no child
/// (`si_pid` 0: WNOHANG and nothing exited yet), `Err(si_code)` for a code that is no
/// exit (only `WEXITED` is asked for).
fn exit_status(
    pid: libc::pid_t,
    code: libc::c_int,
    status: libc::c_int,
) -> std::result::Result<Option<ExitStatus>, libc::c_int> {
    if pid == 0 {
        return Ok(None);
    }
    let raw = match code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        code => return Err(code),
    };
    Ok(Some(ExitStatus::from_raw(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_siginfo_without_a_child_is_no_status_and_never_success() {
        assert_eq!(exit_status(0, 0, 0), Ok(None));
        assert_eq!(exit_status(0, libc::CLD_EXITED, 0), Ok(None));
        let ok = exit_status(7, libc::CLD_EXITED, 0).unwrap().unwrap();
        assert!(ok.success());
        let three = exit_status(7, libc::CLD_EXITED, 3).unwrap().unwrap();
        assert_eq!(three.code(), Some(3));
        let killed = exit_status(7, libc::CLD_KILLED, libc::SIGKILL)
            .unwrap()
            .unwrap();
        assert_eq!(killed.signal(), Some(libc::SIGKILL));
        let dumped = exit_status(7, libc::CLD_DUMPED, libc::SIGSEGV)
            .unwrap()
            .unwrap();
        assert_eq!(dumped.signal(), Some(libc::SIGSEGV));
        assert!(dumped.core_dumped());
        // A stop or trap is not an exit: an error, not a status.
        assert_eq!(
            exit_status(7, libc::CLD_STOPPED, libc::SIGSTOP),
            Err(libc::CLD_STOPPED)
        );
    }
}
