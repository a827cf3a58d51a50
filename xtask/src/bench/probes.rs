//! `cargo xtask bench probes`: the throttle probe's cost on a context-switch-heavy
//! workload (probes/examples/pingpong.rs: one byte back and forth over pipes between
//! two processes), without and with the probe attached, interleaved.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

struct Run {
    ns: f64,
    hits: f64,
    switches: f64,
}

fn one(bin: &std::path::Path, rounds: u64, probe: bool) -> Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.args(["--rounds", &rounds.to_string()]);
    if probe {
        cmd.arg("--probe");
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
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    one(&bin, rounds / 10 + 1, false)?; // warm-up
    for _ in 0..runs {
        without.push(one(&bin, rounds, false)?);
        with.push(one(&bin, rounds, true)?);
    }
    let per_round = |v: &[Run]| median(v.iter().map(|r| r.ns / rounds as f64).collect());
    let t0 = per_round(&without);
    let t1 = per_round(&with);
    let hits = median(with.iter().map(|r| r.hits / rounds as f64).collect());
    let sw = median(with.iter().map(|r| r.switches / rounds as f64).collect());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "bench probes: pipe ping-pong, {rounds} round trips x {runs} runs each (interleaved), {cpus} CPUs"
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
    Ok(())
}
