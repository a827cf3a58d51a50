//! Helpers of the host and VM lanes: unique cgroups that are removed even when a test
//! fails, processes ended by pid, and CPU time read from /proc.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cgroupkit::{Hierarchy, Pid, Procfs};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The cgctl binary under test.
pub fn cgctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cgctl"))
}

/// Runs cgctl with `args` and returns its output.
pub fn run_cgctl(args: &[&str]) -> Output {
    cgctl().args(args).output().expect("start cgctl")
}

/// The lane this test runs on, for messages.
pub fn lane() -> String {
    std::env::var("CGROUPKIT_LANE").unwrap_or_else(|_| "host".into())
}

/// Fails the test with a clear message when not root: the host and VM lanes run as
/// root, and a skipped test must not report `ok`.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this integration test needs root (run `cargo xtask test` as root)"
    );
}

/// A cgroup parent unique to this test, `cgctl-test-<pid>-<n>`, removed (with every
/// child, on every hierarchy) when dropped.
pub struct TestParent {
    pub name: String,
    pub hierarchy: Hierarchy,
}

impl TestParent {
    pub fn new() -> TestParent {
        require_root();
        let name = format!(
            "cgctl-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        TestParent {
            name,
            hierarchy: Hierarchy::detect().expect("detect cgroup hierarchy"),
        }
    }

    /// `parent/child` as a cgroup path string.
    pub fn child(&self, child: &str) -> String {
        format!("{}/{child}", self.name)
    }

    /// The directories of `rel` (relative to the parent) that exist on any hierarchy.
    pub fn existing(&self, rel: &str) -> Vec<PathBuf> {
        self.hierarchy
            .mounts()
            .iter()
            .map(|m| m.mount_point.join(&self.name).join(rel))
            .filter(|p| p.is_dir())
            .collect()
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        for m in self.hierarchy.mounts() {
            let top = m.mount_point.join(&self.name);
            if top.is_dir() {
                remove_tree(&top);
            }
        }
    }
}

/// rmdir of a cgroup tree, deepest first, retrying while exiting tasks are reaped.
fn remove_tree(dir: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let start = Instant::now();
    while let Err(e) = std::fs::remove_dir(dir) {
        if start.elapsed() > Duration::from_secs(5) {
            eprintln!("test cleanup: cannot remove {}: {e}", dir.display());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process this test started; killed by its pid and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// `sh -c 'while :; do :; done'`: one busy thread.
    pub fn busy_loop() -> Proc {
        Proc(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
                .expect("start busy loop"),
        )
    }

    pub fn pid(&self) -> Pid {
        Pid::new(i64::from(self.0.id())).expect("pid in range")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) of a process in seconds, from /proc/PID/stat.
pub fn cpu_seconds(pid: Pid) -> f64 {
    let st = Procfs::default().stat(pid).expect("read /proc/PID/stat");
    (st.utime_ticks + st.stime_ticks) as f64 / cgroupkit::proc::clock_ticks_per_second() as f64
}

/// The share of one CPU a process used over `window`.
pub fn cpu_share(pid: Pid, window: Duration) -> f64 {
    let c0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let c1 = cpu_seconds(pid);
    (c1 - c0) / t0.elapsed().as_secs_f64()
}
