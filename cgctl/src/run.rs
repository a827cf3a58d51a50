//! `cgctl run`: start a command inside a cgroup, pass signals on, relay its exit
//! status, and remove the cgroup afterwards.
//!
//! The child is in the cgroup before it runs a single instruction of the command: on
//! pure cgroup v2, clone3(2) with `CLONE_INTO_CGROUP` (kernel 5.7+) creates it there;
//! elsewhere, or when clone3 is refused, the forked child writes itself into each
//! pre-opened cgroup.procs before exec ([`cgroupkit::SpawnHandles::join_current`]).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cgctl::cli::RunArgs;
use cgroupkit::{Cgroup, CgroupPath, Hierarchy, Layout, Leftovers};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid as NixPid;

use crate::cmd::{Failure, Result, create_apply};

/// `CLONE_INTO_CGROUP` from linux/sched.h (kernel 5.7+).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// Shells' status for "command not found" and "not executable".
const EXIT_NOT_FOUND: u8 = 127;
const EXIT_CANNOT_EXEC: u8 = 126;

/// The signals passed on to the command.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// `cgctl run`.
pub fn run(a: RunArgs) -> Result<ExitCode> {
    let res = a.limits.resources()?;
    let h = Hierarchy::detect()?;
    let path = match &a.cgroup {
        Some(n) => CgroupPath::new(n)?,
        None => CgroupPath::new(&format!("cgctl/run-{}", std::process::id()))?,
    };
    if path.is_root() {
        return Err(Failure::usage(
            "cannot run in the root cgroup",
            "name a child cgroup with --cgroup, or leave it out",
        ));
    }
    if res.controllers().is_empty() && h.layout() == Layout::V1 {
        return Err(Failure::usage(
            "no limit given",
            "on a cgroup v1 host a cgroup lives in each controller's hierarchy: give the \
             limits it needs, e.g. `cgctl run --cpu 1 -- CMD`",
        ));
    }
    // Everything about the command is checked before the cgroup exists.
    let plan = ExecPlan::new(&a.command)?;

    let (cg, _writes) = create_apply(&h, &path, &res, |_| Ok(()))?;
    let leaf: Vec<PathBuf> = cg.dirs().iter().map(|d| d.path.clone()).collect();
    let owned = !a.keep && leaf.iter().all(|d| cg.created().contains(d));
    let status = supervise(&cg, &plan, &a);
    if owned {
        let parents: Vec<PathBuf> = cg
            .created()
            .iter()
            .filter(|p| !leaf.contains(p))
            .cloned()
            .collect();
        if let Err(e) = cg.clone().delete_recursive(Leftovers::Kill) {
            eprintln!("{}", Failure::from(e));
        }
        // Parents this run made, if nothing else uses them by now.
        for p in parents.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
    }
    status
}

/// Spawns the command in `cg`, forwards signals and waits for it.
fn supervise(cg: &Cgroup, plan: &ExecPlan, a: &RunArgs) -> Result<ExitCode> {
    let handles = cg.spawn_handles()?;
    // Block the forwarded signals and SIGCHLD before the child exists, so that none
    // is lost: they are read from a signalfd below. Children unblock them again.
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(|e| sys_failure("block signals", e))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| sys_failure("create a signalfd", e))?;

    let mut how = "fork, then write to cgroup.procs before exec";
    let mut child = None;
    if let (false, Some(dir)) = (a.no_clone3, handles.clone_into_fd()) {
        match spawn_clone3(dir, plan)? {
            Some(pid) => {
                child = Some(pid);
                how = "clone3(CLONE_INTO_CGROUP)";
            }
            None => how = "fork, then write to cgroup.procs before exec (clone3 refused)",
        }
    }
    let child = match child {
        Some(c) => c,
        None => {
            let mut cmd = std::process::Command::new(&plan.program);
            cmd.arg0(&plan.argv0).args(&plan.args);
            // SAFETY: join_current only calls write(2) on fds opened before the fork;
            // it neither allocates nor takes locks, so it is safe between fork and exec
            // (std resets the signal mask in the child before running it).
            unsafe { cmd.pre_exec(move || handles.join_current()) };
            let c = cmd.spawn().map_err(|e| exec_failure(&plan.program, e))?;
            NixPid::from_raw(c.id() as i32)
        }
    };
    if a.verbose {
        eprintln!(
            "cgctl: pid {child} runs {} in cgroup {} (via {how})",
            plan.program.display(),
            cg.path()
        );
    }
    let code = wait_forwarding(child, &sfd)?;
    // Restore the mask (cleanup may take a while; let ^C stop cgctl then).
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    Ok(ExitCode::from(code))
}

/// Waits for `child`, passing the forwarded signals on; returns its exit code, or
/// 128+N when signal N killed it.
fn wait_forwarding(child: NixPid, sfd: &SignalFd) -> Result<u8> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128u8.wrapping_add(sig as u8)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys_failure("wait for the command", e)),
        }
        match sfd.read_signal() {
            Ok(Some(info)) => {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                // A signal from the terminal (SI_KERNEL: ^C, ^\, hangup) already went
                // to the whole foreground process group, the command included.
                if sig != Signal::SIGCHLD && info.ssi_code != libc::SI_KERNEL {
                    let _ = nix::sys::signal::kill(child, sig);
                }
            }
            Ok(None) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys_failure("read signals", e)),
        }
    }
}

fn sys_failure(what: &str, e: Errno) -> Failure {
    Failure::new(
        format!("cannot {what}: {}", e.desc()),
        "this is unexpected; report it with the command line",
    )
}

fn exec_failure(program: &Path, e: std::io::Error) -> Failure {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_CANNOT_EXEC,
    };
    Failure::new(
        format!("cannot execute {}: {e}", program.display()),
        "check the command's path and permissions",
    )
    .with_code(code)
}

/// The command, resolved and converted before anything is created or cloned: the
/// clone3 child must not allocate, so its argv and envp are ready-made here.
struct ExecPlan {
    program: PathBuf,
    argv0: OsString,
    args: Vec<OsString>,
    c_program: CString,
    _c_argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _c_envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl ExecPlan {
    fn new(command: &[OsString]) -> Result<ExecPlan> {
        let Some((argv0, args)) = command.split_first() else {
            return Err(Failure::usage(
                "no command given",
                "name it after `--`, e.g. `cgctl run --cpu 0.5 -- make`",
            ));
        };
        let program = resolve(argv0)?;
        let cstr = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                Failure::usage(
                    format!("{s:?} contains a NUL byte"),
                    "arguments and environment cannot hold NUL bytes",
                )
            })
        };
        let c_argv: Vec<CString> = command.iter().map(|a| cstr(a)).collect::<Result<_>>()?;
        let c_envp: Vec<CString> = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                cstr(&kv)
            })
            .collect::<Result<_>>()?;
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(ExecPlan {
            c_program: cstr(program.as_os_str())?,
            program,
            argv0: argv0.clone(),
            args: args.to_vec(),
            argv_ptrs: ptrs(&c_argv),
            envp_ptrs: ptrs(&c_envp),
            _c_argv: c_argv,
            _c_envp: c_envp,
        })
    }
}

/// `name` as execvp(3) would find it: as given when it holds a `/`, else the first
/// executable file of that name in $PATH.
fn resolve(name: &OsStr) -> Result<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            Failure::new(
                format!("command not found: {}", Path::new(name).display()),
                "check the name, or give its full path",
            )
            .with_code(EXIT_NOT_FOUND)
        })
}

/// Starts `plan` with clone3 in the cgroup `dir`. `Ok(None)` when the kernel refuses
/// clone3 or CLONE_INTO_CGROUP (ENOSYS, EPERM, E2BIG, EINVAL): the caller falls back.
fn spawn_clone3(dir: BorrowedFd<'_>, plan: &ExecPlan) -> Result<Option<NixPid>> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| sys_failure("create a pipe", e))?;
    let pid = match clone3_exec_into_cgroup(dir, plan, &wr) {
        Ok(pid) => pid,
        Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG | Errno::EINVAL) => return Ok(None),
        Err(e) => return Err(sys_failure("clone3 into the cgroup", e)),
    };
    drop(wr);
    // The child reports an exec failure as its errno; EOF means exec succeeded.
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(&rd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(sys_failure("read the exec status", e)),
        }
    }
    if got == buf.len() {
        let _ = waitpid(pid, None);
        let err = std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf));
        return Err(exec_failure(&plan.program, err));
    }
    Ok(Some(pid))
}

/// The kernel's `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
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

/// Creates a child process directly in the cgroup whose directory is `cgroup`
/// (clone3 with `CLONE_INTO_CGROUP`, kernel 5.7+, cgroup v2), which execs `plan`
/// with an empty signal mask. If exec fails, the child writes its errno to
/// `exec_err` and exits with 127. Returns the child's pid.
///
/// See clone3(2): <https://man7.org/linux/man-pages/man2/clone3.2.html>
fn clone3_exec_into_cgroup(
    cgroup: BorrowedFd<'_>,
    plan: &ExecPlan,
    exec_err: &OwnedFd,
) -> std::result::Result<NixPid, Errno> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let empty = SigSet::empty();
    let err_fd = exec_err.as_raw_fd();
    // SAFETY: clone3 with no CLONE_VM and no stack is fork(2)-like: the child gets a
    // copy of this address space and runs on from here. The invariant is that the
    // child calls only async-signal-safe functions (sigprocmask, execve, write,
    // _exit) on data prepared before the call (plan's NUL-terminated argv/envp
    // arrays, `empty`, `err_fd`), and never returns into Rust code that could
    // allocate or take a lock that another thread of the parent held.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    if ret == 0 {
        // SAFETY: in the child (see above); every pointer is into `plan` or the
        // stack, which the child's copy of the address space holds unchanged.
        unsafe {
            libc::sigprocmask(libc::SIG_SETMASK, empty.as_ref(), std::ptr::null_mut());
            libc::execve(
                plan.c_program.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.envp_ptrs.as_ptr(),
            );
            let errno = Errno::last_raw().to_ne_bytes();
            libc::write(err_fd, errno.as_ptr().cast(), errno.len());
            libc::_exit(127);
        }
    }
    Ok(NixPid::from_raw(ret as i32))
}
