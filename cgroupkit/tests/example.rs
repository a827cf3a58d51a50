//! The runtime author's example (examples/run_limited.rs) runs for real: exit status
//! relayed, limits enforced (an OOM kill counted), and nothing left behind.
// Integration tests fail loudly: unwrap/expect are their assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

/// examples/run_limited, built next to this test binary (`cargo test` builds examples;
/// the VM lane copies them into its initramfs at the same path).
fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let p = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/run_limited");
    assert!(
        p.is_file(),
        "{} missing: build it with `cargo test -p cgroupkit --examples`",
        p.display()
    );
    p
}

fn leftovers(h: &cgroupkit::Hierarchy) -> Vec<PathBuf> {
    h.mounts()
        .iter()
        .map(|m| m.mount_point.join("run_limited"))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn run_limited_relays_status_enforces_memory_and_cleans_up() {
    let s = common::Scratch::new();
    let out = Command::new(example())
        .args(["0.5", "32M", "--", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cgroup run_limited/"), "{stdout}");

    // dd fills a 64 MiB buffer under a 16 MiB limit: OOM-killed, 128 + 9.
    let out = Command::new(example())
        .args([
            "0.5",
            "16M",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(137), "{stdout}");
    assert!(stdout.contains("OOM kills 1"), "{stdout}");
    assert!(leftovers(&s.h).is_empty(), "left {:?}", leftovers(&s.h));
}
