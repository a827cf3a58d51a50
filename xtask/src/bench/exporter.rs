//! `cargo xtask bench exporter`: cgroup_exporter (with the BPF cgroup iterator, and
//! reading files with and without the throttle probe) against cAdvisor (Debian 11's
//! package, fetched as PLATFORM.md says) and the raw read floor (`cat` of the files
//! the exporter reads without the iterator), on the same `--count` cgroups each
//! holding a process, in one run: scrape latency (median, p99), response size, RSS, CPU per scrape, wrk
//! throughput at 4 connections, and whether a new cgroup is on the very next scrape.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Parent, cgroup_mounts, median};
use crate::util;

/// How long each server is watched with nobody scraping (its background CPU).
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Prometheus' usual scrape interval, for the cost of one interval: background CPU
/// over the interval plus one scrape.
const SCRAPE_INTERVAL_SECS: f64 = 15.0;

/// One row of the table.
#[derive(Default)]
struct Row {
    name: String,
    median: Option<Duration>,
    p99: Option<Duration>,
    bytes: Option<usize>,
    rss_kb: Option<(u64, u64)>,
    cpu_per_scrape: Option<Duration>,
    /// CPU the server burns between scrapes (background housekeeping), per second.
    idle_cpu: Option<Duration>,
    wrk_rps: Option<f64>,
    next_scrape: Option<bool>,
    note: String,
}

/// Entry point.
pub fn run(count: usize, scrapes: usize, wrk_secs: u64) -> Result<()> {
    if count == 0 || scrapes < 2 {
        bail!("--count must be at least 1 and --scrapes at least 2");
    }
    util::run(util::cargo().args(["build", "--release", "--quiet", "-p", "cgroup-exporter"]))?;
    let exporter = util::release_bin("cgroup_exporter");
    let wrk = match util::apt_install(&["wrk"]) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("xtask: wrk unavailable, no throughput column: {e:#}");
            false
        }
    };

    let name = format!("xtask-bench-exporter-{}", std::process::id());
    let mounts = cgroup_mounts()?;
    let mut parent = Parent { dirs: Vec::new() };
    for m in &mounts {
        let d = m.join(&name);
        std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
        parent.dirs.push(d.clone());
        enable_v2_controllers(m, &m.join(&name))?;
        inherit_cpuset(&d)?;
    }
    let v2_only = mounts.len() == 1;
    let (cpu_mount, cpu_v2) = super::cpu_mount()?;
    eprintln!("xtask: creating {count} cgroups, each capped at 0.2 CPU and holding a sleep");
    let mut sleepers = super::Procs(Vec::with_capacity(count));
    for i in 0..count {
        let child = super::sleeper()?;
        let pid = child.id().to_string();
        sleepers.0.push(child);
        for m in &mounts {
            let d = m.join(&name).join(format!("c{i}"));
            std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
            inherit_cpuset(&d)?;
            if *m == cpu_mount {
                if cpu_v2 {
                    std::fs::write(d.join("cpu.max"), "20000 100000")?;
                } else {
                    std::fs::write(d.join("cpu.cfs_quota_us"), "20000")?;
                }
            }
            // The name=systemd and v2 trees may refuse a move that is pointless there.
            let _ = std::fs::write(d.join("cgroup.procs"), &pid);
        }
    }
    let files = read_set(&mounts, &name, count);
    let layout = if v2_only { "cgroup v2" } else { "hybrid/v1" };

    let mut rows = Vec::new();
    // One server at a time: cAdvisor's background housekeeping must not tax the
    // exporter's figures (and the reverse).
    let res = (|| -> Result<()> {
        rows.push(bench_server(
            "cgroup_exporter",
            Command::new(&exporter).args(["--listen", "127.0.0.1:0"]),
            None,
            &name,
            count,
            &mounts,
            scrapes,
            wrk.then_some(wrk_secs),
        )?);
        rows.push(bench_server(
            "cgroup_exporter, cAdvisor's families",
            Command::new(&exporter).args([
                "--listen",
                "127.0.0.1:0",
                "--disable-metrics",
                "process,pressure",
            ]),
            None,
            &name,
            count,
            &mounts,
            scrapes,
            wrk.then_some(wrk_secs),
        )?);
        rows.push(bench_server(
            "cgroup_exporter --no-ebpf-iterator",
            Command::new(&exporter).args(["--listen", "127.0.0.1:0", "--no-ebpf-iterator"]),
            None,
            &name,
            count,
            &mounts,
            scrapes,
            None,
        )?);
        rows.push(bench_server(
            "cgroup_exporter --no-ebpf",
            Command::new(&exporter).args(["--listen", "127.0.0.1:0", "--no-ebpf"]),
            None,
            &name,
            count,
            &mounts,
            scrapes,
            None,
        )?);
        rows.push(raw_floor(&files, scrapes)?);
        match cadvisor() {
            Ok(bin) => {
                let port = free_port()?;
                // Its glog files go to the cache, not /tmp (newest run kept there).
                let logs = util::cache_dir().join("cadvisor-logs");
                let _ = std::fs::remove_dir_all(&logs);
                std::fs::create_dir_all(&logs)?;
                let mut cmd = Command::new(&bin);
                cmd.args([
                    "--listen_ip=127.0.0.1",
                    &format!("--port={port}"),
                    "--docker=unix:///nonexistent/docker.sock",
                    "--logtostderr=false",
                    &format!("--log_dir={}", logs.display()),
                ]);
                match bench_server(
                    "cAdvisor 0.38 (Debian 11)",
                    &mut cmd,
                    Some(port),
                    &name,
                    count,
                    &mounts,
                    scrapes,
                    wrk.then_some(wrk_secs),
                ) {
                    Ok(r) => rows.push(r),
                    Err(e) => rows.push(Row {
                        name: "cAdvisor".into(),
                        note: format!("did not run: {e:#}"),
                        ..Row::default()
                    }),
                }
            }
            Err(e) => rows.push(Row {
                name: "cAdvisor".into(),
                note: format!("could not be fetched: {e:#}"),
                ..Row::default()
            }),
        }
        Ok(())
    })();
    drop(sleepers);
    drop(parent);
    res?;
    print_table(&rows, count, files.len(), scrapes, layout);
    super::report_cleanup(&name, &mounts, "; servers stopped");
    Ok(())
}

/// A new v1 cpuset cgroup starts with empty cpuset.cpus and cpuset.mems: no process
/// can join it and cAdvisor drops every such cgroup from its output ("cpuset.cpus
/// found to be empty"). Runtimes copy the parent's sets, and so does the benchmark.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let file = dir.join(f);
        let Ok(cur) = std::fs::read_to_string(&file) else {
            return Ok(()); // not a v1 cpuset hierarchy
        };
        if !cur.trim().is_empty() {
            continue;
        }
        let parent = dir.parent().context("cgroup dir has no parent")?.join(f);
        let set = std::fs::read_to_string(&parent)
            .with_context(|| format!("read {}", parent.display()))?;
        std::fs::write(&file, set.trim()).with_context(|| format!("write {}", file.display()))?;
    }
    Ok(())
}

/// On a v2 mount, lets the benchmark's children use the controllers the root offers.
fn enable_v2_controllers(mount: &Path, dir: &Path) -> Result<()> {
    if let Ok(enabled) = std::fs::read_to_string(mount.join("cgroup.subtree_control")) {
        let want: Vec<String> = enabled
            .split_whitespace()
            .filter(|c| ["cpu", "memory", "pids", "io"].contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if !want.is_empty() {
            let f = dir.join("cgroup.subtree_control");
            std::fs::write(&f, want.join(" ")).with_context(|| format!("write {}", f.display()))?;
        }
    }
    Ok(())
}

/// The files the exporter reads for the benchmark's cgroups (those that exist).
fn read_set(mounts: &[PathBuf], name: &str, count: usize) -> Vec<PathBuf> {
    const CANDIDATES: &[&str] = &[
        "cgroup.procs",
        "cpu.stat",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.shares",
        "cpu.max",
        "cpu.weight",
        "cpuacct.usage",
        "cpuacct.usage_user",
        "cpuacct.usage_sys",
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "memory.oom_control",
        "memory.current",
        "memory.max",
        "memory.events",
        "memory.stat",
        "cpu.pressure",
        "memory.pressure",
        "io.pressure",
    ];
    let mut files = Vec::new();
    for m in mounts {
        let opts = mount_role(m);
        for i in 0..count {
            let d = m.join(name).join(format!("c{i}"));
            for f in CANDIDATES {
                let wanted = match opts {
                    Role::Cpu => f.starts_with("cpu.") && !f.ends_with("pressure"),
                    Role::Cpuacct => f.starts_with("cpuacct."),
                    Role::Memory => f.starts_with("memory.") && !f.ends_with("pressure"),
                    Role::Pids => *f == "cgroup.procs",
                    Role::V2 => true,
                    Role::Other => false,
                };
                if wanted && d.join(f).exists() {
                    files.push(d.join(f));
                }
            }
        }
    }
    files
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Cpu,
    Cpuacct,
    Memory,
    Pids,
    V2,
    Other,
}

/// What the exporter reads on this mount, from /proc/self/mountinfo.
fn mount_role(mount: &Path) -> Role {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mi.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if Path::new(pre.split(' ').nth(4).unwrap_or("")) != mount {
            continue;
        }
        let mut post = post.split(' ');
        return match (post.next(), post.nth(1)) {
            (Some("cgroup2"), _) => Role::V2,
            (Some("cgroup"), Some(o)) => {
                let has = |c: &str| o.split(',').any(|x| x == c);
                if has("cpu") {
                    Role::Cpu
                } else if has("cpuacct") {
                    Role::Cpuacct
                } else if has("memory") {
                    Role::Memory
                } else if has("pids") {
                    Role::Pids
                } else {
                    Role::Other
                }
            }
            _ => Role::Other,
        };
    }
    Role::Other
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /metrics` over HTTP/1.0 (no chunked encoding, the server closes): the body.
fn scrape(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").context("not an HTTP response")?;
    if !head.contains(" 200 ") {
        bail!("{}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// utime + stime of `pid`.
fn cpu_time(pid: u32) -> Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = text.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).context("stat")?.parse::<u64>()? + f.get(12).context("stat")?.parse::<u64>()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// VmRSS and VmHWM of `pid`, KiB.
fn rss_kb(pid: u32) -> Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let get = |k: &str| -> Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k} in /proc/{pid}/status"))
    };
    Ok((get("VmRSS:")?, get("VmHWM:")?))
}

/// Starts a server, waits until a scrape shows the benchmark's last cgroup, then
/// measures it; killed by pid at the end.
// One call per server under test; the arguments are the benchmark's plain settings
// and a struct for them would only move the list.
#[allow(clippy::too_many_arguments)]
fn bench_server(
    label: &str,
    cmd: &mut Command,
    port: Option<u16>,
    name: &str,
    count: usize,
    mounts: &[PathBuf],
    scrapes: usize,
    wrk_secs: Option<u64>,
) -> Result<Row> {
    eprintln!("xtask: benchmarking {label}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id();
    let stdout = child.stdout.take();
    let server = super::Procs(vec![child]);
    let addr: SocketAddr = match port {
        Some(p) => SocketAddr::from(([127, 0, 0, 1], p)),
        None => {
            let mut line = String::new();
            let mut out = stdout.context("no stdout")?;
            let mut b = [0u8; 1];
            while !line.ends_with('\n') && out.read(&mut b)? == 1 {
                line.push(b[0] as char);
            }
            line.split("http://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .with_context(|| format!("no address in {line:?}"))?
                .parse()?
        }
    };
    // Ready when a scrape lists every benchmark cgroup, or (cAdvisor discovers them
    // asynchronously, slowly under load) when the count stops growing for 20 s.
    let prefix = format!("id=\"/{name}/c");
    let listed = |b: &str| {
        b.lines()
            .filter(|l| l.starts_with("container_cpu_cfs_periods_total{") && l.contains(&prefix))
            .count()
    };
    let start = Instant::now();
    let (mut seen, mut since) = (0, Instant::now());
    loop {
        let n = scrape(addr).map(|b| listed(&b)).unwrap_or(0);
        if n > seen {
            (seen, since) = (n, Instant::now());
        }
        if seen >= count || (seen > 0 && since.elapsed() > Duration::from_secs(20)) {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("{label} listed {seen} of the {count} cgroups after 600 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let ready = start.elapsed();
    // Its CPU with nobody scraping: cAdvisor polls every cgroup in the background.
    let idle0 = cpu_time(pid)?;
    std::thread::sleep(IDLE_WINDOW);
    let idle_cpu = cpu_time(pid)?
        .saturating_sub(idle0)
        .div_f64(IDLE_WINDOW.as_secs_f64());
    // Warm-up, then N timed scrapes with the server's CPU time around them.
    let mut size = scrape(addr)?.len();
    let cpu0 = cpu_time(pid)?;
    let mut lat = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let t = Instant::now();
        size = scrape(addr)?.len();
        lat.push(t.elapsed());
    }
    let cpu = cpu_time(pid)?.saturating_sub(cpu0) / scrapes as u32;
    let rss = rss_kb(pid)?;

    // A cgroup made now: is it on the very next scrape?
    let fresh = format!("fresh{}", std::process::id());
    for m in mounts {
        std::fs::create_dir(m.join(name).join(&fresh))?;
    }
    let next = scrape(addr)?.contains(&format!("id=\"/{name}/{fresh}\""));
    for m in mounts {
        let _ = std::fs::remove_dir(m.join(name).join(&fresh));
    }

    let wrk_rps = match wrk_secs {
        Some(secs) => Some(wrk(addr, secs)?),
        None => None,
    };
    let rss_after = rss_kb(pid)?;
    drop(server);
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let p99 = sorted[((sorted.len() * 99).div_ceil(100)).saturating_sub(1)];
    Ok(Row {
        name: label.into(),
        median: Some(median(&mut lat)),
        p99: Some(p99),
        bytes: Some(size),
        rss_kb: Some((rss.0, rss_after.1.max(rss.1))),
        cpu_per_scrape: Some(cpu),
        idle_cpu: Some(idle_cpu),
        wrk_rps,
        next_scrape: Some(next),
        note: format!(
            "listed {seen} of {count} cgroups, after {:.1} s",
            ready.as_secs_f64()
        ),
    })
}

/// `wrk -t2 -c4 -dNs`: requests per second.
fn wrk(addr: SocketAddr, secs: u64) -> Result<f64> {
    let out = util::output(Command::new("wrk").args([
        "-t2",
        "-c4",
        &format!("-d{secs}s"),
        "--timeout",
        "30s",
        &format!("http://{addr}/metrics"),
    ]))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{out}"))
}

/// `cat` of the same files: the floor of any exporter that reads them.
fn raw_floor(files: &[PathBuf], rounds: usize) -> Result<Row> {
    let mut chunks: Vec<Vec<&Path>> = vec![Vec::new()];
    let mut bytes = 0;
    for f in files {
        let n = f.as_os_str().len() + 9;
        if bytes + n > 1_500_000 {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += n;
        if let Some(c) = chunks.last_mut() {
            c.push(f);
        }
    }
    let mut size = 0;
    let mut run = || -> Result<Duration> {
        let t = Instant::now();
        size = 0;
        for c in &chunks {
            let out = Command::new("cat")
                .args(c)
                .stderr(Stdio::null())
                .output()
                .context("cat")?;
            size += out.stdout.len();
        }
        Ok(t.elapsed())
    };
    run()?;
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        lat.push(run()?);
    }
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let p99 = sorted[((sorted.len() * 99).div_ceil(100)).saturating_sub(1)];
    Ok(Row {
        name: format!("raw floor: cat of {} files", files.len()),
        median: Some(median(&mut lat)),
        p99: Some(p99),
        bytes: Some(size),
        note: format!("{} cat process(es) a round", chunks.len()),
        ..Row::default()
    })
}

/// cAdvisor from Debian 11 (bullseye), as PLATFORM.md says: a private apt state on
/// this machine's Debian mirror, `apt-get download cadvisor`, `dpkg -x` into the cache.
fn cadvisor() -> Result<PathBuf> {
    let dir = util::cache_dir().join("cadvisor");
    let bin = dir.join("root/usr/bin/cadvisor");
    if bin.is_file() {
        return Ok(bin);
    }
    let mirror = debian_mirror()?;
    let apt = dir.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    let list = apt.join("sources.list");
    std::fs::write(&list, format!("deb {mirror} bullseye main\n"))?;
    let opts = |c: &mut Command| {
        c.arg("-o")
            .arg(format!("Dir::Etc::sourcelist={}", list.display()))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()))
            .args(["-o", "APT::Get::List-Cleanup=0", "-qq"]);
    };
    let mut update = Command::new("apt-get");
    opts(&mut update);
    util::output(update.arg("update")).context("apt-get update (bullseye, private state)")?;
    let mut dl = Command::new("apt-get");
    opts(&mut dl);
    util::output(
        dl.args(["download", "cadvisor"])
            .current_dir(apt.join("debs")),
    )
    .context("apt-get download cadvisor")?;
    let deb = std::fs::read_dir(apt.join("debs"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("no cadvisor .deb downloaded")?;
    util::output(
        Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")),
    )?;
    if !bin.is_file() {
        bail!("{} has no usr/bin/cadvisor", deb.display());
    }
    Ok(bin)
}

/// The Debian archive this machine's apt uses (not the security one).
fn debian_mirror() -> Result<String> {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    for t in &texts {
        for l in t.lines() {
            let l = l.trim();
            let url = if let Some(u) = l.strip_prefix("URIs:") {
                u.split_whitespace().next()
            } else if l.starts_with("deb ") {
                l.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(u) = url
                && u.contains("debian")
                && !u.contains("security")
            {
                return Ok(u.to_owned());
            }
        }
    }
    bail!("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/*")
}

fn print_table(rows: &[Row], count: usize, files: usize, scrapes: usize, layout: &str) {
    let ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2}ms", d.as_secs_f64() * 1e3));
    println!(
        "bench exporter: {count} cgroups ({layout}) each holding a sleep, capped at 0.2 CPU; \
         {scrapes} scrapes each, one server at a time; raw floor reads the same {files} files"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>16} {:>11} {:>10} {:>11} {:>10} {:>6}",
        "",
        "median",
        "p99",
        "size",
        "RSS / peak",
        "CPU/scrape",
        "idle CPU",
        "CPU/15s",
        "wrk -c4",
        "next"
    );
    for r in rows {
        if r.median.is_none() {
            println!("{:<34} {}", r.name, r.note);
            continue;
        }
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>16} {:>11} {:>10} {:>11} {:>10} {:>6}  {}",
            r.name,
            ms(r.median),
            ms(r.p99),
            r.bytes.map_or("-".into(), |b| format!("{}KB", b / 1024)),
            r.rss_kb.map_or("-".into(), |(a, b)| format!(
                "{:.1}/{:.1}MB",
                a as f64 / 1024.0,
                b as f64 / 1024.0
            )),
            ms(r.cpu_per_scrape),
            r.idle_cpu
                .map_or("-".into(), |c| format!("{:.1}%", c.as_secs_f64() * 100.0)),
            ms(interval_cost(r)),
            r.wrk_rps.map_or("-".into(), |x| format!("{x:.0}/s")),
            r.next_scrape.map_or("-", |b| if b { "yes" } else { "NO" }),
            r.note
        );
    }
    let by = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    let exp = &rows[0];
    let Some(e) = exp.median else {
        return;
    };
    let ratio = |other: Option<&Row>| {
        other.and_then(|r| r.median).map_or("-".into(), |m| {
            format!("{:.1}x", m.as_secs_f64() / e.as_secs_f64())
        })
    };
    println!(
        "exporter (BPF cgroup iterator) scrape median {:.2} ms, CPU {:.2} ms a scrape, peak RSS {:.1} MB \
         (target < 20 MB); raw floor / exporter {} (target >= 5x); exporter reading files / \
         exporter {}; cAdvisor / exporter {} (target >= 10x)",
        e.as_secs_f64() * 1e3,
        exp.cpu_per_scrape.map_or(0.0, |c| c.as_secs_f64() * 1e3),
        exp.rss_kb.map_or(0.0, |r| r.1 as f64 / 1024.0),
        ratio(by("raw floor")),
        ratio(by("cgroup_exporter --no-ebpf-iterator")),
        ratio(by("cAdvisor")),
    );
    if let Some(f) = by("cgroup_exporter, cAdvisor's families").filter(|r| r.median.is_some()) {
        let m = f.median.unwrap_or_default();
        let r = |o: Option<&Row>| {
            o.and_then(|r| r.median).map_or("-".into(), |x| {
                format!("{:.1}x", x.as_secs_f64() / m.as_secs_f64())
            })
        };
        println!(
            "exporter with cAdvisor 0.38's family set (--disable-metrics process,pressure: no \
             cgroup.procs, no PSI files) median {:.2} ms, CPU {:.2} ms a scrape; raw floor / it {}; \
             cAdvisor / it {}",
            m.as_secs_f64() * 1e3,
            f.cpu_per_scrape.map_or(0.0, |c| c.as_secs_f64() * 1e3),
            r(by("raw floor")),
            r(by("cAdvisor")),
        );
    }
    if let Some(c) = by("cAdvisor").filter(|r| r.median.is_some()) {
        println!(
            "cAdvisor vs exporter: throughput {}; CPU per {SCRAPE_INTERVAL_SECS} s scrape interval: {}",
            match (exp.wrk_rps, c.wrk_rps) {
                (Some(a), Some(b)) => format!("{:.1}x", a / b),
                _ => "-".into(),
            },
            match (interval_cost(c), interval_cost(exp)) {
                (Some(a), Some(b)) if !b.is_zero() =>
                    format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64()),
                _ => "-".into(),
            }
        );
    }
}

/// A server's CPU over one scrape interval: background CPU for the interval plus one
/// scrape.
fn interval_cost(r: &Row) -> Option<Duration> {
    Some(r.idle_cpu?.mul_f64(SCRAPE_INTERVAL_SECS) + r.cpu_per_scrape?)
}
