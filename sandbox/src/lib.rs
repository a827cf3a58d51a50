//! `sandbox`: containers assembled from layered images, namespaces and cgroup limits.
//!
//! A container is described by an OCI runtime [`Spec`](oci_spec::runtime::Spec): the
//! CLI (the `sandbox-cli` package, `sandbox/cli`) builds one ([`spec::build`]) and [`assembly::run`] consumes it, so a `config.json`
//! reader is a front end, not a rewrite.
//!
//! - [`image`]: the content-addressed image store and OCI image-layout import
//!   ([`store`] is its former name, kept for callers).
//! - [`rootfs`]: the init layer and the overlay of image layers + init + upper.
//! - [`security`]: capabilities, no_new_privs, seccomp and the async-signal-safe
//!   steps that apply them between clone and exec.
//! - [`devices`]: the device allow-list (Docker's default plus the spec's rules).
//! - [`seccomp`]: OCI seccomp profiles compiled to BPF; Docker's default profile.
//! - [`state`]: the state directory, locking, `ps` and `gc`.
//! - [`assembly`]: assembly of one container, all-or-nothing, and its supervision.
//! - [`lifecycle`]: `exec`, `kill`, `stop` and `rm` of a container by name.
//! - [`oci`]: the OCI runtime (runc's verbs: create, start, state, kill, delete, ...).
#![deny(missing_docs)]

pub mod assembly;
pub mod devices;
pub mod error;
pub mod image;
pub mod lifecycle;
pub mod oci;
pub mod pod;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod spec;
pub mod state;

pub use image::store;

pub use error::{Error, Result};
