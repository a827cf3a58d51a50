//! `Resources`: the typed, validated limits of a cgroup, one meaning on every layout.

use crate::cpu::Cpu;
use crate::cpuset::Cpuset;
use crate::devices::Devices;
use crate::hierarchy::Controller;
use crate::hugetlb::Hugetlb;
use crate::io::Io;
use crate::memory::Memory;
use crate::pids::Pids;

/// Limits to apply to a cgroup. Unset fields are left as they are.
///
/// # Examples
/// ```
/// use cgroupkit::{Cpu, CpuQuota, Resources};
/// let mut r = Resources::default();
/// r.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(0.2, 100_000)?));
/// assert_eq!(r.controllers(), [cgroupkit::Controller::Cpu]);
/// # Ok::<(), cgroupkit::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Resources {
    /// cpu controller settings.
    pub cpu: Option<Cpu>,
    /// memory controller settings.
    pub memory: Option<Memory>,
    /// pids controller settings.
    pub pids: Option<Pids>,
    /// io (v1 blkio) controller settings.
    pub io: Option<Io>,
    /// cpuset controller settings.
    pub cpuset: Option<Cpuset>,
    /// hugetlb controller settings.
    pub hugetlb: Option<Hugetlb>,
    /// Device access rules (v1 devices controller; an eBPF program on v2).
    pub devices: Option<Devices>,
}

impl Resources {
    /// Checks every value that can be checked without the host (zero limits, ranges,
    /// a burst above the quota, whole hugetlb pages, `low`/`min` above `max`), so that
    /// [`Cgroup::apply`](crate::Cgroup::apply) refuses bad input before its first
    /// write rather than half-way. What depends on the host (a file the kernel lacks)
    /// is checked per controller as it is applied.
    ///
    /// ```
    /// use cgroupkit::{Limit, Memory, Resources};
    /// let mut r = Resources::default();
    /// r.memory = Some(Memory::with_max(Limit::Bytes(0)));
    /// assert!(r.validate().is_err());
    /// ```
    pub fn validate(&self) -> crate::Result<()> {
        if let Some(c) = &self.cpu {
            crate::cpu::validate(c)?;
        }
        if let Some(m) = &self.memory {
            m.validate()?;
        }
        if let Some(p) = &self.pids {
            crate::pids::validate(p)?;
        }
        if let Some(io) = &self.io {
            crate::io::validate(io)?;
        }
        if let Some(h) = &self.hugetlb {
            crate::hugetlb::validate(h)?;
        }
        Ok(())
    }

    /// The controllers these resources need.
    pub fn controllers(&self) -> Vec<Controller> {
        let mut c = Vec::new();
        if self.cpu.is_some() {
            c.push(Controller::Cpu);
        }
        if self.memory.is_some() {
            c.push(Controller::Memory);
        }
        if self.pids.is_some() {
            c.push(Controller::Pids);
        }
        if self.io.is_some() {
            c.push(Controller::Io);
        }
        if self.cpuset.is_some() {
            c.push(Controller::Cpuset);
        }
        if self.hugetlb.is_some() {
            c.push(Controller::Hugetlb);
        }
        if self.devices.is_some() {
            c.push(Controller::Devices);
        }
        c
    }
}

/// One file write done while applying resources: what was written where.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Written {
    /// The file.
    pub path: std::path::PathBuf,
    /// The value written.
    pub value: String,
}

/// Writes cgroup files and records each write for the caller's report.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    written: Vec<Written>,
}

impl Writer {
    /// Writes `value` to `file` in `dir`.
    pub(crate) fn write(
        &mut self,
        dir: &crate::CgroupDir,
        file: &str,
        value: impl Into<String>,
    ) -> crate::Result<()> {
        let path = dir.file(file);
        let value = value.into();
        crate::fsutil::write(&path, &value)?;
        self.written.push(Written { path, value });
        Ok(())
    }

    pub(crate) fn into_written(self) -> Vec<Written> {
        self.written
    }
}
