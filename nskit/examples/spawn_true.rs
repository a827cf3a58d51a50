//! Benchmark helper for `cargo xtask bench nskit`: spawns `true` in new
//! pid+mount+uts+ipc+net namespaces (what `unshare --fork --pid --mount --uts --ipc
//! --net true` does) and waits for it.
//!
//! `spawn_true` spawns once (timed from outside, like unshare(1));
//! `spawn_true --runs N` spawns N times and prints the in-process median and p90
//! latency of spawn + wait in microseconds;
//! `spawn_true --serve` spawns once per line read on stdin and answers each with the
//! in-process spawn + wait time in nanoseconds (so a benchmark can interleave the
//! library's own latency with other tools' runs).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark tool reports

use std::time::{Duration, Instant};

use nskit::{Namespace, Spawn};

fn kinds() -> Namespace {
    // NSKIT_BENCH_NS=net,pid,... narrows the set (to see what each kind costs).
    match std::env::var("NSKIT_BENCH_NS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| Namespace::all().kinds().find(|k| k.proc_name() == Some(n)))
            .fold(Namespace::empty(), |a, k| a | k),
        Err(_) => {
            Namespace::PID | Namespace::MOUNT | Namespace::UTS | Namespace::IPC | Namespace::NET
        }
    }
}

fn once() -> nskit::Result<()> {
    let st = Spawn::new("true").namespaces(kinds()).status()?;
    if !st.success() {
        eprintln!("true failed: {st}");
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> nskit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve();
    }
    let runs = match args.get(1).map(String::as_str) {
        Some("--runs") => args
            .get(2)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(100),
        _ => return once(),
    };
    let mut t: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let s = Instant::now();
        once()?;
        t.push(s.elapsed());
    }
    t.sort_unstable();
    let med = t[t.len() / 2];
    let p90 = t[(t.len() * 9 / 10).min(t.len() - 1)];
    println!(
        "runs={} median_us={} p90_us={}",
        t.len(),
        med.as_micros(),
        p90.as_micros()
    );
    Ok(())
}

fn serve() -> nskit::Result<()> {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        let s = Instant::now();
        once()?;
        let ns = s.elapsed().as_nanos();
        if writeln!(out, "{ns}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}
