//! Context-switch-heavy workload for `cargo xtask bench probes`: two processes pass one
//! byte back and forth over pipes. Prints one line:
//! `rounds=N ns=T hits=H switches=S [runs=R run_ns=P]`.
//!
//! `pingpong [--rounds N] [--probe] [--stats]`:
//! - `--probe` attaches the throttle probe (strategy the kernel accepts) for the run;
//!   `hits` is the number of program runs it counted meanwhile (system-wide).
//! - `--stats` (with `--probe`) also enables the kernel's run statistics for the run
//!   (BPF_ENABLE_STATS) and prints the main program's run count and run time from
//!   the kernel (`runs`, `run_ns`): the program body alone, without the tracepoint's
//!   dispatch. Timing each run costs two clock reads, so `ns` is not comparable then.
//!
//! `switches` counts the two processes' own context switches (getrusage).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)] // a bench tool

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

fn switches(who: i32) -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid `who` constant and a valid pointer.
    unsafe { libc::getrusage(who, &mut ru) };
    (ru.ru_nvcsw + ru.ru_nivcsw) as u64
}

/// (run count, run time ns) of the main program: sched_switch, or unthrottle_cfs_rq's.
fn prog_stats(p: &probes::Probe) -> (u64, u64) {
    p.program_stats()
        .unwrap()
        .first()
        .map_or((0, 0), |s| (s.run_count, s.run_time.as_nanos() as u64))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let mut b = [0u8; 1];
        let (mut i, mut o) = (std::io::stdin().lock(), std::io::stdout().lock());
        while i.read_exact(&mut b).is_ok() {
            if o.write_all(&b).and_then(|()| o.flush()).is_err() {
                break;
            }
        }
        return;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let rounds: u64 = value("--rounds").map_or(200_000, |s| s.parse().expect("--rounds N"));
    let stats = args
        .iter()
        .any(|a| a == "--stats")
        .then(|| probes::enable_run_stats().expect("enable BPF run statistics"));
    let probe = args.iter().any(|a| a == "--probe").then(|| {
        probes::Probe::builder()
            .without_paths()
            .load()
            .expect("load the probe")
    });
    let mut child = Command::new(&args[0])
        .arg("--child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut to = child.stdin.take().unwrap();
    let mut from = child.stdout.take().unwrap();
    let mut b = [7u8; 1];
    // Warm up, then measure.
    for _ in 0..1000 {
        to.write_all(&b).unwrap();
        from.read_exact(&mut b).unwrap();
    }
    let h0 = probe.as_ref().map_or(0, |p| p.hits().unwrap());
    let r0 = probe.as_ref().map_or((0, 0), prog_stats);
    let s0 = switches(libc::RUSAGE_SELF);
    let t = Instant::now();
    for _ in 0..rounds {
        to.write_all(&b).unwrap();
        from.read_exact(&mut b).unwrap();
    }
    let ns = t.elapsed().as_nanos();
    let h1 = probe.as_ref().map_or(0, |p| p.hits().unwrap());
    let r1 = probe.as_ref().map_or((0, 0), prog_stats);
    let own = switches(libc::RUSAGE_SELF) - s0;
    drop(to);
    child.wait().unwrap();
    // The child's switches mirror the parent's (one per round each way).
    print!(
        "rounds={rounds} ns={ns} hits={} switches={}",
        h1 - h0,
        own * 2
    );
    if stats.is_some() {
        print!(" runs={} run_ns={}", r1.0 - r0.0, r1.1 - r0.1);
    }
    println!();
}
