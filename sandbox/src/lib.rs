//! `sandbox`: containers assembled from layered images, namespaces and cgroup limits.
//!
//! A container is described by an OCI runtime [`Spec`](oci_spec::runtime::Spec): the
//! CLI builds one ([`spec::build`]) and [`run::run`] consumes it, so a `config.json`
//! reader is a front end, not a rewrite.
//!
//! - [`store`]: the content-addressed layer store and OCI image-layout import.
//! - [`rootfs`]: the init layer and the overlay of image layers + init + upper.
//! - [`security`]: capabilities, no_new_privs, seccomp and the async-signal-safe
//!   steps that apply them between clone and exec.
//! - [`devices`]: the device allow-list (Docker's default plus the spec's rules).
//! - [`seccomp`]: OCI seccomp profiles compiled to BPF; Docker's default profile.
//! - [`state`]: the state directory, locking, `ps` and `gc`.
//! - [`run`]: assembly of one container, all-or-nothing, and its supervision.
#![deny(missing_docs)]

pub mod devices;
pub mod error;
pub mod rootfs;
pub mod run;
pub mod seccomp;
pub mod security;
pub mod spec;
pub mod state;
pub mod store;

pub use error::{Error, Result};
