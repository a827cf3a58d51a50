//! Every cgctl command for real, on the lane's layout (hybrid on the host, pure v2 in
//! the VM lane): create/set/stat round trips, run, move, freeze/thaw/kill, rm -r, ls,
//! top, and bad input that must leave nothing behind.

// Integration tests fail loudly: unwrap/expect are their assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cgroupkit::{Controller, Layout, Version};
use common::{Proc, TestParent, cgctl, lane, run_cgctl};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cgctl failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(&run_cgctl(args))).expect("cgctl --json prints JSON")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// The cgroup directory of `rel` (under the test parent) on the hierarchy serving `c`.
fn dir(parent: &TestParent, c: Controller, rel: &str) -> PathBuf {
    parent
        .hierarchy
        .mount_for(c)
        .unwrap()
        .mount_point
        .join(&parent.name)
        .join(rel)
}

fn version(parent: &TestParent, c: Controller) -> Option<Version> {
    parent.hierarchy.mount_for(c).map(|m| m.version)
}

/// A whole disk to put io limits on: the VM lane's scratch disk, else /dev/vda.
fn disk() -> Option<(String, String)> {
    if let Ok(dev) = std::env::var("VM_SCRATCH_DEV") {
        return Some(("/dev/nvme0n1".into(), dev));
    }
    let dev = std::fs::read_to_string("/sys/block/vda/dev").ok()?;
    Path::new("/dev/vda")
        .exists()
        .then(|| ("/dev/vda".into(), dev.trim().to_owned()))
}

/// Whether the kernel offers one of `files` in a cgroup of the hierarchy serving `c`:
/// probed in the test parent's own directory there (made here, removed with the
/// parent), not through the code under test. Machines of our kind differ (one 6.18
/// has no BFQ, CFQ or iocost, so no io weight at all).
fn offers(parent: &TestParent, c: Controller, files: &[&str]) -> bool {
    let Some(m) = parent.hierarchy.mount_for(c) else {
        return false;
    };
    let d = m.mount_point.join(&parent.name);
    std::fs::create_dir_all(&d).unwrap();
    files.iter().any(|f| d.join(f).exists())
}

/// Runs cgctl, expects failure (status 1) naming why the host cannot do it.
fn unsupported(args: &[&str], needles: &[&str]) {
    let out = run_cgctl(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "cgctl {args:?}:\n{stderr}");
    for n in needles {
        assert!(
            stderr.contains(n),
            "cgctl {args:?}: stderr lacks {n:?}:\n{stderr}"
        );
    }
}

/// Runs cgctl, expects failure with exit `code` and `needle` in stderr, and checks
/// that nothing was left under the test parent.
fn refused(parent: &TestParent, args: &[&str], code: i32, needle: &str) {
    let out = run_cgctl(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "cgctl {args:?}: wrong status; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(needle),
        "cgctl {args:?}: stderr lacks {needle:?}:\n{stderr}"
    );
    assert!(
        parent.existing("").is_empty(),
        "cgctl {args:?} left {:?}",
        parent.existing("")
    );
}

#[test]
fn create_set_stat_round_trip_for_every_flag() {
    let parent = TestParent::new();
    let name = parent.child("web");
    let h = &parent.hierarchy;
    // Optional kernel features, probed first: where one is absent, the flag must
    // fail with the clear error instead (checked below).
    let io_weight = offers(
        &parent,
        Controller::Io,
        &[
            "io.weight",
            "io.bfq.weight",
            "blkio.weight",
            "blkio.bfq.weight",
        ],
    );
    let burst = offers(
        &parent,
        Controller::Cpu,
        &["cpu.max.burst", "cpu.cfs_burst_us"],
    );
    let idle = offers(&parent, Controller::Cpu, &["cpu.idle"]);
    eprintln!(
        "[{}] kernel offers: io weight {io_weight}, cpu burst {burst}, cpu.idle {idle}",
        lane()
    );
    let mut args: Vec<String> = [
        "create",
        &name,
        "--cpu",
        "0.3",
        "--period",
        "50ms",
        "--cpu-weight",
        "50",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
        "--memory",
        "64M",
        "--pids",
        "10",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if io_weight {
        args.extend(["--io-weight".into(), "200".into()]);
    }
    if burst {
        args.extend(["--cpu-burst".into(), "5ms".into()]);
    }
    let disk = disk();
    if let Some((path, _)) = &disk {
        args.extend(["--io-max".into(), format!("{path}=wbps=1M,riops=max")]);
    }
    // hugetlb where the host offers 2 MB pages to cgroups.
    let huge = h.mount_for(Controller::Hugetlb).is_some()
        && Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    if huge {
        args.extend(["--hugetlb".into(), "2M=4M".into()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = json(&argv);
    assert_eq!(out["created"], true, "{out}");
    assert!(!out["writes"].as_array().unwrap().is_empty());

    // The kernel holds every value.
    let cpu = dir(&parent, Controller::Cpu, "web");
    match version(&parent, Controller::Cpu).unwrap() {
        Version::V1 => {
            assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "15000");
            assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "50000");
            assert_eq!(read(&cpu.join("cpu.shares")), "421");
            if burst {
                assert_eq!(read(&cpu.join("cpu.cfs_burst_us")), "5000");
            }
        }
        Version::V2 => {
            assert_eq!(read(&cpu.join("cpu.max")), "15000 50000");
            assert_eq!(read(&cpu.join("cpu.weight")), "50");
            if burst {
                assert_eq!(read(&cpu.join("cpu.max.burst")), "5000");
            }
        }
    }
    if !burst {
        // Refused before any write: the quota set above stays.
        unsupported(
            &["set", &name, "--cpu", "0.5", "--cpu-burst", "5ms"],
            &[
                "burst is not supported here",
                "CPU burst needs kernel 5.14+",
            ],
        );
        let quota = match version(&parent, Controller::Cpu).unwrap() {
            Version::V1 => read(&cpu.join("cpu.cfs_quota_us")),
            Version::V2 => read(&cpu.join("cpu.max")),
        };
        assert!(quota.starts_with("15000"), "half-applied: {quota}");
    }
    let io_dir = dir(&parent, Controller::Io, "web");
    if io_weight {
        let file = [
            "io.weight",
            "io.bfq.weight",
            "blkio.weight",
            "blkio.bfq.weight",
        ]
        .into_iter()
        .map(|f| io_dir.join(f))
        .find(|f| f.exists())
        .unwrap();
        let text = read(&file);
        assert!(
            text == "200" || text.starts_with("default 200"),
            "{}: {text}",
            file.display()
        );
    } else {
        // A fresh machine of our kind: no BFQ, CFQ or iocost in the kernel.
        unsupported(
            &["set", &name, "--io-weight", "200"],
            &[
                "io weight is not supported here",
                "no weight-based I/O policy",
            ],
        );
    }
    let mem = dir(&parent, Controller::Memory, "web");
    let mem_v2 = version(&parent, Controller::Memory) == Some(Version::V2);
    let mem_max = mem.join(if mem_v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    });
    assert_eq!(read(&mem_max), (64u64 << 20).to_string());
    assert_eq!(
        read(&dir(&parent, Controller::Pids, "web").join("pids.max")),
        "10"
    );
    assert_eq!(
        read(&dir(&parent, Controller::Cpuset, "web").join("cpuset.cpus")),
        "0"
    );
    if let Some((_, dev)) = &disk {
        let io = dir(&parent, Controller::Io, "web");
        match version(&parent, Controller::Io).unwrap() {
            Version::V1 => assert!(
                read(&io.join("blkio.throttle.write_bps_device"))
                    .contains(&format!("{dev} 1048576")),
                "blkio.throttle.write_bps_device"
            ),
            Version::V2 => {
                let max = read(&io.join("io.max"));
                assert!(
                    max.contains(&format!("{dev} rbps=max wbps=1048576")),
                    "io.max: {max}"
                );
            }
        }
    }
    if huge {
        let hd = dir(&parent, Controller::Hugetlb, "web");
        let f = match version(&parent, Controller::Hugetlb).unwrap() {
            Version::V1 => "hugetlb.2MB.limit_in_bytes",
            Version::V2 => "hugetlb.2MB.max",
        };
        assert_eq!(read(&hd.join(f)), (4u64 << 20).to_string());
    }

    // set changes them; stat --json reads them back as one object.
    ok(&run_cgctl(&[
        "set",
        &name,
        "--memory",
        "32M",
        "--pids",
        "max",
        "--cpu-shares",
        "2048",
        "--cpuset-cpus",
        "0-1",
    ]));
    let s = json(&["stat", &name, "--json"]);
    eprintln!("[{}] stat: {s}", lane());
    assert_eq!(s["cpu_quota"]["quota_usec"], 15_000);
    assert_eq!(s["cpu_quota"]["period_usec"], 50_000);
    if burst {
        assert_eq!(s["cpu_settings"]["burst_usec"], 5_000);
    }
    if idle {
        assert_eq!(s["cpu_settings"]["idle"], false);
    }
    assert!(s["cpu_settings"]["weight"].is_object(), "{s}");
    assert_eq!(s["memory_limits"]["max"]["bytes"], 32u64 << 20);
    assert!(s["memory"]["current_bytes"].is_u64());
    assert_eq!(s["pids_max"], "max");
    assert_eq!(s["pids"]["current"], 0);
    let ncpu = std::thread::available_parallelism().unwrap().get();
    let want_cpus = if ncpu > 1 { "0-1" } else { "0" };
    if ncpu > 1 {
        assert_eq!(s["cpuset"]["cpus"], want_cpus, "{s}");
    }
    assert_eq!(s["cpuset"]["mems"], "0");
    if disk.is_some() {
        assert!(!s["io_limits"].as_array().unwrap().is_empty(), "{s}");
    }
    if huge {
        assert_eq!(s["hugetlb"]["sizes"]["2MB"]["max"]["bytes"], 4u64 << 20);
    }
    // Human output names the same values.
    let text = ok(&run_cgctl(&["stat", &name]));
    assert!(text.contains("cpu limit     0.3 CPUs"), "{text}");
    assert!(
        text.contains(&format!("memory max    {}", 32u64 << 20)),
        "{text}"
    );
    assert!(text.contains("pids          0 of max"), "{text}");

    // cpu.idle (the kernel then reports the idle weight instead of the one set).
    if idle {
        ok(&run_cgctl(&["set", &name, "--cpu-idle"]));
        assert_eq!(read(&cpu.join("cpu.idle")), "1");
        assert_eq!(
            json(&["stat", &name, "--json"])["cpu_settings"]["idle"],
            true
        );
    } else {
        unsupported(
            &["set", &name, "--cpu-idle"],
            &["idle is not supported here", "cpu.idle needs kernel 5.15+"],
        );
    }

    // The v2-only memory knobs: applied on v2, a clear error on v1.
    let flags = [
        ("--memory-high", "48M", "memory.high"),
        ("--memory-low", "8M", "memory.low"),
        ("--memory-min", "4M", "memory.min"),
    ];
    for (flag, value, file) in flags {
        let out = run_cgctl(&["set", &name, flag, value]);
        if mem_v2 {
            ok(&out);
            let want: u64 = value.trim_end_matches('M').parse::<u64>().unwrap() << 20;
            assert_eq!(read(&mem.join(file)), want.to_string());
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(
                err.contains(file) && err.contains("only on cgroup v2"),
                "{err}"
            );
        }
    }
    let out = run_cgctl(&["set", &name, "--oom-group"]);
    if mem_v2 {
        ok(&out);
        assert_eq!(read(&mem.join("memory.oom.group")), "1");
    } else {
        assert!(String::from_utf8_lossy(&out.stderr).contains("memory.oom.group"));
    }
    // Swap: where swap accounting is on, else the reason it is not.
    let swap_file = mem.join(if mem_v2 {
        "memory.swap.max"
    } else {
        "memory.memsw.limit_in_bytes"
    });
    let out = run_cgctl(&["set", &name, "--swap", "16M"]);
    if swap_file.exists() {
        ok(&out);
        let want = if mem_v2 { 16u64 << 20 } else { 48u64 << 20 };
        assert_eq!(read(&swap_file), want.to_string());
    } else {
        assert!(String::from_utf8_lossy(&out.stderr).contains("swap accounting is off"));
    }
    // On v1, a v2-only flag on a new cgroup leaves nothing behind.
    if !mem_v2 {
        let out = run_cgctl(&["create", &parent.child("new"), "--memory-high", "1G"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(parent.existing("new").is_empty());
    }
    // set on a cgroup that does not exist says how to make it.
    let out = run_cgctl(&["set", &parent.child("nope"), "--pids", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cgctl create"));
    assert!(parent.existing("nope").is_empty());
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let parent = TestParent::new();
    let c = parent.child("x");
    let c = c.as_str();
    refused(
        &parent,
        &["create", c, "--memory", "12Q"],
        2,
        "not `max` or a byte count",
    );
    refused(&parent, &["create", c, "--memory=-5M"], 2, "byte count");
    // Zero, negative and NaN limits (README: refused before anything is touched).
    for (args, needle) in [
        (
            &["--memory", "0"][..],
            "memory.max: 0 bytes is not a usable limit",
        ),
        (
            &["--memory", "0K"],
            "memory.max: 0 bytes is not a usable limit",
        ),
        (
            &["--memory-high", "0"],
            "memory.high: 0 bytes is not a usable limit",
        ),
        (&["--pids", "0"], "pids.max: 0 tasks is not a usable limit"),
        (&["--cpu", "0"], "0 is not a positive number of CPUs"),
        (&["--cpu", "-0.5"], "not a positive number of CPUs"),
        (&["--cpu", "NaN"], "NaN is not a positive number of CPUs"),
        (&["--cpu", "inf"], "inf is not a positive number of CPUs"),
        (&["--cpu-weight", "0"], "outside 1..=10000"),
        (&["--cpu-shares", "0"], "2..=262144"),
        (&["--io-max", "8:0=riops=0"], "not a limit"),
        (
            &["--cpu", "0.1", "--cpu-burst", "20ms"],
            "more than the quota",
        ),
    ] {
        let mut argv = vec!["create", c];
        argv.extend_from_slice(args);
        refused(&parent, &argv, 2, needle);
    }
    refused(
        &parent,
        &["run", "--cgroup", c, "--memory", "0", "--", "true"],
        2,
        "not a usable limit",
    );
    refused(
        &parent,
        &["create", c, "--io-max", "/dev/cgctl-no-such-disk=wbps=1M"],
        2,
        "unknown device /dev/cgctl-no-such-disk",
    );
    refused(
        &parent,
        &["create", c, "--io-max", "/dev/null=wbps=1M"],
        2,
        "not a block device",
    );
    refused(
        &parent,
        &["create", c, "--io-max", "8:0=wbps=0"],
        2,
        "not a limit",
    );
    refused(
        &parent,
        &["create", c, "--io-max", "8:0=speed=1"],
        2,
        "not one of rbps",
    );
    refused(
        &parent,
        &["create", c, "--cpuset-cpus", "3-1"],
        2,
        "range runs backwards",
    );
    refused(
        &parent,
        &["create", c, "--io-weight", "0"],
        2,
        "outside 1..=10000",
    );
    refused(
        &parent,
        &["create", c, "--io-weight", "10001"],
        2,
        "outside 1..=10000",
    );
    refused(
        &parent,
        &["create", c, "--cpu-weight", "20000"],
        2,
        "outside 1..=10000",
    );
    refused(
        &parent,
        &["create", c, "--pids", "lots"],
        2,
        "not a number of tasks",
    );
    refused(
        &parent,
        &["create", c, "--hugetlb", "3M=4M"],
        2,
        "not a page size",
    );
    refused(
        &parent,
        &["create", c, "--hugetlb", "2M=3M"],
        2,
        "whole number of",
    );
    refused(&parent, &["create", c, "--period", "50ms"], 2, "--cpu");
    let escape = format!("{}/../../etc", parent.name);
    refused(
        &parent,
        &["create", &escape, "--pids", "5"],
        1,
        "would escape the cgroup root",
    );
    refused(&parent, &["rm", &escape], 1, "would escape the cgroup root");
    refused(
        &parent,
        &["run", "--cgroup", &escape, "--", "true"],
        1,
        "escape",
    );
    refused(
        &parent,
        &[
            "run",
            "--cgroup",
            c,
            "--pids",
            "5",
            "--",
            "cgctl-no-such-command",
        ],
        127,
        "command not found",
    );
    refused(&parent, &["set", c, "--pids", "5"], 1, "does not exist");
    refused(&parent, &["frobnicate"], 2, "unrecognized subcommand");
}

#[test]
fn every_command_has_examples_in_its_help() {
    for sub in [
        "limit", "create", "set", "run", "move", "freeze", "thaw", "kill", "rm", "stat", "ls",
        "top",
    ] {
        let text = ok(&run_cgctl(&[sub, "--help"]));
        assert!(text.contains("Examples:"), "{sub} --help:\n{text}");
    }
}

fn run_out(args: &[&str]) -> Output {
    cgctl().args(args).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn run_relays_exit_status_and_removes_its_cgroup() {
    let parent = TestParent::new();
    let name = parent.child("job");
    let out = run_out(&[
        "run", "--cgroup", &name, "--pids", "50", "--", "sh", "-c", "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(parent.existing("job").is_empty(), "removed after exit");

    let out = run_out(&[
        "run",
        "--cgroup",
        &name,
        "--pids",
        "50",
        "--",
        "sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(out.status.code(), Some(128 + 9), "{out:?}");
    assert!(parent.existing("job").is_empty());

    // The child is in the cgroup before it execs: its own /proc/self/cgroup says so.
    let out = run_out(&[
        "run",
        "-v",
        "--cgroup",
        &name,
        "--pids",
        "50",
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    let text = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("[{}] {stderr}", lane());
    let want = format!(":/{name}");
    let pids_line = text
        .lines()
        .find(|l| {
            let ctrls = l.split(':').nth(1).unwrap_or("");
            ctrls.split(',').any(|c| c == "pids") || (ctrls.is_empty() && l.starts_with("0::"))
        })
        .unwrap_or_else(|| panic!("no pids line in {text}"));
    assert!(pids_line.ends_with(&want), "{text}");
    if parent.hierarchy.layout() == Layout::V2 {
        assert!(stderr.contains("clone3(CLONE_INTO_CGROUP)"), "{stderr}");
        // And the fallback works there too.
        let out = run_out(&[
            "run",
            "-v",
            "--no-clone3",
            "--cgroup",
            &name,
            "--pids",
            "50",
            "--",
            "cat",
            "/proc/self/cgroup",
        ]);
        assert!(ok(&out).contains(&want));
        assert!(String::from_utf8_lossy(&out.stderr).contains("fork"));
    } else if parent.hierarchy.layout() == Layout::Hybrid {
        // clone3 places it on the unified hierarchy, the child joins the v1 ones.
        assert!(
            stderr.contains("clone3(CLONE_INTO_CGROUP) for the v2"),
            "{stderr}"
        );
        let unified = text.lines().find(|l| l.starts_with("0::"));
        assert!(unified.is_some_and(|l| l.ends_with(&want)), "{text}");
    } else {
        assert!(stderr.contains("cgroup.procs before exec"), "{stderr}");
    }
    assert!(parent.existing("job").is_empty());

    // --keep keeps it; a command not found fails before anything is made.
    ok(&run_out(&[
        "run", "--keep", "--cgroup", &name, "--pids", "50", "--", "true",
    ]));
    assert!(!parent.existing("job").is_empty());
}

#[test]
fn run_enforces_its_limits() {
    let parent = TestParent::new();
    let name = parent.child("forky");
    // Ten background sleeps under a limit of five tasks: some forks fail.
    let out = run_out(&[
        "run",
        "--keep",
        "--cgroup",
        &name,
        "--pids",
        "5",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.5 & done; wait",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("[{}] forks under pids 5: {stderr}", lane());
    let s = json(&["stat", &name, "--json"]);
    assert!(
        s["pids"]["events_max"].as_u64().unwrap() > 0,
        "no fork was refused: {s}"
    );
    assert!(stderr.to_lowercase().contains("fork"), "{stderr}");
}

#[test]
fn run_forwards_sigterm_to_the_command() {
    let parent = TestParent::new();
    let name = parent.child("trap");
    let mut child = cgctl()
        .args([
            "run",
            "--cgroup",
            &name,
            "--pids",
            "50",
            "--",
            "sh",
            "-c",
            "trap 'exit 3' TERM; while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the shell is in the cgroup (and has set its trap).
    let procs = dir(&parent, Controller::Pids, "trap").join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&procs).map_or(true, |t| t.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the pid of a child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the trap's exit status comes back");
    assert!(parent.existing("trap").is_empty());
}

#[test]
fn move_ls_freeze_thaw_kill() {
    let parent = TestParent::new();
    let name = parent.child("box");
    ok(&run_cgctl(&["create", &name, "--pids", "20", "--cpu", "1"]));
    let sleeper = Proc(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = sleeper.pid().to_string();
    let text = ok(&run_cgctl(&["move", &name, "--pid", &pid]));
    assert!(text.contains(&format!("moved   pid {pid}")), "{text}");
    let procs = read(&dir(&parent, Controller::Pids, "box").join("cgroup.procs"));
    assert_eq!(procs, pid);

    // ls: the tree shows the cgroup with its process.
    let tree = ok(&run_cgctl(&["ls", &parent.name]));
    eprintln!("[{}] ls:\n{tree}", lane());
    assert!(
        tree.lines().next().unwrap().starts_with(&parent.name),
        "{tree}"
    );
    assert!(tree.contains("└─box"), "{tree}");
    assert!(tree.contains(&format!("─{pid} sleep")), "{tree}");
    if parent.hierarchy.layout() != Layout::V2 {
        assert!(tree.contains("pids"), "names the hierarchies: {tree}");
    }
    let shallow = ok(&run_cgctl(&["ls", &parent.name, "--depth", "0"]));
    assert!(!shallow.contains("box"), "{shallow}");

    // A thread on its own (v1 tasks); v2 allows that only in threaded subtrees.
    let out = run_cgctl(&["move", &name, "--pid", &pid, "--thread"]);
    if parent.hierarchy.layout() == Layout::V2 && !out.status.success() {
        // v2 moves a lone thread only within a threaded subtree.
        assert!(String::from_utf8_lossy(&out.stderr).contains("threaded"));
    } else {
        // v1, or v2 where the thread already shares its cgroup's domain.
        ok(&out);
        let threads = if parent.hierarchy.layout() == Layout::V2 {
            "cgroup.threads"
        } else {
            "tasks"
        };
        let t = read(&dir(&parent, Controller::Pids, "box").join(threads));
        assert!(t.lines().any(|l| l == pid), "{t}");
    }

    ok(&run_cgctl(&["freeze", &name]));
    let s = json(&["stat", &name, "--json"]);
    assert_eq!(s["freezer"], "frozen", "{s}");
    let state = |p: &str| {
        let st = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
        st.rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    eprintln!("[{}] frozen sleep state {}", lane(), state(&pid));
    ok(&run_cgctl(&["thaw", &name]));
    assert_eq!(json(&["stat", &name, "--json"])["freezer"], "thawed");

    let text = ok(&run_cgctl(&["kill", &name]));
    assert!(text.contains("killed"), "{text}");
    let mut sleeper = sleeper;
    let status = sleeper.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!parent.existing("box").is_empty(), "kill keeps the cgroup");
    ok(&run_cgctl(&["rm", &name]));
    assert!(parent.existing("box").is_empty());
}

#[test]
fn rm_r_refuses_a_populated_tree_and_kill_removes_it() {
    let parent = TestParent::new();
    let top = parent.child("tree");
    let mut procs = Vec::new();
    for leaf in ["a", "b/c"] {
        let name = format!("{top}/{leaf}");
        ok(&run_cgctl(&["create", &name, "--pids", "20"]));
        let p = Proc(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        ok(&run_cgctl(&["move", &name, "--pid", &p.pid().to_string()]));
        procs.push(p);
    }
    let out = run_cgctl(&["rm", &top]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-r"));
    let out = run_cgctl(&["rm", "-r", &top]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kill"));
    assert!(!parent.existing("tree/b/c").is_empty());

    let text = ok(&run_cgctl(&["rm", "-r", "--kill", &top]));
    assert!(text.contains("killed  2"), "{text}");
    assert!(
        parent.existing("tree").is_empty(),
        "{:?}",
        parent.existing("tree")
    );
    for mut p in procs {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(p.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}

#[test]
fn top_shows_a_throttled_cgroup() {
    let parent = TestParent::new();
    let busy = Proc::busy_loop();
    let name = parent.child("hot");
    ok(&run_cgctl(&[
        "limit",
        "--cpu",
        "0.2",
        "--pid",
        &busy.pid().to_string(),
        "--cgroup",
        &name,
    ]));
    // The BPF cgroup iterator (the default; the object is built and we are root),
    // then the files: the same row either way.
    for extra in [None, Some("--no-ebpf")] {
        let mut args = vec![
            "top",
            &parent.name,
            "--iterations",
            "2",
            "--interval",
            "1s",
            "--sort",
            "throttled",
        ];
        args.extend(extra);
        let text = ok(&run_cgctl(&args));
        let source = if extra.is_none() {
            "source: BPF cgroup iterator\n"
        } else {
            "source: files (BPF cgroup iterator off: --no-ebpf)\n"
        };
        assert!(text.contains(source), "{source:?} in {text}");
        top_row_is_throttled(&text, &name);
    }
}

fn top_row_is_throttled(text: &str, name: &str) {
    eprintln!("[{}] top:\n{text}", lane());
    assert_eq!(text.matches("CGROUP").count(), 2, "two frames: {text}");
    let row = text
        .lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    let cpu: f64 = cols[2].parse().unwrap();
    let thr: f64 = cols[3].parse().unwrap();
    assert!(thr > 0.0, "throttled % is {thr}: {row}");
    assert!(
        (5.0..=40.0).contains(&cpu),
        "CPU % {cpu} near the 20% cap: {row}"
    );
    assert!(
        !text.contains("\x1b["),
        "no ANSI codes when stdout is not a tty"
    );
}

#[test]
fn events_streams_populated_changes() {
    let parent = TestParent::new();
    let name = parent.child("watched");
    ok(&run_cgctl(&["create", &name, "--pids", "20"]));
    let watcher = cgctl()
        .args(["events", &name, "--json", "--count", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Ends by itself after two events, or with the Removed event when the test
    // parent is removed on a failure.
    std::thread::sleep(Duration::from_millis(500));
    let sleeper = Proc(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    ok(&run_cgctl(&[
        "move",
        &name,
        "--pid",
        &sleeper.pid().to_string(),
    ]));
    std::thread::sleep(Duration::from_millis(300));
    ok(&run_cgctl(&["kill", &name]));
    let out = watcher.wait_with_output().unwrap();
    let text = ok(&out);
    eprintln!("[{}] events:\n{text}", lane());
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["cgroup"], name.as_str());
    assert_eq!(lines[0]["event"]["populated"], true, "{text}");
    assert_eq!(lines[1]["event"]["populated"], false, "{text}");
}

/// `stat --ebpf` shows what the BPF cgroup iterator reads from the kernel's structs,
/// and it agrees with the files `stat` shows.
#[test]
fn stat_ebpf_agrees_with_the_files() {
    let parent = TestParent::new();
    let name = parent.child("kview");
    ok(&run_cgctl(&[
        "create", &name, "--cpu", "0.5", "--memory", "100M", "--pids", "50",
    ]));
    let text = ok(&run_cgctl(&["stat", &name, "--ebpf", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let views = v["ebpf"]
        .as_array()
        .unwrap_or_else(|| panic!("no ebpf section: {text}"));
    let find = |key: &str| {
        views
            .iter()
            .find_map(|k| k[key].as_u64())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    assert_eq!(find("quota_usec"), 50_000);
    assert_eq!(find("period_usec"), 100_000);
    assert_eq!(find("memory_limit_bytes"), 100 << 20);
    assert_eq!(find("pids_current"), 0);
    assert_eq!(find("nr_throttled"), 0);
    let plain = ok(&run_cgctl(&["stat", &name]));
    assert!(!plain.contains("ebpf"), "{plain}");
}
