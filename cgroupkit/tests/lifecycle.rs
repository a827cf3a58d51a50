//! Freeze, thaw, kill and recursive delete on the real kernel (v1 freezer on the host
//! lane, cgroup.freeze / cgroup.kill in the VM lane).
// Integration tests fail loudly: unwrap/expect are their assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::Duration;

use cgroupkit::{Cgroup, Controller, Error, FreezerState, Leftovers};
use common::{Proc, Scratch, cpu_seconds, eventually, lane};

const CTRL: &[Controller] = &[Controller::Cpu, Controller::Freezer];

#[test]
fn freeze_stops_progress_and_thaw_resumes_it() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("f"), CTRL).unwrap();
    let busy = Proc::busy();
    cg.add_process(busy.pid()).unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);

    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    let c0 = cpu_seconds(busy.pid());
    std::thread::sleep(Duration::from_millis(400));
    let frozen_cpu = cpu_seconds(busy.pid()) - c0;
    assert!(
        frozen_cpu < 0.02,
        "[{}] a frozen busy loop ran {frozen_cpu}s",
        lane()
    );

    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    let c1 = cpu_seconds(busy.pid());
    std::thread::sleep(Duration::from_millis(400));
    assert!(cpu_seconds(busy.pid()) - c1 > 0.1, "thawed loop runs again");
}

#[test]
fn kill_ends_every_process_including_forked_children() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("k"), CTRL).unwrap();
    // The shell is moved in before it forks, so its children start inside.
    let mut sh = Proc::sh("sleep 0.2; sleep 600 & sleep 600 & while :; do :; done");
    cg.add_process(sh.pid()).unwrap();
    assert!(eventually(Duration::from_secs(5), || cg
        .all_procs()
        .unwrap()
        .len()
        >= 3));
    assert!(cg.is_populated().unwrap());
    cg.kill().unwrap();
    assert!(!cg.is_populated().unwrap());
    assert!(cg.all_procs().unwrap().is_empty());
    assert!(eventually(Duration::from_secs(5), || sh.exited()));
}

#[test]
fn signal_reaches_processes_in_child_cgroups_once() {
    let s = Scratch::new();
    // Two leaves (cgroup v2 keeps processes out of a cgroup with children).
    let cg = Cgroup::create(&s.h, &s.path("sig"), CTRL).unwrap();
    let a = Cgroup::create(&s.h, &s.path("sig/a"), CTRL).unwrap();
    let b = Cgroup::create(&s.h, &s.path("sig/b"), CTRL).unwrap();
    let b2 = Cgroup::create(&s.h, &s.path("sig/b/deeper"), CTRL).unwrap();
    let mut one = Proc::sh("sleep 600");
    let mut two = Proc::sh("sleep 600");
    a.add_process(one.pid()).unwrap();
    b2.add_process(two.pid()).unwrap();
    assert_eq!(cg.signal(libc::SIGTERM).unwrap(), 2);
    assert!(eventually(Duration::from_secs(5), || one.exited() && two.exited()));
    assert!(!cg.is_populated().unwrap());
    for c in [b2, b, a, cg] {
        c.delete().unwrap();
    }
}

#[test]
fn delete_recursive_kills_through_frozen_children() {
    let s = Scratch::new();
    let top = Cgroup::create(&s.h, &s.path("t"), CTRL).unwrap();
    let mid = Cgroup::create(&s.h, &s.path("t/mid"), CTRL).unwrap();
    let leaf = Cgroup::create(&s.h, &s.path("t/mid/leaf"), CTRL).unwrap();
    let mut a = Proc::busy();
    let mut b = Proc::sleeper();
    leaf.add_process(a.pid()).unwrap();
    leaf.add_process(b.pid()).unwrap();
    leaf.freeze().unwrap();
    drop(mid);
    assert_eq!(
        top.children()
            .unwrap()
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect::<Vec<_>>(),
        vec![format!("{}/t/mid", s.name)]
    );
    let dirs: Vec<_> = top.dirs().iter().map(|d| d.path.clone()).collect();
    top.delete_recursive(Leftovers::Kill).unwrap();
    for d in dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    assert!(eventually(Duration::from_secs(5), || a.exited() && b.exited()));
}

#[test]
fn delete_recursive_drains_processes_out_of_the_tree() {
    let s = Scratch::new();
    let top = Cgroup::create(&s.h, &s.path("d"), CTRL).unwrap();
    let leaf = Cgroup::create(&s.h, &s.path("d/x/y"), CTRL).unwrap();
    let mut p = Proc::sleeper();
    leaf.add_process(p.pid()).unwrap();
    leaf.freeze().unwrap();
    let dirs: Vec<_> = top.dirs().iter().map(|d| d.path.clone()).collect();
    top.delete_recursive(Leftovers::Drain).unwrap();
    for d in dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    assert!(!p.exited(), "drained processes live on");
    // Thawed on the way out: it answers signals again.
    let st = cgroupkit::Procfs::default().stat(p.pid()).unwrap();
    assert_ne!(st.state, 'D', "not stuck frozen");
}

#[test]
fn delete_recursive_refuses_a_populated_tree_when_asked() {
    let s = Scratch::new();
    let top = Cgroup::create(&s.h, &s.path("r"), CTRL).unwrap();
    let leaf = Cgroup::create(&s.h, &s.path("r/l"), CTRL).unwrap();
    let p = Proc::sleeper();
    leaf.add_process(p.pid()).unwrap();
    let err = top.delete_recursive(Leftovers::Refuse).unwrap_err();
    assert!(matches!(err, Error::Rmdir { .. }), "{err}");
    assert!(
        err.hint().unwrap().contains("still holds processes"),
        "{err}"
    );
    assert!(
        leaf.procs().unwrap().contains(&p.pid()),
        "nothing was killed or moved"
    );
}

/// This host seen through an injected mountinfo without its cgroup2 mount (and,
/// with `freezer` false, without the v1 freezer): a pure v1 host, where kill must
/// fall back to signalling each process.
fn v1_only(freezer: bool) -> cgroupkit::Hierarchy {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v1_only: String = mi
        .lines()
        .filter(|l| !l.contains(" - cgroup2 "))
        .filter(|l| freezer || !(l.contains(" - cgroup ") && l.ends_with(",freezer")))
        .map(|l| format!("{l}\n"))
        .collect();
    let h = cgroupkit::Hierarchy::from_mountinfo_text(&v1_only, std::path::Path::new("v1-only"))
        .unwrap();
    assert_eq!(h.layout(), cgroupkit::Layout::V1);
    assert_eq!(h.mount_for(Controller::Freezer).is_some(), freezer);
    h
}

fn assert_v1_freezer_host(s: &Scratch) {
    assert_eq!(
        s.h.mount_for(Controller::Freezer).unwrap().version,
        cgroupkit::Version::V1,
        "[{}] the host lane's machines are hybrid, with a v1 freezer",
        lane()
    );
}

#[test]
#[cfg_attr(
    vm_lane,
    ignore = "the VM kernels are pure v2 with cgroup.kill; the v1 fallback runs on the host lane"
)]
fn kill_without_cgroup_kill_freezes_signals_and_thaws() {
    let s = Scratch::new();
    assert_v1_freezer_host(&s);
    // kill must fall back to freeze + SIGKILL + thaw.
    let h = v1_only(true);
    let cg = Cgroup::create(&h, &s.path("v1kill"), CTRL).unwrap();
    assert!(
        cg.dirs()
            .iter()
            .all(|d| d.version == cgroupkit::Version::V1)
    );
    let mut sh = Proc::sh("sleep 0.2; sleep 600 & sleep 600 & while :; do :; done");
    cg.add_process(sh.pid()).unwrap();
    assert!(eventually(Duration::from_secs(5), || cg
        .all_procs()
        .unwrap()
        .len()
        >= 3));
    cg.kill().unwrap();
    assert!(cg.all_procs().unwrap().is_empty());
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    assert!(eventually(Duration::from_secs(5), || sh.exited()));
}

/// Without cgroup.kill and without a freezer, kill signals what cgroup.procs lists,
/// through pidfds re-checked against the cgroup, until nothing is left: forks that
/// race the signals are caught by the next pass.
#[test]
#[cfg_attr(
    vm_lane,
    ignore = "the VM kernels are pure v2 with cgroup.kill; the v1 fallback runs on the host lane"
)]
fn kill_without_cgroup_kill_or_freezer_signals_through_pidfds_until_empty() {
    let s = Scratch::new();
    assert_v1_freezer_host(&s);
    let h = v1_only(false);
    let cg = Cgroup::create(&h, &s.path("v1pidfd"), &[Controller::Cpu]).unwrap();
    assert!(cg.freezer_state().is_err(), "no freezer on this view");
    // A bystander outside the cgroup, to check nothing else is hit.
    let mut by = Proc::sleeper();
    let mut sh = Proc::sh("sleep 0.2; while :; do sleep 600 & sleep 0.01; done");
    cg.add_process(sh.pid()).unwrap();
    assert!(eventually(Duration::from_secs(5), || cg
        .all_procs()
        .unwrap()
        .len()
        >= 5));
    cg.kill().unwrap();
    assert!(cg.all_procs().unwrap().is_empty());
    assert!(eventually(Duration::from_secs(5), || sh.exited()));
    assert!(!by.exited(), "a process outside the cgroup was killed");
}
