//! The spec's `linux.resources` and `linux.namespaces` in cgroupkit's and nskit's
//! terms.

use cgroupkit::cpu::CpuWeight;
use cgroupkit::{Controller, Cpu, CpuQuota, Cpuset, IdSet, Limit, Memory, Pids, Resources};
use nskit::Namespace;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources};

use crate::error::{Error, Result};
use crate::spec;

/// A field of `linux.resources` this runtime does not apply: refused by name.
fn unsupported(field: &str) -> Error {
    Error::Config(format!(
        "linux.resources.{field} is not supported by this runtime; remove it from config.json"
    ))
}

/// cgroupkit resources for the spec's `linux.resources`, with the device allow-list
/// ([`crate::devices`]) always. Every field is applied or refused by name.
pub fn resources(r: Option<&LinuxResources>) -> Result<Resources> {
    let mut out = Resources::default();
    out.devices = Some(crate::devices::for_spec(
        r.and_then(|r| r.devices().as_ref()),
    )?);
    let Some(r) = r else { return Ok(out) };
    if let Some(c) = r.cpu() {
        let mut cpu = Cpu::default();
        let period = c.period().unwrap_or(spec::CPU_PERIOD_USEC);
        match c.quota() {
            Some(q) if q > 0 => cpu.quota = Some(CpuQuota::new(q as u64, period)?),
            // -1 (or 0, as runc takes it): no limit, at the given period.
            Some(_) => cpu.quota = Some(CpuQuota::unlimited(period)?),
            None if c.period().is_some() => cpu.quota = Some(CpuQuota::unlimited(period)?),
            None => {}
        }
        if let Some(sh) = c.shares().filter(|s| *s > 0) {
            cpu.weight = Some(CpuWeight::shares(sh)?);
        }
        if let Some(b) = c.burst() {
            cpu.burst_usec = Some(b);
        }
        if let Some(i) = c.idle() {
            cpu.idle = Some(i != 0);
        }
        match (c.realtime_runtime(), c.realtime_period()) {
            (None, None) => {}
            (Some(rt), Some(p)) => cpu.realtime = Some((rt, p)),
            _ => {
                return Err(Error::Config(
                    "linux.resources.cpu.realtimeRuntime and realtimePeriod go together: \
                     give both"
                        .into(),
                ));
            }
        }
        if cpu != Cpu::default() {
            out.cpu = Some(cpu);
        }
        let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
        let mems = c.mems().as_deref().filter(|s| !s.is_empty());
        if cpus.is_some() || mems.is_some() {
            let parse = |s: &str, what: &str| {
                s.parse::<IdSet>()
                    .map_err(|e| Error::Config(format!("linux.resources.cpu.{what} {s:?}: {e}")))
            };
            let mut set = Cpuset::default();
            set.cpus = cpus.map(|s| parse(s, "cpus")).transpose()?;
            set.mems = mems.map(|s| parse(s, "mems")).transpose()?;
            out.cpuset = Some(set);
        }
    }
    if let Some(m) = r.memory() {
        let mut mem = Memory::default();
        let lim = |v: i64| {
            if v < 0 {
                Limit::Max
            } else {
                Limit::Bytes(v as u64)
            }
        };
        if let Some(l) = m.limit().filter(|l| *l != 0) {
            mem.max = Some(lim(l));
        }
        if let Some(sw) = m.swap().filter(|s| *s != 0) {
            // OCI's swap is memory + swap (v1 memsw); cgroupkit's is swap alone.
            mem.swap_max = Some(match (sw, m.limit()) {
                (s, _) if s < 0 => Limit::Max,
                (s, Some(l)) if l > 0 && s >= l => Limit::Bytes((s - l) as u64),
                _ => {
                    return Err(Error::Config(format!(
                        "linux.resources.memory.swap {sw} must be -1 or at least memory.limit \
                         (it counts memory plus swap)"
                    )));
                }
            });
        }
        if let Some(res) = m.reservation().filter(|r| *r != 0) {
            let h = cgroupkit::Hierarchy::detect()?;
            let v2 = h
                .mount_for(cgroupkit::Controller::Memory)
                .is_some_and(|m| m.version == cgroupkit::Version::V2);
            if v2 {
                mem.low = Some(lim(res));
            } else {
                mem.soft_limit = Some(lim(res));
            }
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            return Err(unsupported(
                "memory.kernel/kernelTCP (deprecated by the kernel)",
            ));
        }
        if let Some(sw) = m.swappiness() {
            mem.swappiness =
                Some(u8::try_from(sw).ok().filter(|v| *v <= 100).ok_or_else(|| {
                    Error::Config(format!(
                        "linux.resources.memory.swappiness {sw}: expected 0..=100"
                    ))
                })?);
        }
        // false is the default: set (and refused on v2) only when asked to disable.
        if m.disable_oom_killer() == Some(true) {
            mem.oom_kill_disable = Some(true);
        }
        if m.use_hierarchy().is_some() || m.check_before_update().is_some() {
            return Err(unsupported("memory.useHierarchy/checkBeforeUpdate"));
        }
        if mem != Memory::default() {
            out.memory = Some(mem);
        }
    }
    if let Some(p) = r.pids()
        && p.limit() > 0
    {
        out.pids = Some(Pids::with_max(p.limit() as u64)?);
    }
    if let Some(b) = r.block_io() {
        out.io = block_io(b)?;
    }
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let field = |what: &str| format!("linux.resources.hugepageLimits[{i}].{what}");
        let size: cgroupkit::PageSize = h.page_size().parse().map_err(|e| {
            Error::Config(format!("{} {:?}: {e}", field("pageSize"), h.page_size()))
        })?;
        let limit = u64::try_from(h.limit()).map_err(|_| {
            Error::Config(format!(
                "{} {}: must not be negative",
                field("limit"),
                h.limit()
            ))
        })?;
        let hug = out.hugetlb.take().unwrap_or_default();
        out.hugetlb = Some(
            hug.limit(size, Limit::Bytes(limit))
                .map_err(|e| Error::Config(format!("{}: {e}", field("limit"))))?,
        );
    }
    if r.network().is_some() {
        return Err(unsupported("network"));
    }
    if r.rdma().as_ref().is_some_and(|x| !x.is_empty()) {
        return Err(unsupported("rdma"));
    }
    for k in r.unified().iter().flatten().map(|(k, _)| k) {
        unified_controller(k)?;
    }
    Ok(out)
}

/// The v2 controller a `linux.resources.unified` key belongs to (`memory.high` ->
/// memory), or none for core files (`cgroup.*`); a key that could name another
/// path (`/`, `..`) or is not `CONTROLLER.FILE` is refused.
pub(crate) fn unified_controller(key: &str) -> Result<Option<Controller>> {
    let bad = || {
        Error::Config(format!(
            "linux.resources.unified key {key:?}: expected a cgroup v2 file name like \
             memory.high"
        ))
    };
    let (prefix, rest) = key.split_once('.').ok_or_else(bad)?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.'))
    };
    if !ok(prefix) || !ok(rest) || rest.contains("..") {
        return Err(bad());
    }
    if prefix == "cgroup" {
        if matches!(
            rest,
            "procs" | "threads" | "subtree_control" | "kill" | "type"
        ) {
            return Err(Error::Config(format!(
                "linux.resources.unified key {key:?}: the runtime owns this file"
            )));
        }
        return Ok(None);
    }
    Controller::ALL
        .into_iter()
        .find(|c| c.v2_name() == Some(prefix))
        .map(Some)
        .ok_or_else(|| {
            Error::Config(format!(
                "linux.resources.unified key {key:?}: no cgroup v2 controller {prefix:?}"
            ))
        })
}

/// Writes `linux.resources.unified` into the cgroup's v2 directory (files that exist
/// only: a missing one is an error naming it).
pub(crate) fn apply_unified(
    cg: &cgroupkit::Cgroup,
    unified: &std::collections::HashMap<String, String>,
) -> Result<()> {
    if unified.is_empty() {
        return Ok(());
    }
    let dir = cg
        .dirs()
        .iter()
        .find(|d| d.version == cgroupkit::Version::V2)
        .ok_or_else(|| {
            Error::Config(
                "linux.resources.unified needs cgroup v2, and this container's cgroup is on \
                 v1 hierarchies only here: use the typed fields"
                    .into(),
            )
        })?;
    let mut keys: Vec<_> = unified.iter().collect();
    keys.sort();
    for (k, v) in keys {
        if let Some(c) = unified_controller(k)?
            && !dir.controllers.contains(&c)
        {
            return Err(Error::Config(format!(
                "linux.resources.unified key {k:?} needs the {c} controller on cgroup v2, \
                 and this host serves it from a v1 hierarchy: use the typed fields"
            )));
        }
        let p = dir.path.join(k);
        let f = std::fs::OpenOptions::new().write(true).open(&p);
        let written = f.and_then(|mut f| std::io::Write::write_all(&mut f, v.as_bytes()));
        written.map_err(|e| {
            Error::io(
                "write linux.resources.unified (is the file's controller available?)",
                &p,
                e,
            )
        })?;
    }
    Ok(())
}

/// `linux.resources.blockIO` as cgroupkit's io: the weight (OCI's blkio scale,
/// 10..1000, taken as it is: cgroupkit writes it where the kernel has a weight file
/// and refuses it where none is, e.g. without BFQ) and the per-device throttles.
/// Per-device weights and leafWeight are refused by name.
fn block_io(b: &oci_spec::runtime::LinuxBlockIo) -> Result<Option<cgroupkit::Io>> {
    use cgroupkit::{DeviceLimit, DeviceNumber, IoRate};
    if b.leaf_weight().is_some() {
        return Err(unsupported("blockIO.leafWeight"));
    }
    if b.weight_device().as_ref().is_some_and(|w| !w.is_empty()) {
        return Err(unsupported("blockIO.weightDevice"));
    }
    let mut io = match b.weight() {
        Some(w) => cgroupkit::Io::with_weight(w)
            .map_err(|e| Error::Config(format!("linux.resources.blockIO.weight {w}: {e}")))?,
        None => cgroupkit::Io::default(),
    };
    let mut limits: Vec<DeviceLimit> = Vec::new();
    let lists = [
        ("throttleReadBpsDevice", b.throttle_read_bps_device()),
        ("throttleWriteBpsDevice", b.throttle_write_bps_device()),
        ("throttleReadIOPSDevice", b.throttle_read_iops_device()),
        ("throttleWriteIOPSDevice", b.throttle_write_iops_device()),
    ];
    for (k, (name, list)) in lists.into_iter().enumerate() {
        for d in list.iter().flatten() {
            let dev = match (u32::try_from(d.major()), u32::try_from(d.minor())) {
                (Ok(a), Ok(b)) => DeviceNumber::new(a, b),
                _ => {
                    return Err(Error::Config(format!(
                        "linux.resources.blockIO.{name}: device {}:{} is not a device number",
                        d.major(),
                        d.minor()
                    )));
                }
            };
            // OCI's 0 is "no limit", as v1's.
            let rate = match d.rate() {
                0 => IoRate::Max,
                n => IoRate::PerSecond(n),
            };
            let i = match limits.iter().position(|l| l.device == dev) {
                Some(i) => i,
                None => {
                    limits.push(DeviceLimit::new(dev));
                    limits.len() - 1
                }
            };
            if let Some(l) = limits.get_mut(i) {
                match k {
                    0 => l.rbps = Some(rate),
                    1 => l.wbps = Some(rate),
                    2 => l.riops = Some(rate),
                    _ => l.wiops = Some(rate),
                }
            }
        }
    }
    for l in limits {
        io = io.limit(l);
    }
    Ok((io != cgroupkit::Io::default()).then_some(io))
}

/// The nskit namespace kind of an OCI namespace type.
pub(crate) fn ns_kind(t: LinuxNamespaceType) -> Namespace {
    match t {
        LinuxNamespaceType::Mount => Namespace::MOUNT,
        LinuxNamespaceType::Cgroup => Namespace::CGROUP,
        LinuxNamespaceType::Uts => Namespace::UTS,
        LinuxNamespaceType::Ipc => Namespace::IPC,
        LinuxNamespaceType::User => Namespace::USER,
        LinuxNamespaceType::Pid => Namespace::PID,
        LinuxNamespaceType::Network => Namespace::NET,
        LinuxNamespaceType::Time => Namespace::TIME,
    }
}
