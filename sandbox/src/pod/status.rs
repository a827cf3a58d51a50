//! A pod's folder under the state root and the status its supervisor keeps there.
//!
//! `ROOT/.pods/NAME/` holds `plan.json` (the checked Pod), `status.json` (phase and
//! each container's state, rewritten atomically on every change), `logs/CTR.log`
//! (CRI format), `oci/` (the OCI state root of the pod's containers, `infra` first),
//! `volumes/` (disk emptyDirs) and `run/` (a tmpfs in the supervisor's own mount
//! namespace: root filesystems, Memory emptyDirs; it vanishes with the pod's
//! processes, so a killed supervisor leaves no mount on the host). The folder is
//! locked (flock) by the supervisor for its lifetime, as a container's is.
//! `.pods` starts with a dot, which no container name can: `sandbox ps` and `gc`
//! of containers skip it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ioe};

/// The folder of pods under the state root.
pub const PODS_DIR: &str = ".pods";
/// The checked Pod.
pub const PLAN_FILE: &str = "plan.json";
/// The pod's status.
pub const STATUS_FILE: &str = "status.json";
/// Container logs, one file each.
pub const LOGS_DIR: &str = "logs";
/// The OCI state root of the pod's containers.
pub const OCI_DIR: &str = "oci";
/// The supervisor's tmpfs.
pub const RUN_DIR: &str = "run";
/// Disk emptyDir volumes.
pub const VOLUMES_DIR: &str = "volumes";
/// `pod attach` sockets, one per container.
pub const ATTACH_DIR: &str = "attach";
/// The first byte a `pod attach` client reads: the container has a terminal, whose
/// master comes with it (SCM_RIGHTS) for window size changes.
pub const ATTACH_TTY: u8 = b'T';
/// The first byte a `pod attach` client reads: the container has pipes.
pub const ATTACH_PIPES: u8 = b'P';
/// The infra container's id.
pub const INFRA: &str = "infra";

/// The pod's phase, as Kubernetes names it (plus `Stopped`: stopped by `pod stop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Being started (init containers run).
    Pending,
    /// App containers started.
    Running,
    /// Every app container exited 0 and none restarts.
    Succeeded,
    /// A container failed and none restarts, or the deadline passed.
    Failed,
    /// Stopped by `pod stop` or a signal.
    Stopped,
}

/// What a container is to the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// An init container: runs to exit 0 before the next.
    Init,
    /// An init container with `restartPolicy: Always`.
    Sidecar,
    /// An app container.
    App,
}

/// Where a container is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Not started yet, or waiting for its restart.
    Waiting,
    /// Its process runs.
    Running,
    /// It exited.
    Terminated,
}

/// One container's status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Its name.
    pub name: String,
    /// Init, sidecar or app.
    pub kind: Kind,
    /// The image.
    pub image: String,
    /// Where it is.
    pub state: State,
    /// Why (`CrashLoopBackOff`, `Completed`, `Error`, `OOMKilled`, `Unhealthy`).
    pub reason: Option<String>,
    /// Its host pid while it runs.
    pub pid: Option<i32>,
    /// Restarts so far.
    pub restarts: u32,
    /// The last exit status (128+N for signal N).
    pub exit_code: Option<i32>,
    /// The last exit was an OOM kill.
    pub oom_killed: bool,
    /// Ready (its readiness probe passes, or it has none and runs).
    pub ready: bool,
    /// Started (its startup probe passed, or it has none and runs).
    pub started: bool,
    /// The last start, RFC 3339.
    pub started_at: Option<String>,
    /// The last exit, RFC 3339.
    pub finished_at: Option<String>,
    /// The CPU time of the last exec probe, microseconds: the supervisor's own for
    /// starting it (getrusage) plus the probe process's (wait4).
    #[serde(default)]
    pub exec_probe_cpu_usec: Option<u64>,
}

/// `status.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodStatus {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// A random id, part of the cgroup name.
    pub id: String,
    /// The supervisor's pid.
    pub supervisor: i32,
    /// Its start time (field 22 of /proc/PID/stat), to tell a reused pid.
    pub supervisor_start: Option<u64>,
    /// The infra process's host pid.
    pub infra_pid: Option<i32>,
    /// The pod cgroup (relative to each hierarchy root).
    pub cgroup: String,
    /// The phase.
    pub phase: Phase,
    /// Why (`DeadlineExceeded`, the failing init container, an error).
    pub reason: Option<String>,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The supervisor finished: nothing of the pod runs, its folder keeps the
    /// status and logs until `pod rm`.
    pub finished: bool,
    /// Init containers in order, then app containers.
    pub containers: Vec<ContainerStatus>,
}

/// The pods folder under the state root.
pub fn pods_root(state_root: &Path) -> PathBuf {
    state_root.join(PODS_DIR)
}

/// A pod's folder; the name is checked first.
pub fn pod_dir(state_root: &Path, name: &str) -> Result<PathBuf> {
    crate::state::check_name(name)?;
    Ok(pods_root(state_root).join(name))
}

/// Reads a pod's status.
pub fn read(dir: &Path) -> Result<PodStatus> {
    let p = dir.join(STATUS_FILE);
    let text = std::fs::read(&p).map_err(ioe("read", &p))?;
    serde_json::from_slice(&text).map_err(|source| Error::Json { path: p, source })
}

/// Reads a pod's plan.
pub fn read_plan(dir: &Path) -> Result<crate::pod::PodPlan> {
    let p = dir.join(PLAN_FILE);
    let text = std::fs::read(&p).map_err(ioe("read", &p))?;
    serde_json::from_slice(&text).map_err(|source| Error::Json { path: p, source })
}

/// Writes `value` as JSON to `dir/file` atomically.
pub fn write_json<T: Serialize>(dir: &Path, file: &str, value: &T) -> Result<()> {
    let p = dir.join(file);
    let tmp = dir.join(format!(".{file}.tmp"));
    let text = serde_json::to_vec(value).map_err(|source| Error::Json {
        path: p.clone(),
        source,
    })?;
    std::fs::write(&tmp, text).map_err(ioe("write", &tmp))?;
    std::fs::rename(&tmp, &p).map_err(ioe("rename", &p))
}

/// The id under which the pod's container `index` is recorded as a user of its image
/// in the store (alphanumeric, as the store wants).
pub fn image_user_id(pod_id: &str, index: usize) -> String {
    format!("{pod_id}{index:04x}")
}
