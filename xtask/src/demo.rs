//! `cargo xtask demo`: the seed talk's cfs_quota example, for real.
//!
//! Starts a busy loop, caps it with `cgctl limit --cpu 0.2 --pid PID` (a quota of
//! 20000 us per 100000 us period), then shows its measured CPU share second by second
//! and the cgroup's throttling counters. Everything it made is removed at the end.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util;

/// Options of `cargo xtask demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many seconds to watch the capped process.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// CPUs to allow the busy process.
    #[arg(long, default_value = "0.2")]
    cpu: String,
}

/// A process the demo started; killed by pid on drop.
struct Busy(Child);
impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ends the demo's process and cgroup even when a step fails.
struct Cleanup {
    busy: Option<Busy>,
    cgctl: std::path::PathBuf,
    cgroup: String,
}
impl Drop for Cleanup {
    fn drop(&mut self) {
        // End the process first so the cgroup is empty; then remove leaf and parent.
        drop(self.busy.take());
        for _ in 0..50 {
            let ok = Command::new(&self.cgctl)
                .args(["rm", &self.cgroup])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some((parent, _)) = self.cgroup.rsplit_once('/') {
            let _ = Command::new(&self.cgctl)
                .args(["rm", parent])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// user+system CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Entry point.
pub fn run(args: Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates a cgroup: run it as root");
    }
    util::run(util::cargo().args(["build", "--release", "--quiet", "-p", "cgctl"]))?;
    let cgctl = util::release_bin("cgctl");

    println!("== a busy loop: sh -c 'while :; do :; done'");
    let busy = Busy(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .context("start the busy loop")?,
    );
    let pid = busy.0.id();
    let cgroup = format!("cgctl-demo-{}/pid-{pid}", std::process::id());
    let _cleanup = Cleanup {
        busy: Some(busy),
        cgctl: cgctl.clone(),
        cgroup: cgroup.clone(),
    };
    let share = |secs: f64| -> Result<f64> {
        let c0 = cpu_seconds(pid)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        Ok((cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64())
    };
    println!(
        "   pid {pid} uses {:.0}% of a CPU uncapped",
        share(1.0)? * 100.0
    );

    println!(
        "\n== cgctl limit --cpu {} --pid {pid} --cgroup {cgroup}",
        args.cpu
    );
    util::run(Command::new(&cgctl).args([
        "limit",
        "--cpu",
        &args.cpu,
        "--pid",
        &pid.to_string(),
        "--cgroup",
        &cgroup,
    ]))?;

    println!("\n== its CPU share, measured from /proc/{pid}/stat");
    for s in 1..=args.seconds {
        println!("   second {s}: {:5.1}% of one CPU", share(1.0)? * 100.0);
    }

    println!("\n== cgctl stat {cgroup}");
    util::run(Command::new(&cgctl).args(["stat", &cgroup]))
}
