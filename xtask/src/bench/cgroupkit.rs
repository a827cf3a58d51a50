//! `cargo xtask bench cgroupkit`: the library (through its `bench_churn` example)
//! side by side with plain shell, libcgroup's tools and `cat`, in one run.
//!
//! Every cgroup lives under `xtask-bench-<pid>` on each hierarchy; a drop guard
//! removes that tree, and every process started is killed by its pid first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Parent, cgroup_mounts, median};
use crate::util;

/// Entry point of `cargo xtask bench cgroupkit`.
pub fn run(count: usize, churn_rounds: usize, rounds: usize) -> Result<()> {
    if count == 0 || churn_rounds == 0 || rounds == 0 {
        bail!("--count, --churn-rounds and --rounds must be at least 1");
    }
    let libcgroup = match util::apt_install(&["cgroup-tools"]) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("xtask: cgroup-tools unavailable, libcgroup is left out: {e:#}");
            false
        }
    };
    util::run(util::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "cgroupkit",
        "--example",
        "bench_churn",
    ]))?;
    let bin = util::release_bin("examples/bench_churn");
    let name = format!("xtask-bench-{}", std::process::id());
    let parent = make_parent(&name)?;
    let res = churn(&bin, &name, count, churn_rounds, libcgroup)
        .and_then(|()| stats(&bin, &name, count, rounds));
    drop(parent);
    super::report_cleanup(&name, &cgroup_mounts()?, "");
    res
}

/// Creates the benchmark parent on every cgroup mount (so that the tools create
/// only their own cgroups inside it), and on a v2 mount enables the controllers its
/// root offers for the children.
fn make_parent(name: &str) -> Result<Parent> {
    let mut parent = Parent { dirs: Vec::new() };
    for m in cgroup_mounts()? {
        let d = m.join(name);
        std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
        parent.dirs.push(d.clone());
        let sc = m.join("cgroup.subtree_control");
        if let Ok(enabled) = std::fs::read_to_string(&sc) {
            let want: Vec<String> = enabled
                .split_whitespace()
                .filter(|c| ["cpu", "memory", "pids"].contains(c))
                .map(|c| format!("+{c}"))
                .collect();
            if !want.is_empty() {
                let f = d.join("cgroup.subtree_control");
                std::fs::write(&f, want.join(" "))
                    .with_context(|| format!("write {}", f.display()))?;
            }
        }
    }
    Ok(parent)
}

/// `key v1 v2 ...` lines of the example's output.
fn parse_kv(out: &str) -> BTreeMap<String, Vec<String>> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            (k != "op").then(|| (k.to_owned(), it.map(str::to_owned).collect()))
        })
        .collect()
}

fn ns(kv: &BTreeMap<String, Vec<String>>, key: &str) -> Result<Vec<Duration>> {
    kv.get(key)
        .with_context(|| format!("bench_churn printed no {key}"))?
        .iter()
        .map(|v| Ok(Duration::from_nanos(v.parse()?)))
        .collect()
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(d)
}

/// (a) create + limit + delete `count` cgroups with each tool.
fn churn(bin: &Path, name: &str, count: usize, rounds: usize, libcgroup: bool) -> Result<()> {
    let lib = |prefix: &str| -> Result<String> {
        util::output(Command::new(bin).args([
            "churn",
            "--parent",
            name,
            "--count",
            &count.to_string(),
            "--prefix",
            prefix,
        ]))
    };
    // A first library run (a warm-up) tells the file operations to mirror.
    let first = lib("lib-")?;
    let kv = parse_kv(&first);
    let controllers = kv
        .get("controllers")
        .and_then(|v| v.first())
        .context("bench_churn printed no controllers")?
        .clone();
    let ops: Vec<(&str, &str)> = first
        .lines()
        .filter_map(|l| l.strip_prefix("op ")?.split_once(' '))
        .collect();
    let me = format!("/{name}/lib-0");
    // One mkdir and one rmdir process per cgroup, each with all of its directories
    // (in the library's order), as a shell script would be written.
    let (mut mkdirs, mut writes, mut rmdirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut cgset = Vec::new();
    for (op, rest) in &ops {
        let (path, value) = match *op {
            "write" => rest.split_once(' ').context("op write without a value")?,
            _ => (*rest, ""),
        };
        let p = sh_quote(&path.replace(&me, &format!("/{name}/sh-")));
        let p = p.replacen("/sh-", "/sh-'\"$i\"'", 1);
        match *op {
            "mkdir" => mkdirs.push(p),
            "write" => {
                writes.push(format!("echo {} > {p}", sh_quote(value)));
                let file = Path::new(path).file_name().context("op write: no file")?;
                cgset.push("-r".to_owned());
                cgset.push(format!("{}={value}", file.to_string_lossy()));
            }
            "rmdir" => rmdirs.push(p),
            other => bail!("unknown op {other}"),
        }
    }
    let lp = |body: &[String]| {
        format!(
            "i=0; while [ $i -lt {count} ]; do {} || exit 1; i=$((i+1)); done",
            body.join(" && ")
        )
    };
    let mut create_sh = vec![format!("mkdir {}", mkdirs.join(" "))];
    create_sh.extend(writes);
    let create_sh = lp(&create_sh);
    let delete_sh = lp(&[format!("rmdir {}", rmdirs.join(" "))]);

    type Run<'a> = Box<dyn Fn() -> Result<(Duration, Duration)> + 'a>;
    let mut tools: Vec<(String, Run)> = vec![
        (
            "cgroupkit (Cgroup::create/apply/delete)".to_owned(),
            Box::new(|| {
                let kv = parse_kv(&lib("lib-")?);
                Ok((ns(&kv, "create_apply_ns")?[0], ns(&kv, "delete_ns")?[0]))
            }),
        ),
        (
            "plain shell (one sh: mkdir, echo, rmdir)".to_owned(),
            Box::new(|| {
                Ok((
                    timed(Command::new("sh").args(["-c", &create_sh]))?,
                    timed(Command::new("sh").args(["-c", &delete_sh]))?,
                ))
            }),
        ),
    ];
    if libcgroup {
        let cgset = &cgset;
        let controllers = &controllers;
        tools.push((
            "libcgroup (cgcreate/cgset/cgdelete)".to_owned(),
            Box::new(move || {
                let mut create = Duration::ZERO;
                for i in 0..count {
                    let cg = format!("{name}/cg-{i}");
                    create += timed(
                        Command::new("cgcreate").args(["-g", &format!("{controllers}:{cg}")]),
                    )?;
                    create += timed(Command::new("cgset").args(cgset).arg(&cg))?;
                }
                let mut delete = Duration::ZERO;
                for i in 0..count {
                    let g = format!("{controllers}:{name}/cg-{i}");
                    delete += timed(Command::new("cgdelete").args(["-g", &g]))?;
                }
                Ok((create, delete))
            }),
        ));
    }
    let mut samples: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); tools.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in tools.iter().enumerate() {
            samples[i].push(f()?);
        }
    }
    println!(
        "bench cgroupkit (a) churn: {count} cgroups created + limited ({}) + deleted, median of {rounds} runs",
        ops.iter()
            .filter(|(o, _)| *o == "write")
            .map(|(_, r)| {
                let (p, v) = r.split_once(' ').unwrap_or((r, ""));
                let f = Path::new(p).file_name().unwrap_or_default();
                format!("{}={v}", f.to_string_lossy())
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  per cgroup the library made {} dirs, {} writes, {} rmdirs; the shell does the same (one mkdir and one rmdir process per cgroup)",
        ops.iter().filter(|(o, _)| *o == "mkdir").count(),
        ops.iter().filter(|(o, _)| *o == "write").count(),
        ops.iter().filter(|(o, _)| *o == "rmdir").count(),
    );
    println!(
        "{:<44} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "tool", "create+limit", "delete", "total", "cgroups/s", "vs lib"
    );
    let total = |s: &[(Duration, Duration)]| {
        let mut t: Vec<Duration> = s.iter().map(|(a, b)| *a + *b).collect();
        median(&mut t)
    };
    let lib_total = total(&samples[0]);
    for (i, (n, _)) in tools.iter().enumerate() {
        let mut c: Vec<Duration> = samples[i].iter().map(|x| x.0).collect();
        let mut d: Vec<Duration> = samples[i].iter().map(|x| x.1).collect();
        let t = total(&samples[i]);
        println!(
            "{:<44} {:>10.1}ms {:>10.1}ms {:>10.1}ms {:>12.0} {:>9.2}x",
            n,
            median(&mut c).as_secs_f64() * 1e3,
            median(&mut d).as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3,
            count as f64 / t.as_secs_f64(),
            t.as_secs_f64() / lib_total.as_secs_f64(),
        );
    }
    Ok(())
}

/// The mount points serving the cpu, cpuacct, memory and pids controllers
/// (deduplicated: one on v2, up to four on v1).
fn stat_mounts() -> Result<Vec<PathBuf>> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = ["cpu", "cpuacct", "memory", "pids"];
    let mut out: Vec<PathBuf> = Vec::new();
    for line in mi.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mp = PathBuf::from(pre.split(' ').nth(4).unwrap_or(""));
        let mut post = post.split(' ');
        let serves = match (post.next(), post.nth(1)) {
            (Some("cgroup"), Some(opts)) => opts.split(',').any(|o| want.contains(&o)),
            (Some("cgroup2"), _) => std::fs::read_to_string(mp.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| want.contains(&c)),
            _ => false,
        };
        if serves && !out.contains(&mp) {
            out.push(mp);
        }
    }
    Ok(out)
}

/// (b) typed stats of `count` populated cgroups vs raw reads of the same files.
fn stats(bin: &Path, name: &str, count: usize, rounds: usize) -> Result<()> {
    let mounts = stat_mounts()?;
    let mut sleepers = super::Procs(Vec::with_capacity(count));
    for i in 0..count {
        let child = super::sleeper()?;
        let pid = child.id().to_string();
        sleepers.0.push(child);
        for m in &mounts {
            let d = m.join(name).join(format!("s{i}"));
            std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
            let procs = d.join("cgroup.procs");
            std::fs::write(&procs, &pid).with_context(|| format!("write {}", procs.display()))?;
        }
    }
    let args = |mode: &str| {
        let mut c = Command::new(bin);
        c.args([mode, "--parent", name, "--count", &count.to_string()]);
        c
    };
    let files: Vec<String> = util::output(&mut args("files"))?
        .lines()
        .map(str::to_owned)
        .collect();
    // One `cat` for all files, unless the argument list would be too long for exec.
    let mut chunks: Vec<Vec<&str>> = vec![Vec::new()];
    let mut bytes = 0;
    for f in &files {
        if bytes + f.len() + 9 > 1_500_000 {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += f.len() + 9;
        if let Some(c) = chunks.last_mut() {
            c.push(f);
        }
    }
    let cat = || -> Result<Duration> {
        let mut d = Duration::ZERO;
        for c in &chunks {
            d += timed(Command::new("cat").args(c))?;
        }
        Ok(d)
    };
    cat()?; // warm-up
    let kv = parse_kv(&util::output(
        args("stats").args(["--rounds", &rounds.to_string()]),
    )?);
    let mut cat_ns = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        cat_ns.push(cat()?);
    }
    drop(sleepers);

    let ctl = ["cpu", "memory", "pids"];
    let mut rows: Vec<(String, [Duration; 3], Duration)> = Vec::new();
    for (label, key) in [
        ("cgroupkit typed (cpu_stat+memory_stat+pids_stat)", "typed"),
        ("raw in-process, std::fs::read", "raw_std"),
        ("raw in-process, open+read(2)+close", "raw_min"),
    ] {
        let per: Vec<Vec<Duration>> = ctl
            .iter()
            .map(|c| ns(&kv, &format!("{key}_{c}_ns")))
            .collect::<Result<_>>()?;
        let mut tot: Vec<Duration> = (0..rounds)
            .map(|r| per.iter().map(|v| v[r]).sum())
            .collect();
        let mut meds = [Duration::ZERO; 3];
        for (i, mut v) in per.into_iter().enumerate() {
            meds[i] = median(&mut v);
        }
        rows.push((label.to_owned(), meds, median(&mut tot)));
    }
    let cat_med = median(&mut cat_ns);
    println!(
        "bench cgroupkit (b) stats: {count} populated cgroups, {} files, median of {rounds} rounds",
        files.len()
    );
    println!(
        "{:<52} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "reader", "cpu", "memory", "pids", "total", "typed/x"
    );
    let typed = rows[0].2;
    for (label, m, t) in &rows {
        println!(
            "{:<52} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>8.2}ms {:>8.2}x",
            label,
            m[0].as_secs_f64() * 1e3,
            m[1].as_secs_f64() * 1e3,
            m[2].as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3,
            typed.as_secs_f64() / t.as_secs_f64()
        );
    }
    println!(
        "{:<52} {:>9} {:>9} {:>9} {:>8.2}ms {:>8.2}x",
        format!(
            "cat of the same files ({} process{})",
            chunks.len(),
            if chunks.len() == 1 { "" } else { "es" }
        ),
        "-",
        "-",
        "-",
        cat_med.as_secs_f64() * 1e3,
        typed.as_secs_f64() / cat_med.as_secs_f64()
    );
    for (floor, t) in [("cat", cat_med), ("raw open+read(2)+close", rows[2].2)] {
        let r = typed.as_secs_f64() / t.as_secs_f64();
        println!(
            "target typed <= 1.5x {floor}: {:.2}x, {}",
            r,
            if r <= 1.5 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}
