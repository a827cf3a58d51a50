//! `cargo xtask bench probes`: the throttle probe's cost on a context-switch-heavy
//! workload (probes/examples/pingpong.rs: one byte back and forth over pipes between
//! two processes, both pinned to the last CPU so each round trip is two switches).
//!
//! Paired blocks: one pingpong process measures `rounds` round trips without the probe
//! and `rounds` with it (loaded for that half only, order alternating), `runs` times.
//! The slowdown is the median of the blocks' own slowdowns: on a small shared machine
//! two separate runs differ by more than the probe costs, two halves of a block much
//! less. Then a few runs with the kernel's own run statistics (BPF_ENABLE_STATS, held
//! by the pingpong process only, so no sysctl is changed) give the program's cost per
//! run as the kernel measures it.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Runs with run statistics enabled: their spread is small.
const STATS_RUNS: usize = 3;

/// One block: ns without and with the probe, and the probe's hits meanwhile.
struct Block {
    without_ns: f64,
    with_ns: f64,
    hits: f64,
}

fn field(line: &str, k: &str) -> Result<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(k))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {k} in pingpong output {line:?}"))
}

fn pingpong(bin: &std::path::Path, cpu: usize, rounds: u64) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--rounds", &rounds.to_string(), "--cpu", &cpu.to_string()]);
    cmd
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The 25th and 75th percentiles.
fn quartiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 4], v[v.len() * 3 / 4])
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
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpus - 1;

    let load_before = loadavg();
    let out = util::output(pingpong(&bin, cpu, rounds).args(["--pairs", &runs.to_string()]))?;
    let load_after = loadavg();
    let blocks = out
        .lines()
        .map(|l| {
            Ok(Block {
                without_ns: field(l, "without_ns=")?,
                with_ns: field(l, "with_ns=")?,
                hits: field(l, "hits=")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if blocks.is_empty() {
        bail!("pingpong printed no blocks: {out:?}");
    }
    let mut kernel = Vec::new();
    for _ in 0..STATS_RUNS {
        let line = util::output(pingpong(&bin, cpu, rounds).args(["--probe", "--stats"]))?;
        let (n, ns) = (field(&line, "runs=")?, field(&line, "run_ns=")?);
        if n > 0.0 {
            kernel.push(ns / n);
        }
    }

    let rt = rounds as f64;
    let t0 = median(blocks.iter().map(|b| b.without_ns / rt).collect());
    let t1 = median(blocks.iter().map(|b| b.with_ns / rt).collect());
    let slowdowns: Vec<f64> = blocks
        .iter()
        .map(|b| (b.with_ns - b.without_ns) / b.without_ns * 100.0)
        .collect();
    let slowdown = median(slowdowns.clone());
    let (q1, q3) = quartiles(slowdowns);
    let per_hit = median(
        blocks
            .iter()
            .map(|b| (b.with_ns - b.without_ns) / b.hits.max(1.0))
            .collect(),
    );
    let hits = median(blocks.iter().map(|b| b.hits / rt).collect());
    println!(
        "bench probes: pipe ping-pong pinned to CPU {cpu} of {cpus}, {} blocks of {rounds} round \
         trips without + {rounds} with the probe (paired, order alternating); load average \
         {load_before} before, {load_after} after",
        blocks.len()
    );
    println!("{:<34} {:>14} {:>14}", "", "ns/round trip", "probe hits/rt");
    println!("{:<34} {:>14.0} {:>14}", "without probe (median)", t0, "-");
    println!("{:<34} {:>14.0} {:>14.2}", "with probe (median)", t1, hits);
    println!(
        "slowdown {slowdown:+.2}% (target < 2%; median of the blocks, quartiles {q1:+.1}% \
         .. {q3:+.1}%); {per_hit:.0} ns per probe hit (target < 150 ns; median of the \
         blocks, hits are system-wide)"
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
