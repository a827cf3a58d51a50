//! The cgroup iterator against the kernel's own files: many populated cgroups, some
//! throttled (busy loops under a small cpu quota), some with memory limits; each
//! value the iterator returns is compared with the cgroup's file read just before
//! and just after the walk (counters within that window, the rest equal). Also:
//! cgroups created and removed during walks never break one.
//!
//! Host lane: hybrid v1 (cpu, cpuacct, memory, pids hierarchies, one link each).
//! VM lane: pure v2 (one link). Needs root, kernel BTF and the object of
//! `cargo xtask build-ebpf`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // tests

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cgroupkit::{Cgroup, CgroupPath, Controller, CpuStat, Hierarchy, Version};
use probes::iter::{CgroupIter, CgroupStats};

static SEQ: AtomicUsize = AtomicUsize::new(0);
/// One test at a time: they load CPUs and make many cgroups.
static SERIAL: Mutex<()> = Mutex::new(());

fn object() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap().join(probes::BUILD_OBJECT)
}

fn load() -> CgroupIter {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "iterator tests run as root");
    CgroupIter::from_file(object()).load().unwrap()
}

/// How many cgroups the big test makes: 1000, or $PROBES_ITER_CGROUPS.
fn count() -> usize {
    std::env::var("PROBES_ITER_CGROUPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

const CONTROLLERS: &[Controller] = &[Controller::Cpu, Controller::Memory, Controller::Pids];

/// A unique `probes-test-<pid>-<n>` parent with children `c0..`, their processes; all
/// killed (by pid) and removed on drop.
struct Tree {
    h: Hierarchy,
    name: String,
    parent: Option<Cgroup>,
    children: Vec<Cgroup>,
    procs: Vec<Child>,
}

impl Tree {
    fn new(children: usize) -> Tree {
        let h = Hierarchy::detect().unwrap();
        let name = format!(
            "probes-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let parent = Cgroup::create(&h, &CgroupPath::new(&name).unwrap(), CONTROLLERS).unwrap();
        let mut t = Tree {
            h,
            name,
            parent: Some(parent),
            children: Vec::new(),
            procs: Vec::new(),
        };
        for i in 0..children {
            t.add_child(&format!("c{i}"));
        }
        t
    }

    fn add_child(&mut self, name: &str) -> usize {
        let p = CgroupPath::new(&format!("{}/{name}", self.name)).unwrap();
        self.children
            .push(Cgroup::create(&self.h, &p, CONTROLLERS).unwrap());
        self.children.len() - 1
    }

    fn parent(&self) -> &Cgroup {
        self.parent.as_ref().unwrap()
    }

    /// Runs `argv` inside child `i` on every hierarchy of its controllers: the child
    /// moves itself before exec (writing 0 to v1 `tasks` / v2 `cgroup.procs`), which
    /// skips the RCU grace period that moving another process costs on v1.
    fn spawn_in(&mut self, i: usize, argv: &[&str]) {
        let files: Vec<CString> = self.children[i]
            .dirs()
            .iter()
            // The v2 directory too on a hybrid host (no controllers there): pressure
            // is accounted on the v2 hierarchy.
            .filter(|d| {
                d.version == Version::V2 || d.controllers.iter().any(|c| CONTROLLERS.contains(c))
            })
            .map(|d| {
                let f = match d.version {
                    Version::V1 => "tasks",
                    Version::V2 => "cgroup.procs",
                };
                CString::new(d.file(f).into_os_string().into_encoded_bytes()).unwrap()
            })
            .collect();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: between fork and exec only open/write/close on prepared C strings:
        // no allocation, no locks.
        unsafe {
            cmd.pre_exec(move || {
                for f in &files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    libc::close(fd);
                    if !ok {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        self.procs.push(cmd.spawn().unwrap());
    }

    fn dir(&self, i: usize, c: Controller) -> PathBuf {
        self.children[i].dir_for(c).unwrap().path.clone()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
        }
        for p in &mut self.procs {
            let _ = p.wait();
        }
        for c in self.children.drain(..).rev() {
            let _ = c.delete();
        }
        if let Some(p) = self.parent.take() {
            let dir = p.dirs().first().map(|d| d.path.clone());
            if let Err(e) = p.delete() {
                eprintln!("cannot remove test cgroup {dir:?}: {e}");
            }
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn num(p: &Path) -> u64 {
    read(p).trim().parse().unwrap()
}

/// The files' values of one cgroup on every hierarchy (one snapshot).
#[derive(Debug, Default)]
struct Files {
    stat: Option<CpuStat>,
    quota_us: Option<Option<u64>>,
    period_us: Option<u64>,
    shares: Option<u64>,
    weight: Option<u64>,
    usage_ns: Option<u64>,
    user_system_ns: Option<(u64, u64)>,
    mem_usage: Option<u64>,
    mem_limit: Option<Option<u64>>,
    oom_kill: Option<u64>,
    pids: Option<u64>,
    /// `total=` of cpu, memory and io pressure, `[some, full]`, from the v2 dir.
    psi: Option<[[u64; 2]; 3]>,
}

/// The pressure totals of the v2 directory `d`, as the iterator's are ordered.
fn psi_files(d: &Path) -> Option<[[u64; 2]; 3]> {
    use cgroupkit::psi::{Pressure, PsiResource};
    let mut out = [[0; 2]; 3];
    for (i, r) in [PsiResource::Cpu, PsiResource::Memory, PsiResource::Io]
        .into_iter()
        .enumerate()
    {
        let p = d.join(r.file());
        let text = std::fs::read_to_string(&p).ok()?;
        let v = Pressure::parse(&text, &p).unwrap();
        out[i] = [v.some.total_usec, v.full.map_or(0, |f| f.total_usec)];
    }
    Some(out)
}

fn files(dirs: &[(Controller, PathBuf, Version)]) -> Files {
    let mut f = Files::default();
    for (c, d, v) in dirs {
        match (c, v) {
            (Controller::Cpu, Version::V1) => {
                f.stat = Some(CpuStat::parse_v1(&read(&d.join("cpu.stat")), d).unwrap());
                let q: i64 = read(&d.join("cpu.cfs_quota_us")).trim().parse().unwrap();
                f.quota_us = Some(u64::try_from(q).ok());
                f.period_us = Some(num(&d.join("cpu.cfs_period_us")));
                f.shares = Some(num(&d.join("cpu.shares")));
            }
            (Controller::Cpu, Version::V2) => {
                f.stat = Some(CpuStat::parse_v2(&read(&d.join("cpu.stat")), d).unwrap());
                let max = read(&d.join("cpu.max"));
                let mut it = max.split_whitespace();
                let q = it.next().unwrap();
                f.quota_us = Some(q.parse().ok());
                f.period_us = Some(it.next().unwrap().parse().unwrap());
                f.weight = Some(num(&d.join("cpu.weight")));
            }
            (Controller::Cpuacct, _) => {
                f.usage_ns = Some(num(&d.join("cpuacct.usage")));
                let all = read(&d.join("cpuacct.usage_all"));
                let (mut u, mut s) = (0u64, 0u64);
                for l in all.lines().skip(1) {
                    let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
                    u += v[1];
                    s += v[2];
                }
                f.user_system_ns = Some((u, s));
            }
            (Controller::Memory, Version::V1) => {
                f.mem_usage = Some(num(&d.join("memory.usage_in_bytes")));
                let l = num(&d.join("memory.limit_in_bytes"));
                f.mem_limit = Some(Some(l));
                let oc = read(&d.join("memory.oom_control"));
                f.oom_kill = oc
                    .lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .map(|v| v.trim().parse().unwrap());
            }
            (Controller::Memory, Version::V2) => {
                f.mem_usage = Some(num(&d.join("memory.current")));
                let m = read(&d.join("memory.max"));
                f.mem_limit = Some(m.trim().parse().ok());
                let ev = read(&d.join("memory.events"));
                f.oom_kill = ev
                    .lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .map(|v| v.trim().parse().unwrap());
            }
            (Controller::Pids, _) => f.pids = Some(num(&d.join("pids.current"))),
            _ => {}
        }
    }
    f
}

/// [`files`], then the pressure files of the cgroup's v2 directory `v2`.
fn files_psi(dirs: &[(Controller, PathBuf, Version)], v2: Option<&Path>) -> Files {
    let mut f = files(dirs);
    f.psi = v2.and_then(psi_files);
    f
}

/// a <= x <= b.
fn within(what: &str, a: u64, x: u64, b: u64) {
    assert!(
        a <= x && x <= b,
        "{what}: {x} not within [{a}, {b}] of the files"
    );
}

/// Compares one cgroup's iterator values (merged over hierarchies) with the files
/// read before (`a`) and after (`b`) the walks.
fn compare(id: &str, it: &Merged, a: &Files, b: &Files, v1: bool) {
    let ctx = |f: &str| format!("{id} {f}");
    let (sa, sb) = (a.stat.as_ref().unwrap(), b.stat.as_ref().unwrap());
    let bw = it.bandwidth.unwrap_or_else(|| panic!("{id}: no bandwidth"));
    within(
        &ctx("nr_periods"),
        sa.nr_periods,
        bw.nr_periods,
        sb.nr_periods,
    );
    within(
        &ctx("nr_throttled"),
        sa.nr_throttled,
        bw.nr_throttled,
        sb.nr_throttled,
    );
    within(
        &ctx("throttled_usec"),
        sa.throttled_usec,
        bw.throttled_ns / 1000,
        sb.throttled_usec,
    );
    let (nb, bt) = bw.bursts.unwrap();
    within(
        &ctx("nr_bursts"),
        sa.nr_bursts.unwrap(),
        nb,
        sb.nr_bursts.unwrap(),
    );
    within(
        &ctx("burst_usec"),
        sa.burst_usec.unwrap(),
        bt / 1000,
        sb.burst_usec.unwrap(),
    );
    let lim = it
        .cpu_limits
        .unwrap_or_else(|| panic!("{id}: no cpu limits"));
    assert_eq!(
        lim.quota_ns.map(|q| q / 1000),
        a.quota_us.unwrap(),
        "{id} quota"
    );
    assert_eq!(lim.period_ns / 1000, a.period_us.unwrap(), "{id} period");
    if v1 {
        assert_eq!(lim.shares(), a.shares.unwrap(), "{id} shares");
        let u = it.cpu_usage.unwrap_or_else(|| panic!("{id}: no cpuacct"));
        within(
            &ctx("cpuacct.usage"),
            a.usage_ns.unwrap(),
            u.usage_ns,
            b.usage_ns.unwrap(),
        );
        let (ua, sa2) = a.user_system_ns.unwrap();
        let (ub, sb2) = b.user_system_ns.unwrap();
        within(&ctx("user"), ua, u.user_ns, ub);
        within(&ctx("system"), sa2, u.system_ns, sb2);
    } else {
        assert_eq!(lim.weight(), a.weight.unwrap(), "{id} weight");
    }
    let m = it.memory.unwrap_or_else(|| panic!("{id}: no memory"));
    let (ma, mb) = (a.mem_usage.unwrap(), b.mem_usage.unwrap());
    within(&ctx("memory usage"), ma.min(mb), m.usage_bytes, ma.max(mb));
    if v1 {
        assert_eq!(Some(m.limit_raw_bytes), a.mem_limit.unwrap(), "{id} limit");
    } else {
        assert_eq!(m.limit_bytes, a.mem_limit.unwrap(), "{id} limit");
    }
    assert_eq!(it.oom_kills, a.oom_kill, "{id} oom_kill");
    let (pa, pb) = (a.pids.unwrap(), b.pids.unwrap());
    within(
        &ctx("pids.current"),
        pa.min(pb),
        it.pids.unwrap(),
        pa.max(pb),
    );
    // Pressure: the totals a file read aggregated before the walk, at most what the
    // read after it aggregates.
    if let (Some(pa), Some(pb)) = (a.psi, b.psi) {
        let p = it
            .pressure
            .unwrap_or_else(|| panic!("{id}: pressure files but no pressure record"));
        for (i, got) in [p.cpu, p.memory, p.io].into_iter().enumerate() {
            for (j, what) in ["some", "full"].into_iter().enumerate() {
                within(
                    &ctx(&format!("pressure {i} {what}")),
                    pa[i][j],
                    got[j],
                    pb[i][j],
                );
            }
        }
    }
}

/// One cgroup's records of every hierarchy, merged by path.
#[derive(Debug, Default)]
struct Merged {
    bandwidth: Option<probes::iter::Bandwidth>,
    cpu_limits: Option<probes::iter::CpuLimits>,
    cpu_usage: Option<probes::iter::CpuUsage>,
    memory: Option<probes::iter::Memory>,
    oom_kills: Option<u64>,
    pids: Option<u64>,
    pressure: Option<probes::iter::PressureTotals>,
    seen: usize,
}

fn merge(into: &mut HashMap<String, Merged>, walk: Vec<CgroupStats>) {
    for s in walk {
        let m = into.entry(s.path.clone()).or_default();
        m.seen += 1;
        m.bandwidth = m.bandwidth.or(s.bandwidth);
        m.cpu_limits = m.cpu_limits.or(s.cpu_limits);
        m.cpu_usage = m.cpu_usage.or(s.cpu_usage);
        m.memory = m.memory.or(s.memory);
        m.oom_kills = m.oom_kills.or(s.oom_kills);
        m.pids = m.pids.or(s.pids);
        m.pressure = m.pressure.or(s.pressure);
    }
}

#[test]
fn iterator_equals_files_for_many_throttled_cgroups() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let it = load();
    let n = count();
    let t0 = Instant::now();
    let mut tree = Tree::new(n);
    let busy = 40.min(n);
    for i in 0..n {
        // Every cgroup capped; the busy ones get throttled every period.
        for d in tree.children[i].dirs().to_vec() {
            if !d.controllers.contains(&Controller::Cpu) {
                continue;
            }
            match d.version {
                Version::V1 => std::fs::write(d.file("cpu.cfs_quota_us"), "1000").unwrap(),
                Version::V2 => std::fs::write(d.file("cpu.max"), "1000 100000").unwrap(),
            }
        }
        if i % 3 == 0 {
            let d = tree.dir(i, Controller::Memory);
            let f = if d.join("memory.max").exists() {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            std::fs::write(d.join(f), format!("{}", (64 + i as u64) << 20)).unwrap();
        }
        if i % 7 == 0 {
            let d = tree.dir(i, Controller::Cpu);
            let (f, v) = if d.join("cpu.weight").exists() {
                ("cpu.weight", "37")
            } else {
                ("cpu.shares", "333")
            };
            std::fs::write(d.join(f), v).unwrap();
        }
        if i < busy {
            tree.spawn_in(i, &["sh", "-c", "while :; do :; done"]);
        } else {
            tree.spawn_in(i, &["sleep", "600"]);
        }
    }
    eprintln!("{n} cgroups with processes made in {:?}", t0.elapsed());
    // Let the busy ones be throttled a few periods.
    std::thread::sleep(Duration::from_millis(500));

    let h = &tree.h;
    // The hierarchies to link: one per controller's mount (v1), or the v2 tree once.
    let mut mounts: Vec<(PathBuf, Version)> = Vec::new();
    for c in [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Pids,
    ] {
        if let Some(m) = h.mount_for(c)
            && !mounts.iter().any(|(p, _)| *p == m.mount_point)
        {
            mounts.push((m.mount_point.clone(), m.version));
        }
    }
    let v1 = mounts.iter().all(|(_, v)| *v == Version::V1);
    // The v2 hierarchy, where pressure is accounted (a hybrid host's unified mount).
    if let Some(u) = h.unified()
        && !mounts.iter().any(|(p, _)| *p == u.mount_point)
    {
        mounts.push((u.mount_point.clone(), u.version));
    }
    let v2_dirs: Vec<Option<PathBuf>> = (0..n)
        .map(|i| {
            tree.children[i]
                .dirs()
                .iter()
                .find(|d| d.version == Version::V2)
                .map(|d| d.path.clone())
        })
        .collect();
    let psi_kernel = it.offsets().pressure();
    let per_child: Vec<Vec<(Controller, PathBuf, Version)>> = (0..n)
        .map(|i| {
            let mut v = Vec::new();
            for c in [
                Controller::Cpu,
                Controller::Cpuacct,
                Controller::Memory,
                Controller::Pids,
            ] {
                if let Ok(d) = tree.children[i].dir_for(c)
                    && (c != Controller::Cpuacct || d.version == Version::V1)
                {
                    v.push((c, d.path.clone(), d.version));
                }
            }
            v
        })
        .collect();
    let links: Vec<_> = mounts
        .iter()
        .map(|(mp, _)| it.link(mp.join(&tree.name)).unwrap())
        .collect();

    let with_psi = |i: usize| files_psi(&per_child[i], v2_dirs[i].as_deref());
    let before: Vec<Files> = (0..n).map(with_psi).collect();
    let t = Instant::now();
    let mut merged: HashMap<String, Merged> = HashMap::new();
    for l in &links {
        merge(&mut merged, it.walk(l).unwrap());
    }
    let walked = t.elapsed();
    let after: Vec<Files> = (0..n).map(with_psi).collect();
    // Where the files show pressure, the records carry it (CONFIG_PSI kernels).
    let shown = before.iter().filter(|f| f.psi.is_some()).count();
    eprintln!("pressure files in {shown} of {n} cgroups; kernel offsets: {psi_kernel}");
    assert!(
        shown == 0 || psi_kernel,
        "pressure files but no psi_group in the BTF"
    );
    eprintln!(
        "{} hierarchies walked in {walked:?} ({} paths)",
        links.len(),
        merged.len()
    );
    assert_eq!(merged.len(), n + 1, "the parent and every child");
    let throttled = before
        .iter()
        .take(busy)
        .filter(|f| f.stat.as_ref().unwrap().nr_throttled > 0)
        .count();
    assert!(
        throttled * 2 >= busy,
        "only {throttled} of {busy} busy cgroups throttled"
    );
    for i in 0..n {
        let id = format!("c{i}");
        let m = merged.get(&id).unwrap_or_else(|| panic!("{id} not walked"));
        assert_eq!(m.seen, links.len(), "{id} on every hierarchy");
        compare(&id, m, &before[i], &after[i], v1);
    }
    // Processes, from the task iterator: each cgroup's count on each hierarchy is
    // its cgroup.procs' (one process each here: the tree's are stable).
    assert!(it.counts_processes(), "the task iterator did not load");
    let procs = it.processes().unwrap();
    let mut compared = 0;
    for i in 0..n {
        for d in tree.children[i].dirs() {
            use probes::iter::TaskHierarchy as T;
            let key = if d.version == Version::V2 {
                T::V2
            } else if d.controllers.contains(&Controller::Pids) {
                T::Pids
            } else if d.controllers.contains(&Controller::Cpu) {
                T::Cpu
            } else if d.controllers.contains(&Controller::Memory) {
                T::Memory
            } else {
                continue;
            };
            let listed = read(&d.file("cgroup.procs")).lines().count();
            let id = probes::cgroup_id(&d.path).unwrap();
            assert_eq!(
                procs.get(key, id) as usize,
                listed,
                "c{i} {key:?} {}",
                d.path.display()
            );
            compared += 1;
        }
    }
    assert!(compared >= n, "only {compared} cgroup directories compared");
    if shown > 0 {
        // Throttled tasks wait runnable: the busy cgroups show CPU pressure, so the
        // comparison above met values other than zero.
        let stalled = (0..busy)
            .filter(|i| {
                merged[&format!("c{i}")]
                    .pressure
                    .is_some_and(|p| p.cpu[0] > 0)
            })
            .count();
        assert!(
            stalled * 2 >= busy,
            "only {stalled} of {busy} busy cgroups under CPU pressure"
        );
    }

    // From the hierarchy root, the same cgroups come with their full paths.
    let root = it.link(&mounts[0].0).unwrap();
    let all = it.walk(&root).unwrap();
    for i in [0, n / 2, n - 1] {
        let p = format!("{}/c{i}", tree.name);
        let s = all
            .iter()
            .find(|s| s.path == p)
            .unwrap_or_else(|| panic!("{p}"));
        assert_eq!(
            s.id,
            probes::cgroup_id(&tree.dir(i, Controller::Cpu)).unwrap()
        );
    }
}

#[test]
fn cgroups_made_and_removed_during_walks_never_break_one() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let it = load();
    let tree = Tree::new(50);
    let h = tree.h.clone();
    let parent = tree.parent().path().clone();
    let links: Vec<_> = tree
        .parent()
        .dirs()
        .iter()
        .map(|d| it.link(&d.path).unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let h = h.clone();
        let parent = parent.clone();
        std::thread::spawn(move || {
            let mut made = 0usize;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let p =
                    CgroupPath::new(&format!("{}/churn{}/inner", parent.as_str(), i % 8)).unwrap();
                if let Ok(cg) = Cgroup::create(&h, &p, CONTROLLERS) {
                    made += 1;
                    let _ = cg.delete();
                }
                let outer =
                    CgroupPath::new(&format!("{}/churn{}", parent.as_str(), i % 8)).unwrap();
                if let Ok(cg) = Cgroup::load(&h, &outer) {
                    let _ = cg.delete();
                }
                i += 1;
            }
            made
        })
    };
    let start = Instant::now();
    let mut walks = 0;
    while start.elapsed() < Duration::from_secs(3) {
        for l in &links {
            let w = it.walk(l).unwrap();
            walks += 1;
            for i in 0..50 {
                let p = format!("c{i}");
                assert!(w.iter().any(|s| s.path == p), "{p} missing from a walk");
            }
            for s in &w {
                assert!(
                    s.path.is_empty()
                        || s.path.starts_with('c') && !s.path.contains('/')
                        || s.path.starts_with("churn"),
                    "unexpected path {:?}",
                    s.path
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let made = churn.join().unwrap();
    eprintln!("{walks} walks while {made} cgroups were made and removed");
    assert!(made > 10, "the churn made only {made} cgroups");
    // Leftover churn cgroups (a delete that failed) go before the tree's own.
    for i in 0..8 {
        for sub in ["/inner", ""] {
            let p = CgroupPath::new(&format!("{}/churn{i}{sub}", parent.as_str())).unwrap();
            if let Ok(cg) = Cgroup::load(&h, &p) {
                let _ = cg.delete();
            }
        }
    }
}

#[test]
fn a_removed_root_walks_empty_and_a_missing_dir_is_a_clear_error() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let it = load();
    let e = it.link("/nonexistent/cgroup").unwrap_err().to_string();
    assert!(e.contains("/nonexistent/cgroup"), "{e}");
    let tree = Tree::new(2);
    let dir = tree.parent().dirs()[0].path.clone();
    let link = it.link(&dir).unwrap();
    assert_eq!(it.walk(&link).unwrap().len(), 3);
    drop(tree);
    assert!(!dir.exists());
    // The link keeps the dead cgroup referenced; walking it shows nothing, no error.
    assert_eq!(it.walk(&link).unwrap().len(), 0);
}
