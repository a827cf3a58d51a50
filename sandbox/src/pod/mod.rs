//! Pods on one node: a Kubernetes `v1` `Pod` run as the kubelet runs it.
//!
//! - [`manifest`]: the Pod file read into k8s-openapi's types, every field checked
//!   (unknown and unsupported fields are errors naming them), into a [`PodPlan`].
//! - [`status`]: the pod's folder under the state root and its `status.json`.
//! - [`supervisor`]: the per-pod process that runs the infra container, the init,
//!   sidecar and app containers, their logs, restarts and probes.
//! - [`ops`]: what the `pod` commands do on a pod found by name (`ls`, `ps`, `logs`,
//!   `exec`, `stop`, `rm`, `gc`).

pub mod manifest;
pub mod ops;
pub mod status;
pub mod supervisor;

pub use manifest::PodPlan;
pub use status::{Phase, PodStatus};
pub use supervisor::{preflight, supervise};
