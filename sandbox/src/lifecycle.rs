//! Operations on a container that runs (or ran): `exec`, `kill`, `stop`, `rm`, each
//! found through its state folder.

use std::os::fd::AsFd;

use cgroupkit::{Cgroup, CgroupPath, Hierarchy};
use nix::sys::signal::Signal;
use nskit::{Namespace, NsHandle, NsId, Spawn};
use oci_spec::runtime::Spec;

use crate::assembly::{Paths, exit_code};
use crate::error::{Error, Result};
use crate::security;
use crate::state::{self, State, Status};
use crate::store::Store;

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
