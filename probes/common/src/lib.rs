//! `#[repr(C)]` types shared by the probes eBPF program and its userspace loader.
//!
//! A placeholder in the workspace layout, filled by the probes issue.
#![no_std]
#![deny(missing_docs)]
