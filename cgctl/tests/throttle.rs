//! `cgctl throttle` end to end: a busy loop capped at 0.2 CPU with `cgctl limit` shows
//! up in `cgctl throttle --json` with its throttle events, throttled time and a
//! histogram that accounts for every event. Runs as root in the host lane (6.18,
//! tp_btf/sched_switch; the lane runs `cargo xtask build-ebpf` first) and in the VM
//! lane (6.1 and 6.12, fentry/fexit), where the eBPF object is copied to its build path.

// Integration tests fail loudly: unwrap/expect are their assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Proc, lane, require_root, run_cgctl};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A cgroup created by `cgctl limit` under a name unique to this test; removed with
/// `cgctl rm` when dropped (after the processes in it were ended by their pid), so a
/// failing assertion leaves nothing behind.
struct CgctlCgroup {
    name: String,
    removed: bool,
}

impl CgctlCgroup {
    fn new() -> CgctlCgroup {
        CgctlCgroup {
            name: format!(
                "cgctl-throttle-test-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::SeqCst)
            ),
            removed: false,
        }
    }

    /// `cgctl rm NAME`, retried while the killed tasks leave the cgroup.
    fn remove(&mut self) -> Output {
        let start = Instant::now();
        loop {
            let out = run_cgctl(&["rm", &self.name]);
            if out.status.success() || start.elapsed() > Duration::from_secs(5) {
                self.removed = out.status.success();
                return out;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for CgctlCgroup {
    fn drop(&mut self) {
        if !self.removed {
            let out = self.remove();
            if !out.status.success() {
                eprintln!(
                    "test cleanup: cgctl rm {} failed: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "cgctl {what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("cgctl prints UTF-8")
}

#[test]
fn throttle_json_reports_a_capped_busy_loop() {
    require_root();
    // Declared before the process, so dropped after it: the process is killed and
    // reaped first, then the empty cgroup is removed.
    let mut cg = CgctlCgroup::new();
    let busy = Proc::busy_loop();
    let pid = busy.pid().to_string();

    ok(
        &run_cgctl(&["limit", "--cpu", "0.2", "--pid", &pid, "--cgroup", &cg.name]),
        "limit",
    );
    // 3 s at 0.2 CPU of a 100 ms period: ~30 throttles of ~80 ms each.
    let out = ok(
        &run_cgctl(&["throttle", "--duration", "3s", "--json"]),
        "throttle --json",
    );

    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l:?}"))
        })
        .collect();
    for v in &lines {
        for key in ["path", "events", "throttled_ns", "histogram"] {
            assert!(v.get(key).is_some(), "no `{key}` in {v}");
        }
    }
    let mine: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["path"].as_str().map(|p| p.trim_start_matches('/')) == Some(&cg.name))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one object for /{} in cgctl throttle's output:\n{out}",
        cg.name
    );
    let v = mine[0];
    eprintln!("[{}] cgctl throttle: {v}", lane());
    let events = v["events"].as_u64().expect("events is a number");
    let throttled_ns = v["throttled_ns"]
        .as_u64()
        .expect("throttled_ns is a number");
    assert!(events > 0, "the capped loop was throttled: {v}");
    assert!(throttled_ns > 0, "throttled time: {v}");
    let histogram = v["histogram"].as_array().expect("histogram is an array");
    assert!(!histogram.is_empty(), "{v}");
    let mut total = 0;
    for b in histogram {
        let count = b["count"].as_u64().expect("bucket count is a number");
        assert!(count > 0, "only non-empty buckets are listed: {b}");
        assert!(b["range"].is_string(), "bucket range: {b}");
        total += count;
    }
    assert_eq!(total, events, "every event is in one histogram bucket: {v}");

    drop(busy);
    let rm = cg.remove();
    ok(&rm, "rm");
}

/// The eBPF object is found by cgctl (the probes library takes it from its caller):
/// `$PROBES_EBPF_OBJECT` when set; when it is missing, cgctl names the path and the
/// command that builds it, and fails.
#[test]
fn throttle_without_the_object_says_how_to_build_it() {
    let out = common::cgctl()
        .args(["throttle", "--duration", "1s"])
        .env("PROBES_EBPF_OBJECT", "/nonexistent/probes-ebpf")
        .output()
        .expect("start cgctl");
    assert!(!out.status.success(), "cgctl throttle without its object");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/probes-ebpf"), "{err}");
    assert!(err.contains("cargo xtask build-ebpf"), "{err}");
}
