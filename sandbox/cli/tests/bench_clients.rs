//! Not a test: the body of `cargo xtask bench clients`, which runs it with
//! `--ignored --nocapture`. `ctr run --rm` and `podman run --rm` of `/bin/true`,
//! under the same private client, with runc and with sandbox as the runtime,
//! interleaved; medians and ratios. It lives here to use the clients' harness
//! (tests/common/clients.rs), and asserts only that every run succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "common/clients.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Containerd, IMAGE, Podman, stderr};

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
#[ignore = "a benchmark: `cargo xtask bench clients` runs it"]
fn bench_clients() {
    let runs: usize = std::env::var("SANDBOX_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let runtimes = [
        ("runc", "/usr/sbin/runc".to_string()),
        // xtask passes its release build; the harness itself may be a debug build.
        (
            "sandbox",
            std::env::var("SANDBOX_BENCH_BINARY")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sandbox").to_string()),
        ),
    ];
    let mut ctrs = Vec::new();
    let mut podmans = Vec::new();
    for (_, rt) in &runtimes {
        // SAFETY: this benchmark runs alone (one test, no other threads yet); the
        // harness reads the variable while making each client.
        unsafe { std::env::set_var("SANDBOX_TEST_RUNTIME", rt) };
        ctrs.push(Containerd::new());
        podmans.push(Podman::new());
    }
    let mut ctr_t = vec![Vec::new(), Vec::new()];
    let mut pod_t = vec![Vec::new(), Vec::new()];
    for i in 0..=runs {
        for r in 0..runtimes.len() {
            let t = Instant::now();
            let o = ctrs[r].run(&["--rm", IMAGE, &format!("b{i}"), "true"]);
            let d = t.elapsed();
            assert!(
                o.status.success(),
                "ctr with {}: {}",
                runtimes[r].0,
                stderr(&o)
            );
            let t = Instant::now();
            let o = podmans[r].container("run", &["--rm", IMAGE, "true"], None);
            let p = t.elapsed();
            assert!(
                o.status.success(),
                "podman with {}: {}",
                runtimes[r].0,
                stderr(&o)
            );
            // The first round warms caches and is not counted.
            if i > 0 {
                ctr_t[r].push(d);
                pod_t[r].push(p);
            }
        }
    }
    println!(
        "bench clients: `run --rm IMAGE true`, {runs} runs each, interleaved (through the harness's logging wrapper, the same for both)"
    );
    for (what, times) in [
        ("ctr (containerd 1.6, runc shim v2)", &mut ctr_t),
        ("podman 4.3 (conmon)", &mut pod_t),
    ] {
        let m: Vec<Duration> = times.iter_mut().map(|v| median(v)).collect();
        for (r, (name, _)) in runtimes.iter().enumerate() {
            println!(
                "  {what:<38} {name:<8} {:>8.1} ms  {:>5.2}x runc",
                m[r].as_secs_f64() * 1e3,
                m[r].as_secs_f64() / m[0].as_secs_f64()
            );
        }
    }
}
