//! The library side of `cargo xtask bench cgroupkit`: cgroup churn and stats reads
//! through cgroupkit, printing machine-readable timings (`key value...` lines) for
//! xtask to compare against plain shell, libcgroup and `cat`.
//!
//! ```text
//! bench_churn churn --parent P --count N [--prefix lib-]
//!     create + limit (cpu 0.2, memory 64M, pids 100: what the host serves) P/<prefix><i>
//!     for every i, then delete them all. Prints the timings, then the file operations
//!     the library did for the first cgroup (`op mkdir|write|rmdir ...`), so that the
//!     other tools can be made to do exactly the same.
//! bench_churn files --parent P --count N
//!     the files a typed stats read of P/s<i> opens (cpu_stat + memory_stat + pids_stat)
//! bench_churn stats --parent P --count N --rounds R
//!     R rounds of: typed stats of P/s0..P/s<N-1>; the same files read raw with
//!     std::fs::read; and read raw with one open + read(2) into a fixed buffer + close.
//! ```
//!
//! Run as root; the cgroups under P must exist for `files`/`stats` (xtask makes them).
#![allow(clippy::print_stdout)] // a benchmark binary reports to xtask on stdout

use std::error::Error;
use std::hint::black_box;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroupkit::{
    Cgroup, CgroupPath, Controller, Cpu, CpuQuota, Hierarchy, Limit, Memory, Pids, Resources,
    Version,
};

type Res<T> = Result<T, Box<dyn Error>>;

struct Opts {
    parent: String,
    count: usize,
    rounds: usize,
    prefix: String,
}

fn opts(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        parent: String::new(),
        count: 1000,
        rounds: 20,
        prefix: "lib-".to_owned(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--parent" => o.parent = v.clone(),
            "--count" => o.count = v.parse()?,
            "--rounds" => o.rounds = v.parse()?,
            "--prefix" => o.prefix = v.clone(),
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    if o.parent.is_empty() {
        return Err("--parent is required".into());
    }
    Ok(o)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = args
        .split_first()
        .ok_or("usage: bench_churn churn|files|stats --parent P [--count N] [--rounds R]")?;
    let o = opts(rest)?;
    let h = Hierarchy::detect()?;
    match mode.as_str() {
        "churn" => churn(&h, &o),
        "files" => {
            for f in stat_files(&open_all(&h, &o)?)? {
                println!("{}", f.display());
            }
            Ok(())
        }
        "stats" => stats(&h, &o),
        m => Err(format!("unknown mode {m}").into()),
    }
}

/// cpu quota 0.2, memory max 64M, pids max 100: the ones this host serves.
fn resources(h: &Hierarchy) -> Res<Resources> {
    let mut r = Resources::default();
    if h.mount_for(Controller::Cpu).is_some() {
        r.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(0.2, 100_000)?));
    }
    if h.mount_for(Controller::Memory).is_some() {
        r.memory = Some(Memory::with_max(Limit::Bytes(64 << 20)));
    }
    if h.mount_for(Controller::Pids).is_some() {
        r.pids = Some(Pids::with_max(100)?);
    }
    Ok(r)
}

fn churn(h: &Hierarchy, o: &Opts) -> Res<()> {
    let r = resources(h)?;
    let controllers = r.controllers();
    let paths: Vec<CgroupPath> = (0..o.count)
        .map(|i| CgroupPath::new(&format!("{}/{}{i}", o.parent, o.prefix)))
        .collect::<Result<_, _>>()?;
    let mut plan = Vec::new();
    let mut made = Vec::with_capacity(o.count);
    let t = Instant::now();
    for p in &paths {
        let cg = Cgroup::create(h, p, &controllers)?;
        let written = cg.apply(&r)?;
        if plan.is_empty() {
            plan.extend(
                cg.created()
                    .iter()
                    .map(|d| format!("op mkdir {}", d.display())),
            );
            plan.extend(
                written
                    .iter()
                    .map(|w| format!("op write {} {}", w.path.display(), w.value)),
            );
            plan.extend(
                cg.dirs()
                    .iter()
                    .rev()
                    .map(|d| format!("op rmdir {}", d.path.display())),
            );
        }
        made.push(cg);
    }
    let create = t.elapsed();
    let t = Instant::now();
    for cg in made {
        cg.delete()?;
    }
    let delete = t.elapsed();
    println!("controllers {}", names(&controllers));
    println!("create_apply_ns {}", create.as_nanos());
    println!("delete_ns {}", delete.as_nanos());
    println!("total_ns {}", (create + delete).as_nanos());
    for l in plan {
        println!("{l}");
    }
    Ok(())
}

fn names(c: &[Controller]) -> String {
    c.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn open_all(h: &Hierarchy, o: &Opts) -> Res<Vec<Cgroup>> {
    let controllers = [Controller::Cpu, Controller::Memory, Controller::Pids];
    (0..o.count)
        .map(|i| {
            let p = CgroupPath::new(&format!("{}/s{i}", o.parent))?;
            Ok(Cgroup::open(h, &p, &controllers)?)
        })
        .collect()
}

/// The files that `cpu_stat` + `memory_stat` + `pids_stat` read for each cgroup,
/// grouped by controller (cpu, memory, pids). Kept in step with the library by hand;
/// `strace -e trace=openat` on a `stats` run shows the same list.
fn files_of(cg: &Cgroup) -> Res<[Vec<PathBuf>; 3]> {
    use cgroupkit::{cpu, memory, pids};
    let mut out: [Vec<PathBuf>; 3] = Default::default();
    let cpu_dir = cg.dir_for(Controller::Cpu)?;
    out[0].push(cpu_dir.file(cpu::CPU_STAT));
    if cpu_dir.version == Version::V1
        && let Some(m) = cg.hierarchy().mount_for(Controller::Cpuacct)
    {
        let acct = m.mount_point.join(cg.path().as_str());
        if acct.is_dir() {
            for f in [
                cpu::CPUACCT_USAGE,
                cpu::CPUACCT_USAGE_USER,
                cpu::CPUACCT_USAGE_SYS,
            ] {
                out[0].push(acct.join(f));
            }
        }
    }
    let m = cg.dir_for(Controller::Memory)?;
    let mem: &[&str] = match m.version {
        Version::V2 => &[
            memory::MEMORY_STAT,
            memory::MEMORY_CURRENT,
            memory::MEMORY_PEAK,
            memory::MEMORY_EVENTS,
        ],
        Version::V1 => &[
            memory::MEMORY_STAT,
            memory::USAGE_IN_BYTES,
            memory::MAX_USAGE_IN_BYTES,
            memory::OOM_CONTROL,
            memory::FAILCNT,
        ],
    };
    out[1].extend(mem.iter().map(|f| m.file(f)).filter(|p| p.exists()));
    let p = cg.dir_for(Controller::Pids)?;
    out[2].extend(
        [pids::PIDS_CURRENT, pids::PIDS_PEAK, pids::PIDS_EVENTS]
            .iter()
            .map(|f| p.file(f))
            .filter(|p| p.exists()),
    );
    Ok(out)
}

fn stat_files(cgs: &[Cgroup]) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    for cg in cgs {
        out.extend(files_of(cg)?.into_iter().flatten());
    }
    Ok(out)
}

/// Reads a file with one open, read(2) into a fixed buffer until EOF, close: what
/// any reader must at least do.
fn read_min(p: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    // std opens with O_CLOEXEC, as the library does.
    let mut f = std::fs::File::open(p)?;
    let mut total = 0;
    loop {
        match f.read(buf)? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

fn stats(h: &Hierarchy, o: &Opts) -> Res<()> {
    let cgs = open_all(h, o)?;
    let groups: Vec<[Vec<PathBuf>; 3]> = cgs.iter().map(files_of).collect::<Res<_>>()?;
    let n_files: usize = groups.iter().flatten().map(Vec::len).sum();
    // Per round and controller: typed, raw std::fs::read, raw minimal.
    let mut typed = vec![[Duration::ZERO; 3]; o.rounds];
    let mut raw_std = vec![[Duration::ZERO; 3]; o.rounds];
    let mut raw_min = vec![[Duration::ZERO; 3]; o.rounds];
    let mut buf = vec![0u8; 64 << 10];
    // One warm-up round of each, then alternate which kind goes first.
    for round in 0..=o.rounds {
        for step in 0..3 {
            let kind = (step + round) % 3;
            for ctl in 0..3 {
                let t = Instant::now();
                match kind {
                    0 => {
                        for cg in &cgs {
                            match ctl {
                                0 => drop(black_box(cg.cpu_stat()?)),
                                1 => drop(black_box(cg.memory_stat()?)),
                                _ => drop(black_box(cg.pids_stat()?)),
                            }
                        }
                    }
                    1 => {
                        for g in &groups {
                            for f in &g[ctl] {
                                black_box(std::fs::read(f)?.len());
                            }
                        }
                    }
                    _ => {
                        for g in &groups {
                            for f in &g[ctl] {
                                black_box(read_min(f, &mut buf)?);
                            }
                        }
                    }
                }
                let d = t.elapsed();
                if round > 0 {
                    let slot = match kind {
                        0 => &mut typed,
                        1 => &mut raw_std,
                        _ => &mut raw_min,
                    };
                    slot[round - 1][ctl] = d;
                }
            }
        }
    }
    println!("cgroups {}", cgs.len());
    println!("files {n_files}");
    for (name, v) in [
        ("typed", &typed),
        ("raw_std", &raw_std),
        ("raw_min", &raw_min),
    ] {
        for (ctl, cname) in ["cpu", "memory", "pids"].iter().enumerate() {
            let ns: Vec<String> = v.iter().map(|r| r[ctl].as_nanos().to_string()).collect();
            println!("{name}_{cname}_ns {}", ns.join(" "));
        }
    }
    Ok(())
}
