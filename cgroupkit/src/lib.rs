//! cgroupkit: cgroups for container runtimes and platform tools, on cgroup v1, v2 and
//! hybrid hosts.
//!
//! Find the hierarchies ([`Hierarchy`]), create a [`Cgroup`], [`Cgroup::apply`] typed
//! [`Resources`], move processes in and read typed stats. The v1/v2 differences (file
//! names, units, `cpu.cfs_quota_us` vs `cpu.max`) are handled inside; callers state one
//! meaning.
//!
//! ```no_run
//! use cgroupkit::{Cgroup, CgroupPath, Cpu, CpuQuota, Hierarchy, Pid, Resources};
//!
//! let h = Hierarchy::detect()?;
//! let mut limits = Resources::default();
//! limits.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(0.2, 100_000)?));
//! let cg = Cgroup::create(&h, &CgroupPath::new("demo/capped")?, &limits.controllers())?;
//! cg.apply(&limits)?;                  // v1: cfs_period_us + cfs_quota_us; v2: cpu.max
//! cg.add_process(Pid::new(398)?)?;     // the whole process, every thread
//! let stat = cg.cpu_stat()?;
//! println!("throttled {} of {} periods", stat.nr_throttled, stat.nr_periods);
//! # Ok::<(), cgroupkit::Error>(())
//! ```
//!
//! Every root path is injectable: [`Hierarchy::from_mountinfo`] takes any mountinfo
//! file (mount points in it may be anywhere), [`Procfs::at`] any procfs.
#![deny(missing_docs)]

pub mod attach;
pub mod cgroup;
pub mod cpu;
pub mod cpuset;
pub mod delegation;
pub mod devices;
mod error;
pub mod events;
mod fsutil;
pub mod hierarchy;
pub mod hugetlb;
pub mod io;
pub mod lifecycle;
pub mod membership;
pub mod memory;
mod path;
pub mod pids;
pub mod proc;
pub mod psi;
pub mod reader;
mod resources;
mod sys;
#[cfg(test)]
mod testutil;
pub mod walk;

pub use attach::{Placement, SpawnHandles};
pub use cgroup::{Cgroup, CgroupDir};
pub use cpu::{Cpu, CpuQuota, CpuStat};
pub use cpuset::{Cpuset, CpusetStat, IdSet};
pub use devices::{DeviceAccess, DeviceKind, DeviceRule, Devices};
pub use error::{Error, Result};
pub use hierarchy::{Controller, Hierarchy, Layout, Mount, Version};
pub use hugetlb::{Hugetlb, HugetlbSizeStat, HugetlbStat, PageSize};
pub use io::{DeviceIo, DeviceLimit, DeviceNumber, Io, IoRate, IoStat};
pub use lifecycle::{CgroupEvents, FreezerState, Leftovers, SETTLE_TIMEOUT};
pub use memory::{Limit, Memory, MemoryEvents, MemoryStat};
pub use path::CgroupPath;
pub use pids::{Pids, PidsLimit, PidsStat};
pub use proc::{Pid, Procfs};
pub use resources::{Resources, Written};
