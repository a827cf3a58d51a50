//! `cargo xtask bench sandbox`: a full container cycle of `/bin/true` on the same
//! busybox rootfs, sandbox vs runc vs crun (and youki when installed).
//!
//! Isolation is runc's default spec: pid, mount, uts, ipc and net namespaces and a
//! cgroup (absolute `linux.cgroupsPath`, see PLATFORM.md). crun 1.8 refuses hybrid
//! hosts, so the whole benchmark runs in a private mount namespace of this process
//! with /sys/fs/cgroup/unified unmounted: every runtime sees the same (v1) layout.
//! Each cycle is one command (`runc run`, `crun run`, `sandbox run`, each doing
//! create, start, wait and delete), timed from here; peak RSS is wait4's ru_maxrss of
//! that command, which covers its reaped descendants (the container process included).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util;

/// Makes the command of one cycle (the argument numbers the container).
type MakeCmd = Box<dyn Fn(usize) -> Command>;

struct Sample {
    time: Duration,
    maxrss_kb: i64,
}

fn cycle(cmd: &mut Command) -> Result<Sample> {
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills; pid is our unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; status and ru are writable.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let time = t.elapsed();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (wait status {status:#x})");
    }
    Ok(Sample {
        time,
        maxrss_kb: ru.ru_maxrss,
    })
}

/// A private mount namespace for this process with the cgroup2 mount of a hybrid
/// host removed (crun refuses hybrid layouts).
fn private_v1_view() -> Result<()> {
    // SAFETY: unshare/mount/umount2 with NUL-terminated literals; xtask is
    // single-threaded here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!("making / private: {}", std::io::Error::last_os_error());
        }
        if Path::new("/sys/fs/cgroup/unified").exists() {
            libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
        }
    }
    Ok(())
}

fn bundle(dir: &Path, tag: &str) -> Result<PathBuf> {
    let b = dir.join(format!("bundle-{tag}"));
    std::fs::create_dir_all(b.join("rootfs/bin"))?;
    std::fs::copy("/bin/busybox", b.join("rootfs/bin/busybox"))?;
    for a in ["true", "sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", b.join("rootfs/bin").join(a))?;
    }
    let st = Command::new("runc").arg("spec").current_dir(&b).status()?;
    if !st.success() {
        bail!("runc spec failed in {}", b.display());
    }
    let p = b.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p)?)?;
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = serde_json::json!(["/bin/true"]);
    v["linux"]["cgroupsPath"] = format!("/sandbox-bench-{}-{tag}", std::process::id()).into();
    // runc's default spec asks for ambient capabilities that are not inheritable,
    // which the kernel refuses (runc skips them, sandbox refuses the spec): the same
    // bundle for everyone, without them.
    if let Some(c) = v["process"]["capabilities"].as_object_mut() {
        c.remove("ambient");
    }
    std::fs::write(&p, serde_json::to_vec_pretty(&v)?)?;
    Ok(b)
}

/// Entry point of `cargo xtask bench sandbox`.
pub fn run(runs: usize) -> Result<()> {
    util::apt_install(&["runc", "crun", "busybox-static"])?;
    util::run(util::cargo().args(["build", "--release", "--quiet", "-p", "sandbox-cli"]))?;
    let sandbox = util::release_bin("sandbox");
    let dir = std::env::temp_dir().join(format!("sandbox-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let res = bench(runs.max(3), &dir, &sandbox);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn bench(runs: usize, dir: &Path, sandbox: &Path) -> Result<()> {
    private_v1_view()?;
    let youki = ["/usr/local/bin/youki", "/usr/bin/youki"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let state = dir.join("sandbox-state");
    let sb_rootfs = bundle(dir, "sandbox")?.join("rootfs");
    let mut tools: Vec<(String, MakeCmd)> = Vec::new();
    {
        let (st, rf, bin) = (state.clone(), sb_rootfs.clone(), sandbox.to_path_buf());
        tools.push((
            "sandbox run --rootfs (overlay + init layer + upper)".into(),
            Box::new(move |i| {
                let mut c = Command::new(&bin);
                c.arg("--root")
                    .arg(&st)
                    .args(["run", "--name", &format!("b{i}"), "--rootfs"]);
                c.arg(&rf).args(["--", "/bin/true"]);
                c
            }),
        ));
    }
    {
        let (st, b, bin) = (
            state.clone(),
            bundle(dir, "sandbox-oci")?,
            sandbox.to_path_buf(),
        );
        tools.push((
            "sandbox run --bundle (OCI, runc spec bundle)".into(),
            Box::new(move |i| {
                let mut c = Command::new(&bin);
                c.arg("--root").arg(&st).args(["run", "--bundle"]).arg(&b);
                c.arg(format!("bench-oci-{}-{i}", std::process::id()));
                c
            }),
        ));
    }
    for rt in ["runc", "crun"] {
        let b = bundle(dir, rt)?;
        tools.push((
            format!("{rt} run (runc spec bundle)"),
            Box::new(move |i| {
                let mut c = Command::new(rt);
                c.args(["run", "--bundle"])
                    .arg(&b)
                    .arg(format!("bench-{rt}-{}-{i}", std::process::id()));
                c
            }),
        ));
    }
    if let Some(y) = youki {
        let b = bundle(dir, "youki")?;
        tools.push((
            "youki run (runc spec bundle)".into(),
            Box::new(move |i| {
                let mut c = Command::new(&y);
                c.args(["run", "--bundle"])
                    .arg(&b)
                    .arg(format!("bench-youki-{}-{i}", std::process::id()));
                c
            }),
        ));
    }
    for (n, mk) in &tools {
        cycle(&mut mk(usize::MAX)).with_context(|| format!("warm-up of {n}"))?;
    }
    let mut samples: Vec<Vec<Sample>> = tools.iter().map(|_| Vec::with_capacity(runs)).collect();
    for i in 0..runs {
        for (t, (_, mk)) in tools.iter().enumerate() {
            let mut c = mk(i);
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                c.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                })
            };
            samples[t].push(cycle(&mut c)?);
        }
    }
    println!(
        "bench sandbox: /bin/true with pid+mount+uts+ipc+net namespaces and a cgroup, busybox rootfs, {runs} cycles each (interleaved), in a private mount namespace without the cgroup2 mount"
    );
    println!(
        "{:<54} {:>10} {:>10} {:>13} {:>10} {:>10}",
        "runtime", "median", "p90", "peak RSS", "time/sb", "RSS/sb"
    );
    let stat = |s: &mut Vec<Sample>| {
        s.sort_by_key(|x| x.time);
        let med = s[s.len() / 2].time;
        let p90 = s[(s.len() * 9 / 10).min(s.len() - 1)].time;
        let mut r: Vec<i64> = s.iter().map(|x| x.maxrss_kb).collect();
        r.sort_unstable();
        (med, p90, r[r.len() / 2])
    };
    let stats: Vec<_> = samples.iter_mut().map(stat).collect();
    let (sb_t, _, sb_r) = stats[0];
    // (the OCI row, second, is `sandbox run --bundle`; ratios are to the first row)
    for ((n, _), (med, p90, rss)) in tools.iter().zip(&stats) {
        println!(
            "{:<54} {:>8.2}ms {:>8.2}ms {:>10.1} MB {:>9.2}x {:>9.2}x",
            n,
            med.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            *rss as f64 / 1024.0,
            med.as_secs_f64() / sb_t.as_secs_f64(),
            *rss as f64 / sb_r as f64
        );
    }
    println!(
        "(peak RSS: median over cycles of wait4 ru_maxrss of the runtime command and its reaped descendants)"
    );
    charged(dir, sandbox, &state)
}

/// What each runtime charges to the container's memory cgroup: `create` + `start` of
/// a busybox `sleep`, then the cgroup's peak (v1 memory.max_usage_in_bytes, v2
/// memory.peak), then kill and delete. The runtime's own work between clone and
/// exec runs in the container's cgroup and counts there.
fn charged(dir: &Path, sandbox: &Path, state: &Path) -> Result<()> {
    let rounds = 5;
    println!(
        "memory charged to the container's cgroup by create+start (peak, median of {rounds}):"
    );
    let mut base = None;
    for rt in ["sandbox", "runc", "crun"] {
        let b = bundle(dir, &format!("mem-{rt}"))?;
        let p = b.join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p)?)?;
        v["process"]["args"] = serde_json::json!(["sleep", "100"]);
        std::fs::write(&p, serde_json::to_vec_pretty(&v)?)?;
        let cg = v["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let mut peaks = Vec::new();
        for i in 0..rounds {
            let id = format!("bench-mem-{rt}-{}-{i}", std::process::id());
            let cmd = |args: &[&str]| {
                let mut c = if rt == "sandbox" {
                    let mut c = Command::new(sandbox);
                    c.arg("--root").arg(state);
                    c
                } else {
                    Command::new(rt)
                };
                c.args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                c
            };
            let ok = cmd(&["create", "--bundle", &b.to_string_lossy(), &id])
                .status()?
                .success()
                && cmd(&["start", &id]).status()?.success();
            std::thread::sleep(Duration::from_millis(100));
            let v1 = PathBuf::from("/sys/fs/cgroup/memory")
                .join(&cg)
                .join("memory.max_usage_in_bytes");
            let v2 = PathBuf::from("/sys/fs/cgroup")
                .join(&cg)
                .join("memory.peak");
            let peak = std::fs::read_to_string(&v1)
                .or_else(|_| std::fs::read_to_string(&v2))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok());
            let _ = cmd(&["kill", &id, "KILL"]).status();
            std::thread::sleep(Duration::from_millis(50));
            let _ = cmd(&["delete", "--force", &id]).status();
            match (ok, peak) {
                (true, Some(p)) => peaks.push(p),
                _ => bail!(
                    "{rt}: create/start of {id} failed or no memory peak in {}",
                    v1.display()
                ),
            }
        }
        peaks.sort_unstable();
        let med = peaks[peaks.len() / 2];
        let b0 = *base.get_or_insert(med);
        println!(
            "  {rt:<8} {:>8.2} MB  {:>6.2}x sandbox",
            med as f64 / (1 << 20) as f64,
            med as f64 / b0 as f64
        );
    }
    Ok(())
}
