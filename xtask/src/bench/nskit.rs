//! `cargo xtask bench nskit`: spawning `true` in new pid+mount+uts+ipc+net namespaces
//! with nskit against util-linux `unshare --fork --pid --mount --uts --ipc --net true`,
//! interleaved in one run. nskit is measured twice: as the library a runtime calls
//! (spawn + wait inside a running process, `spawn_true --serve`; what a user of the
//! library pays) and as a command started per run (`spawn_true`, like with like with
//! unshare(1), which pays its own process start too).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

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
    let server = Server::start(&spawn_true)?;
    type Step<'a> = Box<dyn FnMut() -> Result<Duration> + 'a>;
    let mut tools: Vec<(&str, Step)> = vec![
        (
            "nskit library (spawn + wait in a running process)",
            Box::new(|| server.spawn_once()),
        ),
        (
            "unshare --fork --pid --mount --uts --ipc --net true",
            Box::new(|| super::time(Command::new("unshare").args(UNSHARE_ARGS))),
        ),
        (
            "nskit as a command (spawn_true, started per run)",
            Box::new(|| super::time(&mut Command::new(&spawn_true))),
        ),
    ];
    for (_, f) in &mut tools {
        f()?; // warm-up: page cache, dynamic loader
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); tools.len()];
    for _ in 0..runs {
        for (i, (_, f)) in tools.iter_mut().enumerate() {
            samples[i].push(f()?);
        }
    }
    let medians: Vec<Duration> = samples.iter_mut().map(|s| super::median(s)).collect();
    println!(
        "bench nskit: `true` in new pid+mount+uts+ipc+net namespaces, {runs} runs each (interleaved)"
    );
    println!(
        "{:<56} {:>10} {:>10} {:>12}",
        "tool", "median", "p90", "vs library"
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
    let ratio = |i: usize| medians[1].as_secs_f64() / medians[i].as_secs_f64();
    println!(
        "unshare(1) / nskit library: {:.2}x (target: at least 2x); unshare(1) / spawn_true command: {:.2}x",
        ratio(0),
        ratio(2)
    );
    drop(tools);
    drop(server);
    Ok(())
}

/// `spawn_true --serve`: one in-process spawn per line we send, answered with its time.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: std::cell::RefCell<BufReader<ChildStdout>>,
}

impl Server {
    fn start(bin: &std::path::Path) -> Result<Server> {
        let mut child = Command::new(bin)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {} --serve", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("spawn_true stdout")?;
        Ok(Server {
            child,
            stdin,
            stdout: std::cell::RefCell::new(BufReader::new(stdout)),
        })
    }

    fn spawn_once(&self) -> Result<Duration> {
        let mut stdin = self.stdin.as_ref().context("spawn_true stdin closed")?;
        stdin
            .write_all(b"go\n")
            .context("write to spawn_true --serve")?;
        let mut line = String::new();
        self.stdout
            .borrow_mut()
            .read_line(&mut line)
            .context("read from spawn_true --serve")?;
        let Ok(ns) = line.trim().parse::<u64>() else {
            bail!("spawn_true --serve failed (answered {line:?})");
        };
        Ok(Duration::from_nanos(ns))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // EOF on its stdin ends it; then reap it.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
