//! `cargo xtask bench probes`: the throttle probe's cost on a context-switch-heavy
//! workload (probes/examples/pingpong.rs: one byte back and forth over pipes between
//! two processes, both pinned to the last CPU so each round trip is two switches).
//!
//! Blocks: one pingpong process measures `rounds` round trips without any program,
//! `rounds` with an empty program on sched_switch and `rounds` with the probe (each
//! loaded for its part only; the order rotates), `runs` times. The slowdown is the
//! median of the blocks' own slowdowns: on a small shared machine two separate runs
//! differ by more than the probe costs, the parts of a block much less. The empty
//! program's slowdown is the floor under any sched_switch probe (the tracepoint's
//! dispatch to BPF); the probe's own work is what it adds above that. Then a few runs with the kernel's own run statistics (BPF_ENABLE_STATS, held
//! by the pingpong process only, so no sysctl is changed) give the program's cost per
//! run as the kernel measures it.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Runs with run statistics enabled: their spread is small.
const STATS_RUNS: usize = 3;

/// One block: ns without any program, with the empty program and with the probe, and
/// the probe's hits meanwhile.
struct Block {
    without_ns: f64,
    empty_ns: f64,
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
                empty_ns: field(l, "empty_ns=")?,
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
    let te = median(blocks.iter().map(|b| b.empty_ns / rt).collect());
    let t1 = median(blocks.iter().map(|b| b.with_ns / rt).collect());
    let pct = |f: fn(&Block) -> (f64, f64)| -> Vec<f64> {
        blocks
            .iter()
            .map(|b| {
                let (x, base) = f(b);
                (x - base) / base * 100.0
            })
            .collect()
    };
    let slowdowns = pct(|b| (b.with_ns, b.without_ns));
    let slowdown = median(slowdowns.clone());
    let (q1, q3) = quartiles(slowdowns);
    let empty = pct(|b| (b.empty_ns, b.without_ns));
    let empty_slowdown = median(empty.clone());
    let (e1, e3) = quartiles(empty);
    let above_empty = median(pct(|b| (b.with_ns, b.empty_ns)));
    let per_hit = median(
        blocks
            .iter()
            .map(|b| (b.with_ns - b.without_ns) / b.hits.max(1.0))
            .collect(),
    );
    let empty_per_hit = median(
        blocks
            .iter()
            .map(|b| (b.empty_ns - b.without_ns) / b.hits.max(1.0))
            .collect(),
    );
    let hits = median(blocks.iter().map(|b| b.hits / rt).collect());
    println!(
        "bench probes: pipe ping-pong pinned to CPU {cpu} of {cpus}, {} blocks of {rounds} round \
         trips each without a program, with an empty sched_switch program and with the probe \
         (order rotating); load average {load_before} before, {load_after} after",
        blocks.len()
    );
    println!("{:<40} {:>14} {:>14}", "", "ns/round trip", "probe hits/rt");
    println!(
        "{:<40} {:>14.0} {:>14}",
        "without any program (median)", t0, "-"
    );
    // The empty program counts nothing: its ns per hit below divides by the probe's
    // hits of the same block (the same round trips make the same switches).
    println!(
        "{:<40} {:>14.0} {:>14}",
        "with an empty sched_switch program", te, "-"
    );
    println!(
        "{:<40} {:>14.0} {:>14.2}",
        "with the probe (median)", t1, hits
    );
    println!(
        "slowdown {slowdown:+.2}% (target < 2%; median of the blocks, quartiles {q1:+.1}% \
         .. {q3:+.1}%); {per_hit:.0} ns per probe hit (target < 150 ns; median of the \
         blocks, hits are system-wide)"
    );
    println!(
        "floor: an empty program on sched_switch slows it {empty_slowdown:+.2}% (quartiles \
         {e1:+.1}% .. {e3:+.1}%), {empty_per_hit:.0} ns per hit: the tracepoint's dispatch, \
         paid by any probe there; the probe's own work adds {above_empty:+.2}% above it"
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
