//! An OCI bundle: `config.json` read and checked, field by field, against what this
//! runtime honours. A field it does not apply is an error naming it, never silently
//! dropped.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::error::{Error, Result, ioe};

/// The runtime-spec versions this runtime reads (1.0.0 up to 1.2.x).
pub const SUPPORTED_VERSIONS: &str = "1.0.0 to 1.2.x";

/// The spec version this runtime writes (`sandbox spec`, `state`).
pub const OCI_VERSION: &str = "1.2.0";

fn refuse(field: &str, what: &str) -> Error {
    Error::Config(format!("config.json {field}: {what}"))
}

/// An idmapped bind mount: `mounts[index]` with `uidMappings` and `gidMappings`
/// (runtime-spec 1.1), which the typed spec does not model. The ids seen through
/// the mount are mapped as a user namespace with these maps would map them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountIdmap {
    /// Which entry of `mounts`.
    pub index: usize,
    /// (containerID, hostID, size) triples.
    pub uid: Vec<(u32, u32, u32)>,
    /// (containerID, hostID, size) triples.
    pub gid: Vec<(u32, u32, u32)>,
    /// Every mount of an rbind's tree (`ridmap`, or `rbind` with `idmap`), not just
    /// its top.
    pub recursive: bool,
}

/// Reads `BUNDLE/config.json` and checks it ([`check`]).
pub fn load(bundle: &Path) -> Result<Spec> {
    load_with_idmaps(bundle).map(|(spec, _)| spec)
}

/// The mounts' `uidMappings`/`gidMappings`, taken out of `raw` (so that the typed
/// spec's re-serialisation matches) and checked: both given, on a bind mount, with
/// an `idmap` or `ridmap` option where one is given.
fn take_idmaps(raw: &mut serde_json::Value) -> Result<Vec<MountIdmap>> {
    let mut out = Vec::new();
    let Some(mounts) = raw.get_mut("mounts").and_then(|m| m.as_array_mut()) else {
        return Ok(out);
    };
    for (i, m) in mounts.iter_mut().enumerate() {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        let (uid, gid) = (obj.remove("uidMappings"), obj.remove("gidMappings"));
        let field = |k: &str| format!("mounts[{i}].{k}");
        let opts: Vec<String> = obj
            .get("options")
            .and_then(|o| serde_json::from_value(o.clone()).ok())
            .unwrap_or_default();
        let asks = opts.iter().any(|o| o == "idmap" || o == "ridmap");
        let (uid, gid) = match (uid, gid) {
            (None, None) if asks => {
                return Err(refuse(
                    &field("options"),
                    "idmap/ridmap without uidMappings and gidMappings: give both (the \
                     container's own user namespace mappings are not taken implicitly)",
                ));
            }
            (None, None) => continue,
            (Some(_), None) => {
                return Err(refuse(&field("uidMappings"), "give gidMappings too"));
            }
            (None, Some(_)) => {
                return Err(refuse(&field("gidMappings"), "give uidMappings too"));
            }
            (Some(u), Some(g)) => (u, g),
        };
        let maps = |v: serde_json::Value, k: &str| -> Result<Vec<(u32, u32, u32)>> {
            let m: Vec<oci_spec::runtime::LinuxIdMapping> = serde_json::from_value(v)
                .map_err(|e| refuse(&field(k), &format!("not a list of id mappings: {e}")))?;
            if m.is_empty() {
                return Err(refuse(&field(k), "empty: give at least one mapping"));
            }
            Ok(m.iter()
                .map(|m| (m.container_id(), m.host_id(), m.size()))
                .collect())
        };
        let typ = obj.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        if !bind {
            return Err(refuse(
                &field("uidMappings"),
                "idmapped mounts are supported for bind mounts only",
            ));
        }
        out.push(MountIdmap {
            index: i,
            uid: maps(uid, "uidMappings")?,
            gid: maps(gid, "gidMappings")?,
            recursive: opts.iter().any(|o| o == "ridmap")
                || (opts.iter().any(|o| o == "rbind") && !opts.iter().any(|o| o == "idmap")),
        });
    }
    Ok(out)
}

/// [`load`], and the idmapped mounts ([`MountIdmap`]) it holds.
pub fn load_with_idmaps(bundle: &Path) -> Result<(Spec, Vec<MountIdmap>)> {
    let p = bundle.join("config.json");
    let text = std::fs::read(&p).map_err(ioe("read", &p))?;
    // Unknown top-level or nested keys are not reported by serde; the ones we do not
    // model are found by comparing with a re-serialisation below.
    let mut raw: serde_json::Value =
        serde_json::from_slice(&text).map_err(|source| Error::Json {
            path: p.clone(),
            source,
        })?;
    let idmaps = take_idmaps(&mut raw)?;
    let spec: Spec = serde_json::from_value(raw.clone())
        .map_err(|e| refuse("", &format!("not a runtime spec: {e}")))?;
    let back = serde_json::to_value(&spec).map_err(|source| Error::Json {
        path: p.clone(),
        source,
    })?;
    if let Some(field) = first_unknown(&raw, &back, String::new()) {
        return Err(refuse(
            &field,
            "unknown field: this runtime does not know it (remove it, or use a runtime that does)",
        ));
    }
    check(&spec)?;
    Ok((spec, idmaps))
}

/// The first key (as a dotted path) present in `raw` but not in `known`: a field the
/// typed spec dropped.
fn first_unknown(raw: &serde_json::Value, known: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match (raw, known) {
        (Value::Object(r), Value::Object(k)) => {
            for (key, v) in r {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match k.get(key) {
                    // An empty value may be left out by the serialiser.
                    None if is_empty(v) => {}
                    None => return Some(path),
                    Some(kv) => {
                        if let Some(f) = first_unknown(v, kv, path) {
                            return Some(f);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(r), Value::Array(k)) => r
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (rv, kv))| first_unknown(rv, kv, format!("{at}[{i}]"))),
        _ => None,
    }
}

fn is_empty(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::Object(o) => o.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(_) => false,
    }
}

/// Checks the version and every field this runtime cannot honour on this host.
pub fn check(spec: &Spec) -> Result<()> {
    let v = spec.version();
    let ok = v
        .strip_prefix("1.")
        .and_then(|r| r.split(['.', '-', '+']).next())
        .and_then(|minor| minor.parse::<u32>().ok())
        .is_some_and(|minor| minor <= 2);
    if !ok {
        return Err(refuse(
            "ociVersion",
            &format!("{v:?} is not supported: this runtime reads {SUPPORTED_VERSIONS}"),
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| refuse("process", "missing: the container needs a process"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(refuse("process.args", "empty: name the program to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(refuse("process.cwd", "must be an absolute path"));
    }
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(refuse(
            "process.apparmorProfile",
            "AppArmor is not enabled on this host (no /sys/kernel/security/apparmor): \
             remove the field",
        ));
    }
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(refuse(
            "process.selinuxLabel",
            "SELinux is not enabled on this host: remove the field",
        ));
    }
    if let Some(c) = process.capabilities() {
        let empty = Default::default();
        let inh = c.inheritable().as_ref().unwrap_or(&empty);
        let prm = c.permitted().as_ref().unwrap_or(&empty);
        if let Some(a) = c
            .ambient()
            .iter()
            .flatten()
            .find(|a| !inh.contains(a) || !prm.contains(a))
        {
            return Err(refuse(
                "process.capabilities.ambient",
                &format!(
                    "CAP_{a} is not also inheritable and permitted, so the kernel cannot raise \
                     it (runc skips it silently): add it to both sets or remove it"
                ),
            ));
        }
    }
    if process.io_priority().is_some() {
        return Err(refuse(
            "process.ioPriority",
            "not supported by this runtime",
        ));
    }
    if process.scheduler().is_some() {
        return Err(refuse("process.scheduler", "not supported by this runtime"));
    }
    if process.exec_cpu_affinity().is_some() {
        return Err(refuse(
            "process.execCPUAffinity",
            "not supported by this runtime",
        ));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| refuse("linux", "missing: this is a Linux runtime"))?;
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(refuse(
            "linux.mountLabel",
            "SELinux is not enabled on this host",
        ));
    }
    if linux.intel_rdt().is_some() {
        return Err(refuse("linux.intelRdt", "not supported by this runtime"));
    }
    if let Some(p) = linux.personality()
        && p.flags().as_ref().is_some_and(|f| !f.is_empty())
    {
        return Err(refuse(
            "linux.personality.flags",
            "not supported by this runtime (only the domain, LINUX or LINUX32)",
        ));
    }
    if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty())
        && !linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none())
    {
        return Err(refuse(
            "linux.timeOffsets",
            "needs a time namespace of the container's own (linux.namespaces type time)",
        ));
    }
    let own = |t: LinuxNamespaceType| {
        linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    for (k, _) in linux.sysctl().iter().flatten() {
        sysctl_namespace(k, &own)?;
    }
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let p = d.path();
        let under_dev = p.starts_with("/dev/")
            && p.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
        if !under_dev {
            return Err(refuse(
                &format!("linux.devices[{i}].path"),
                &format!("{} must be a path under /dev without ..", p.display()),
            ));
        }
        if matches!(d.typ(), oci_spec::runtime::LinuxDeviceType::A) {
            return Err(refuse(
                &format!("linux.devices[{i}].type"),
                "must be c, u, b or p",
            ));
        }
    }
    if let Some(p) = linux.rootfs_propagation()
        && !p.is_empty()
        && propagation_flags(p).is_none()
    {
        return Err(refuse(
            "linux.rootfsPropagation",
            &format!("{p:?}: expected [r]private, [r]slave, [r]shared or [r]unbindable"),
        ));
    }
    for ns in linux.namespaces().iter().flatten() {
        if ns.typ() == LinuxNamespaceType::User && ns.path().is_some() {
            return Err(refuse(
                "linux.namespaces",
                "joining a user namespace by path is not supported yet",
            ));
        }
    }
    if let Some(s) = linux.seccomp()
        && s.listener_path().is_some()
    {
        return Err(refuse(
            "linux.seccomp.listenerPath",
            "seccomp notify is not supported by this runtime",
        ));
    }
    if !spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs"))
    {
        return Err(refuse(
            "mounts",
            "a tmpfs on /dev is required (as `sandbox spec` writes it): this runtime \
             makes the default devices there",
        ));
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        check_mount(i, m)?;
    }
    if spec.domainname().as_ref().is_some_and(|d| !d.is_empty())
        && !linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Uts)
    {
        return Err(refuse(
            "domainname",
            "needs a uts namespace of the container's own",
        ));
    }
    Ok(())
}

/// Checks that sysctl `key` is one a container's own namespace holds: `net.*` (a
/// network namespace of its own), the IPC ones (`kernel.msg*`, `kernel.sem`,
/// `kernel.shm*`, `fs.mqueue.*`: an IPC namespace of its own); others would change
/// the host and are refused, as are names that could leave /proc/sys.
fn sysctl_namespace(key: &str, own: &dyn Fn(LinuxNamespaceType) -> bool) -> Result<()> {
    let field = format!("linux.sysctl {key:?}");
    let ok = !key.is_empty()
        && !key.starts_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(refuse(&field, "not a sysctl name"));
    }
    let ipc = key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("kernel.shm")
        || key.starts_with("fs.mqueue.");
    let (kind, what) = if key.starts_with("net.") {
        (LinuxNamespaceType::Network, "network")
    } else if ipc {
        (LinuxNamespaceType::Ipc, "ipc")
    } else {
        return Err(refuse(
            &field,
            "is not namespaced: it would change the host (only net.* and the IPC sysctls \
             are allowed)",
        ));
    };
    if !own(kind) {
        return Err(refuse(
            &field,
            &format!("needs a {what} namespace of the container's own"),
        ));
    }
    Ok(())
}

/// The mount(2) propagation flags of an OCI propagation word (`rslave`, ...).
pub fn propagation_flags(word: &str) -> Option<libc::c_ulong> {
    let (rec, base) = match word.strip_prefix('r') {
        Some(b) if b != "o" && b != "w" => (libc::MS_REC, b),
        _ => (0, word),
    };
    let f = match base {
        "private" => libc::MS_PRIVATE,
        "slave" => libc::MS_SLAVE,
        "shared" => libc::MS_SHARED,
        "unbindable" => libc::MS_UNBINDABLE,
        _ => return None,
    };
    Some(f | rec)
}

/// The mount options this runtime applies (see `rootfs::mount_options`); filesystem
/// data (`mode=`, `size=`, ...) passes through for non-bind mounts.
const BIND_OPTIONS: [&str; 19] = [
    "bind",
    "idmap",
    "ridmap",
    "rbind",
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "private",
    "rprivate",
    "suid",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "unbindable",
    "runbindable",
    "rro",
];

/// Whether the kernel has mount_setattr(2) (5.12): `rro` (read-only all the way
/// down an rbind) needs it.
pub(crate) fn has_mount_setattr() -> bool {
    // SAFETY: an invalid fd and empty path only probe whether the syscall exists.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

fn check_mount(i: usize, m: &Mount) -> Result<()> {
    let field = format!("mounts[{i}] ({})", m.destination().display());
    if !m.destination().is_absolute() {
        return Err(refuse(&field, "destination must be an absolute path"));
    }
    let typ = m.typ().as_deref().unwrap_or("");
    let opts: Vec<&str> = m.options().iter().flatten().map(String::as_str).collect();
    let bind = typ == "bind" || opts.iter().any(|o| *o == "bind" || *o == "rbind");
    if bind {
        if opts.contains(&"rro") && !has_mount_setattr() {
            return Err(refuse(
                &field,
                "rro needs mount_setattr(2) (Linux 5.12), which this kernel lacks",
            ));
        }
        if let Some(o) = opts
            .iter()
            .find(|o| !BIND_OPTIONS.contains(o) && !matches!(**o, "dev" | "exec"))
        {
            return Err(refuse(
                &field,
                &format!("bind mount option {o:?} is not supported (use {BIND_OPTIONS:?})"),
            ));
        }
        return Ok(());
    }
    match typ {
        "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2" => {}
        other => {
            return Err(refuse(
                &field,
                &format!(
                    "filesystem type {other:?} is not supported (bind, proc, sysfs, tmpfs, \
                     devpts, mqueue, cgroup)"
                ),
            ));
        }
    }
    if let Some(o) = opts.iter().find(|o| matches!(**o, "rro")) {
        return Err(refuse(
            &field,
            &format!("option {o:?} is not supported yet"),
        ));
    }
    Ok(())
}

/// The root filesystem: `root.path`, relative to the bundle unless absolute; it must
/// be a directory.
pub fn rootfs(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let r = spec
        .root()
        .as_ref()
        .ok_or_else(|| refuse("root", "missing: name the root filesystem"))?;
    let p = if r.path().is_absolute() {
        r.path().clone()
    } else {
        bundle.join(r.path())
    };
    let p = p
        .canonicalize()
        .map_err(|e| Error::io("open root.path", &p, e))?;
    if !p.is_dir() {
        return Err(refuse(
            "root.path",
            &format!("{} is not a directory", p.display()),
        ));
    }
    Ok(p)
}
