//! The OCI runtime spec of a container, built from `sandbox run` options.
//!
//! Everything [`crate::assembly`] does is read from the [`Spec`]: process, hostname,
//! mounts, namespaces, id maps, resources, masked and read-only paths, capabilities.
//! What Docker sets by default is what is set here (capabilities, masked paths).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxIdMappingBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use crate::error::{Error, Result};

/// The CPU period every quota is expressed in (the kernel's default CFS period).
pub const CPU_PERIOD_USEC: u64 = 100_000;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths Docker masks (a /dev/null bind over files, an empty read-only tmpfs over
/// directories): kernel memory, keys, timers, firmware.
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only: sysctls, sysrq, bus and irq settings.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes bound from the host into the container's /dev.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The container's /dev: a tmpfs of its own.
pub const DEV: &str = "/dev";

/// The host range that container ids 0..65536 map to under `--userns`.
pub const USERNS_HOST_BASE: u32 = 100_000;
/// How many ids are mapped under `--userns`.
pub const USERNS_SIZE: u32 = 65_536;

/// A `--volume SRC:DST[:OPTS]`, OPTS a comma-separated list of `ro`, `rw`, `dev`,
/// `suid`. A volume is `nosuid,nodev` unless `suid` / `dev` is given: a device node
/// or a setuid file made in a writable host folder must not work as one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
    /// Device nodes in it may be opened (no `nodev`).
    pub dev: bool,
    /// setuid and setgid bits in it take effect (no `nosuid`).
    pub suid: bool,
}

impl std::str::FromStr for Volume {
    type Err = Error;
    fn from_str(s: &str) -> Result<Volume> {
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [s, d] => (*s, *d, ""),
            [s, d, o] => (*s, *d, *o),
            _ => {
                return Err(Error::Config(format!(
                    "--volume {s:?}: expected SRC:DST or SRC:DST:OPTS (ro, rw, dev, suid)"
                )));
            }
        };
        let (mut readonly, mut dev, mut suid) = (false, false, false);
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => readonly = true,
                "rw" => readonly = false,
                "dev" => dev = true,
                "suid" => suid = true,
                _ => {
                    return Err(Error::Config(format!(
                        "--volume {s:?}: unknown option {o:?}; use ro, rw, dev or suid"
                    )));
                }
            }
        }
        if !src.starts_with('/') || !dst.starts_with('/') {
            return Err(Error::Config(format!(
                "--volume {s:?}: both paths must be absolute"
            )));
        }
        Ok(Volume {
            source: PathBuf::from(src),
            destination: PathBuf::from(dst),
            readonly,
            dev,
            suid,
        })
    }
}

/// Which network the container gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Net {
    /// A new network namespace with only `lo`, brought up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// The seccomp filter of a container (`--seccomp`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Seccomp {
    /// Docker's default profile ([`crate::seccomp::docker_default`]).
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// An OCI `linux.seccomp` profile.
    Profile(Box<oci_spec::runtime::LinuxSeccomp>),
}

/// Options of `sandbox run` that shape the spec.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Hostname (default: the container name).
    pub hostname: Option<String>,
    /// Network mode.
    pub net: Net,
    /// Bind mounts.
    pub volumes: Vec<Volume>,
    /// tmpfs mount points.
    pub tmpfs: Vec<PathBuf>,
    /// `K=V` environment entries.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    /// uid and gid of the process.
    pub user: Option<(u32, u32)>,
    /// A user namespace mapping container 0..65536 to host 100000..165536.
    pub userns: bool,
    /// Root filesystem mounted read-only.
    pub read_only: bool,
    /// CPU limit in CPUs (0.5 = half of one CPU).
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// Maximum number of tasks.
    pub pids: Option<i64>,
    /// The seccomp filter.
    pub seccomp: Seccomp,
}

/// Parses `64M`, `1G`, `512k`, `1048576` (binary units) into bytes.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: i64 = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                'b' => 1,
                _ => return Err(Error::Config(format!("size {s:?}: unit must be k, m or g"))),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::Config(format!("size {s:?}: expected a positive number like 64M")))
}

/// Adds `K=V` entries to `env`, each replacing an entry of the same key.
pub fn merge_env(env: &mut Vec<String>, extra: &[String]) -> Result<()> {
    for e in extra {
        if !e.contains('=') {
            return Err(Error::Config(format!("--env {e:?}: expected K=V")));
        }
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    Ok(())
}

fn mount(dst: &str, typ: &str, src: &str, opts: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dst)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| Error::Config(format!("mount {dst}: {e}")))
}

fn cfg<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Config(format!("{what}: {e}"))
}

/// Builds the spec of a container whose root filesystem is `rootfs`.
pub fn build(o: &RunOptions, name: &str, rootfs: &Path) -> Result<Spec> {
    if o.args.is_empty() {
        return Err(Error::Config(
            "no command given: sandbox run ... -- CMD ARGS".into(),
        ));
    }
    let caps: HashSet<Capability> = DEFAULT_CAPS.iter().copied().collect();
    // As Docker: a non-root user keeps the bounding set only (its file
    // capabilities can use it), with nothing effective or permitted.
    let own = if o.user.is_some_and(|(u, _)| u != 0) {
        HashSet::new()
    } else {
        caps.clone()
    };
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps)
        .effective(own.clone())
        .permitted(own)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(cfg("capabilities"))?;
    let (uid, gid) = o.user.unwrap_or((0, 0));
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("HOSTNAME={}", o.hostname.as_deref().unwrap_or(name)),
    ];
    merge_env(&mut env, &o.env)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(o.args.clone())
        .env(env)
        .cwd(o.workdir.clone().unwrap_or_else(|| "/".into()))
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(cfg("user"))?,
        )
        .capabilities(caps)
        .no_new_privileges(true)
        .build()
        .map_err(cfg("process"))?;

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        // runc's /dev plus noexec and nodev: with the device allow-list
        // ([`crate::devices`]), a second wall against a node the container makes (it
        // has CAP_MKNOD); the device files are bind mounts, which keep their own flags.
        mount(
            DEV,
            "tmpfs",
            "tmpfs",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "strictatime",
                "mode=755",
                "size=65536k",
            ],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
    ];
    if o.net == Net::Host && o.userns {
        // sysfs can be mounted only by the owner of the network namespace.
        mounts.push(mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?);
    } else {
        mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?);
    }
    for d in DEVICES {
        let p = format!("/dev/{d}");
        mounts.push(mount(&p, "bind", &p, &["bind", "nosuid", "noexec"])?);
    }
    for v in &o.volumes {
        let mut opts = vec!["rbind"];
        if v.readonly {
            opts.push("ro");
        }
        if !v.suid {
            opts.push("nosuid");
        }
        if !v.dev {
            opts.push("nodev");
        }
        mounts.push(mount(
            &v.destination.to_string_lossy(),
            "bind",
            &v.source.to_string_lossy(),
            &opts,
        )?);
    }
    for t in &o.tmpfs {
        mounts.push(mount(
            &t.to_string_lossy(),
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777"],
        )?);
    }

    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
    ];
    if o.net == Net::None {
        kinds.push(LinuxNamespaceType::Network);
    }
    if o.userns {
        kinds.push(LinuxNamespaceType::User);
    }
    let namespaces = kinds
        .into_iter()
        .map(|k| LinuxNamespaceBuilder::default().typ(k).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(cfg("namespaces"))?;

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(c) = o.cpus {
        if !(c > 0.0 && c <= 1024.0) {
            return Err(Error::Config(format!(
                "--cpu {c}: expected a number of CPUs like 0.5"
            )));
        }
        let quota = (c * CPU_PERIOD_USEC as f64).round() as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota.max(1000))
                .period(CPU_PERIOD_USEC)
                .build()
                .map_err(cfg("cpu"))?,
        );
    }
    // Zero would mean "no limit" to the OCI spec: refused, as cgctl does.
    if let Some(m) = o.memory_bytes.filter(|m| *m <= 0) {
        return Err(Error::Config(format!(
            "--memory {m}: expected a positive size like 64M (omit --memory for no limit)"
        )));
    }
    if let Some(p) = o.pids.filter(|p| *p <= 0) {
        return Err(Error::Config(format!(
            "--pids {p}: expected a positive number of tasks (omit --pids for no limit)"
        )));
    }
    if let Some(m) = o.memory_bytes {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(m)
                .swap(m)
                .build()
                .map_err(cfg("memory"))?,
        );
    }
    if let Some(p) = o.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(p)
                .build()
                .map_err(cfg("pids"))?,
        );
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(cfg("resources"))?)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
    match &o.seccomp {
        Seccomp::Default => linux = linux.seccomp(crate::seccomp::docker_default()?),
        Seccomp::Profile(p) => linux = linux.seccomp(p.as_ref().clone()),
        Seccomp::Unconfined => {}
    }
    if o.userns {
        let map = |_: ()| {
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(USERNS_HOST_BASE)
                .size(USERNS_SIZE)
                .build()
        };
        linux = linux
            .uid_mappings(vec![map(()).map_err(cfg("uid map"))?])
            .gid_mappings(vec![map(()).map_err(cfg("gid map"))?]);
    }
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(o.read_only)
                .build()
                .map_err(cfg("root"))?,
        )
        .hostname(o.hostname.clone().unwrap_or_else(|| name.to_string()))
        .process(process)
        .mounts(mounts)
        .linux(linux.build().map_err(cfg("linux"))?)
        .build()
        .map_err(cfg("spec"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("-1").is_err());
    }

    #[test]
    fn volume() {
        let v: Volume = "/a:/b:ro".parse().unwrap();
        assert!(v.readonly && !v.dev && !v.suid);
        let v: Volume = "/a:/b:rw,dev,suid".parse().unwrap();
        assert!(!v.readonly && v.dev && v.suid);
        assert!("a:/b".parse::<Volume>().is_err());
        let e = "/a:/b:exec".parse::<Volume>().unwrap_err().to_string();
        assert!(e.contains("exec"), "{e}");
    }

    #[test]
    fn spec_has_docker_defaults() {
        let o = RunOptions {
            args: vec!["/bin/true".into()],
            cpus: Some(0.5),
            ..RunOptions::default()
        };
        let s = build(&o, "c1", Path::new("/r")).unwrap();
        let l = s.linux().as_ref().unwrap();
        assert_eq!(l.namespaces().as_ref().unwrap().len(), 6);
        let cpu = l.resources().as_ref().unwrap().cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(s.hostname().as_deref(), Some("c1"));
    }
}
