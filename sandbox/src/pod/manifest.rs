//! A Kubernetes `v1` `Pod` file (YAML or JSON) read into k8s-openapi's typed [`Pod`],
//! then checked and turned into a [`PodPlan`]: what `sandbox pod run` starts.
//!
//! k8s-openapi ignores keys it does not know, so the input is compared with the
//! typed value's re-serialisation: a key that did not survive is unknown to the v1
//! schema (a typo, a field of another version). A key that survived but is outside
//! [`SUPPORTED`] is a real Pod field this runtime does not implement. Either is an
//! error naming the field: nothing is ever silently dropped, and nothing is started
//! from a file that has one.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Every field path this runtime implements (`[]`: any list item, `*`: any map key).
/// A parent of a listed path is allowed as an (empty) object.
pub const SUPPORTED: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.labels.*",
    "metadata.annotations.*",
    "spec.hostname",
    "spec.hostNetwork",
    "spec.shareProcessNamespace",
    "spec.restartPolicy",
    "spec.terminationGracePeriodSeconds",
    "spec.activeDeadlineSeconds",
    "spec.volumes[].name",
    "spec.volumes[].emptyDir.medium",
    "spec.volumes[].emptyDir.sizeLimit",
    "spec.volumes[].hostPath.path",
    "spec.volumes[].hostPath.type",
];

/// The fields of a container (app or init) this runtime implements.
pub const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "command[]",
    "args[]",
    "env[].name",
    "env[].value",
    "workingDir",
    "ports[].name",
    "ports[].containerPort",
    "ports[].protocol",
    "volumeMounts[].name",
    "volumeMounts[].mountPath",
    "volumeMounts[].readOnly",
    "volumeMounts[].subPath",
    "resources.limits.cpu",
    "resources.limits.memory",
    "resources.requests.cpu",
    "resources.requests.memory",
    "stdin",
    "tty",
    "securityContext.runAsUser",
    "securityContext.runAsGroup",
    "securityContext.runAsNonRoot",
    "securityContext.readOnlyRootFilesystem",
    "securityContext.allowPrivilegeEscalation",
    "securityContext.privileged",
    "securityContext.capabilities.add[]",
    "securityContext.capabilities.drop[]",
];

/// The fields of a probe this runtime implements.
pub const PROBE_FIELDS: &[&str] = &[
    "exec.command[]",
    "httpGet.path",
    "httpGet.port",
    "httpGet.host",
    "httpGet.scheme",
    "tcpSocket.port",
    "tcpSocket.host",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "failureThreshold",
    "successThreshold",
];

/// Which containers restart when they exit (`spec.restartPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always restarted (the default).
    Always,
    /// Restarted when they exit non-zero.
    OnFailure,
    /// Never restarted.
    Never,
}

/// A volume of the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    /// A folder made for the pod on disk, removed with it.
    EmptyDir,
    /// A tmpfs made for the pod, at most this many bytes (`medium: Memory`).
    Memory {
        /// `sizeLimit` in bytes (none: the tmpfs default, half of RAM).
        size_bytes: Option<u64>,
    },
    /// A host path.
    HostPath {
        /// The host path.
        path: String,
        /// Its `type` check ("" = none).
        kind: String,
    },
}

/// A volume of the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumePlan {
    /// Its name.
    pub name: String,
    /// What it is.
    pub source: VolumeSource,
}

/// A volume mounted in a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// The volume's name.
    pub volume: String,
    /// Where, inside the container.
    pub path: String,
    /// Read-only.
    pub read_only: bool,
    /// A relative path inside the volume mounted instead of its root.
    pub sub_path: Option<String>,
}

/// What a probe runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeAction {
    /// A command in the container; success is exit 0.
    Exec(Vec<String>),
    /// An HTTP GET on the pod's address; success is a status 200..400.
    HttpGet {
        /// The host (default the pod's loopback).
        host: String,
        /// The port.
        port: u16,
        /// The path.
        path: String,
    },
    /// A TCP connect on the pod's address.
    TcpSocket {
        /// The host (default the pod's loopback).
        host: String,
        /// The port.
        port: u16,
    },
}

/// A probe, with the kubelet's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbePlan {
    /// The handler.
    pub action: ProbeAction,
    /// Seconds after the start before the first run.
    pub initial_delay_secs: u32,
    /// Seconds between runs.
    pub period_secs: u32,
    /// Seconds a run may take.
    pub timeout_secs: u32,
    /// Failures in a row that count.
    pub failure_threshold: u32,
    /// Successes in a row that count.
    pub success_threshold: u32,
}

/// The container's `securityContext`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityPlan {
    /// `runAsUser`.
    pub run_as_user: Option<u32>,
    /// `runAsGroup`.
    pub run_as_group: Option<u32>,
    /// `runAsNonRoot`.
    pub run_as_non_root: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// `allowPrivilegeEscalation` (default true, as in Kubernetes).
    pub allow_privilege_escalation: bool,
    /// Capabilities added (`NET_ADMIN`, no `CAP_` prefix).
    pub cap_add: Vec<String>,
    /// Capabilities dropped (`ALL` drops every one).
    pub cap_drop: Vec<String>,
}

/// A container of the pod, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    /// Its name, unique in the pod.
    pub name: String,
    /// The image in the sandbox store.
    pub image: String,
    /// `command` (replaces the image's entrypoint).
    pub command: Option<Vec<String>>,
    /// `args` (replaces the image's cmd).
    pub args: Option<Vec<String>>,
    /// `env`, in order.
    pub env: Vec<(String, String)>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// `ports` (recorded only): name, port, protocol.
    pub ports: Vec<(String, u16, String)>,
    /// `volumeMounts`.
    pub mounts: Vec<MountPlan>,
    /// CPU limit in millicores.
    pub cpu_limit_milli: Option<u64>,
    /// CPU request in millicores (cpu shares).
    pub cpu_request_milli: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Memory request in bytes (recorded).
    pub memory_request_bytes: Option<u64>,
    /// `stdin`: the container's stdin stays open.
    pub stdin: bool,
    /// `tty`: a terminal.
    pub tty: bool,
    /// `securityContext`.
    pub security: SecurityPlan,
    /// `startupProbe`.
    pub startup_probe: Option<ProbePlan>,
    /// `livenessProbe`.
    pub liveness_probe: Option<ProbePlan>,
    /// `readinessProbe`.
    pub readiness_probe: Option<ProbePlan>,
    /// An init container with `restartPolicy: Always`: a native sidecar.
    pub sidecar: bool,
}

/// A pod, checked: what `sandbox pod run` starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// The pod's hostname (`spec.hostname`, else the name).
    pub hostname: String,
    /// `spec.hostNetwork`: the host's network and UTS namespaces.
    pub host_network: bool,
    /// `spec.shareProcessNamespace`.
    pub share_process_namespace: bool,
    /// `spec.restartPolicy`.
    pub restart_policy: RestartPolicy,
    /// `spec.terminationGracePeriodSeconds` (default 30).
    pub grace_secs: u64,
    /// `spec.activeDeadlineSeconds`.
    pub active_deadline_secs: Option<u64>,
    /// `spec.initContainers`, in order (sidecars among them).
    pub init_containers: Vec<ContainerPlan>,
    /// `spec.containers`.
    pub containers: Vec<ContainerPlan>,
    /// `spec.volumes`.
    pub volumes: Vec<VolumePlan>,
}

impl PodPlan {
    /// Every container: init containers first, in order, then the app containers.
    pub fn all(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.init_containers.iter().chain(self.containers.iter())
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerPlan> {
        self.all().find(|c| c.name == name)
    }
}

fn bad(file: &str, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("{file}: {what}"))
}

/// Reads and checks the Pod file at `path`.
pub fn load(path: &Path) -> Result<PodPlan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks a Pod (YAML or JSON) named `file` in errors.
pub fn parse(text: &str, file: &str) -> Result<PodPlan> {
    let mut input: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| bad(file, format!("malformed JSON: {e}")))?
    } else {
        serde_norway::from_str(text).map_err(|e| bad(file, format!("malformed YAML: {e}")))?
    };
    if !input.is_object() {
        return Err(bad(
            file,
            "expected a Pod object (apiVersion: v1, kind: Pod)",
        ));
    }
    for (key, want) in [("apiVersion", "v1"), ("kind", "Pod")] {
        match input.get(key).and_then(Value::as_str) {
            Some(v) if v == want => {}
            Some(v) => {
                return Err(bad(
                    file,
                    format!("{key} is {v:?}: only {key}: {want} is supported"),
                ));
            }
            None => return Err(bad(file, format!("{key}: missing (expected {want})"))),
        }
    }
    normalise_quantities(&mut input);
    let pod: Pod = serde_json::from_value(input.clone())
        .map_err(|e| bad(file, format!("not a valid v1 Pod: {e}")))?;
    let typed = serde_json::to_value(&pod).map_err(|e| bad(file, e))?;
    // Keys k8s-openapi dropped are unknown to the schema.
    if let Some(p) = first_unknown(&input, &typed, "") {
        return Err(bad(
            file,
            format!("field {p} is unknown to the Kubernetes v1 Pod schema (a typo?)"),
        ));
    }
    let allowed = allowed_paths();
    if let Some(p) = first_unsupported(&typed, "", "", &allowed) {
        return Err(bad(
            file,
            format!(
                "field {p} is not supported by sandbox pod (supported fields: see `sandbox pod \
                 run --help`); remove it"
            ),
        ));
    }
    plan(&pod).map_err(|e| bad(file, e))
}

/// `cpu: 2` and `memory: 1073741824` are numbers in YAML; Kubernetes takes them as
/// quantities (strings), which k8s-openapi's `Quantity` only reads as strings.
fn normalise_quantities(v: &mut Value) {
    fn fix_map(m: &mut Value) {
        if let Some(o) = m.as_object_mut() {
            for q in o.values_mut() {
                if let Value::Number(n) = q {
                    *q = Value::String(n.to_string());
                }
            }
        }
    }
    fn fix_container(c: &mut Value) {
        if let Some(r) = c.get_mut("resources") {
            for k in ["limits", "requests"] {
                if let Some(m) = r.get_mut(k) {
                    fix_map(m);
                }
            }
        }
    }
    let Some(spec) = v.get_mut("spec") else {
        return;
    };
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            cs.iter_mut().for_each(fix_container);
        }
    }
    if let Some(Value::Array(vs)) = spec.get_mut("volumes") {
        for vol in vs {
            if let Some(Value::Number(n)) = vol.get("emptyDir").and_then(|e| e.get("sizeLimit")) {
                let s = Value::String(n.to_string());
                if let Some(e) = vol.get_mut("emptyDir").and_then(Value::as_object_mut) {
                    e.insert("sizeLimit".into(), s);
                }
            }
        }
    }
}

/// The first key of `input` (depth first) that `typed` does not have.
fn first_unknown(input: &Value, typed: &Value, path: &str) -> Option<String> {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = join(path, k);
                match b.get(k) {
                    // null is how YAML writes an absent value (`emptyDir:`).
                    None if v.is_null() => {}
                    None => return Some(p),
                    Some(t) => {
                        if let Some(u) = first_unknown(v, t, &p) {
                            return Some(u);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_unknown(x, y, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Every supported path and each of its prefixes.
fn allowed_paths() -> HashSet<String> {
    let mut full: Vec<String> = SUPPORTED.iter().map(|s| s.to_string()).collect();
    for list in ["spec.containers[]", "spec.initContainers[]"] {
        for f in CONTAINER_FIELDS {
            full.push(format!("{list}.{f}"));
        }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            for f in PROBE_FIELDS {
                full.push(format!("{list}.{probe}.{f}"));
            }
        }
    }
    full.push("spec.initContainers[].restartPolicy".into());
    let mut out = HashSet::new();
    for p in full {
        let mut cut = String::new();
        for (i, ch) in p.char_indices() {
            if ch == '.' || (ch == '[' && i > 0) {
                out.insert(cut.clone());
            }
            cut.push(ch);
        }
        out.insert(cut);
    }
    out
}

/// The first present field of `v` whose path (`norm`: indices as `[]`, map keys
/// as `*`) is not supported; `real` is the path with indices, for the message.
fn first_unsupported(
    v: &Value,
    real: &str,
    norm: &str,
    allowed: &HashSet<String>,
) -> Option<String> {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let r = join(real, k);
                let n = if allowed.contains(&format!("{norm}.*")) {
                    format!("{norm}.*")
                } else {
                    join(norm, k)
                };
                if !allowed.contains(&n) {
                    return Some(r);
                }
                if let Some(u) = first_unsupported(child, &r, &n, allowed) {
                    return Some(u);
                }
            }
            None
        }
        Value::Array(a) => {
            let n = format!("{norm}[]");
            a.iter().enumerate().find_map(|(i, x)| {
                let r = format!("{real}[{i}]");
                if !allowed.contains(&n) {
                    return Some(r);
                }
                first_unsupported(x, &r, &n, allowed)
            })
        }
        _ => None,
    }
}

/// A DNS-1123 label: what Kubernetes requires of a pod, container and volume name.
fn check_label(what: &str, name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a DNS label (1-63 of a-z 0-9 -, not starting or ending \
             with -)"
        ))
    }
}

/// A CPU quantity (`200m`, `0.5`, `2`) in millicores.
pub fn parse_cpu(q: &str) -> std::result::Result<u64, String> {
    let err = || format!("cpu {q:?}: expected a positive quantity like 200m, 0.5 or 2");
    let t = q.trim();
    let milli = if let Some(m) = t.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        m.parse::<u64>().map_err(|_| err())?
    } else {
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        let i: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err())?
        };
        // Kubernetes rounds a CPU quantity up to whole millicores.
        let mut f = 0u64;
        for (n, d) in frac.bytes().enumerate() {
            let d = u64::from(d - b'0');
            match n {
                0 => f += d * 100,
                1 => f += d * 10,
                2 => f += d,
                _ if d > 0 => {
                    f += 1;
                    break;
                }
                _ => {}
            }
        }
        i.checked_mul(1000)
            .and_then(|x| x.checked_add(f))
            .ok_or_else(err)?
    };
    if milli == 0 {
        return Err(err());
    }
    Ok(milli)
}

/// A memory quantity (`64Mi`, `1G`, `512Ki`, `1048576`, `0.5Gi`) in bytes.
pub fn parse_memory(q: &str) -> std::result::Result<u64, String> {
    let err = || format!("memory {q:?}: expected a positive quantity like 64Mi or 1G");
    let t = q.trim();
    const UNITS: [(&str, u128); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let (num, mult) = UNITS
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((t, 1));
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return Err(err());
    }
    let i: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| err())?
    };
    let f: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| err())?
    };
    let scale = 10u128.pow(frac.len() as u32);
    // Rounded up to whole bytes, as Kubernetes does.
    let bytes = (i * scale + f)
        .checked_mul(mult)
        .map(|x| x.div_ceil(scale))
        .ok_or_else(err)?;
    match u64::try_from(bytes) {
        Ok(b) if b > 0 => Ok(b),
        _ => Err(err()),
    }
}

fn quantity(
    m: &Option<BTreeMap<String, Quantity>>,
    key: &str,
    parse: fn(&str) -> std::result::Result<u64, String>,
    at: &str,
) -> std::result::Result<Option<u64>, String> {
    m.as_ref()
        .and_then(|m| m.get(key))
        .map(|q| parse(&q.0).map_err(|e| format!("{at}.{key}: {e}")))
        .transpose()
}

fn probe(
    p: &Option<Probe>,
    at: &str,
    c: &Container,
) -> std::result::Result<Option<ProbePlan>, String> {
    let Some(p) = p else { return Ok(None) };
    let port = |v: &IntOrString, at: String| -> std::result::Result<u16, String> {
        match v {
            IntOrString::Int(n) => u16::try_from(*n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{at}: port {n} is not 1..65535")),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("{at}: no container port named {name:?}")),
        }
    };
    let mut actions = Vec::new();
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return Err(format!("{at}.exec.command: empty"));
        }
        actions.push(ProbeAction::Exec(cmd));
    }
    if let Some(h) = &p.http_get {
        if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Err(format!("{at}.httpGet.scheme: only HTTP is supported"));
        }
        actions.push(ProbeAction::HttpGet {
            host: h.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port: port(&h.port, format!("{at}.httpGet.port"))?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        });
    }
    if let Some(t) = &p.tcp_socket {
        actions.push(ProbeAction::TcpSocket {
            host: t.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port: port(&t.port, format!("{at}.tcpSocket.port"))?,
        });
    }
    if actions.len() != 1 {
        return Err(format!(
            "{at}: give exactly one handler (exec, httpGet or tcpSocket)"
        ));
    }
    let num = |v: Option<i32>, name: &str, default: u32, min: u32| {
        let n = v.map_or(Ok(default), |n| {
            u32::try_from(n).map_err(|_| format!("{at}.{name}: {n} is negative"))
        })?;
        if n < min {
            return Err(format!("{at}.{name}: {n} is below {min}"));
        }
        Ok(n)
    };
    Ok(Some(ProbePlan {
        action: actions.remove(0),
        initial_delay_secs: num(p.initial_delay_seconds, "initialDelaySeconds", 0, 0)?,
        period_secs: num(p.period_seconds, "periodSeconds", 10, 1)?,
        timeout_secs: num(p.timeout_seconds, "timeoutSeconds", 1, 1)?,
        failure_threshold: num(p.failure_threshold, "failureThreshold", 3, 1)?,
        success_threshold: num(p.success_threshold, "successThreshold", 1, 1)?,
    }))
}

fn container(
    c: &Container,
    at: &str,
    volumes: &[VolumePlan],
    init: bool,
) -> std::result::Result<ContainerPlan, String> {
    check_label(&format!("{at}.name"), &c.name)?;
    let image = c.image.clone().filter(|i| !i.is_empty()).ok_or_else(|| {
        format!("{at}.image: missing (an image imported with `sandbox image import`)")
    })?;
    let mut mounts = Vec::new();
    let mut seen_paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mat = format!("{at}.volumeMounts[{i}]");
        if !volumes.iter().any(|v| v.name == m.name) {
            return Err(format!(
                "{mat}.name: volume {:?} is not declared in spec.volumes",
                m.name
            ));
        }
        if !m.mount_path.starts_with('/') {
            return Err(format!(
                "{mat}.mountPath {:?}: must be absolute",
                m.mount_path
            ));
        }
        if !seen_paths.insert(m.mount_path.trim_end_matches('/').to_string()) {
            return Err(format!("{mat}.mountPath {:?}: mounted twice", m.mount_path));
        }
        let sub = m.sub_path.clone().filter(|s| !s.is_empty());
        if let Some(s) = &sub
            && (s.starts_with('/') || s.split('/').any(|p| p == ".."))
        {
            return Err(format!(
                "{mat}.subPath {s:?}: must be a relative path without '..'"
            ));
        }
        mounts.push(MountPlan {
            volume: m.name.clone(),
            path: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
            sub_path: sub,
        });
    }
    let mut env = Vec::new();
    for (i, e) in c.env.iter().flatten().enumerate() {
        if e.name.is_empty() || e.name.contains('=') {
            return Err(format!(
                "{at}.env[{i}].name {:?}: not a variable name",
                e.name
            ));
        }
        env.push((e.name.clone(), e.value.clone().unwrap_or_default()));
    }
    let mut ports = Vec::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let n = u16::try_from(p.container_port)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!(
                    "{at}.ports[{i}].containerPort {}: not 1..65535",
                    p.container_port
                )
            })?;
        ports.push((
            p.name.clone().unwrap_or_default(),
            n,
            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        ));
    }
    let (limits, requests) = c
        .resources
        .as_ref()
        .map(|r| (r.limits.clone(), r.requests.clone()))
        .unwrap_or_default();
    let rat = format!("{at}.resources");
    let cpu_limit = quantity(&limits, "cpu", parse_cpu, &format!("{rat}.limits"))?;
    let cpu_request = quantity(&requests, "cpu", parse_cpu, &format!("{rat}.requests"))?;
    let mem_limit = quantity(&limits, "memory", parse_memory, &format!("{rat}.limits"))?;
    let mem_request = quantity(
        &requests,
        "memory",
        parse_memory,
        &format!("{rat}.requests"),
    )?;
    if let (Some(l), Some(r)) = (cpu_limit, cpu_request)
        && r > l
    {
        return Err(format!("{rat}.requests.cpu is above limits.cpu"));
    }
    if let (Some(l), Some(r)) = (mem_limit, mem_request)
        && r > l
    {
        return Err(format!("{rat}.requests.memory is above limits.memory"));
    }
    let mut security = SecurityPlan {
        allow_privilege_escalation: true,
        ..Default::default()
    };
    if let Some(s) = &c.security_context {
        let sat = format!("{at}.securityContext");
        if s.privileged == Some(true) {
            return Err(format!(
                "{sat}.privileged: privileged containers are refused (they would have every \
                 capability and device of the host); add only the capabilities needed"
            ));
        }
        let id = |v: Option<i64>, name: &str| {
            v.map(|n| u32::try_from(n).map_err(|_| format!("{sat}.{name} {n}: not a uid")))
                .transpose()
        };
        security.run_as_user = id(s.run_as_user, "runAsUser")?;
        security.run_as_group = id(s.run_as_group, "runAsGroup")?;
        security.run_as_non_root = s.run_as_non_root.unwrap_or(false);
        if security.run_as_non_root && security.run_as_user == Some(0) {
            return Err(format!("{sat}: runAsNonRoot with runAsUser 0"));
        }
        security.read_only_root = s.read_only_root_filesystem.unwrap_or(false);
        security.allow_privilege_escalation = s.allow_privilege_escalation.unwrap_or(true);
        if let Some(caps) = &s.capabilities {
            let norm = |l: &Option<Vec<String>>, what: &str| {
                l.iter()
                    .flatten()
                    .map(|c| {
                        let u = c.trim_start_matches("CAP_").to_ascii_uppercase();
                        if u == "ALL" || capability(&u).is_some() {
                            Ok(u)
                        } else {
                            Err(format!(
                                "{sat}.capabilities.{what}: unknown capability {c:?}"
                            ))
                        }
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
            };
            security.cap_add = norm(&caps.add, "add")?;
            security.cap_drop = norm(&caps.drop, "drop")?;
        }
    }
    let sidecar = match c.restart_policy.as_deref() {
        None => false,
        Some("Always") if init => true,
        Some(p) => {
            return Err(format!(
                "{at}.restartPolicy {p:?}: only Always, on an init container (a native sidecar)"
            ));
        }
    };
    let (startup, liveness, readiness) = (
        probe(&c.startup_probe, &format!("{at}.startupProbe"), c)?,
        probe(&c.liveness_probe, &format!("{at}.livenessProbe"), c)?,
        probe(&c.readiness_probe, &format!("{at}.readinessProbe"), c)?,
    );
    if init && !sidecar && (startup.is_some() || liveness.is_some() || readiness.is_some()) {
        return Err(format!(
            "{at}: probes are for app containers and sidecars, not init containers"
        ));
    }
    if let Some(p) = &liveness
        && p.success_threshold != 1
    {
        return Err(format!("{at}.livenessProbe.successThreshold: must be 1"));
    }
    if let Some(p) = &startup
        && p.success_threshold != 1
    {
        return Err(format!("{at}.startupProbe.successThreshold: must be 1"));
    }
    if let Some(w) = &c.working_dir
        && !w.starts_with('/')
    {
        return Err(format!("{at}.workingDir {w:?}: must be absolute"));
    }
    if c.tty == Some(true) && c.stdin != Some(true) {
        // As kubectl: a terminal without stdin makes no sense.
        return Err(format!("{at}: tty needs stdin: true"));
    }
    Ok(ContainerPlan {
        name: c.name.clone(),
        image,
        command: c.command.clone(),
        args: c.args.clone(),
        env,
        working_dir: c.working_dir.clone(),
        ports,
        mounts,
        cpu_limit_milli: cpu_limit,
        cpu_request_milli: cpu_request,
        memory_limit_bytes: mem_limit,
        memory_request_bytes: mem_request,
        stdin: c.stdin.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        security,
        startup_probe: startup,
        liveness_probe: liveness,
        readiness_probe: readiness,
        sidecar,
    })
}

/// The OCI capability of a name without `CAP_` (`NET_ADMIN`).
pub fn capability(name: &str) -> Option<oci_spec::runtime::Capability> {
    // oci-spec's names are the kernel's without the prefix (its serde form adds it).
    name.parse().ok()
}

/// The hostPath `type`s Kubernetes defines.
const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

fn plan(pod: &Pod) -> std::result::Result<PodPlan, String> {
    let md = &pod.metadata;
    let name = md
        .name
        .clone()
        .ok_or_else(|| "metadata.name: missing".to_string())?;
    check_label("metadata.name", &name)?;
    let namespace = md.namespace.clone().unwrap_or_else(|| "default".into());
    check_label("metadata.namespace", &namespace)?;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| "spec: missing".to_string())?;
    let mut volumes = Vec::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let at = format!("spec.volumes[{i}]");
        check_label(&format!("{at}.name"), &v.name)?;
        if volumes.iter().any(|x: &VolumePlan| x.name == v.name) {
            return Err(format!("{at}.name: two volumes are named {:?}", v.name));
        }
        let source = match (&v.empty_dir, &v.host_path) {
            (Some(e), None) => match e.medium.as_deref().unwrap_or("") {
                "" => {
                    if e.size_limit.is_some() {
                        // A disk emptyDir's limit is enforced by eviction, which a
                        // single node without a kubelet has not.
                        return Err(format!(
                            "{at}.emptyDir.sizeLimit: supported with medium: Memory only"
                        ));
                    }
                    VolumeSource::EmptyDir
                }
                "Memory" => VolumeSource::Memory {
                    size_bytes: e
                        .size_limit
                        .as_ref()
                        .map(|q| {
                            parse_memory(&q.0).map_err(|e| format!("{at}.emptyDir.sizeLimit: {e}"))
                        })
                        .transpose()?,
                },
                m => return Err(format!("{at}.emptyDir.medium {m:?}: use \"\" or Memory")),
            },
            (None, Some(h)) => {
                let kind = h.type_.clone().unwrap_or_default();
                if !HOST_PATH_TYPES.contains(&kind.as_str()) {
                    return Err(format!(
                        "{at}.hostPath.type {kind:?}: expected one of {HOST_PATH_TYPES:?}"
                    ));
                }
                if !h.path.starts_with('/') {
                    return Err(format!("{at}.hostPath.path {:?}: must be absolute", h.path));
                }
                VolumeSource::HostPath {
                    path: h.path.clone(),
                    kind,
                }
            }
            _ => {
                return Err(format!(
                    "{at}: give exactly one of emptyDir or hostPath (the sources supported)"
                ));
            }
        };
        volumes.push(VolumePlan {
            name: v.name.clone(),
            source,
        });
    }
    if spec.containers.is_empty() {
        return Err("spec.containers: at least one container is needed".into());
    }
    let mut names = HashSet::new();
    let mut init_containers = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let at = format!("spec.initContainers[{i}]");
        if !names.insert(c.name.clone()) {
            return Err(format!("{at}.name: two containers are named {:?}", c.name));
        }
        init_containers.push(container(c, &at, &volumes, true)?);
    }
    let mut containers = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
        if !names.insert(c.name.clone()) {
            return Err(format!("{at}.name: two containers are named {:?}", c.name));
        }
        containers.push(container(c, &at, &volumes, false)?);
    }
    if names.contains("infra") {
        return Err(
            "a container named \"infra\": the name is the pod's infra process's; pick another"
                .into(),
        );
    }
    let restart_policy = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(p) => {
            return Err(format!(
                "spec.restartPolicy {p:?}: expected Always, OnFailure or Never"
            ));
        }
    };
    let nonneg = |v: Option<i64>, what: &str| {
        v.map(|n| u64::try_from(n).map_err(|_| format!("spec.{what} {n}: must not be negative")))
            .transpose()
    };
    let grace_secs = nonneg(
        spec.termination_grace_period_seconds,
        "terminationGracePeriodSeconds",
    )?
    .unwrap_or(30);
    let active_deadline_secs = nonneg(spec.active_deadline_seconds, "activeDeadlineSeconds")?;
    if active_deadline_secs == Some(0) {
        return Err("spec.activeDeadlineSeconds: must be at least 1".into());
    }
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    check_label("spec.hostname", &hostname)?;
    let host_network = spec.host_network.unwrap_or(false);
    Ok(PodPlan {
        name,
        namespace,
        labels: md.labels.clone().unwrap_or_default(),
        annotations: md.annotations.clone().unwrap_or_default(),
        hostname,
        host_network,
        share_process_namespace: spec.share_process_namespace.unwrap_or(false),
        restart_policy,
        grace_secs,
        active_deadline_secs,
        init_containers,
        containers,
        volumes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HELLO: &str = "apiVersion: v1
kind: Pod
metadata:
  name: hello-pod
spec:
  shareProcessNamespace: true
  containers:
  - name: hello-busybox
    image: busybox
    stdin: true
    tty: true
  - name: hello-nginx
    image: nginx
";

    fn err(text: &str) -> String {
        parse(text, "pod.yaml").unwrap_err().to_string()
    }

    #[test]
    fn hello_pod() {
        let p = parse(HELLO, "hello.yaml").unwrap();
        assert_eq!(p.name, "hello-pod");
        assert_eq!(p.hostname, "hello-pod");
        assert!(p.share_process_namespace);
        assert_eq!(p.containers.len(), 2);
        assert!(p.containers[0].stdin && p.containers[0].tty);
        assert_eq!(p.restart_policy, RestartPolicy::Always);
        assert_eq!(p.grace_secs, 30);
    }

    #[test]
    fn json_too() {
        let j = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},
            "spec":{"containers":[{"name":"a","image":"busybox","command":["sh"]}]}}"#;
        let p = parse(j, "pod.json").unwrap();
        assert_eq!(p.containers[0].command, Some(vec!["sh".to_string()]));
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err(&HELLO.replace("    stdin: true", "    stdinn: true"));
        assert!(e.contains("spec.containers[0].stdinn"), "{e}");
        assert!(e.contains("unknown"), "{e}");
    }

    #[test]
    fn unsupported_field_is_named() {
        let e = err(&HELLO.replace(
            "  shareProcessNamespace: true",
            "  shareProcessNamespace: true\n  nodeSelector:\n    disk: ssd",
        ));
        assert!(e.contains("spec.nodeSelector"), "{e}");
        assert!(e.contains("not supported"), "{e}");
        let e = err(&HELLO.replace(
            "    image: nginx",
            "    image: nginx\n    env:\n    - name: A\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name",
        ));
        assert!(e.contains("spec.containers[1].env[0].valueFrom"), "{e}");
    }

    #[test]
    fn duplicate_names() {
        let e = err(&HELLO.replace("hello-nginx", "hello-busybox"));
        assert!(
            e.contains("two containers are named \"hello-busybox\""),
            "{e}"
        );
    }

    #[test]
    fn undeclared_volume() {
        let e = err(&HELLO.replace(
            "    image: nginx",
            "    image: nginx\n    volumeMounts:\n    - name: data\n      mountPath: /data",
        ));
        assert!(e.contains("spec.containers[1].volumeMounts[0].name"), "{e}");
        assert!(e.contains("not declared"), "{e}");
    }

    #[test]
    fn negative_cpu() {
        let e = err(&HELLO.replace(
            "    image: nginx",
            "    image: nginx\n    resources:\n      limits:\n        cpu: -1",
        ));
        assert!(e.contains("spec.containers[1].resources.limits.cpu"), "{e}");
    }

    #[test]
    fn malformed_yaml() {
        let e = err("apiVersion: v1\nkind: Pod\nmetadata: [name: x\n");
        assert!(e.contains("malformed YAML"), "{e}");
    }

    #[test]
    fn privileged_refused() {
        let e = err(&HELLO.replace(
            "    image: nginx",
            "    image: nginx\n    securityContext:\n      privileged: true",
        ));
        assert!(e.contains("privileged"), "{e}");
    }

    #[test]
    fn wrong_kind() {
        assert!(err(&HELLO.replace("kind: Pod", "kind: Deployment")).contains("kind"));
        assert!(err(&HELLO.replace("apiVersion: v1", "apiVersion: v2")).contains("apiVersion"));
    }

    #[test]
    fn subpath_escape_refused() {
        let e = err(&HELLO.replace(
            "    image: nginx",
            "    image: nginx\n    volumeMounts:\n    - name: v\n      mountPath: /v\n      subPath: ../etc\n  volumes:\n  - name: v\n    emptyDir: {}",
        ));
        assert!(e.contains("subPath"), "{e}");
    }

    #[test]
    fn capabilities() {
        assert_eq!(
            capability("NET_ADMIN"),
            Some(oci_spec::runtime::Capability::NetAdmin)
        );
        let p = parse(
            &HELLO.replace(
                "    image: nginx",
                "    image: nginx\n    securityContext:\n      capabilities: {add: [CAP_SYS_TIME, net_raw], drop: [ALL]}",
            ),
            "p.yaml",
        )
        .unwrap();
        assert_eq!(p.containers[1].security.cap_add, ["SYS_TIME", "NET_RAW"]);
        assert!(
            err(&HELLO.replace(
                "    image: nginx",
                "    image: nginx\n    securityContext:\n      capabilities: {add: [FLY]}",
            ))
            .contains("unknown capability \"FLY\"")
        );
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("200m"), Ok(200));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu(".25"), Ok(250));
        assert_eq!(parse_cpu("0.0001"), Ok(1));
        for bad in ["-1", "0", "", "m", "1.2.3", "2x", "-200m", "1e3"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert_eq!(parse_memory("0.5Gi"), Ok(1 << 29));
        assert_eq!(parse_memory("128k"), Ok(128_000));
        for bad in ["-1", "0", "", "Mi", "12X", "1.5.Mi"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_as_quantities() {
        let p = parse(
            &HELLO.replace(
                "    image: nginx",
                "    image: nginx\n    resources:\n      limits:\n        cpu: 2\n        memory: 1048576\n      requests:\n        cpu: 0.5",
            ),
            "p.yaml",
        )
        .unwrap();
        assert_eq!(p.containers[1].cpu_limit_milli, Some(2000));
        assert_eq!(p.containers[1].cpu_request_milli, Some(500));
        assert_eq!(p.containers[1].memory_limit_bytes, Some(1 << 20));
    }

    #[test]
    fn volumes_and_probes() {
        let y = "apiVersion: v1
kind: Pod
metadata:
  name: v
  labels: {app: web}
spec:
  restartPolicy: Never
  volumes:
  - name: mem
    emptyDir: {medium: Memory, sizeLimit: 1Mi}
  - name: host
    hostPath: {path: /tmp, type: Directory}
  initContainers:
  - name: side
    image: busybox
    restartPolicy: Always
  containers:
  - name: web
    image: busybox
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /, port: http}
      periodSeconds: 1
    livenessProbe:
      exec: {command: [\"true\"]}
    volumeMounts:
    - {name: mem, mountPath: /m, subPath: a/b, readOnly: true}
";
        let p = parse(y, "v.yaml").unwrap();
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            p.volumes[0].source,
            VolumeSource::Memory {
                size_bytes: Some(1 << 20)
            }
        );
        assert!(p.init_containers[0].sidecar);
        let r = p.containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(r.period_secs, 1);
        assert!(matches!(r.action, ProbeAction::HttpGet { port: 8080, .. }));
        assert_eq!(p.containers[0].mounts[0].sub_path.as_deref(), Some("a/b"));
    }
}
