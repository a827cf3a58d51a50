//! Userspace side of the CPU-throttling eBPF probe.
//!
//! A placeholder in the workspace layout: the loader and per-cgroup snapshots are
//! built under the probes issue; nothing here pretends to work yet.
#![deny(missing_docs)]
