//! [`Spawn::spawn`]: everything the child reads is prepared (allocated) before the
//! clone; then the clone, the parent's side (id maps, cgroup, release), and the
//! child's report read from the error pipe (or shared memory) and named.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::EXEC_STEP;
use super::builder::{Spawn, Stdio, TimeClock, cstring};
use super::child::Child;
use super::child_main::{ChildMount, DropGroups, Prepared, STEPS, Step};
use super::clone::{clone_child, vfork_child};
use crate::error::{self, Error, Result};
use crate::mount::Propagation;
use crate::namespace::Namespace;
use crate::sys;

impl Spawn {
    fn prepare(
        &self,
        (err_r, err_w): (RawFd, RawFd),
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
        let drop_groups = if new_user {
            if self.setgroups_deny() == Some(false) {
                DropGroups::Yes
            } else {
                DropGroups::No
            }
        } else if self.uid.is_some()
            // SAFETY: geteuid has no preconditions.
            && unsafe { libc::geteuid() } == 0
            && !self.joins.iter().any(|(h, k)| {
                k.contains(Namespace::USER) || h.kind() == Some(Namespace::USER)
            })
        {
            // Root giving a child another uid: without this the child would keep
            // root's supplementary groups.
            DropGroups::UnlessRefused
        } else {
            DropGroups::No
        };

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
                mkdir: m.mkdir,
                detached: m.detached.unwrap_or(-1),
                remount: if is_bind && flags & sys::PER_MOUNT_FLAGS != 0 {
                    flags & (sys::PER_MOUNT_FLAGS | libc::MS_REC)
                } else {
                    0
                },
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
            err_r,
            err_w,
            report: Default::default(),
            failed: std::sync::atomic::AtomicBool::new(false),
            sync_r: sync.map(|s| s.0),
            sync_w: sync.map(|s| s.1),
            gate: self.gate.as_ref().map(|(fd, at)| (fd.as_raw_fd(), *at)),
            pre_pivot: self.pre_pivot,
            gated: std::sync::atomic::AtomicBool::new(false),
            program: cstring("program", &self.program)?,
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
            && self.gate.is_none()
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
            err_pipe
                .as_ref()
                .map_or((-1, -1), |(r, w)| (r.as_raw_fd(), w.as_raw_fd())),
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
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&rec[i * 4..i * 4 + 4]);
            b
        };
        if n == rec.len() && u32::from_ne_bytes(word(0)) == Step::Gate as u32 {
            // Created: the child waits at its gate.
            return Ok(());
        }
        if n != rec.len() {
            return Err(Error::Child {
                step: "an unknown step (short report)".into(),
                source: io::Error::from_raw_os_error(libc::EIO),
            });
        }
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
            Step::PreExec if i < self.pre_pivot => format!("pre_pivot closure #{i}"),
            Step::PreExec => format!("pre_exec closure #{}", i - self.pre_pivot),
            Step::Exec => format!("{EXEC_STEP}{:?}", self.program),
            Step::Gate => "the exec gate".into(),
        }
    }
}
