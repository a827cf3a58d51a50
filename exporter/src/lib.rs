//! `cgroup_exporter`: per-cgroup metrics and eBPF throttle histograms for Prometheus.
//!
//! A placeholder in the workspace layout: collectors and the HTTP server are built
//! under the exporter issue; nothing here pretends to work yet.
#![deny(missing_docs)]
