//! `sandbox exec`: another process in a running container: its namespaces (the pid
//! namespace entered by the runtime before the clone, so the process is in it, not
//! only its children), its cgroup, and the container's confinement (capabilities,
//! user, rlimits, seccomp), with the process given by `--process` or the flags.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use cgroupkit::Placement;
use nskit::{Namespace, NsId};
use oci_spec::runtime::{Process, Spec};

use super::{console, load_spec, not_found, status_of, write_atomic};
use crate::assembly::exit_code;
use crate::error::{Error, Result};
use crate::lifecycle::ContainerProcess;
use crate::security;
use crate::state;

/// `exec`'s options.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// A process.json (the spec's `process`), instead of the flags below.
    pub process: Option<PathBuf>,
    /// The command (when no `process`).
    pub args: Vec<String>,
    /// Extra environment, K=V.
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    pub cwd: Option<PathBuf>,
    /// uid and gid (default: the container's).
    pub user: Option<(u32, u32)>,
    /// A terminal (needs `console_socket`).
    pub tty: bool,
    /// Return once started (the caller reaps it), instead of waiting.
    pub detach: bool,
    /// Where to write its pid.
    pub pid_file: Option<PathBuf>,
    /// The caller's socket for the terminal's master.
    pub console_socket: Option<PathBuf>,
}

fn process_of(spec: &Spec, o: &ExecOptions) -> Result<Process> {
    if let Some(p) = &o.process {
        let text = std::fs::read(p).map_err(|e| Error::io("read --process", p, e))?;
        let proc: Process = serde_json::from_slice(&text).map_err(|source| Error::Json {
            path: p.clone(),
            source,
        })?;
        if proc.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(Error::Config(format!(
                "--process {}: args is empty: name the program to run",
                p.display()
            )));
        }
        return Ok(proc);
    }
    if o.args.is_empty() {
        return Err(Error::Config(
            "no command: sandbox exec ID CMD [ARGS] (or --process FILE)".into(),
        ));
    }
    let mut proc = spec
        .process()
        .clone()
        .ok_or_else(|| Error::Config("the container's config.json has no process".into()))?;
    proc.set_args(Some(o.args.clone()));
    let mut env = proc.env().clone().unwrap_or_default();
    crate::spec::merge_env(&mut env, &o.env)?;
    proc.set_env(Some(env));
    if let Some(c) = &o.cwd {
        proc.set_cwd(c.clone());
    }
    if let Some((u, g)) = o.user {
        let mut user = proc.user().clone();
        user.set_uid(u);
        user.set_gid(g);
        proc.set_user(user);
    }
    proc.set_terminal(Some(o.tty));
    Ok(proc)
}

/// Runs a process in container `id`; returns its exit status, or 0 once started
/// with `detach`.
pub fn exec(root: &Path, id: &str, o: &ExecOptions) -> Result<i32> {
    state::check_name(id)?;
    let dir = root.join(id);
    let st = state::read(&dir).map_err(|_| not_found(id))?;
    let status = status_of(&dir, &st);
    if !matches!(status, "running" | "created") {
        return Err(Error::Container {
            name: id.into(),
            what: format!("cannot exec in a container that is {status}"),
        });
    }
    let spec = load_spec(&dir).ok_or_else(|| Error::Container {
        name: id.into(),
        what: "its config.json is missing from the state folder".into(),
    })?;
    exec_in(id, &st, spec, o)
}

/// Runs the process `o` asks for in the container `id` (state `st`, created from
/// `spec`): the one exec of both front ends.
pub(crate) fn exec_in(id: &str, st: &state::State, mut spec: Spec, o: &ExecOptions) -> Result<i32> {
    let process = process_of(&spec, o)?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal != o.console_socket.is_some() {
        return Err(Error::Config(if terminal {
            "a terminal needs --console-socket for its master".into()
        } else {
            "--console-socket given without a terminal (--tty or process.terminal)".into()
        }));
    }
    spec.set_process(Some(process.clone()));
    let pid = st.pid.ok_or_else(|| not_found(id))?;
    let proc = ContainerProcess::open(id, st, pid)?;

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
    if kinds.contains(Namespace::PID) {
        // Our children go into its pid namespace: the process itself is in it.
        nix::sched::setns(proc.pidfd(), nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| Error::io("setns(CLONE_NEWPID)", format!("pid {pid}"), e.into()))?;
        kinds -= Namespace::PID;
    }
    let mut confine = security::from_spec(&spec)?;
    // The container's session keyring, as its first process has (runc's exec too).
    if !st.no_new_keyring {
        confine.session_keyring = Some(crate::assembly::spawn::session_keyring_name(&st.name)?);
    }
    if kinds.contains(Namespace::USER) {
        let u = process.user();
        confine.user = Some((u.uid(), u.gid()));
    }
    let mut sp = crate::assembly::spawn::process_spawn(&process)?;
    sp.join(proc.ns_handle()?, kinds);
    let mut close = Vec::new();
    match proc.cgroup().spawn_handles()?.placement(true) {
        Placement::CloneInto(d) => {
            close.push(d.as_raw_fd());
            sp.cgroup(d);
        }
        Placement::JoinSelf(handles) => confine.cgroup = Some(handles),
        Placement::Both { clone_into, join } => {
            close.push(clone_into.as_raw_fd());
            sp.cgroup(clone_into);
            confine.cgroup = Some(join);
        }
    }
    let console = match &o.console_socket {
        Some(p) => Some(console::Console::connect(p, console::size_of(&process))?),
        None => None,
    };
    let (close, enter, report) = crate::assembly::workdir::prepare(process.cwd(), close)?;
    crate::assembly::spawn::exec_steps(&mut sp, close, console, confine, enter);
    let spawned = sp.spawn();
    drop(sp);
    let mut child = spawned.map_err(|e| report.failure(&e).unwrap_or(e.into()))?;
    if let Some(p) = &o.pid_file {
        write_atomic(p, &child.pid().to_string())?;
    }
    if o.detach {
        return Ok(0);
    }
    Ok(exit_code(child.wait()?))
}
