//! `cargo xtask bench nskit`: spawning `true` in new pid+mount+uts+ipc+net namespaces
//! with nskit (clone3) against util-linux `unshare --fork --pid --mount --uts --ipc
//! --net true`. Both are commands started per run and timed from here (like with
//! like); nskit's in-process spawn+wait latency is reported separately.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::util;

const UNSHARE_ARGS: [&str; 7] = [
    "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "true",
];

/// Entry point of `cargo xtask bench nskit`.
pub fn run(runs: usize) -> Result<()> {
    util::apt_install(&["util-linux"])?;
    util::run(util::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "nskit",
        "--example",
        "spawn_true",
    ]))?;
    let spawn_true = util::release_bin("examples/spawn_true");
    let runs = runs.max(1);
    type Step<'a> = Box<dyn Fn() -> Result<Duration> + 'a>;
    let tools: Vec<(&str, Step)> = vec![
        (
            "nskit (spawn_true: clone3 + exec true + wait)",
            Box::new(|| super::time(&mut Command::new(&spawn_true))),
        ),
        (
            "unshare --fork --pid --mount --uts --ipc --net true",
            Box::new(|| super::time(Command::new("unshare").args(UNSHARE_ARGS))),
        ),
    ];
    for (_, f) in &tools {
        f()?; // warm-up: page cache, dynamic loader
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); tools.len()];
    for _ in 0..runs {
        for (i, (_, f)) in tools.iter().enumerate() {
            samples[i].push(f()?);
        }
    }
    let medians: Vec<Duration> = samples.iter_mut().map(|s| super::median(s)).collect();
    println!(
        "bench nskit: `true` in new pid+mount+uts+ipc+net namespaces, a command per run, {runs} runs each (interleaved)"
    );
    println!(
        "{:<56} {:>10} {:>10} {:>12}",
        "tool", "median", "p90", "vs nskit"
    );
    for (i, (n, _)) in tools.iter().enumerate() {
        println!(
            "{:<56} {:>8.2}ms {:>8.2}ms {:>11.2}x",
            n,
            medians[i].as_secs_f64() * 1e3,
            super::p90(&mut samples[i]).as_secs_f64() * 1e3,
            medians[i].as_secs_f64() / medians[0].as_secs_f64()
        );
    }
    println!(
        "unshare(1) / nskit: {:.2}x (target: at least 2x)",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
    let out = util::output(Command::new(&spawn_true).args(["--runs", &runs.to_string()]))
        .context("in-process spawn latency")?;
    println!(
        "nskit in-process spawn + wait (no process start of our own): {}",
        out.trim()
    );
    Ok(())
}
