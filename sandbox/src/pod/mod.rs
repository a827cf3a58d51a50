//! Pods on one node: a Kubernetes `v1` `Pod` run as the kubelet runs it.
//!
//! - [`manifest`]: the Pod file read into k8s-openapi's types, every field checked
//!   (unknown and unsupported fields are errors naming them), into a [`PodPlan`].
#![allow(missing_docs)]

pub mod manifest;

pub use manifest::PodPlan;
