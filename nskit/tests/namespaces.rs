//! Host and VM lane (root): each namespace kind isolates what it should, entering
//! another process's namespaces, error paths, and spawning from a multi-threaded tokio
//! runtime. Every namespace is made by a child (this binary re-executed as `helper`)
//! and dies with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::{Held, child as helper_child, fact, run};
use nskit::{Error, IdMap, MountSpec, Namespace, NsHandle, NsId, Spawn, TimeClock};

/// The child side of every test here: does what NSKIT_HELPER says and prints facts.
#[test]
fn helper() {
    let Ok(mode) = std::env::var("NSKIT_HELPER") else {
        return; // run directly, it has nothing to do (the assertions are in the tests)
    };
    match mode.as_str() {
        "argv0" => {
            fact("argv0", std::env::args().next().unwrap_or_default());
        }
        "uts" => {
            let u = nix::sys::utsname::uname().unwrap();
            fact("hostname", u.nodename().to_string_lossy());
            fact("domainname", u.domainname().to_string_lossy());
        }
        "pid" => {
            fact("pid", std::process::id());
            let mut pids: Vec<u32> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            pids.sort_unstable();
            fact("pids", format!("{pids:?}"));
        }
        "net" => {
            let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap();
            let names: Vec<&str> = dev
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next())
                .map(str::trim)
                .collect();
            fact("ifaces", names.join(","));
        }
        "ipc" => {
            let msg = std::fs::read_to_string("/proc/sysvipc/msg").unwrap();
            let keys: Vec<&str> = msg
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            fact("msg_keys", keys.join(","));
        }
        "mount" => {
            let dir = std::env::var("NSKIT_DIR").unwrap();
            fact("entries", std::fs::read_dir(&dir).unwrap().count());
            std::fs::write(format!("{dir}/made-in-child"), "x").unwrap();
            fact("wrote", 1);
        }
        "user" => {
            // SAFETY: getuid/getgid have no preconditions.
            let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
            fact("uid", u);
            fact("gid", g);
            fact(
                "uid_map",
                std::fs::read_to_string("/proc/self/uid_map")
                    .unwrap()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            let dir = std::env::var("NSKIT_DIR").unwrap();
            std::fs::write(format!("{dir}/owned"), "x").unwrap();
            // Root inside, but not over the host: entering the host's net namespace
            // is refused (EPERM).
            // Root inside, but not over the host: the host's net namespace can be
            // neither opened (ptrace access to pid 1, EACCES) nor entered (EPERM).
            match NsHandle::open(1, Namespace::NET).and_then(|h| h.enter(Namespace::NET)) {
                Err(e @ Error::PermissionDenied { .. }) => {
                    fact("enter_host", format!("denied: {e}"))
                }
                other => fact("enter_host", format!("{other:?}")),
            }
        }
        "cgroup" => {
            let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
            fact("cgroup", cg.lines().collect::<Vec<_>>().join(";"));
        }
        "time" => {
            fact("monotonic", common::monotonic_secs());
        }
        "ids" => {
            for k in Namespace::all().kinds() {
                fact(k.proc_name().unwrap(), NsId::current(k).unwrap().ino);
            }
        }
        "enter" | "enter_each" => {
            // nsenter: join the holder's namespaces through a pidfd (one call on 5.8+),
            // or one by one through /proc/PID/ns (what enter does before 5.8).
            let pid: i32 = std::env::var("NSKIT_TARGET").unwrap().parse().unwrap();
            let h = NsHandle::from_pid(pid).unwrap();
            let kinds = Namespace::UTS | Namespace::NET | Namespace::IPC;
            if mode == "enter" {
                h.enter(kinds).unwrap();
            } else {
                h.enter_each(kinds).unwrap();
            }
            for k in [Namespace::UTS, Namespace::NET, Namespace::IPC] {
                fact(k.proc_name().unwrap(), NsId::current(k).unwrap().ino);
            }
            // And one namespace through a /proc/PID/ns path.
            let p = std::path::PathBuf::from(format!("/proc/{pid}/ns/uts"));
            let h = NsHandle::from_path(&p).unwrap();
            assert_eq!(h.kind(), Some(Namespace::UTS));
            h.enter(Namespace::UTS).unwrap();
            fact("uts_by_path", NsId::current(Namespace::UTS).unwrap().ino);
        }
        "seccomp_clone3" => {
            // As under Docker's seccomp profile: clone3 and openat2 say ENOSYS.
            common_seccomp::deny_enosys(&[libc::SYS_clone3, libc::SYS_mount_setattr]);
            let (st, out, _) = helper_child("uts")
                .namespaces(Namespace::UTS | Namespace::PID)
                .hostname("fallback")
                .output()
                .unwrap();
            assert!(st.success());
            fact(
                "fallback_hostname",
                &common::facts(&String::from_utf8_lossy(&out))["hostname"],
            );
            let m = nskit::DetachedMount::clone_tree("/", false).unwrap();
            let userns = NsHandle::open(std::process::id() as i32, Namespace::USER).unwrap();
            let e = m.idmap(&userns).unwrap_err();
            fact("unsupported", &e);
            fact("is_unsupported", e.is_unsupported());
        }
        "ids_only" => {
            // SAFETY: getuid/getgid have no preconditions.
            let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
            fact("uid", u);
            fact("gid", g);
            for f in ["uid_map", "gid_map"] {
                let m = std::fs::read_to_string(format!("/proc/self/{f}")).unwrap();
                fact(f, m.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        "subid_outer" => {
            // Root in a mount namespace of its own: grant `nobody` a subordinate id
            // range by bind-mounting our files over /etc/subuid and /etc/subgid (the
            // host's files are untouched), then run the unprivileged stage as nobody.
            let dir = std::env::var("NSKIT_DIR").unwrap();
            let none: Option<&str> = None;
            nix::mount::mount(
                none,
                "/",
                none,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                none,
            )
            .unwrap();
            for f in ["subuid", "subgid"] {
                let target = format!("/etc/{f}");
                assert!(
                    std::path::Path::new(&target).exists(),
                    "{target} is missing: install the `passwd` package (shadow)"
                );
                nix::mount::mount(
                    Some(format!("{dir}/{f}").as_str()),
                    target.as_str(),
                    none,
                    nix::mount::MsFlags::MS_BIND,
                    none,
                )
                .unwrap();
            }
            let (st, out, err) = helper_child("subid_inner")
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap();
            assert!(
                st.success(),
                "unprivileged stage failed: {st}\n{}\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
            for (k, v) in common::facts(&String::from_utf8_lossy(&out)) {
                fact(&k, v);
            }
        }
        "subid_inner" => {
            // Unprivileged (nobody): mapping more than our own id needs newuidmap.
            // SAFETY: geteuid has no preconditions.
            fact("outer_euid", unsafe { libc::geteuid() });
            let r = helper_child("ids_only")
                .namespaces(Namespace::USER)
                .uid_map(IdMap::new(0, 200_000, 65536))
                .gid_map(IdMap::new(0, 200_000, 65536))
                .output();
            match r {
                Ok((st, out, err)) => {
                    assert!(st.success(), "{st}: {}", String::from_utf8_lossy(&err));
                    for (k, v) in common::facts(&String::from_utf8_lossy(&out)) {
                        fact(&format!("inner_{k}"), v);
                    }
                }
                Err(e) => fact("error", e),
            }
        }
        _ => panic!("unknown helper mode {mode}"),
    }
    common::hold();
}

/// A tiny seccomp filter for the helper: the listed syscalls fail with ENOSYS.
mod common_seccomp {
    pub fn deny_enosys(nrs: &[libc::c_long]) {
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        let stmt = |code: u16, k: u32| libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        };
        let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        let mut prog = vec![
            stmt(ld, 4),
            jeq(AUDIT_ARCH_X86_64, 1, 0),
            stmt(ret, libc::SECCOMP_RET_ALLOW),
            stmt(ld, 0),
        ];
        for nr in nrs {
            prog.push(jeq(*nr as u32, 0, 1));
            prog.push(stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
        }
        prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: prctl with a valid sock_fprog that outlives the call; the filter
        // applies to this helper process only.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog),
                0
            );
        }
    }
}

#[test]
fn uts_namespace_has_its_own_hostname() {
    common::assert_root();
    let host = common::hostname();
    let f = run(helper_child("uts")
        .namespaces(Namespace::UTS)
        .hostname("nskit-uts")
        .domainname("nskit.test"));
    assert_eq!(f["hostname"], "nskit-uts");
    assert_eq!(f["domainname"], "nskit.test");
    assert_eq!(common::hostname(), host, "the host's hostname changed");
}

#[test]
fn pid_namespace_child_is_pid_1_and_sees_only_itself() {
    common::assert_root();
    let f = run(helper_child("pid")
        .namespaces(Namespace::PID | Namespace::MOUNT)
        .mount(MountSpec::proc("/proc")));
    assert_eq!(f["pid"], "1");
    assert_eq!(f["pids"], "[1]");
}

#[test]
fn net_namespace_has_only_lo() {
    common::assert_root();
    let f = run(helper_child("net").namespaces(Namespace::NET));
    assert_eq!(f["ifaces"], "lo");
    let host = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    assert!(host.lines().count() >= 3, "the host has its interfaces");
}

#[test]
fn ipc_objects_are_invisible_across() {
    common::assert_root();
    let key = 0x4e53_0000 | (std::process::id() as i32 & 0xffff);
    // SAFETY: msgget creates a queue we remove below.
    let id = unsafe { libc::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    assert!(id >= 0, "msgget: {}", std::io::Error::last_os_error());
    let outside = run(&mut helper_child("ipc"));
    let inside = run(helper_child("ipc").namespaces(Namespace::IPC));
    // SAFETY: removes the queue made above.
    unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    assert!(
        outside["msg_keys"].split(',').any(|k| k.parse() == Ok(key)),
        "{outside:?}"
    );
    assert_eq!(inside["msg_keys"], "");
}

#[test]
fn mounts_are_invisible_across() {
    common::assert_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("host-file"), "x").unwrap();
    let f = run(helper_child("mount")
        .namespaces(Namespace::MOUNT)
        .env("NSKIT_DIR", dir.path())
        .mount(MountSpec::tmpfs(dir.path())));
    assert_eq!(f["entries"], "0", "the child sees its empty tmpfs");
    assert_eq!(f["wrote"], "1");
    assert!(dir.path().join("host-file").exists());
    assert!(
        !dir.path().join("made-in-child").exists(),
        "the child's file leaked out"
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(dir.path().to_str().unwrap()),
        "the child's mount leaked out"
    );
}

#[test]
fn user_namespace_maps_root_inside_to_unprivileged_outside() {
    common::assert_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let f = run(helper_child("user")
        .namespaces(Namespace::USER)
        .uid_map(IdMap::new(0, 100_000, 1))
        .gid_map(IdMap::new(0, 100_000, 1))
        .env("NSKIT_DIR", dir.path()));
    assert_eq!(f["uid"], "0");
    assert_eq!(f["gid"], "0");
    assert_eq!(f["uid_map"], "0 100000 1");
    let m = std::fs::metadata(dir.path().join("owned")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (100_000, 100_000),
        "root inside is 100000 outside"
    );
    assert!(
        f["enter_host"].starts_with("denied: "),
        "{}",
        f["enter_host"]
    );
    assert!(
        f["enter_host"].contains("permission denied"),
        "{}",
        f["enter_host"]
    );
}

#[test]
#[cfg_attr(
    vm_lane,
    ignore = "the VM lane's initramfs has no newuidmap (Debian package uidmap) or /etc/subuid"
)]
fn unprivileged_user_namespace_maps_a_range_through_newuidmap() {
    common::assert_root();
    assert!(
        std::path::Path::new("/usr/bin/newuidmap").exists(),
        "newuidmap is missing: install the Debian package uidmap (cargo xtask test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    for f in ["subuid", "subgid"] {
        std::fs::write(dir.path().join(f), "nobody:200000:65536\n").unwrap();
    }
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let f = run(helper_child("subid_outer")
        .namespaces(Namespace::MOUNT)
        .env("NSKIT_DIR", dir.path()));
    assert_eq!(f["outer_euid"], "65534", "{f:?}");
    assert!(!f.contains_key("error"), "spawn as nobody failed: {f:?}");
    // A range, which the kernel lets only a privileged writer map: newuidmap and
    // newgidmap (setuid root) wrote it after checking /etc/subuid and /etc/subgid.
    assert_eq!(f["inner_uid_map"], "0 200000 65536", "{f:?}");
    assert_eq!(f["inner_gid_map"], "0 200000 65536", "{f:?}");
    assert_eq!(
        (f["inner_uid"].as_str(), f["inner_gid"].as_str()),
        ("0", "0")
    );
}

/// The cgroup2 mount (the unified one on hybrid hosts).
fn cgroup2_mount() -> std::path::PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            post.starts_with("cgroup2 ")
                .then(|| pre.split(' ').nth(4).unwrap().into())
        })
        .expect("a cgroup2 mount (the VM lane and this host both have one)")
}

#[test]
fn cgroup_namespace_root_view_and_clone_into_cgroup() {
    common::assert_root();
    // Without a cgroup: the namespace root is the cgroup we are in.
    let f = run(helper_child("cgroup").namespaces(Namespace::CGROUP));
    for line in f["cgroup"].split(';') {
        assert!(line.ends_with(":/"), "not a root view: {line}");
    }
    // Into a cgroup of our own (clone3 CLONE_INTO_CGROUP), then a namespace rooted there.
    let dir = cgroup2_mount().join(format!("nskit-test-{}-0", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
    for clone2 in [false, true] {
        let fd = std::fs::File::open(&dir).unwrap();
        let held = Held::start(
            helper_child("cgroup")
                .namespaces(Namespace::CGROUP)
                .cgroup(fd.into())
                .force_clone2(clone2),
        );
        let outside =
            std::fs::read_to_string(format!("/proc/{}/cgroup", held.child.pid())).unwrap();
        assert!(
            outside
                .lines()
                .any(|l| l.starts_with("0::/") && l.ends_with(&name)),
            "clone2={clone2}: not in {name}: {outside}"
        );
        assert!(
            held.facts["cgroup"].split(';').any(|l| l == "0::/"),
            "{:?}",
            held.facts
        );
    }
}

#[test]
fn time_namespace_offsets_monotonic() {
    common::assert_root();
    let offset = 10 * 86_400;
    let f = run(helper_child("time")
        .namespaces(Namespace::TIME)
        .time_offset(TimeClock::Monotonic, offset, 0));
    let here = common::monotonic_secs();
    let there: i64 = f["monotonic"].parse().unwrap();
    let diff = there - here;
    assert!(
        (offset - 30..=offset + 1).contains(&diff),
        "offset {diff}, expected about {offset}"
    );
}

#[test]
fn entering_another_process_namespaces_like_nsenter() {
    common::assert_root();
    let held = Held::start(
        helper_child("uts")
            .namespaces(Namespace::UTS | Namespace::NET | Namespace::IPC | Namespace::MOUNT)
            .hostname("held"),
    );
    let pid = held.child.pid();
    let want = |k| NsId::of(pid, k).unwrap().ino.to_string();
    for k in [
        Namespace::UTS,
        Namespace::NET,
        Namespace::IPC,
        Namespace::MOUNT,
    ] {
        assert_ne!(NsId::current(k).unwrap(), NsId::of(pid, k).unwrap());
    }
    // setns in a child process (pidfd, several kinds at once), and one by one (the
    // path of kernels before 5.8, which the lanes' kernels would not take otherwise).
    for mode in ["enter", "enter_each"] {
        let f = run(helper_child(mode).env("NSKIT_TARGET", pid.to_string()));
        for k in [Namespace::UTS, Namespace::NET, Namespace::IPC] {
            assert_eq!(f[k.proc_name().unwrap()], want(k), "{mode} {k}");
        }
        assert_eq!(f["uts_by_path"], want(Namespace::UTS), "{mode}");
    }
    // Spawn::join: the mount namespace too, which setns refuses to threaded processes.
    let all = Namespace::UTS | Namespace::NET | Namespace::IPC | Namespace::MOUNT;
    let f = run(helper_child("ids").join(NsHandle::from_pid(pid).unwrap(), all));
    for k in all.kinds() {
        assert_eq!(f[k.proc_name().unwrap()], want(k), "{k}");
    }
    // And through a single namespace handle.
    let f =
        run(helper_child("ids").join(NsHandle::open(pid, Namespace::NET).unwrap(), Namespace::NET));
    assert_eq!(f["net"], want(Namespace::NET));
    assert_eq!(
        f["uts"],
        NsId::current(Namespace::UTS).unwrap().ino.to_string()
    );
}

#[test]
fn error_exited_pid() {
    let mut c = Spawn::new("true").spawn().unwrap();
    let pid = c.pid();
    assert!(c.wait().unwrap().success());
    for e in [
        NsHandle::open(pid, Namespace::NET).unwrap_err(),
        NsHandle::from_pid(pid).unwrap_err(),
        NsId::of(pid, Namespace::PID).unwrap_err(),
        c.kill().unwrap_err(),
    ] {
        assert!(
            matches!(e, Error::NoSuchProcess { pid: p } if p == pid),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains(&format!("no process with pid {pid}")),
            "{e}"
        );
    }
}

/// A zombie (exited, not yet reaped) has its /proc/PID/ns entries but no namespaces
/// behind them (ENOENT): that is the process gone, not the kernel lacking the kind.
#[test]
fn error_zombie_pid_is_no_such_process_not_a_missing_namespace_kind() {
    let mut c = Spawn::new("true").spawn().unwrap();
    let pid = c.pid();
    // The pidfd becomes readable when the child exits; it is not reaped until wait.
    let mut fds = [nix::poll::PollFd::new(
        c.pidfd(),
        nix::poll::PollFlags::POLLIN,
    )];
    assert_eq!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16)).unwrap(),
        1
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}/ns/net")).exists());
    assert!(
        std::fs::symlink_metadata(format!("/proc/{pid}/ns/net")).is_ok(),
        "zombie"
    );
    for e in [
        NsHandle::open(pid, Namespace::NET).unwrap_err(),
        NsId::of(pid, Namespace::NET).unwrap_err(),
    ] {
        assert!(
            matches!(e, Error::NoSuchProcess { pid: p } if p == pid),
            "{e:?}"
        );
    }
    assert!(c.wait().unwrap().success());
}

#[test]
fn error_bad_flag_combinations() {
    type Setup = fn(&mut Spawn) -> &mut Spawn;
    let cases: [(Setup, &str); 5] = [
        (|s| s.hostname("x"), "needs a new uts namespace"),
        (
            |s| s.mount(MountSpec::tmpfs("/tmp")),
            "needs a new mnt namespace",
        ),
        (
            |s| s.uid_map(IdMap::new(0, 1000, 1)),
            "needs a new user namespace",
        ),
        (
            |s| s.time_offset(TimeClock::Boottime, 1, 0),
            "needs a new time namespace",
        ),
        (
            |s| s.namespaces(Namespace::MOUNT).pivot_root(true),
            "pivot_root needs a root directory",
        ),
    ];
    for (setup, want) in cases {
        let mut s = Spawn::new("true");
        let e = setup(&mut s).spawn().unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
    }
    let e = NsId::current(Namespace::NET | Namespace::PID).unwrap_err();
    assert!(e.to_string().contains("exactly one namespace kind"), "{e}");
    let h = NsHandle::open(std::process::id() as i32, Namespace::NET).unwrap();
    let e = h.enter(Namespace::UTS).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot enter uts through a net namespace handle"),
        "{e}"
    );
}

#[test]
fn error_child_step_is_named() {
    // The vfork-style child reports through shared memory, the fork-style one (forced
    // here through the clone(2) path) over the error pipe: both name the step.
    for fork_style in [false, true] {
        let e = Spawn::new("/nonexistent/nskit-no-such-program")
            .force_clone2(fork_style)
            .spawn()
            .unwrap_err();
        assert!(
            matches!(&e, Error::Child { step, .. } if step.starts_with("exec")),
            "{e:?}"
        );
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(
            e.exec_error().and_then(std::io::Error::raw_os_error),
            Some(libc::ENOENT)
        );
    }
    let e = Spawn::new("true")
        .namespaces(Namespace::MOUNT)
        .mount(MountSpec::new(
            "nskit-no-such-fs",
            "none",
            "/tmp",
            nix::mount::MsFlags::empty(),
            None,
        ))
        .spawn()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("mount #0 (nskit-no-such-fs none on /tmp"),
        "{e}"
    );
    assert!(
        e.exec_error().is_none(),
        "a mount step is not the exec: {e:?}"
    );
    assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
}

#[test]
fn error_missing_kernel_feature_is_named_and_clone3_falls_back() {
    common::assert_root();
    let f = run(&mut helper_child("seccomp_clone3"));
    assert_eq!(
        f["fallback_hostname"], "fallback",
        "clone(2) fallback did not work"
    );
    assert_eq!(f["is_unsupported"], "true");
    assert!(
        f["unsupported"].contains("mount_setattr")
            && f["unsupported"].contains("Linux 5.12 or newer"),
        "{}",
        f["unsupported"]
    );
}

#[test]
fn arg0_is_what_the_program_sees_as_argv0() {
    let f = common::run(common::child("argv0").arg0("named-by-the-caller"));
    assert_eq!(f["argv0"], "named-by-the-caller", "{f:?}");
    // Without it, argv[0] is the program as given.
    let f = common::run(&mut common::child("argv0"));
    assert_eq!(
        f["argv0"],
        std::env::current_exe().unwrap().to_string_lossy(),
        "{f:?}"
    );
}

#[test]
fn signal_and_try_wait_through_pidfd() {
    let mut c = Spawn::new("sleep").arg("60").spawn().unwrap();
    assert_eq!(c.try_wait().unwrap(), None);
    c.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = c.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGTERM));
    assert_eq!(c.try_wait().unwrap(), Some(st));
}

/// Spawning from a multi-threaded tokio runtime while other threads allocate, lock and
/// spawn too: a child that touched malloc or a lock between clone and exec would hang
/// here (every wait is bounded), as youki #3011 describes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawn_is_safe_in_a_multithreaded_tokio_runtime() {
    common::assert_root();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Allocation pressure on other threads, so malloc arenas are locked at random.
    let mut noise = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        noise.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1024 + i]).collect();
                std::hint::black_box(v);
                let _ = std::env::var("PATH");
            }
        }));
    }
    let mut tasks = Vec::new();
    for i in 0..32 {
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut c = Spawn::new("true")
                .namespaces(Namespace::UTS | Namespace::PID | Namespace::IPC)
                .hostname(format!("t{i}"))
                .spawn()
                .unwrap();
            c.wait().unwrap()
        }));
    }
    let all = async {
        for t in tasks {
            assert!(t.await.unwrap().success());
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("a spawned child hung between clone and exec");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for n in noise {
        n.join().unwrap();
    }
}

/// The children this thread has (zombies included): `/proc/thread-self/children`.
fn my_children() -> String {
    std::fs::read_to_string("/proc/thread-self/children")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_spawn_that_fails_after_the_clone_leaves_no_child_behind() {
    common::assert_root();
    // The parent's side fails: overlapping uid_map lines are refused by the kernel
    // (EINVAL) after the child exists and waits for its maps.
    let e = Spawn::new("true")
        .namespaces(Namespace::USER)
        .uid_map(IdMap::new(0, 100_000, 10))
        .uid_map(IdMap::new(5, 200_000, 10))
        .spawn()
        .unwrap_err();
    assert!(e.to_string().contains("uid_map"), "{e}");
    assert_eq!(my_children(), "", "the child was left behind");
    // The child's side fails (fork-style and vfork-style): it reports and exits, and
    // is reaped.
    for fork_style in [false, true] {
        let e = Spawn::new("/nonexistent/nskit-no-such-program")
            .force_clone2(fork_style)
            .spawn()
            .unwrap_err();
        assert!(e.exec_error().is_some(), "{e:?}");
        assert_eq!(my_children(), "", "fork_style={fork_style}: not reaped");
    }
}

/// The exec gate: `spawn` returns with the child set up but not exec'd; a byte on the
/// gate's fd releases it; a missing program fails the spawn itself; EOF on the gate
/// ends the child with 127 and never runs the program.
#[test]
fn exec_gate_holds_the_child_until_released() {
    use std::io::Write;
    common::assert_root();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let (r, w) = nix::unistd::pipe().unwrap();
    let mut sp = Spawn::new("/bin/sh");
    sp.args(["-c", &format!("echo ok > {}", marker.display())])
        .namespaces(Namespace::UTS | Namespace::PID)
        .exec_gate(r);
    let mut child = sp.spawn().unwrap();
    drop(sp);
    // Created, not started: the program has not run, the child is alive.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "the program ran before the gate opened");
    assert_eq!(child.try_wait().unwrap(), None, "the gated child exited");
    let mut w = std::fs::File::from(w);
    w.write_all(b"1").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ok\n");

    // A missing program is the spawn's error, before the gate.
    let (r, _w) = nix::unistd::pipe().unwrap();
    let e = Spawn::new("nskit-no-such-program")
        .namespaces(Namespace::UTS)
        .exec_gate(r)
        .spawn()
        .unwrap_err();
    assert_eq!(
        e.exec_error().and_then(std::io::Error::raw_os_error),
        Some(libc::ENOENT),
        "{e:?}"
    );

    // EOF on the gate: the child exits 127 without running the program.
    std::fs::remove_file(&marker).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    let w_raw = std::os::fd::AsRawFd::as_raw_fd(&w);
    let mut sp = Spawn::new("/bin/sh");
    sp.args(["-c", &format!("echo ok > {}", marker.display())]);
    // The child's copy of the write end goes first, or it would never see EOF.
    // SAFETY: close(2) is async-signal-safe; the fd is the child's copy.
    unsafe {
        sp.pre_exec(move || {
            libc::close(w_raw);
            Ok(())
        });
    }
    sp.exec_gate(r);
    let mut child = sp.spawn().unwrap();
    drop(sp);
    drop(w);
    assert_eq!(child.wait().unwrap().code(), Some(127));
    assert!(!marker.exists());
}
