//! Host and VM lane (root): spawning from many threads at once, with user namespaces
//! and uid/gid/group changes, never hangs. Issue #12 item 12: a child that called
//! musl's `setgroups` between clone and exec took the thread-list lock that another
//! thread of the parent held at the moment of the clone, and waited for it forever.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fact;
use nskit::{IdMap, Namespace, Spawn};

const THREADS: usize = 8;
const PER_THREAD: usize = 125;
/// A hang is no progress at all for this long: each spawn takes milliseconds, even in
/// the VM lane under QEMU's emulation, so a minute without one finishing is a child
/// stuck between clone and exec, not a slow machine.
const STALL: Duration = Duration::from_secs(60);

#[test]
fn helper() {
    let Ok(mode) = std::env::var("NSKIT_HELPER") else {
        return; // run directly, it has nothing to do (the assertions are in the tests)
    };
    match mode.as_str() {
        "creds" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            for key in ["Uid", "Gid", "Groups"] {
                let line = status
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key}:")))
                    .unwrap_or("");
                fact(key, line.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        "groups_outer" => {
            // A root parent with supplementary groups gives its child another uid.
            nix::unistd::setgroups(&[
                nix::unistd::Gid::from_raw(4),
                nix::unistd::Gid::from_raw(27),
            ])
            .unwrap();
            for fork_style in [false, true] {
                let (st, out, err) = common::child("creds")
                    .uid(65_534)
                    .gid(65_534)
                    .force_clone2(fork_style)
                    .output()
                    .unwrap();
                assert!(st.success(), "{}", String::from_utf8_lossy(&err));
                let f = common::facts(&String::from_utf8_lossy(&out));
                fact(&format!("groups_fork{fork_style}"), &f["Groups"]);
            }
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let mine = status
                .lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .unwrap();
            fact(
                "groups_parent",
                mine.split_whitespace().collect::<Vec<_>>().join(" "),
            );
        }
        _ => panic!("unknown helper mode {mode}"),
    }
}

/// The spawn of iteration `i`: the four ways a child is made, each with credentials
/// to change in the child before exec.
fn spawn_for(program: &mut Spawn, i: usize) -> &mut Spawn {
    match i % 4 {
        // A user namespace with a range mapped, then setgroups(0), setresgid and
        // setresuid in the child (fork-style child, released by the sync pipe).
        0 => program
            .namespaces(Namespace::USER)
            .uid_map(IdMap::new(0, 100_000, 65_536))
            .gid_map(IdMap::new(0, 100_000, 65_536))
            .uid(1000)
            .gid(1000),
        // The default map (root inside is us), more namespaces, a hostname.
        1 => program
            .namespaces(Namespace::USER | Namespace::PID | Namespace::UTS)
            .hostname(format!("t{i}")),
        // No user namespace: setresgid/setresuid on the host, vfork-style child.
        2 => program.uid(65_534).gid(65_534),
        // A user namespace through the clone(2) fallback.
        _ => program
            .namespaces(Namespace::USER | Namespace::IPC)
            .uid_map(IdMap::new(0, 200_000, 65_536))
            .gid_map(IdMap::new(0, 200_000, 65_536))
            .gid(7)
            .force_clone2(true),
    }
}

/// SIGKILLs every child of every thread of this process (after a hang, so that none
/// outlives the test), through pidfds: a child we have not reaped cannot be recycled.
fn kill_all_children() -> usize {
    let mut killed = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: pidfd_open takes a pid and flags; the fd is closed below.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            if fd < 0 {
                continue;
            }
            // SAFETY: fd is the pidfd just opened; a NULL siginfo is allowed.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd,
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
                libc::close(fd as i32);
            }
            killed += 1;
        }
    }
    killed
}

#[test]
fn many_threads_spawn_a_thousand_children_with_id_changes_without_a_hang() {
    common::assert_root();
    let stop = Arc::new(AtomicBool::new(false));
    // Thread churn: pthread_create and thread exit take musl's thread-list lock, the
    // lock a child calling libc's setgroups/setuid/setrlimit (__synccall) waits for.
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::spawn(|| std::hint::black_box(vec![0u8; 4096]))
                    .join()
                    .unwrap();
            }
        })
    };
    let (tx, rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut workers = Vec::new();
    for t in 0..THREADS {
        let tx = tx.clone();
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            for i in 0..PER_THREAD {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let r = spawn_for(&mut Spawn::new("true"), t + i)
                    .spawn()
                    .and_then(|mut c| c.wait())
                    .map_err(|e| format!("thread {t} spawn {i}: {e:?}"))
                    .and_then(|st| {
                        if st.success() {
                            Ok(())
                        } else {
                            Err(format!("thread {t} spawn {i}: `true` ended with {st}"))
                        }
                    });
                if tx.send((t, r)).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);

    let start = Instant::now();
    let mut done = 0;
    let mut failures = Vec::new();
    let mut hang = None;
    while done < THREADS * PER_THREAD {
        match rx.recv_timeout(STALL) {
            Ok((_, Ok(()))) => done += 1,
            Ok((_, Err(e))) => {
                done += 1;
                failures.push(e);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                hang = Some(kill_all_children());
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(killed) = hang {
        // Do not join: a worker may still be blocked; the children are dead, so their
        // error pipes close and the workers end on their own.
        panic!(
            "spawning hung: {done} of {} spawns finished, none for {STALL:?}; killed {killed} stuck children",
            THREADS * PER_THREAD
        );
    }
    for w in workers {
        w.join().unwrap();
    }
    churn.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(done, THREADS * PER_THREAD);
    println!(
        "{done} spawns from {THREADS} threads in {:?}",
        start.elapsed()
    );

    // The credentials the children got, seen from inside.
    let f = common::run(spawn_for(&mut common::child("creds"), 0));
    assert_eq!(f["Uid"], "1000 1000 1000 1000");
    assert_eq!(f["Gid"], "1000 1000 1000 1000");
    assert_eq!(f["Groups"], "", "supplementary groups were not dropped");
    let f = common::run(spawn_for(&mut common::child("creds"), 2));
    assert_eq!(f["Uid"], "65534 65534 65534 65534");
    assert_eq!(f["Gid"], "65534 65534 65534 65534");
    assert_eq!(f["Groups"], "", "root's supplementary groups were kept");
    let f = common::run(spawn_for(&mut common::child("creds"), 3));
    assert_eq!(f["Uid"], "0 0 0 0");
    assert_eq!(f["Gid"], "7 7 7 7");
}

/// Root giving a child another uid (no user namespace) drops root's supplementary
/// groups in the child, as std's `CommandExt::uid` does: the child must not keep them.
#[test]
fn a_uid_change_by_root_drops_the_supplementary_groups() {
    common::assert_root();
    let f = common::run(&mut common::child("groups_outer"));
    assert_eq!(f["groups_parent"], "4 27", "{f:?}");
    assert_eq!(
        f["groups_forkfalse"], "",
        "vfork-style child kept the groups"
    );
    assert_eq!(f["groups_forktrue"], "", "fork-style child kept the groups");
}
