//! The [`Spawn`] builder: what the child is to be, validated before anything happens.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::idmap::{IdMap, SetGroups};
use crate::error::{self, Error, Result};
use crate::mount::{MountSpec, Propagation};
use crate::namespace::{Namespace, NsHandle};

/// Where a standard stream of the child goes.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The parent's stream (the default).
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A new pipe; the parent's end is in [`Child::stdin`](super::Child::stdin) / `stdout` / `stderr`.
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

pub(super) type PreExec = Box<dyn FnMut() -> io::Result<()> + Send + Sync>;

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
    pub(super) program: OsString,
    pub(super) arg0: Option<OsString>,
    pub(super) args: Vec<OsString>,
    pub(super) env: Option<Vec<(OsString, OsString)>>,
    pub(super) env_changes: Vec<(OsString, Option<OsString>)>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) namespaces: Namespace,
    pub(super) uid_map: Vec<IdMap>,
    pub(super) gid_map: Vec<IdMap>,
    pub(super) setgroups: SetGroups,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) hostname: Option<OsString>,
    pub(super) domainname: Option<OsString>,
    pub(super) time_offsets: Vec<(TimeClock, i64, u32)>,
    pub(super) cgroup: Option<OwnedFd>,
    pub(super) stdio: [Stdio; 3],
    pub(super) propagation: Option<Propagation>,
    pub(super) root: Option<PathBuf>,
    pub(super) pivot_root: bool,
    pub(super) mounts: Vec<MountSpec>,
    pub(super) joins: Vec<(NsHandle, Namespace)>,
    pub(super) pre_exec: Vec<PreExec>,
    pub(super) gate: Option<(OwnedFd, usize)>,
    /// How many of `pre_exec`, at its front, run before the root change.
    pub(super) pre_pivot: usize,
    pub(super) force_clone2: bool,
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

pub(super) fn cstring(what: &'static str, s: &OsStr) -> Result<CString> {
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
            gate: None,
            pre_pivot: 0,
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
    ///
    /// A root caller giving the child a uid outside a new user namespace also drops
    /// the child's supplementary groups first (setgroups(2) with none, as std's
    /// `CommandExt::uid` does), so that it does not keep root's; where setgroups is
    /// refused (EPERM) they stay as they are.
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

    /// Runs `f` in the child after its mounts and before the root change (pivot_root),
    /// in its new namespaces: an OCI `createContainer` hook runs there. Same rules as
    /// [`pre_exec`](Spawn::pre_exec).
    ///
    /// # Safety
    /// As for [`pre_exec`](Spawn::pre_exec): async-signal-safe work only.
    pub unsafe fn pre_pivot<F>(&mut self, f: F) -> &mut Spawn
    where
        F: FnMut() -> io::Result<()> + Send + Sync + 'static,
    {
        self.pre_exec.insert(self.pre_pivot, Box::new(f));
        self.pre_pivot += 1;
        if let Some((_, at)) = &mut self.gate {
            *at += 1;
        }
        self
    }

    /// Stops the child before exec until one byte can be read from `fd`: the
    /// create/start split of an OCI runtime.
    ///
    /// The child runs every step up to here (namespaces, mounts, root change, the
    /// `pre_exec` closures added so far), checks that the program can be found and
    /// is executable, then [`spawn`](Spawn::spawn) returns: the child is *created*.
    /// The child then blocks in read(2) on `fd`; once a byte arrives (from anyone
    /// holding the other end: typically a FIFO opened `O_RDWR` here and written by
    /// another process later) it closes `fd`, runs the `pre_exec` closures added
    /// after this call and execs. On EOF it exits 127. A failure after the gate
    /// cannot be reported to the parent any more (it may be gone): the child writes
    /// one line naming the step and errno to its stderr and exits 127.
    ///
    /// `fd` should be close-on-exec; the child closes its copy before exec.
    pub fn exec_gate(&mut self, fd: OwnedFd) -> &mut Spawn {
        self.gate = Some((fd, self.pre_exec.len()));
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

    pub(super) fn validate(&self) -> Result<()> {
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

    pub(super) fn env_vars(&self) -> Vec<(OsString, OsString)> {
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

    pub(super) fn env_value(&self, key: &OsStr) -> Option<OsString> {
        self.env_vars()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}
