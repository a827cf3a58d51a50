//! Namespaces, id maps, mounts, overlay and pivot_root for container runtimes.
//!
//! This crate is a placeholder in the workspace layout: its API (namespace handles,
//! the clone3 spawn builder, mounts) is built under the nskit issue and nothing here
//! pretends to work yet.
#![deny(missing_docs)]
