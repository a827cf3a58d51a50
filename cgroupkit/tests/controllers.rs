//! The memory, pids, io, cpuset and hugetlb controllers against the real kernel, as
//! root: hybrid cgroups on the host lane, pure cgroup v2 in the VM lane
//! (`CGROUPKIT_LANE=vm-*`). Each test works under its own `cgroupkit-test-<pid>-<n>`
//! cgroup, removed on drop even on failure, and ends the processes it starts by pid.
//!
//! Helpers that must run inside a cgroup (a memory hog, an O_DIRECT writer) are this
//! test binary itself, re-run with `--exact <helper>` and an env var; they wait for a
//! line on stdin so that the test can move them into the cgroup first.
// Integration tests fail loudly: unwrap/expect are their assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cgroupkit::{
    Cgroup, Controller, Cpuset, DeviceLimit, DeviceNumber, Error, Hierarchy, Hugetlb, IdSet, Io,
    IoRate, Layout, Limit, Memory, PageSize, Pids, PidsLimit, Resources, Version,
};

mod common;
use common::{Proc, Scratch, helper, kill_all, lane, read, wait_for_go};

// ---------------------------------------------------------------- memory

#[test]
fn memory_limits_read_back_in_one_meaning() {
    let s = Scratch::new();
    let cg = s.create("m", Controller::Memory);
    let dir = cg.dir_for(Controller::Memory).unwrap().clone();
    let mut m = Memory::with_max(Limit::Bytes(64 << 20)).swap_max(Limit::Bytes(16 << 20));
    if dir.version == Version::V1 {
        m.soft_limit = Some(Limit::Bytes(32 << 20));
    } else {
        m = m.high(Limit::Bytes(48 << 20));
        m.low = Some(Limit::Bytes(8 << 20));
        m.min = Some(Limit::Bytes(4 << 20));
        m.oom_group = Some(true);
    }
    let mut r = Resources::default();
    r.memory = Some(m);
    match cg.apply(&r) {
        Ok(_) => {}
        Err(Error::Unsupported {
            what: "swap limit",
            reason,
            ..
        }) => {
            // Only acceptable when the host really lacks swap accounting.
            let swap_file = match dir.version {
                Version::V1 => "memory.memsw.limit_in_bytes",
                Version::V2 => "memory.swap.max",
            };
            assert!(!dir.file(swap_file).exists(), "{reason}");
            assert!(reason.contains("swap accounting"), "{reason}");
            r.memory.as_mut().unwrap().swap_max = None;
            cg.apply(&r).unwrap();
        }
        Err(e) => panic!("{e}"),
    }
    let back = cg.memory_limits().unwrap();
    assert_eq!(back.max, Some(Limit::Bytes(64 << 20)));
    match dir.version {
        Version::V1 => {
            assert_eq!(back.soft_limit, Some(Limit::Bytes(32 << 20)));
            if r.memory.as_ref().unwrap().swap_max.is_some() {
                // memsw = memory + swap; read back as swap beyond memory.
                assert_eq!(
                    read(&dir.file("memory.memsw.limit_in_bytes")),
                    (80u64 << 20).to_string()
                );
                assert_eq!(back.swap_max, Some(Limit::Bytes(16 << 20)));
            }
        }
        Version::V2 => {
            assert_eq!(back.high, Some(Limit::Bytes(48 << 20)));
            assert_eq!(back.low, Some(Limit::Bytes(8 << 20)));
            assert_eq!(back.min, Some(Limit::Bytes(4 << 20)));
            assert_eq!(back.oom_group, Some(true));
            assert_eq!(read(&dir.file("memory.max")), (64u64 << 20).to_string());
            if dir.file("memory.swap.max").exists() {
                assert_eq!(back.swap_max, Some(Limit::Bytes(16 << 20)));
            }
        }
    }
    // Clearing works on both.
    r.memory = Some(Memory::with_max(Limit::Max).swap_max(Limit::Max));
    if cg.apply(&r).is_err() {
        r.memory = Some(Memory::with_max(Limit::Max));
        cg.apply(&r).unwrap();
    }
    assert_eq!(cg.memory_limits().unwrap().max, Some(Limit::Max));
}

#[test]
fn memory_refuses_what_the_layout_cannot_honour() {
    let s = Scratch::new();
    let cg = s.create("r", Controller::Memory);
    let dir = cg.dir_for(Controller::Memory).unwrap().clone();
    let mut r = Resources::default();
    match dir.version {
        Version::V1 => {
            assert_ne!(s.h.layout(), Layout::V2);
            for (m, what) in [
                (Memory::default().high(Limit::Bytes(1 << 20)), "memory.high"),
                (Memory::default().oom_group(true), "memory.oom.group"),
            ] {
                r.memory = Some(m);
                let e = cg.apply(&r).unwrap_err();
                let Error::Unsupported {
                    controller,
                    what: w,
                    layout,
                    ..
                } = &e
                else {
                    panic!("{e}")
                };
                assert_eq!(
                    (*controller, *w, *layout),
                    (Controller::Memory, what, Layout::V1)
                );
                assert!(e.to_string().contains("cgroup v1"), "{e}");
            }
            // Finite swap under unlimited memory cannot be said as memsw.
            if dir.file("memory.memsw.limit_in_bytes").exists() {
                r.memory = Some(Memory::with_max(Limit::Max).swap_max(Limit::Bytes(1 << 20)));
                let e = cg.apply(&r).unwrap_err();
                assert!(e.to_string().contains("needs a finite memory limit"), "{e}");
            }
        }
        Version::V2 => {
            r.memory = Some(Memory::default().soft_limit(Limit::Bytes(1 << 20)));
            let e = cg.apply(&r).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Unsupported {
                        what: "memory soft limit",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("memory.low"), "{e}");
        }
    }
    assert!(cg.apply(&Resources::default()).unwrap().is_empty());
}

/// A process that allocates and touches 128 MiB under a 32 MiB limit is OOM-killed,
/// and the cgroup's oom_kill count grows (v2 memory.events, v1 memory.oom_control).
#[test]
fn memory_max_oom_kills_a_hog() {
    let s = Scratch::new();
    let cg = s.create("hog", Controller::Memory);
    let dir = cg.dir_for(Controller::Memory).unwrap().clone();
    let mut m = Memory::with_max(Limit::Bytes(32 << 20));
    let swap_file = match dir.version {
        Version::V1 => "memory.memsw.limit_in_bytes",
        Version::V2 => "memory.swap.max",
    };
    if dir.file(swap_file).exists() {
        // No swap beyond memory: the hog cannot escape to swap where there is some.
        m = m.swap_max(Limit::Bytes(0));
    }
    let mut r = Resources::default();
    r.memory = Some(m);
    cg.apply(&r).unwrap();
    let before = cg.memory_stat().unwrap().events.oom_kill.unwrap_or(0);

    let mut hog = helper(
        "memory_hog_helper",
        &[("CGROUPKIT_TEST_HOG_MIB", "128".into())],
    );
    cg.add_process(hog.pid()).unwrap();
    hog.go();
    let status = hog.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "hog not OOM-killed: {status:?}");

    let st = cg.memory_stat().unwrap();
    let after = st.events.oom_kill.expect("oom_kill counter shown");
    assert!(after > before, "oom_kill {before} -> {after}");
    assert!(st.peak_bytes.unwrap_or(32 << 20) <= 32 << 20, "{st:?}");
    if dir.version == Version::V2 {
        assert!(st.events.max.unwrap() > 0, "{:?}", st.events);
    }
    // (v1 counts limit hits in memory.failcnt, or in memory.memsw.failcnt when the
    // memsw limit is the one reached, as with swap_max 0 here.)
    eprintln!(
        "[{}] hog killed; oom_kill {before} -> {after}, peak {:?}",
        lane(),
        st.peak_bytes
    );
}

/// Helper: allocates and touches CGROUPKIT_TEST_HOG_MIB MiB (run by the test above).
#[test]
#[ignore = "a helper process: memory_max_oom_kills_a_hog runs it with --ignored"]
fn memory_hog_helper() {
    let mib =
        std::env::var_os("CGROUPKIT_TEST_HOG_MIB").expect("run by memory_max_oom_kills_a_hog only");
    let mib: usize = mib.to_str().unwrap().parse().unwrap();
    wait_for_go();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        // Touch every page so that it is really charged.
        chunks.push(vec![(i % 251) as u8 + 1; 1 << 20]);
    }
    std::hint::black_box(&chunks);
    std::thread::sleep(Duration::from_secs(5));
}

// ---------------------------------------------------------------- pids

/// pids.max 5: a shell that starts 10 background sleeps cannot fork them all, and
/// pids.events `max` counts the refusals.
#[test]
fn pids_max_stops_forks() {
    let s = Scratch::new();
    let cg = s.create("p", Controller::Pids);
    let mut r = Resources::default();
    r.pids = Some(Pids::with_max(5).unwrap());
    cg.apply(&r).unwrap();
    assert_eq!(cg.pids_max().unwrap(), PidsLimit::Tasks(5));
    let dir = cg.dir_for(Controller::Pids).unwrap();
    assert_eq!(read(&dir.file("pids.max")), "5");
    assert_eq!(cg.pids_stat().unwrap().events_max, 0);

    let mut sh = Proc(
        Command::new("sh")
            .args([
                "-c",
                "read go; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 3 & done; wait; echo finished",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    cg.add_process(sh.pid()).unwrap();
    sh.go();
    // Sample while the sleeps run: the count never exceeds the limit.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        assert!(cg.pids_stat().unwrap().current <= 5);
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = cg.pids_stat().unwrap();
    kill_all(&cg);
    let Proc(child) = &mut sh;
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(st.events_max >= 1, "{st:?}");
    assert!(
        !status.success() || err.to_lowercase().contains("fork"),
        "the shell reported no failed fork: {status:?} {err:?}"
    );
    eprintln!("[{}] pids: {st:?}; shell: {}", lane(), err.trim());
}

// ---------------------------------------------------------------- io

/// A whole disk to set limits on: the one under `/`, else the first disk in
/// /sys/block that is not loop, ram or zram.
fn a_block_device() -> DeviceNumber {
    let dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (
        (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as u32,
        ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32,
    );
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if sys.exists() {
        let whole = if sys.join("partition").exists() {
            sys.join("..")
        } else {
            sys
        };
        return read(&whole.join("dev")).parse().unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)))
        .collect();
    names.sort();
    let n = names.first().expect("no block device in /sys/block");
    read(&Path::new("/sys/block").join(n).join("dev"))
        .parse()
        .unwrap()
}

/// Weight where a weight file exists (else the typed error), and per-device limits
/// read back. Enforcement is not tried here: throttling the host's root disk is not
/// safe; `io_wbps_is_enforced_on_the_scratch_disk` does it in the VM lane.
#[test]
fn io_weight_and_limits_read_back() {
    let s = Scratch::new();
    let cg = s.create("io", Controller::Io);
    let dir = cg.dir_for(Controller::Io).unwrap().clone();
    let mut r = Resources::default();
    r.io = Some(Io::with_weight(200).unwrap());
    match cg.apply(&r) {
        Ok(w) => {
            let file = &w[0].path;
            let text = read(file);
            assert!(
                text == "200" || text.starts_with("default 200"),
                "{}: {text:?}",
                file.display()
            );
        }
        Err(e @ Error::Unsupported { .. }) => {
            for f in [
                "io.weight",
                "io.bfq.weight",
                "blkio.weight",
                "blkio.bfq.weight",
            ] {
                assert!(!dir.file(f).exists(), "{e} yet {f} exists");
            }
        }
        Err(e) => panic!("{e}"),
    }

    let dev = a_block_device();
    let mut lim = DeviceLimit::new(dev);
    lim.rbps = Some(IoRate::new(1 << 20).unwrap());
    lim.wbps = Some(IoRate::new(2 << 20).unwrap());
    lim.wiops = Some(IoRate::new(500).unwrap());
    r.io = Some(Io::default().limit(lim.clone()));
    cg.apply(&r).unwrap();
    let back = cg.io_limits().unwrap();
    let got = back
        .iter()
        .find(|d| d.device == dev)
        .expect("device limited");
    assert_eq!(got.rbps, Some(IoRate::PerSecond(1 << 20)));
    assert_eq!(got.wbps, Some(IoRate::PerSecond(2 << 20)));
    assert_eq!(got.wiops, Some(IoRate::PerSecond(500)));
    assert!(matches!(got.riops, None | Some(IoRate::Max)), "{got:?}");
    match dir.version {
        Version::V2 => assert!(read(&dir.file("io.max")).contains(&format!("{dev} rbps=1048576"))),
        Version::V1 => assert_eq!(
            read(&dir.file("blkio.throttle.read_bps_device")),
            format!("{dev} 1048576")
        ),
    }
    // Clearing removes the device's limits.
    lim.rbps = Some(IoRate::Max);
    lim.wbps = Some(IoRate::Max);
    lim.wiops = Some(IoRate::Max);
    r.io = Some(Io::default().limit(lim));
    cg.apply(&r).unwrap();
    let back = cg.io_limits().unwrap();
    assert!(
        back.iter().filter(|d| d.device == dev).all(|d| {
            [d.rbps, d.wbps, d.riops, d.wiops]
                .iter()
                .all(|v| matches!(v, None | Some(IoRate::Max)))
        }),
        "{back:?}"
    );
    let _ = cg.io_stat().unwrap();
}

/// With VM_SCRATCH_DEV (MAJ:MIN of a scratch disk, set by the VM lane), a 1 MiB/s
/// wbps limit makes a 4 MiB O_DIRECT write take about 3 s or more.
#[test]
#[cfg_attr(
    not(vm_lane),
    ignore = "needs the VM lane's scratch disk (VM_SCRATCH_DEV): the host's root disk is not ours to throttle"
)]
fn io_wbps_is_enforced_on_the_scratch_disk() {
    let devnum = std::env::var("VM_SCRATCH_DEV")
        .expect("the VM lane must provide a scratch disk (VM_SCRATCH_DEV)");
    let dev: DeviceNumber = devnum.parse().unwrap();
    let uevent = read(Path::new(&format!("/sys/dev/block/{dev}/uevent")));
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .unwrap();
    let node = Path::new("/dev").join(name);
    assert!(node.exists(), "{} missing", node.display());

    let s = Scratch::new();
    let cg = s.create("dd", Controller::Io);
    let mut lim = DeviceLimit::new(dev);
    lim.wbps = Some(IoRate::new(1 << 20).unwrap());
    let mut r = Resources::default();
    r.io = Some(Io::default().limit(lim));
    cg.apply(&r).unwrap();

    let mut w = helper(
        "direct_writer_helper",
        &[("CGROUPKIT_TEST_WRITE_DEV", node.display().to_string())],
    );
    cg.add_process(w.pid()).unwrap();
    let start = Instant::now();
    w.go();
    let status = w.0.wait().unwrap();
    let took = start.elapsed();
    assert!(status.success(), "writer failed: {status:?}");
    assert!(
        took >= Duration::from_millis(2800),
        "4 MiB at 1 MiB/s took {took:?}"
    );
    let st = cg.io_stat().unwrap();
    assert!(st.devices[&dev].wbytes >= 4 << 20, "{st:?}");
    eprintln!("[{}] 4 MiB O_DIRECT at 1 MiB/s took {took:?}", lane());
}

/// Helper: writes 4 MiB with O_DIRECT to CGROUPKIT_TEST_WRITE_DEV.
#[test]
#[ignore = "a helper process: io_wbps_is_enforced_on_the_scratch_disk runs it with --ignored"]
fn direct_writer_helper() {
    let path = std::env::var_os("CGROUPKIT_TEST_WRITE_DEV")
        .expect("run by io_wbps_is_enforced_on_the_scratch_disk only");
    use std::os::unix::fs::OpenOptionsExt;
    wait_for_go();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    // O_DIRECT needs an aligned buffer.
    let raw = vec![0x5au8; (1 << 20) + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let buf = &raw[off..off + (1 << 20)];
    for _ in 0..4 {
        f.write_all(buf).unwrap();
    }
}

// ---------------------------------------------------------------- cpuset

#[test]
fn cpuset_restricts_to_cpu_0_and_refuses_what_the_parent_disallows() {
    let s = Scratch::new();
    let cg = s.create("a/b", Controller::Cpuset);
    let mut r = Resources::default();
    r.cpuset = Some(Cpuset::with_cpus("0".parse().unwrap()));
    cg.apply(&r).unwrap();
    let st = cg.cpuset_stat().unwrap();
    assert_eq!(st.cpus_effective.to_string(), "0");
    assert!(
        !st.mems_effective.is_empty(),
        "v1: mems filled from the parent"
    );
    // A task can join (on v1 only once cpus and mems are set) and is confined.
    let p = Proc(
        Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    cg.add_process(p.pid()).unwrap();
    let status = read(Path::new(&format!("/proc/{}/status", p.pid())));
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(allowed, "0");
    drop(p);

    // One CPU beyond what the parent allows.
    let parent = Cgroup::open(&s.h, &s.path("a"), &[Controller::Cpuset]).unwrap();
    let allowed = parent.cpuset_stat().unwrap().cpus_effective;
    let beyond = allowed.iter().last().unwrap() + 1;
    r.cpuset = Some(Cpuset::with_cpus(IdSet::from_ids([0, beyond])));
    let e = cg.apply(&r).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidResource {
                what: "cpuset.cpus",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("not within {allowed}")),
        "{e}"
    );
    assert_eq!(cg.cpuset_stat().unwrap().cpus_effective.to_string(), "0");
}

// ---------------------------------------------------------------- hugetlb

/// Restores the root's cgroup.subtree_control on the hugetlb hierarchy when it is
/// v2 and `hugetlb` was not enabled there before (Cgroup::create enables it along
/// the path, root included): the host is left as found.
struct RootSubtreeGuard(Option<PathBuf>);
impl RootSubtreeGuard {
    fn new(h: &Hierarchy) -> RootSubtreeGuard {
        let m = h.mount_for(Controller::Hugetlb).unwrap();
        if m.version != Version::V2 {
            return RootSubtreeGuard(None);
        }
        let f = m.mount_point.join("cgroup.subtree_control");
        let had = read(&f).split_whitespace().any(|c| c == "hugetlb");
        RootSubtreeGuard((!had).then_some(f))
    }
}
impl Drop for RootSubtreeGuard {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            let _ = std::fs::write(f, "-hugetlb");
        }
    }
}

#[test]
fn hugetlb_limit_per_page_size_reads_back() {
    let h = Hierarchy::detect().unwrap();
    let Some(m) = h.mount_for(Controller::Hugetlb) else {
        // Probed from the kernel: without CONFIG_CGROUP_HUGETLB /proc/cgroups has no
        // hugetlb line; asking for it is then the clear error.
        let known = read(Path::new("/proc/cgroups"))
            .lines()
            .any(|l| l.split_whitespace().next() == Some("hugetlb"));
        assert!(!known, "the kernel has hugetlb but no hierarchy serves it");
        let s = Scratch::new();
        let e = Cgroup::create(&s.h, &s.path("h"), &[Controller::Hugetlb]).unwrap_err();
        assert!(matches!(e, Error::ControllerUnavailable { .. }), "{e}");
        return;
    };
    eprintln!(
        "[{}] hugetlb on {:?} at {}",
        lane(),
        m.version,
        m.mount_point.display()
    );
    let _restore = RootSubtreeGuard::new(&h);
    let s = Scratch::new();
    let cg = s.create("h", Controller::Hugetlb);
    let dir = cg.dir_for(Controller::Hugetlb).unwrap().clone();
    if s.h.layout() == Layout::Hybrid {
        assert_eq!(
            dir.version,
            Version::V2,
            "this host serves hugetlb from cgroup2"
        );
    }
    let sizes = cg.hugetlb_page_sizes().unwrap();
    let two_mb: PageSize = "2MB".parse().unwrap();
    // The kernel offers 2 MB pages where it has their hstate.
    let has_2mb = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    assert_eq!(sizes.contains(&two_mb), has_2mb, "{sizes:?}");
    if !has_2mb {
        let mut r = Resources::default();
        r.hugetlb = Some(
            Hugetlb::default()
                .limit(two_mb, Limit::Bytes(8 << 20))
                .unwrap(),
        );
        let e = cg.apply(&r).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Unsupported {
                    what: "hugetlb page size",
                    ..
                }
            ),
            "{e}"
        );
        return;
    }
    let mut r = Resources::default();
    r.hugetlb = Some(
        Hugetlb::default()
            .limit(two_mb, Limit::Bytes(8 << 20))
            .unwrap(),
    );
    cg.apply(&r).unwrap();
    let file = match dir.version {
        Version::V2 => "hugetlb.2MB.max",
        Version::V1 => "hugetlb.2MB.limit_in_bytes",
    };
    assert_eq!(read(&dir.file(file)), (8u64 << 20).to_string());
    let st = cg.hugetlb_stat().unwrap();
    let two = &st.sizes[&two_mb];
    assert_eq!(two.max, Some(Limit::Bytes(8 << 20)));
    assert_eq!((two.current_bytes, two.events_max), (0, 0));
    // A size the host does not offer is a typed error naming the offered ones.
    r.hugetlb = Some(
        Hugetlb::default()
            .limit("32MB".parse().unwrap(), Limit::Bytes(32 << 20))
            .unwrap(),
    );
    if !sizes.contains(&"32MB".parse().unwrap()) {
        let e = cg.apply(&r).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("2MB"), "{e}");
    }
}

#[test]
fn the_tests_leave_no_scratch_cgroup() {
    let s = Scratch::new();
    let name = s.name.clone();
    drop(s.create("z", Controller::Memory));
    drop(s);
    let h = Hierarchy::detect().unwrap();
    assert!(
        h.mounts()
            .iter()
            .all(|m| !m.mount_point.join(&name).exists())
    );
}
