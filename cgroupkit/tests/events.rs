//! Events (populated, frozen, OOM kills, fork failures, removal) and PSI, on the real
//! kernel: hybrid on the host (the unified companion carries cgroup.events and PSI;
//! OOM on v1 arrives through cgroup.event_control), pure v2 in the VM lane.
// Integration tests fail loudly: unwrap/expect are their assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::Duration;

use cgroupkit::events::{Event, MemoryEventKind};
use cgroupkit::psi::{PsiResource, Stall, TriggerEvent};
use cgroupkit::{Cgroup, Controller, Limit, Memory, Pids, Resources};
use common::{Proc, Scratch, lane};

/// The next events until `want` is seen (or 10 s pass); returns all seen.
fn wait_for(w: &mut cgroupkit::events::EventWatcher, want: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Some(ev) = w.next_timeout(Some(Duration::from_millis(200))).unwrap() {
            let hit = want(&ev);
            seen.push(ev);
            if hit {
                return seen;
            }
        }
    }
    panic!("[{}] expected event not seen; saw {seen:?}", lane());
}

#[test]
fn populated_frozen_and_removed() {
    let s = Scratch::new();
    // Only cpu: on hybrid hosts the freezer then is the unified tree's cgroup.freeze,
    // whose changes cgroup.events reports.
    let cg = Cgroup::create(&s.h, &s.path("ev"), &[Controller::Cpu]).unwrap();
    let mut w = cg.watch().unwrap();
    assert_eq!(w.state().map(|e| e.populated), Some(false));
    let p = Proc::sleeper();
    cg.add_process(p.pid()).unwrap();
    wait_for(&mut w, |e| *e == Event::Populated(true));
    cg.freeze().unwrap();
    wait_for(&mut w, |e| *e == Event::Frozen(true));
    cg.thaw().unwrap();
    wait_for(&mut w, |e| *e == Event::Frozen(false));
    cg.kill().unwrap();
    wait_for(&mut w, |e| *e == Event::Populated(false));
    drop(p);
    cg.delete().unwrap();
    wait_for(&mut w, |e| *e == Event::Removed);
    assert_eq!(
        w.next_timeout(Some(Duration::from_millis(50))).unwrap(),
        None,
        "nothing after Removed"
    );
}

#[test]
fn an_oom_kill_is_an_event() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("oom"), &[Controller::Memory]).unwrap();
    let mut r = Resources::default();
    r.memory = Some(Memory::with_max(Limit::Bytes(32 << 20)));
    cg.apply(&r).unwrap();
    let mut w = cg.watch().unwrap();
    // dd's 64 MiB buffer is filled from /dev/zero: 64 MiB touched under a 32 MiB max.
    let mut hog =
        common::Proc::sh_stdin("read _; exec dd if=/dev/zero of=/dev/null bs=64M count=4");
    cg.add_process(hog.pid()).unwrap();
    drop(hog.0.stdin.take());
    let seen = wait_for(&mut w, |e| {
        matches!(
            e,
            Event::Memory {
                kind: MemoryEventKind::OomKill,
                ..
            }
        )
    });
    eprintln!("[{}] {seen:?}", lane());
    let st = hog.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "the hog was OOM-killed"
    );
}

#[test]
fn a_refused_fork_is_an_event() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("pids"), &[Controller::Pids]).unwrap();
    let mut r = Resources::default();
    r.pids = Some(Pids::with_max(3).unwrap());
    cg.apply(&r).unwrap();
    let mut w = cg.watch().unwrap();
    let p = common::Proc::sh_stdin("read _; for i in 1 2 3 4 5 6; do sleep 30 & done; sleep 30");
    cg.add_process(p.pid()).unwrap();
    let mut p = p;
    drop(p.0.stdin.take());
    wait_for(
        &mut w,
        |e| matches!(e, Event::PidsMax { count } if *count >= 1),
    );
    cg.kill().unwrap();
}

#[test]
fn pressure_reads_and_a_cpu_trigger_fires() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("psi"), &[Controller::Cpu]).unwrap();
    // Probed from the kernel's own file: PSI needs CONFIG_PSI and no psi=0 at boot.
    if std::fs::read_to_string("/proc/pressure/cpu").is_err() {
        for e in [
            cg.pressure(PsiResource::Cpu).unwrap_err(),
            cg.psi_trigger(
                PsiResource::Cpu,
                Stall::Some,
                Duration::from_millis(50),
                Duration::from_secs(2),
            )
            .unwrap_err(),
        ] {
            assert!(
                matches!(&e, cgroupkit::Error::Unsupported { reason, .. } if reason.contains("CONFIG_PSI")),
                "{e}"
            );
        }
        return;
    }
    let before = cg.pressure(PsiResource::Cpu).unwrap();
    cg.pressure(PsiResource::Memory).unwrap();
    cg.pressure(PsiResource::Io).unwrap();
    let t = cg
        .psi_trigger(
            PsiResource::Cpu,
            Stall::Some,
            Duration::from_millis(50),
            Duration::from_secs(2),
        )
        .unwrap();
    // Four busy loops on this machine's two CPUs wait for each other: CPU stall.
    let hogs: Vec<Proc> = (0..4).map(|_| Proc::busy()).collect();
    for h in &hogs {
        cg.add_process(h.pid()).unwrap();
    }
    let ev = t.wait(Some(Duration::from_secs(10))).unwrap();
    let after = cg.pressure(PsiResource::Cpu).unwrap();
    drop(hogs);
    eprintln!(
        "[{}] trigger {ev:?}; cpu some total {} -> {} us",
        lane(),
        before.some.total_usec,
        after.some.total_usec
    );
    assert_eq!(ev, TriggerEvent::Fired);
    assert!(after.some.total_usec > before.some.total_usec);
}

#[test]
fn psi_trigger_arguments_are_checked() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("psiarg"), &[Controller::Cpu]).unwrap();
    let e = cg
        .psi_trigger(
            PsiResource::Cpu,
            Stall::Some,
            Duration::from_millis(50),
            Duration::from_millis(100),
        )
        .unwrap_err();
    assert!(e.to_string().contains("500ms..10s"), "{e}");
    let e = cg
        .psi_trigger(
            PsiResource::Cpu,
            Stall::Some,
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .unwrap_err();
    assert!(e.to_string().contains("below the window"), "{e}");
}

#[cfg(feature = "tokio")]
#[test]
fn async_watcher_sees_populated_on_a_tokio_runtime() {
    let s = Scratch::new();
    let cg = Cgroup::create(&s.h, &s.path("async"), &[Controller::Cpu]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut w = cgroupkit::events::AsyncEventWatcher::new(cg.watch().unwrap()).unwrap();
        let p = Proc::sleeper();
        cg.add_process(p.pid()).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap();
        assert_eq!(ev.unwrap().unwrap(), Event::Populated(true));
        drop(p);
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap();
        assert_eq!(ev.unwrap().unwrap(), Event::Populated(false));
    });
}
