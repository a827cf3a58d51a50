//! The spec's `linux.resources` and `linux.namespaces` in cgroupkit's and nskit's
//! terms.

use cgroupkit::{Cpu, CpuQuota, Limit, Memory, Pids, Resources};
use nskit::Namespace;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources};

use crate::error::Result;
use crate::spec;

/// cgroupkit resources for the spec's `linux.resources`, with the device allow-list
/// ([`crate::devices`]) always.
pub fn resources(r: Option<&LinuxResources>) -> Result<Resources> {
    let mut out = Resources::default();
    out.devices = Some(crate::devices::for_spec(
        r.and_then(|r| r.devices().as_ref()),
    )?);
    let Some(r) = r else { return Ok(out) };
    if let Some(c) = r.cpu()
        && let Some(q) = c.quota()
        && q > 0
    {
        let period = c.period().unwrap_or(spec::CPU_PERIOD_USEC);
        out.cpu = Some(Cpu::with_quota(CpuQuota::new(q as u64, period)?));
    }
    if let Some(m) = r.memory()
        && let Some(l) = m.limit()
        && l > 0
    {
        out.memory = Some(Memory::with_max(Limit::Bytes(l as u64)));
    }
    if let Some(p) = r.pids()
        && p.limit() > 0
    {
        out.pids = Some(Pids::with_max(p.limit() as u64)?);
    }
    Ok(out)
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
