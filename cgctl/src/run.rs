//! `cgctl run`: start a command inside a cgroup, pass signals on, relay its exit
//! status, and remove the cgroup afterwards.
//!
//! The child is in the cgroup before it runs a single instruction of the command. It is
//! started with nskit's [`Spawn`]: on pure cgroup v2, clone3(2) with
//! `CLONE_INTO_CGROUP` (kernel 5.7+) creates it there (where the kernel refuses that,
//! nskit writes its pid to cgroup.procs before releasing it); elsewhere the child
//! writes itself into each pre-opened cgroup.procs or tasks before exec
//! ([`cgroupkit::SpawnHandles::join_self`]); [`cgroupkit::Placement`] chooses. Signals
//! are passed on by nskit's [`Forwarder`] loop.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cgctl::cli::RunArgs;
use cgroupkit::{Cgroup, CgroupPath, Hierarchy, Layout, Leftovers, Placement};
use nix::sys::signal::Signal;
use nskit::Spawn;
use nskit::forward::Forwarder;

use crate::cmd::{Failure, Result, create_apply};
use crate::show::shown;
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
    let placement = cg.spawn_handles()?.placement(!a.no_clone3);
    // Block the forwarded signals before the child exists, so that none is lost
    // (nor kills cgctl meanwhile). The child starts with an empty signal mask. A
    // signal from the terminal (^C, ^\, hangup) already reached the whole foreground
    // process group, the command included: it is not sent twice.
    let fwd = Forwarder::new(&FORWARDED)
        .map_err(|e| {
            Failure::new(
                format!("cannot set up signal forwarding: {}", errchain::chain(&e)),
                "this is unexpected; report it with the command line",
            )
        })?
        .skip_kernel_sent(true);

    let mut spawn = Spawn::new(&plan.program);
    spawn.arg0(&plan.argv0).args(&plan.args);
    let how = match placement {
        Placement::CloneInto(dir) => {
            spawn.cgroup(dir);
            "clone3(CLONE_INTO_CGROUP); where the kernel refuses it, the parent writes \
             cgroup.procs before the child runs"
        }
        Placement::JoinSelf(handles) => {
            // SAFETY: join_self makes only write(2) syscalls on fds opened before the
            // clone; it neither allocates nor takes locks, so it is async-signal-safe.
            unsafe { spawn.pre_exec(move || handles.join_self()) };
            "a fork-like clone, then a write to cgroup.procs before exec"
        }
        Placement::Both { clone_into, join } => {
            spawn.cgroup(clone_into);
            // SAFETY: as above.
            unsafe { spawn.pre_exec(move || join.join_self()) };
            "clone3(CLONE_INTO_CGROUP) for the v2 hierarchy, then a write to each v1 \
             hierarchy's tasks before exec"
        }
    };
    let mut child = spawn.spawn().map_err(|e| spawn_failure(&plan.program, e))?;
    if a.verbose {
        eprintln!(
            "cgctl: pid {} runs {} in cgroup {} (via {how})",
            child.pid(),
            shown(&plan.program),
            shown(cg.path().as_str())
        );
    }
    let status = child.wait_forwarding(&fwd).map_err(|e| {
        Failure::new(
            format!("cannot wait for the command: {}", errchain::chain(&e)),
            "this is unexpected; report it with the command line",
        )
    })?;
    // Restore the mask (cleanup may take a while; let ^C stop cgctl then).
    drop(fwd);
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => 1,
    };
    Ok(ExitCode::from(code))
}

/// A failed spawn: the exec itself (126, or 127 when the program is missing, as
/// shells report it), or a step before it (joining the cgroup: cgctl's own failure).
fn spawn_failure(program: &Path, e: nskit::Error) -> Failure {
    if let Some(source) = e.exec_error() {
        let code = match source.kind() {
            std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
            _ => EXIT_CANNOT_EXEC,
        };
        return Failure::new(
            format!("cannot execute {}: {source}", shown(program)),
            "check the command's path and permissions",
        )
        .with_code(code);
    }
    Failure::new(
        format!("cannot start {}: {}", shown(program), errchain::chain(&e)),
        "this is unexpected; report it with the command line",
    )
}

/// The command, resolved and checked before anything is created or started.
struct ExecPlan {
    program: PathBuf,
    argv0: OsString,
    args: Vec<OsString>,
}

impl ExecPlan {
    fn new(command: &[OsString]) -> Result<ExecPlan> {
        let Some((argv0, args)) = command.split_first() else {
            return Err(Failure::usage(
                "no command given",
                "name it after `--`, e.g. `cgctl run --cpu 0.5 -- make`",
            ));
        };
        // (No NUL check: argv and the environment come from the OS as C strings.)
        let program = resolve(argv0)?;
        Ok(ExecPlan {
            program,
            argv0: argv0.clone(),
            args: args.to_vec(),
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
                format!("command not found: {}", shown(name)),
                "check the name, or give its full path",
            )
            .with_code(EXIT_NOT_FOUND)
        })
}
