//! [`Spawn`]: start a program in new (or joined) namespaces, like
//! `std::process::Command`, safely from multi-threaded programs.
//!
//! # How the child is made
//!
//! Everything the child needs (argv, envp, paths, mount arguments, id-map text, time
//! offsets) is allocated in the parent **before** the clone. The child is created by
//! clone3(2) (5.3) without `CLONE_VM`, which behaves like fork(2): no stack is needed
//! and the call returns 0 in the child. `CLONE_PIDFD` returns a pidfd,
//! `CLONE_INTO_CGROUP` (5.7) places the child in a cgroup v2 directory before it runs.
//! Where clone3 is missing (ENOSYS: kernels before 5.3, or a seccomp profile that
//! hides it, as Docker's does) the fallback is clone(2) through `syscall(SYS_clone)`
//! with `CLONE_PIDFD` (5.2), and the cgroup is joined by writing `cgroup.procs` before
//! the child is released.
//!
//! Between clone and exec the child makes only raw syscalls (`syscall(SYS_...)`), never
//! a libc wrapper: no allocation, no locks, no panics. (musl's `setgroups`, `setuid`
//! and `setrlimit` run `__synccall`, which takes the thread-list lock: a child cloned
//! while another thread held it waited for it forever.) All 64 signals, libc's
//! internal ones too, are blocked in the parent across the clone, so no signal handler
//! of the parent runs in the child; the child sets every signal to its default
//! (rt_sigaction, SIGPIPE included, which Rust ignores) and unblocks them all. A failure
//! is reported as a fixed-size record `(step, index, errno)` over a `CLOEXEC` pipe,
//! after which the child calls `exit_group(127)`; an EOF on that pipe means the exec
//! succeeded. A second pipe holds the child until the parent has written
//! `uid_map`/`gid_map` (and `setgroups`) and placed it in its cgroup. Whatever fails
//! after the clone, the parent SIGKILLs the child through its pidfd and reaps it
//! before returning the error: a failed spawn leaves no process behind.
//!
//! When the parent has nothing to do between clone and exec (no user namespace, no
//! cgroup fd, no namespaces to join, no `pre_exec` closures) and the child enters no
//! time namespace (setns to one needs an unshared mm), the child is made the
//! way posix_spawn(3) makes it: clone(2) with `CLONE_VM | CLONE_VFORK` on a stack of
//! its own. The parent's page tables are not copied and the parent sleeps until the
//! child has exec'd (or failed), so the cost no longer grows with the parent's memory.
//! The child still runs only the async-signal-safe steps above; it shares the
//! parent's memory, so those steps write nothing but their own stack and fds, and a
//! failure record, which it leaves in shared memory instead of the pipe (as
//! posix_spawn does): the parent then neither makes the pipe nor waits for the
//! exec to close it.

mod builder;
mod child;
mod child_main;
mod clone;
mod idmap;
mod start;

pub use builder::{Spawn, Stdio, TimeClock};
pub use child::Child;
pub use idmap::{IdMap, SetGroups};

/// How [`Error::Child`]'s step begins when the exec itself failed.
pub(crate) const EXEC_STEP: &str = "exec ";
