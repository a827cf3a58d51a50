//! `cargo xtask demo`: the seed talk's cfs_quota example, for real.
//!
//! Starts a busy loop, caps it with `cgctl limit --cpu 0.2 --pid PID` (a quota of
//! 20000 us per 100000 us period), then shows its measured CPU share second by second
//! and the cgroup's throttling counters, then scrapes cgroup_exporter (started on a
//! loopback port) once and prints the throttling series it serves for the cgroup (CFS
//! counters, and the eBPF duration histogram when the probe is on). Then the same cap
//! on a container from a local image ([`container`]). Everything it made is stopped
//! (by pid) and removed at the end.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util;

mod container;

/// Options of `cargo xtask demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many seconds to watch the capped process.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// CPUs to allow the busy process.
    #[arg(long, default_value = "0.2")]
    cpu: String,
    /// Build the eBPF throttle probe first (installs nightly rust-src, LLVM 22 dev
    /// files and bpf-linker once; ~3 minutes), so the scrape shows its histograms.
    #[arg(long)]
    ebpf: bool,
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

/// user+system CPU seconds of `pid` (`/proc/PID/stat`); the container step uses it too.
fn cpu_seconds(pid: impl std::fmt::Display) -> Result<f64> {
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
    // What this run installs, before it does (each only where missing).
    println!("== cargo xtask demo: what it needs");
    println!(
        "   the Rust standard library for {} (rustup, where missing)",
        util::HOST_TARGET
    );
    println!("   busybox-static (apt, where missing) for the container's image");
    util::apt_install(&["busybox-static"])?;
    let probe = util::root().join(crate::ebpf::OBJECT);
    if args.ebpf {
        println!("   the eBPF throttle probe (nightly rust-src, LLVM 22 dev files, bpf-linker)");
        crate::ebpf::build()?;
    } else if !probe.is_file() {
        println!(
            "   (not the eBPF probe: for throttle histograms in the scrape, run `cargo xtask \
             demo --ebpf` or `cargo xtask build-ebpf` once, ~3 min)"
        );
    }
    // A first build takes minutes: cargo's own progress shows it is working.
    println!(
        "\n== cargo build --release -p cgctl -p exporter -p sandbox (a first build takes a \
         few minutes; quick afterwards)"
    );
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "cgctl",
        "-p",
        "cgroup-exporter",
        "-p",
        "sandbox-cli",
    ]))?;
    capped_process(&args)?;
    container::run(&util::release_bin("sandbox"), &args.cpu, args.seconds)
}

/// A busy loop capped with `cgctl limit`, watched, scraped from the exporter.
fn capped_process(args: &Args) -> Result<()> {
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

    let parent = cgroup.split('/').next().unwrap_or(&cgroup).to_owned();
    println!("\n== cgroup_exporter --listen 127.0.0.1:0 --cgroup-root {parent}");
    let (exporter, addr) = start_exporter(&parent)?;

    println!("\n== its CPU share, measured from /proc/{pid}/stat");
    for s in 1..=args.seconds {
        println!("   second {s}: {:5.1}% of one CPU", share(1.0)? * 100.0);
    }

    println!("\n== one scrape of http://{addr}/metrics: the throttling series of {cgroup}");
    let text = scrape(&addr)?;
    for line in throttling_lines(&text, &format!("/{cgroup}")) {
        println!("   {line}");
    }
    drop(exporter);

    println!("\n== cgctl stat {cgroup}");
    util::run(Command::new(&cgctl).args(["stat", &cgroup]))
}

/// The exporter the demo started: SIGTERM by pid on drop (SIGKILL if it lingers).
struct Exporter(Child);
impl Drop for Exporter {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..250 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts cgroup_exporter on a free loopback port, watching `root`; its first stdout
/// line names the address. Its stderr (whether the eBPF probe is on) goes to ours.
fn start_exporter(root: &str) -> Result<(Exporter, String)> {
    let mut child = Command::new(util::release_bin("cgroup_exporter"))
        .args(["--listen", "127.0.0.1:0", "--cgroup-root", root])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start cgroup_exporter")?;
    let out = child.stdout.take();
    let exporter = Exporter(child);
    let mut line = String::new();
    if let Some(out) = out {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    }
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .with_context(|| format!("cgroup_exporter did not print its address: {line:?}"))?
        .to_owned();
    Ok((exporter, addr))
}

/// `GET /metrics` over HTTP/1.0: the body.
fn scrape(addr: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (_, body) = raw.split_once("\r\n\r\n").context("not an HTTP response")?;
    Ok(body.to_owned())
}

/// The cgroup's CFS throttling series and the probe's: events, and the histogram
/// buckets where the count grows (plus +Inf, sum and count).
fn throttling_lines<'t>(text: &'t str, id: &str) -> Vec<&'t str> {
    let label = format!("id=\"{id}\"");
    let mut out = Vec::new();
    let mut prev: Option<&str> = None;
    for l in text.lines().filter(|l| l.contains(&label)) {
        let name = l.split('{').next().unwrap_or("");
        if name.starts_with("container_cpu_cfs_") || name == "cgroup_cpu_throttle_events_total" {
            out.push(l);
        } else if name == "cgroup_cpu_throttle_duration_seconds_bucket" {
            let v = l.rsplit(' ').next();
            if v != prev || l.contains("+Inf") {
                out.push(l);
            }
            prev = v;
        } else if name.starts_with("cgroup_cpu_throttle_duration_seconds_") {
            out.push(l);
        }
    }
    out
}
