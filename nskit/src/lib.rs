//! Linux namespaces, id maps, mounts, overlay and pivot_root for container runtimes.
//!
//! ```no_run
//! use nskit::{MountSpec, Namespace, NsId, Spawn};
//!
//! // The seed's demonstration: a child in new mount and pid namespaces mounts a tmpfs
//! // on /tmp; it sees an empty /tmp, the host's /tmp is unchanged.
//! let mut child = Spawn::new("ls")
//!     .args(["-A", "/tmp"])
//!     .namespaces(Namespace::MOUNT | Namespace::PID | Namespace::UTS)
//!     .hostname("container")
//!     .mount(MountSpec::tmpfs("/tmp"))
//!     .spawn()?;
//! // The child is in other namespaces than ours, for as long as it runs.
//! let theirs = NsId::of(child.pid(), Namespace::MOUNT)?;
//! assert_ne!(theirs, NsId::current(Namespace::MOUNT)?);
//! assert!(child.wait()?.success());
//! # Ok::<(), nskit::Error>(())
//! ```
//!
//! # What is here
//!
//! - [`Namespace`]: the eight kinds as bitflags over `CLONE_NEW*`; [`NsHandle`] on an
//!   existing namespace (from a pid, a `/proc/PID/ns` path or a pidfd), [`NsId`] to
//!   compare, [`NsHandle::enter`] (setns) and [`unshare`].
//! - [`Spawn`]: a `std::process::Command`-like builder that starts a program in new or
//!   joined namespaces via clone3 (`CLONE_PIDFD`, `CLONE_INTO_CGROUP`), with id maps,
//!   hostname, time offsets, mounts, pivot_root, safe to call from multi-threaded
//!   programs (see the module docs of `spawn` for how). [`Child`] has the pidfd.
//! - [`mount`](mod@mount): bind/rbind, tmpfs, proc, sysfs, devpts, mqueue, read-only,
//!   propagation, unmount, [`pivot_root`], [`Overlay`], the fd-based mount API
//!   ([`DetachedMount`], idmapped mounts) and [`Root`] for confined path resolution.
//!
//! # Kernel requirements
//!
//! Spawn needs clone3 (5.3) or clone with `CLONE_PIDFD` (5.2); `CLONE_INTO_CGROUP`
//! 5.7 (older: cgroup.procs is written); time namespaces 5.6; setns on a pidfd 5.8
//! (older: one by one); openat2 5.6 (older: a stricter walk); the fd-based mount API
//! 5.2; mount_setattr and idmapped mounts 5.12; overlay `lowerdir+` 6.8. A missing
//! feature is [`Error::Unsupported`], naming the minimum kernel.
#![deny(missing_docs)]

mod error;
pub mod forward;
pub mod mount;
mod namespace;
mod spawn;
mod sys;

pub use error::{Error, Result};
pub use mount::{DetachedMount, MountSpec, MsFlags, Overlay, Propagation, Root, pivot_root};
pub use namespace::{Namespace, NsHandle, NsId, kernel_version, unshare};
pub use spawn::{Child, IdMap, SetGroups, Spawn, Stdio, TimeClock};
