//! `cargo xtask bench probes`: the throttle probe's cost on a context-switch-heavy
//! workload (probes/examples/pingpong.rs: one byte back and forth over pipes between
//! two processes), without and with the probe attached, interleaved. Then a few runs
//! with the kernel's own run statistics (BPF_ENABLE_STATS, held only by those runs:
//! no sysctl is changed) for the program's cost per run, measured inside the kernel.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Runs with run statistics enabled: their spread is small.
const STATS_RUNS: usize = 3;

struct Run {
    ns: f64,
    hits: f64,
    switches: f64,
    /// Kernel-counted runs and run time of the main program (`--stats` only).
    prog: Option<(f64, f64)>,
}

fn one(bin: &std::path::Path, rounds: u64, probe: bool, stats: bool) -> Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.args(["--rounds", &rounds.to_string()]);
    if probe {
        cmd.arg("--probe");
    }
    if stats {
        cmd.arg("--stats");
    }
    let out = util::output(&mut cmd)?;
    let field = |k: &str| -> Result<f64> {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k} in pingpong output {out:?}"))
    };
    Ok(Run {
        ns: field("ns=")?,
        hits: field("hits=")?,
        switches: field("switches=")?,
        prog: if stats {
            Some((field("runs=")?, field("run_ns=")?))
        } else {
            None
        },
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "?".into())
}

/// Entry point.
pub fn run(runs: usize, rounds: u64) -> Result<()> {
    if runs == 0 || rounds == 0 {
        bail!("--runs and --rounds must be at least 1");
    }
    crate::ebpf::build()?;
    util::run(util::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "probes",
        "--example",
        "pingpong",
    ]))?;
    let bin = util::release_bin("examples/pingpong");
    let (mut without, mut with) = (Vec::new(), Vec::new());
    one(&bin, rounds / 10 + 1, false, false)?; // warm-up
    let load_before = loadavg();
    for _ in 0..runs {
        without.push(one(&bin, rounds, false, false)?);
        with.push(one(&bin, rounds, true, false)?);
    }
    let load_after = loadavg();
    let mut kernel = Vec::new();
    for _ in 0..STATS_RUNS {
        let r = one(&bin, rounds, true, true)?;
        if let Some((n, ns)) = r.prog.filter(|p| p.0 > 0.0) {
            kernel.push(ns / n);
        }
    }
    let per_round = |v: &[Run]| median(v.iter().map(|r| r.ns / rounds as f64).collect());
    let t0 = per_round(&without);
    let t1 = per_round(&with);
    let hits = median(with.iter().map(|r| r.hits / rounds as f64).collect());
    let sw = median(with.iter().map(|r| r.switches / rounds as f64).collect());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "bench probes: pipe ping-pong, {rounds} round trips x {runs} runs each (interleaved), {cpus} CPUs, \
         load average {load_before} before, {load_after} after"
    );
    println!("{:<34} {:>14} {:>14}", "", "ns/round trip", "probe hits/rt");
    println!("{:<34} {:>14.0} {:>14}", "without probe", t0, "-");
    println!(
        "{:<34} {:>14.0} {:>14.2}",
        "with probe (attached)", t1, hits
    );
    println!(
        "slowdown {:+.2}% (target < 2%); {:.0} ns per probe hit (target < 150 ns); \
         ping-pong context switches per round trip: {:.2} (hits are system-wide)",
        (t1 - t0) / t0 * 100.0,
        (t1 - t0) / hits.max(1e-9),
        sw
    );
    if kernel.is_empty() {
        println!("kernel run statistics: none counted (BPF_ENABLE_STATS unsupported?)");
    } else {
        println!(
            "kernel run statistics ({} runs with BPF_ENABLE_STATS): {:.0} ns per run of the \
             main program (median; its body plus the two clock reads that time it, without \
             the tracepoint's dispatch)",
            kernel.len(),
            median(kernel)
        );
    }
    Ok(())
}
