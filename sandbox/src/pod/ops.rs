//! The `pod` commands on a pod found by name: list, inspect, exec, stop, remove, and
//! `gc` of pods whose supervisor was killed.
//!
//! The supervisor's pid in `status.json` is a guess: it is signalled through a pidfd
//! opened on it and checked against the recorded start time, and only while the
//! pod's folder is locked (the supervisor holds the lock for its whole life).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroupkit::{Cgroup, CgroupPath, Hierarchy, Leftovers};

use super::status::{self, LOGS_DIR, OCI_DIR, PodStatus, State};
use crate::error::{Error, Result};
use crate::store::Store;

/// One pod as `pod ls` lists it.
#[derive(Debug)]
pub struct Entry {
    /// Its folder.
    pub dir: PathBuf,
    /// Its status, when readable.
    pub status: Option<PodStatus>,
    /// Whether its supervisor holds it.
    pub supervised: bool,
}

/// Every pod under the state root.
pub fn list(state_root: &Path) -> Result<Vec<Entry>> {
    let root = status::pods_root(state_root);
    let rd = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read_dir", root, e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        out.push(Entry {
            status: status::read(&dir).ok(),
            supervised: crate::state::supervised(&dir)?,
            dir,
        });
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

fn no_such(name: &str) -> Error {
    Error::Container {
        name: name.into(),
        what: "no such pod (see `sandbox pod ls`)".into(),
    }
}

/// The folder and status of pod `name`.
pub fn get(state_root: &Path, name: &str) -> Result<(PathBuf, PodStatus)> {
    let dir = status::pod_dir(state_root, name)?;
    let st = status::read(&dir).map_err(|_| no_such(name))?;
    Ok((dir, st))
}

/// The container of the pod that `ctr` names, or the first app container.
pub fn container<'a>(st: &'a PodStatus, ctr: Option<&str>) -> Result<&'a status::ContainerStatus> {
    match ctr {
        Some(c) => st.containers.iter().find(|s| s.name == c),
        None => st.containers.iter().find(|s| s.kind == status::Kind::App),
    }
    .ok_or_else(|| Error::Container {
        name: st.name.clone(),
        what: format!(
            "no container {:?} in the pod (it has {})",
            ctr.unwrap_or_default(),
            st.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The log file of a container of the pod.
pub fn log_path(dir: &Path, ctr: &str) -> PathBuf {
    dir.join(LOGS_DIR).join(format!("{ctr}.log"))
}

/// A CRI log line split: stream, whether the line goes on (`P`), and the text.
pub fn parse_cri_line(line: &str) -> Option<(&str, bool, &str)> {
    let mut it = line.splitn(4, ' ');
    let _time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or("");
    Some((stream, tag == "P", text))
}

/// `pod exec POD [-c CTR] -- CMD`: runs CMD in the container (its namespaces,
/// cgroup and privileges, as the OCI `exec`); returns its status.
pub fn exec(state_root: &Path, pod: &str, ctr: Option<&str>, args: &[String]) -> Result<i32> {
    let (dir, st) = get(state_root, pod)?;
    let c = container(&st, ctr)?;
    if c.state != State::Running || !crate::state::supervised(&dir)? {
        return Err(Error::Container {
            name: pod.into(),
            what: format!("container {:?} is not running", c.name),
        });
    }
    if args.is_empty() {
        return Err(Error::Config(
            "no command: sandbox pod exec POD [-c CTR] -- CMD".into(),
        ));
    }
    crate::oci::exec(
        &dir.join(OCI_DIR),
        &c.name,
        &crate::oci::ExecOptions {
            args: args.to_vec(),
            ..Default::default()
        },
    )
}

/// pidfd_open(2), raw (the libc crate has no wrapper on musl).
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Signals the pod's supervisor through a pidfd, once its start time matches.
fn signal_supervisor(st: &PodStatus, sig: i32) -> Result<()> {
    let fd = pidfd_open(st.supervisor)
        .map_err(|e| Error::io("pidfd_open", format!("supervisor pid {}", st.supervisor), e))?;
    if crate::oci::proc_start_time(st.supervisor) != st.supervisor_start {
        return Err(Error::Container {
            name: st.name.clone(),
            what: "its recorded supervisor pid is another process now: nothing signalled \
                   (`sandbox gc` releases a pod whose supervisor died)"
                .into(),
        });
    }
    // SAFETY: the pidfd is live; a NULL siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(Error::io(
            "pidfd_send_signal",
            format!("supervisor pid {}", st.supervisor),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `pod stop`: asks the supervisor to stop the pod (SIGTERM to its containers, the
/// pod's grace period, SIGKILL) and waits until it has.
pub fn stop(state_root: &Path, pod: &str) -> Result<()> {
    let (dir, st) = get(state_root, pod)?;
    if !crate::state::supervised(&dir)? {
        return Ok(());
    }
    signal_supervisor(&st, libc::SIGTERM)?;
    let grace = status::read_plan(&dir).map(|p| p.grace_secs).unwrap_or(30);
    let until = Instant::now() + Duration::from_secs(grace + 20);
    while crate::state::supervised(&dir)? {
        if Instant::now() > until {
            return Err(Error::Container {
                name: pod.into(),
                what: "its supervisor did not finish stopping it in time".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Kills what is left of a pod (its cgroup tree) and removes its folder and its
/// records of image use.
fn release(state_root: &Path, store: &Store, dir: &Path, st: Option<&PodStatus>) -> Result<()> {
    let _lock = crate::state::lock(dir, false)?;
    if let Some(st) = st {
        let h = Hierarchy::detect()?;
        match Cgroup::load(&h, &CgroupPath::new(&st.cgroup)?) {
            Ok(cg) => cg.delete_recursive(Leftovers::Kill)?,
            Err(cgroupkit::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        for (i, c) in st.containers.iter().enumerate() {
            if let Ok(img) = store.get(&c.image) {
                store.remove_user(&img.key(), &status::image_user_id(&st.id, i));
            }
        }
    }
    let _ = state_root;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove_dir_all", dir, e)),
    }
}

/// `pod rm`: removes a pod that is not running (with `force`, stops it first).
pub fn remove(state_root: &Path, store: &Store, pod: &str, force: bool) -> Result<()> {
    let dir = status::pod_dir(state_root, pod)?;
    if !dir.exists() {
        return Err(no_such(pod));
    }
    if crate::state::supervised(&dir)? {
        if !force {
            return Err(Error::Container {
                name: pod.into(),
                what: "it is running: `sandbox pod stop` it first, or `pod rm --force`".into(),
            });
        }
        stop(state_root, pod)?;
    }
    let st = status::read(&dir).ok();
    release(state_root, store, &dir, st.as_ref())
}

/// `sandbox gc` for pods: releases every pod whose supervisor is gone without
/// finishing (killed): its processes and cgroups, its folder. Finished pods stay
/// for `pod ps`/`pod logs` until `pod rm`. Returns the names released.
pub fn gc(state_root: &Path, store: &Store) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in list(state_root)? {
        if e.supervised || e.status.as_ref().is_some_and(|s| s.finished) {
            continue;
        }
        // A folder without status yet may be a pod being made (its supervisor
        // locks it right after the mkdir): left alone unless old.
        if e.status.is_none()
            && std::fs::metadata(&e.dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60))
        {
            continue;
        }
        release(state_root, store, &e.dir, e.status.as_ref())?;
        out.push(
            e.status
                .map(|s| s.name)
                .unwrap_or_else(|| e.dir.display().to_string()),
        );
    }
    Ok(out)
}

/// One container's resource use, from its cgroup.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ContainerStats {
    /// The container.
    pub name: String,
    /// CPU time used, microseconds (cpu.stat usage_usec; none on a v1 cpu
    /// hierarchy without cpuacct).
    pub cpu_usec: Option<u64>,
    /// Periods in which it was throttled (cpu.stat nr_throttled).
    pub nr_throttled: Option<u64>,
    /// Time throttled, microseconds.
    pub throttled_usec: Option<u64>,
    /// Memory in use, bytes (memory.current, or v1 memory.usage_in_bytes).
    pub memory_bytes: Option<u64>,
    /// Tasks (pids.current).
    pub pids: Option<u64>,
}

/// `pod stats`: the running containers' resource use, from their cgroups.
pub fn stats(state_root: &Path, pod: &str) -> Result<Vec<ContainerStats>> {
    let (_, st) = get(state_root, pod)?;
    let h = Hierarchy::detect()?;
    let read = |cg: &Cgroup, c: cgroupkit::Controller, files: &[&str]| -> Option<u64> {
        let d = cg.dir_for(c).ok()?;
        files
            .iter()
            .find_map(|f| std::fs::read_to_string(d.file(f)).ok())
            .and_then(|t| t.trim().parse().ok())
    };
    let mut out = Vec::new();
    for c in st.containers.iter().filter(|c| c.state == State::Running) {
        let Ok(p) = CgroupPath::new(&format!("{}/{}", st.cgroup, c.name)) else {
            continue;
        };
        let Ok(cg) = Cgroup::load(&h, &p) else {
            continue;
        };
        let cpu = cg.cpu_stat().ok();
        out.push(ContainerStats {
            name: c.name.clone(),
            cpu_usec: cpu.as_ref().and_then(|s| s.usage_usec),
            nr_throttled: cpu.as_ref().map(|s| s.nr_throttled),
            throttled_usec: cpu.as_ref().map(|s| s.throttled_usec),
            memory_bytes: read(
                &cg,
                cgroupkit::Controller::Memory,
                &["memory.current", "memory.usage_in_bytes"],
            ),
            pids: read(&cg, cgroupkit::Controller::Pids, &["pids.current"]),
        });
    }
    Ok(out)
}
