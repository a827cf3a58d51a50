//! cgroupkit against the real kernel, as root: hybrid cgroups on the host lane, pure
//! cgroup v2 in the VM lane (`CGROUPKIT_LANE=vm-*`).
// Integration tests fail loudly: unwrap/expect are their assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Command;

use cgroupkit::{
    Cgroup, CgroupPath, Controller, Cpu, CpuQuota, Error, Hierarchy, Layout, Pid, Resources,
    Version,
};

mod common;
use common::{Proc as Sleeper, Scratch, lane};

#[test]
fn detects_the_layout_of_this_machine() {
    let h = Hierarchy::detect().unwrap();
    eprintln!("[{}] layout {}", lane(), h.layout());
    if lane().starts_with("vm-") {
        assert_eq!(h.layout(), Layout::V2);
    }
    // The mount said to serve cpu really has that version's cpu files.
    let cpu = h.mount_for(Controller::Cpu).expect("cpu controller served");
    let file = match cpu.version {
        Version::V1 => "cpu.cfs_quota_us",
        Version::V2 => "cgroup.subtree_control",
    };
    assert!(
        cpu.mount_point.join(file).exists(),
        "{} lacks {file}",
        cpu.mount_point.display()
    );
    if cpu.version == Version::V2 {
        let ctl = std::fs::read_to_string(cpu.mount_point.join("cgroup.controllers")).unwrap();
        assert!(ctl.split_whitespace().any(|c| c == "cpu"));
    }
    if h.layout() == Layout::Hybrid {
        // The v2 mount lists only controllers not bound to a v1 hierarchy.
        let v2 = h.unified().unwrap();
        for c in &v2.controllers {
            assert!(
                h.mount_for(*c).unwrap().version == Version::V2,
                "{c} bound to v1 yet listed on v2"
            );
        }
    }
}

#[test]
fn create_apply_move_stat_delete() {
    let s = Scratch::new();
    let path = s.path("app/worker");
    let cg = Cgroup::create(&s.h, &path, &[Controller::Cpu]).unwrap();
    assert_eq!(
        cg.created().len(),
        3 * cg.dirs().len(),
        "made the scratch top, the parent and the leaf"
    );
    let mut r = Resources::default();
    r.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(0.25, 40_000).unwrap()));
    let written = cg.apply(&r).unwrap();
    assert!(!written.is_empty());
    let q = cg.cpu_quota().unwrap();
    assert_eq!((q.quota_usec(), q.period_usec()), (Some(10_000), 40_000));

    let p = Sleeper::sleeper();
    cg.add_process(p.pid()).unwrap();
    assert_eq!(cg.procs().unwrap(), vec![p.pid()]);
    assert_eq!(cg.threads().unwrap(), vec![p.pid()]);
    let st = cg.cpu_stat().unwrap();
    assert_eq!(st.nr_throttled, 0, "a sleeper is never throttled");

    // Reopen by path; a reused cgroup reports nothing created.
    let again = Cgroup::create(&s.h, &path, &[Controller::Cpu]).unwrap();
    assert!(again.created().is_empty());
    let loaded = Cgroup::load(&s.h, &path).unwrap();
    assert_eq!(loaded.dirs(), cg.dirs());

    // Populated: delete fails with EBUSY and a hint; drain then delete works.
    let err = Cgroup::open(&s.h, &path, &[Controller::Cpu])
        .unwrap()
        .delete()
        .unwrap_err();
    assert!(matches!(err, Error::Rmdir { .. }), "{err}");
    assert!(err.hint().unwrap().contains("still holds processes"));
    let moved = cg.drain_to_parent().unwrap();
    assert_eq!(moved.len(), cg.dirs().len(), "{moved:?}");
    for w in &moved {
        assert_eq!(w.value, p.pid().to_string());
        let procs = std::fs::read_to_string(&w.path).unwrap();
        assert!(
            procs.lines().any(|l| l == w.value),
            "pid now in {}",
            w.path.display()
        );
        if cg.dirs()[0].version == Version::V1 {
            assert!(
                w.path.ends_with(format!("{}/app/cgroup.procs", s.name)),
                "v1 drains to the parent"
            );
        }
    }
    cg.delete().unwrap();
    assert!(matches!(
        Cgroup::open(&s.h, &path, &[Controller::Cpu]).unwrap_err(),
        Error::NotFound { .. }
    ));
}

#[test]
fn unlimited_quota_round_trips() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("u"), &[Controller::Cpu]).unwrap();
    let mut r = Resources::default();
    r.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(0.5, 100_000).unwrap()));
    cg.apply(&r).unwrap();
    r.cpu = Some(Cpu::with_quota(CpuQuota::unlimited(100_000).unwrap()));
    cg.apply(&r).unwrap();
    assert_eq!(cg.cpu_quota().unwrap().quota_usec(), None);
}

/// README: zero limits are refused, by the library itself, before the first write
/// (`memory.max` 0 used to be written and OOM-killed everything moved in).
#[test]
fn zero_limits_are_refused_before_anything_is_written() {
    use cgroupkit::{Limit, Memory, Pids, PidsLimit};
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("z"), &[Controller::Cpu, Controller::Memory]).unwrap();
    let before = cg.cpu_quota().unwrap();
    let quota = || Some(Cpu::with_quota(CpuQuota::from_cpus(0.5, 100_000).unwrap()));
    let mut cases: Vec<(&str, Resources)> = Vec::new();
    for (name, m) in [
        ("memory.max", Memory::with_max(Limit::Bytes(0))),
        ("memory.high", Memory::default().high(Limit::Bytes(0))),
    ] {
        let mut r = Resources::default();
        r.cpu = quota();
        r.memory = Some(m);
        cases.push((name, r));
    }
    let mut r = Resources::default();
    r.cpu = quota();
    let mut p = Pids::default();
    p.max = Some(PidsLimit::Tasks(0));
    r.pids = Some(p);
    cases.push(("pids.max", r));
    for (name, r) in cases {
        let err = cg.apply(&r).unwrap_err();
        assert!(
            matches!(err, Error::InvalidResource { what, .. } if what == name),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("not a usable limit"), "{err}");
        assert_eq!(
            cg.cpu_quota().unwrap(),
            before,
            "{name}: cpu written anyway"
        );
    }
    assert!(Pids::with_max(0).is_err());
    // Zero where it means "none" stays accepted: no swap, no protection.
    let m = Memory::with_max(Limit::Bytes(64 << 20)).low(Limit::Bytes(0));
    m.validate().unwrap();
    Memory::default()
        .swap_max(Limit::Bytes(0))
        .validate()
        .unwrap();
}

#[test]
fn moving_a_missing_or_kernel_process_is_a_typed_error() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("k"), &[Controller::Cpu]).unwrap();
    let err = cg.add_process(Pid::new(2).unwrap()).unwrap_err();
    assert!(matches!(err, Error::KernelThread { pid: 2, .. }), "{err}");
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = Pid::new(c.id().into()).unwrap();
        c.wait().unwrap();
        pid
    };
    let err = cg.add_process(gone).unwrap_err();
    assert!(matches!(err, Error::NoSuchProcess { .. }), "{err}");
}

#[test]
fn rollback_removes_only_what_create_made() {
    let s = Scratch::new();
    let keep = Cgroup::create(&s.h, &s.path("keep"), &[Controller::Cpu]).unwrap();
    let mut cg = Cgroup::create(&s.h, &s.path("keep/new/leaf"), &[Controller::Cpu]).unwrap();
    assert_eq!(cg.created().len(), 2 * cg.dirs().len());
    cg.rollback().unwrap();
    for d in keep.dirs() {
        assert!(d.path.is_dir(), "pre-existing {} kept", d.path.display());
        assert!(!d.path.join("new").exists(), "new cgroups removed");
    }
}

#[test]
#[cfg_attr(
    not(vm_lane),
    ignore = "cpu is a v1 controller on the host lane's hybrid machines; enabling it along a v2 path runs in the VM lane"
)]
fn v2_enables_controllers_along_the_path() {
    let s = Scratch::new();
    let m = s.h.mount_for(Controller::Cpu).unwrap();
    assert_eq!(
        m.version,
        Version::V2,
        "[{}] the VM lane is pure v2",
        lane()
    );
    let cg = Cgroup::create(&s.h, &s.path("a/b"), &[Controller::Cpu]).unwrap();
    for anc in [
        m.mount_point.join(&s.name),
        m.mount_point.join(&s.name).join("a"),
    ] {
        let sc = std::fs::read_to_string(anc.join("cgroup.subtree_control")).unwrap();
        assert!(
            sc.split_whitespace().any(|c| c == "cpu"),
            "{}: {sc:?}",
            anc.display()
        );
    }
    assert!(cg.dirs()[0].path.join("cpu.max").exists());
}

#[test]
fn a_symlink_in_place_of_a_cgroup_is_refused() {
    // cgroupfs cannot hold symlinks; a hierarchy whose mount point is a plain
    // directory (a fixture) shows that create refuses one rather than follow it.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("v2");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("cgroup.controllers"), "cpu\n").unwrap();
    std::fs::write(root.join("cgroup.subtree_control"), "cpu\n").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
    let mi = format!("30 23 0:26 / {} rw - cgroup2 cgroup2 rw\n", root.display());
    let h = Hierarchy::from_mountinfo_text(&mi, std::path::Path::new("fixture")).unwrap();
    let err =
        Cgroup::create(&h, &CgroupPath::new("evil/x").unwrap(), &[Controller::Cpu]).unwrap_err();
    assert!(err.to_string().contains("evil"), "{err}");
    assert!(!std::path::Path::new("/etc/x").exists());
}

#[test]
fn the_test_left_no_scratch_cgroup() {
    let s = Scratch::new();
    let name = s.name.clone();
    drop(Cgroup::create(&s.h, &s.path("z"), &[Controller::Cpu]).unwrap());
    drop(s);
    let h = Hierarchy::detect().unwrap();
    assert!(
        h.mounts()
            .iter()
            .all(|m| !m.mount_point.join(&name).exists())
    );
}

#[test]
fn delegation_is_checked_and_granted_per_kernel_rules() {
    use cgroupkit::delegation::Owner;
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("deleg"), &[Controller::Cpu]).unwrap();
    let nobody = Owner {
        uid: 65534,
        gid: 65534,
    };
    let gap = cg
        .delegation_gap(nobody)
        .unwrap()
        .expect("a fresh cgroup is root's");
    assert_eq!(gap.owner_uid, 0);
    // What the check says is what the kernel does: nobody cannot make a child...
    let mkdir_as_nobody = |name: &str| {
        use std::os::unix::process::CommandExt;
        Command::new("mkdir")
            .arg(cg.dirs()[0].path.join(name))
            .uid(65534)
            .gid(65534)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(!mkdir_as_nobody("before"));
    assert!(
        cg.delegation_gap(Owner { uid: 0, gid: 0 })
            .unwrap()
            .is_none()
    );
    cg.delegate_to(nobody).unwrap();
    assert_eq!(cg.delegation_gap(nobody).unwrap(), None);
    // ... until the subtree is delegated.
    assert!(mkdir_as_nobody("after"));
    // Another unprivileged user is still not a delegate.
    assert!(
        cg.delegation_gap(Owner {
            uid: 4242,
            gid: 4242
        })
        .unwrap()
        .is_some()
    );
    // The limits stay root's: the delegate cannot raise its own quota.
    let limit_file = match cg.dirs()[0].version {
        Version::V1 => "cpu.cfs_quota_us",
        Version::V2 => "cpu.max",
    };
    let meta = std::fs::metadata(cg.dirs()[0].file(limit_file)).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
}

/// The one "spawn into this cgroup" path: clone3's directory fd where the cgroup is
/// on v2 alone, both on a hybrid host, else a child that writes `0` to each
/// pre-opened file before exec.
#[test]
fn spawn_placement_puts_the_child_in_the_cgroup_before_exec() {
    use cgroupkit::Placement;
    use std::os::unix::process::CommandExt;
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("spawned"), &[Controller::Pids]).unwrap();
    let v2_only = cg.dirs().iter().all(|d| d.version == Version::V2);
    match cg.spawn_handles().unwrap().placement(true) {
        Placement::CloneInto(_) => assert!(v2_only, "a directory fd only on v2 alone"),
        Placement::JoinSelf(_) => assert!(
            cg.dirs().iter().all(|d| d.version == Version::V1),
            "a cgroup with a v2 directory offers CLONE_INTO_CGROUP"
        ),
        Placement::Both { join, .. } => {
            assert!(!v2_only, "v1 hierarchies as well as v2");
            // The child joins the v1 ones only: the v2 one is clone3's.
            let v1 = cg
                .dirs()
                .iter()
                .filter(|d| d.version == Version::V1)
                .count();
            assert_eq!(join.joins(), v1, "{join:?}");
        }
    }
    let Placement::JoinSelf(handles) = cg.spawn_handles().unwrap().placement(false) else {
        panic!("placement(false) must join before exec");
    };
    let mut cmd = Command::new("cat");
    cmd.arg("/proc/self/cgroup");
    // SAFETY: join_self makes only write(2) syscalls on fds opened before the fork.
    unsafe { cmd.pre_exec(move || handles.join_self()) };
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Every hierarchy the cgroup spans shows it as the program's cgroup from its
    // first instruction (cat reads its own /proc/self/cgroup).
    let want = format!("/{}/spawned", s.name);
    let lines = text.lines().filter(|l| l.ends_with(&want)).count();
    assert_eq!(lines, cg.dirs().len(), "{text}");
}
