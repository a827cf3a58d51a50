//! Shared by the integration tests: the test binary re-executes itself as the child
//! (`--exact helper`, with NSKIT_HELPER naming what to do), so that every change of
//! namespaces or mounts happens in a child process and dies with it.
#![allow(
    dead_code,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use nskit::{Spawn, Stdio};

/// A Spawn of this test binary running only the `helper` test in `mode`.
pub fn child(mode: &str) -> Spawn {
    let mut s = Spawn::new(std::env::current_exe().unwrap());
    s.args(["--exact", "helper", "--nocapture", "--test-threads=1", "-q"])
        .env("NSKIT_HELPER", mode)
        .env_remove("RUST_TEST_THREADS");
    s
}

/// Runs the spawn to completion; returns the child's `NSKIT key=value` facts.
pub fn run(s: &mut Spawn) -> BTreeMap<String, String> {
    let (st, out, err) = s.output().expect("spawn the helper");
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(
        st.success(),
        "helper failed: {st}\nstdout:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&err)
    );
    facts(&out)
}

pub fn facts(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("NSKIT "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Prints a fact for the parent.
pub fn fact(k: &str, v: impl std::fmt::Display) {
    println!("NSKIT {k}={v}");
}

/// A running helper that holds its namespaces until dropped (stdin closed).
pub struct Held {
    pub child: nskit::Child,
    /// Kept open so that the holder's last words do not meet EPIPE.
    _out: BufReader<std::fs::File>,
    pub facts: BTreeMap<String, String>,
}

impl Held {
    pub fn start(s: &mut Spawn) -> Held {
        s.env("NSKIT_HOLD", "1")
            .stdin(Stdio::Piped)
            .stdout(Stdio::Piped);
        let mut child = s.spawn().expect("spawn the holder");
        let out = child.stdout.take().unwrap();
        let mut out = BufReader::new(out);
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 || line.trim_end() == "NSKIT ready=1" {
                break;
            }
            text.push_str(&line);
        }
        Held {
            child,
            _out: out,
            facts: facts(&text),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.child.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the helper: when NSKIT_HOLD is set, say ready and wait for stdin to close.
pub fn hold() {
    if std::env::var_os("NSKIT_HOLD").is_some() {
        fact("ready", 1);
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    }
}

/// The lane we run in (`vm-6.12`, `vm-6.1` in the VM lane; `host` otherwise).
pub fn lane() -> String {
    std::env::var("CGROUPKIT_LANE").unwrap_or_else(|_| "host".into())
}

/// True when `/` is the initramfs rootfs (the VM lane), which pivot_root cannot leave.
pub fn root_is_rootfs() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once(" - ")
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        })
        .any(|(a, b)| a.split(' ').nth(4) == Some("/") && b.starts_with("rootfs "))
}

pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the host lane runs as root");
}

/// CLOCK_MONOTONIC seconds.
pub fn monotonic_secs() -> i64 {
    // SAFETY: ts is plain data that clock_gettime fills in.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is writable.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0);
    ts.tv_sec
}

/// The nodename from uname(2).
pub fn hostname() -> String {
    nix::sys::utsname::uname()
        .unwrap()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
