//! `cargo xtask bench ...`: side-by-side benchmarks, in one run, against the tool a
//! user would otherwise pick. Medians and ratios are printed; nothing is asserted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util;

mod nskit;

mod cgroupkit;
mod exporter;
mod image;
mod probes;
mod sandbox;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to measure.
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// create cgroup + cpu limit + move a process + delete: cgctl vs libcgroup's
    /// cgcreate/cgset/cgclassify/cgdelete vs plain shell (mkdir, echo, rmdir).
    Cgctl {
        /// Runs of each tool (interleaved, so drift hits all alike).
        #[arg(long, default_value_t = 300)]
        runs: usize,
    },
    /// The cgroupkit library against plain shell, libcgroup and `cat`: (a) churn of
    /// `--count` cgroups created + limited (cpu 0.2, memory 64M, pids 100) + deleted;
    /// (b) typed stats (cpu + memory + pids) of `--count` populated cgroups against
    /// raw reads of the same files (`cat`, and in-process).
    Cgroupkit {
        /// Cgroups per churn run and populated cgroups for the stats read.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Churn runs of each tool (interleaved).
        #[arg(long, default_value_t = 3)]
        churn_rounds: usize,
        /// Rounds of each stats reader.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// `true` in new pid+mount+uts+ipc+net namespaces: nskit's spawn_true example vs
    /// util-linux `unshare --fork --pid --mount --uts --ipc --net true`.
    Nskit {
        /// Runs of each tool (interleaved, so drift hits all alike).
        #[arg(long, default_value_t = 300)]
        runs: usize,
    },
    /// Cost of the throttle probe: pipe ping-pong between two processes (context
    /// switches) without and with the probe attached; slowdown and ns per probe hit.
    Probes {
        /// Blocks, each a run without and a run with the probe, back to back in one
        /// process (paired, so drift and other load hit both halves alike; a block
        /// varies by about ±5% here, so it takes many for a median within ~1%).
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Round trips per run (two context switches each).
        #[arg(long, default_value_t = 20_000)]
        rounds: u64,
    },
    /// cgroup_exporter vs cAdvisor (Debian 11's package) vs `cat` of the same files, on
    /// `--count` cgroups each holding a process: scrape latency, size, RSS, CPU per
    /// scrape, wrk throughput at 4 connections, new cgroups on the next scrape.
    Exporter {
        /// Cgroups, each capped at 0.2 CPU and holding a `sleep`.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Timed scrapes of each server (and `cat` rounds).
        #[arg(long, default_value_t = 100)]
        scrapes: usize,
        /// Seconds of wrk load on each server.
        #[arg(long, default_value_t = 5)]
        wrk_secs: u64,
    },
    /// `ctr run --rm` and `podman run --rm` of /bin/true under private clients, with
    /// runc and with sandbox as the runtime (the body is the ignored test
    /// sandbox/cli/tests/bench_clients.rs, which uses the clients' harness).
    Clients {
        /// Runs of each client with each runtime (interleaved).
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// The seed's two-container hello-pod from file to running, and its removal:
    /// `sandbox pod run --detach` / `pod rm` vs `podman kube play` / `pod rm` with runc
    /// (the body is the ignored test sandbox/cli/tests/bench_pod.rs).
    Pod {
        /// Runs of each (interleaved).
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// A full container cycle of /bin/true (pid, mount, uts, ipc, net namespaces and a
    /// cgroup, busybox rootfs): sandbox vs runc and crun (and youki if installed);
    /// medians, peak RSS of each runtime's process tree, ratios.
    Sandbox {
        /// Cycles of each runtime (interleaved).
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// Pull of a ~100 MB image from docker-registry on loopback: `sandbox image pull`
    /// vs `podman pull` vs `skopeo copy` to an OCI layout, cold and with its base layer
    /// present, against its new layer alone; unpack throughput vs `tar -xzf`.
    Image {
        /// Runs of each measurement (interleaved).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Image size (MiB of files, 70% base layer, 30% app layer).
        #[arg(long, default_value_t = 100)]
        size_mb: usize,
    },
}

/// Entry point.
pub fn run(args: Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("benchmarks create cgroups: run them as root");
    }
    match args.what {
        What::Cgctl { runs } => bench_cgctl(runs),
        What::Nskit { runs } => nskit::run(runs),
        What::Probes { runs, rounds } => probes::run(runs, rounds),
        What::Exporter {
            count,
            scrapes,
            wrk_secs,
        } => exporter::run(count, scrapes, wrk_secs),
        What::Cgroupkit {
            count,
            churn_rounds,
            rounds,
        } => cgroupkit::run(count, churn_rounds, rounds),
        What::Sandbox { runs } => sandbox::run(runs),
        What::Image { runs, size_mb } => image::run(runs, size_mb),
        What::Pod { runs } => {
            sandbox_cli_bench("bench_pod", runs, &["podman", "runc", "catatonit"])
        }
        What::Clients { runs } => {
            sandbox_cli_bench("bench_clients", runs, &["podman", "containerd", "runc"])
        }
    }
}

/// The v1 or v2 directory that serves the cpu controller, from /proc/self/mountinfo.
fn cpu_mount() -> Result<(PathBuf, bool)> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut v2 = None;
    for line in mi.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mp = pre.split(' ').nth(4).unwrap_or("");
        let mut post = post.split(' ');
        match (post.next(), post.nth(1)) {
            (Some("cgroup"), Some(opts)) if opts.split(',').any(|o| o == "cpu") => {
                return Ok((PathBuf::from(mp), false));
            }
            (Some("cgroup2"), _) => {
                let ctl = std::fs::read_to_string(Path::new(mp).join("cgroup.controllers"))
                    .unwrap_or_default();
                if ctl.split_whitespace().any(|c| c == "cpu") {
                    v2 = Some(PathBuf::from(mp));
                }
            }
            _ => {}
        }
    }
    v2.map(|p| (p, true))
        .context("no cgroup hierarchy serves the cpu controller")
}

/// Every cgroup and cgroup2 mount point.
fn cgroup_mounts() -> Result<Vec<PathBuf>> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mi
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fs = post.split(' ').next()?;
            let mp = pre.split(' ').nth(4)?;
            (fs == "cgroup" || fs == "cgroup2").then(|| PathBuf::from(mp))
        })
        .collect())
}

/// Processes a benchmark started; each SIGKILLed by its own pid and reaped on drop.
pub(crate) struct Procs(pub(crate) Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// `sleep 3600`, a quiet process to put into cgroups.
pub(crate) fn sleeper() -> Result<Child> {
    Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start sleep")
}

/// Removes the benchmark's parent cgroup (and every cgroup under it) from every
/// hierarchy on drop. Processes put inside must be ended first.
struct Parent {
    dirs: Vec<PathBuf>,
}
impl Drop for Parent {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            remove_tree(d);
        }
    }
}

/// rmdir of a cgroup directory tree, deepest first, retrying EBUSY for a moment
/// (a cgroup stays busy until its last exited process is reaped). Best effort.
fn remove_tree(d: &Path) {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            // cgroupfs holds only files and directories; never follow a symlink.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let start = Instant::now();
    while let Err(e) = std::fs::remove_dir(d) {
        if e.raw_os_error() != Some(libc::EBUSY) || start.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Says whether a benchmark's parent cgroup `name` is gone from every cgroup mount.
fn report_cleanup(name: &str, mounts: &[PathBuf], also: &str) {
    let left: Vec<PathBuf> = mounts
        .iter()
        .map(|m| m.join(name))
        .filter(|d| d.exists())
        .collect();
    if left.is_empty() {
        println!("cleanup: no {name} left on any hierarchy{also}");
    } else {
        eprintln!("xtask: could not remove {left:?}");
    }
}

fn time(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let d = t.elapsed();
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(d)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn p90(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn bench_cgctl(runs: usize) -> Result<()> {
    util::apt_install(&["cgroup-tools"])?;
    util::run(util::cargo().args(["build", "--release", "--quiet", "-p", "cgctl"]))?;
    let cgctl = util::release_bin("cgctl");
    let (mount, v2) = cpu_mount()?;
    let name = format!("xtask-bench-{}", std::process::id());
    let top = mount.join(&name);
    std::fs::create_dir(&top).with_context(|| format!("mkdir {}", top.display()))?;
    // cgctl also joins the cpuacct hierarchy and, on hybrid hosts, the unified one:
    // remove the benchmark's parent from every cgroup mount.
    let mut dirs: Vec<PathBuf> = cgroup_mounts()?
        .into_iter()
        .map(|m| m.join(&name))
        .collect();
    dirs.retain(|d| *d != top);
    dirs.insert(0, top.clone());
    let parent = Parent { dirs };
    let sleeper = Procs(vec![sleeper()?]);
    let pid = sleeper.0[0].id().to_string();
    // The process starts in the benchmark parent, so every tool moves it between the
    // parent and the child, and each sequence ends where it began.
    std::fs::write(top.join("cgroup.procs"), &pid)?;

    let child = format!("{name}/x");
    let dir = top.join("x");
    let limit = if v2 {
        format!("echo '20000 100000' > {d}/cpu.max", d = dir.display())
    } else {
        format!(
            "echo 100000 > {d}/cpu.cfs_period_us && echo 20000 > {d}/cpu.cfs_quota_us",
            d = dir.display()
        )
    };
    let shell = format!(
        "mkdir {d} && {limit} && echo {pid} > {d}/cgroup.procs && echo {pid} > {t}/cgroup.procs && rmdir {d}",
        d = dir.display(),
        t = top.display()
    );
    let quota_var = if v2 {
        "cpu.max=20000 100000"
    } else {
        "cpu.cfs_quota_us=20000"
    };

    type Step<'a> = Box<dyn Fn() -> Result<Duration> + 'a>;
    let tools: Vec<(&str, Step)> = vec![
        (
            "cgctl",
            Box::new(|| {
                Ok(time(
                    Command::new(&cgctl)
                        .args(["limit", "--cpu", "0.2", "--pid", &pid, "--cgroup", &child]),
                )? + time(Command::new(&cgctl).args(["rm", "--drain", &child]))?)
            }),
        ),
        (
            "libcgroup (cgcreate/cgset/cgclassify/cgdelete)",
            Box::new(|| {
                let g = format!("cpu:{child}");
                Ok(time(Command::new("cgcreate").args(["-g", &g]))?
                    + time(Command::new("cgset").args([
                        "-r",
                        "cpu.cfs_period_us=100000",
                        "-r",
                        quota_var,
                        &child,
                    ]))?
                    + time(Command::new("cgclassify").args(["-g", &g, &pid]))?
                    + time(Command::new("cgdelete").args(["-g", &g]))?)
            }),
        ),
        (
            "plain shell (sh: mkdir, echo, rmdir)",
            Box::new(|| time(Command::new("sh").args(["-c", &shell]))),
        ),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); tools.len()];
    // Warm-up: page cache, dynamic loader.
    for (_, f) in &tools {
        f()?;
    }
    for _ in 0..runs {
        for (i, (_, f)) in tools.iter().enumerate() {
            samples[i].push(f()?);
        }
    }
    let medians: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    println!(
        "bench cgctl: create + cpu limit 0.2 + move pid + delete, {runs} runs each, {} cgroups",
        if v2 { "v2" } else { "v1 (hybrid host)" }
    );
    println!(
        "{:<48} {:>10} {:>10} {:>12}",
        "tool", "median", "p90", "vs cgctl"
    );
    for (i, (n, _)) in tools.iter().enumerate() {
        println!(
            "{:<48} {:>8.2}ms {:>8.2}ms {:>11.2}x",
            n,
            medians[i].as_secs_f64() * 1e3,
            p90(&mut samples[i]).as_secs_f64() * 1e3,
            medians[i].as_secs_f64() / medians[0].as_secs_f64()
        );
    }
    drop(sleeper);
    drop(parent);
    Ok(())
}

/// Runs the ignored test `test` of sandbox-cli (a benchmark body) against the release
/// `sandbox`, `runs` cycles, after installing the clients it compares with.
fn sandbox_cli_bench(test: &str, runs: usize, packages: &[&str]) -> Result<()> {
    util::apt_install(packages)?;
    util::run(util::cargo().args(["build", "--release", "--quiet", "-p", "sandbox-cli"]))?;
    // podman leaves empty `libpod_parent` trees; ours to remove unless there before.
    let podman_cgroups_before = crate::test::libpod_parents();
    let r = util::run(
        util::cargo()
            .args([
                "test",
                "-p",
                "sandbox-cli",
                "--test",
                test,
                "--",
                "--ignored",
                "--nocapture",
            ])
            .env("SANDBOX_BENCH_RUNS", runs.to_string())
            .env("SANDBOX_BENCH_BINARY", util::release_bin("sandbox")),
    );
    if podman_cgroups_before.is_empty() {
        for d in crate::test::libpod_parents() {
            crate::test::remove_empty_tree(&d);
        }
    }
    r
}
