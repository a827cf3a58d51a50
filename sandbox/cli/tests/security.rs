//! seccomp and device rules, tried from inside real containers.
//!
//! A probe (this test binary, static, copied into the rootfs as `/probe` and run as
//! `/probe --exact helper` with SANDBOX_PROBE set) makes raw syscalls and prints
//! `PROBE name=result` lines: `ok`, `errno=N`, or for the ABI probes, run in a
//! forked child, `exit=N` / `signal=N`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

use common::{Env, err, out};

/// The probe's entry: does nothing unless SANDBOX_PROBE is set (the tests below run
/// it inside containers).
#[test]
fn helper() {
    if std::env::var_os("SANDBOX_PROBE").is_some() {
        probe::run();
    }
}

mod probe {
    fn report(name: &str, r: libc::c_long) {
        if r < 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            println!("PROBE {name}=errno={e}");
        } else {
            println!("PROBE {name}=ok");
        }
    }

    /// Runs `f` in a forked child (raw clone, SIGCHLD only) that exits 0 when `f`
    /// returns; reports how the child ended.
    fn in_child(name: &str, f: fn()) {
        // SAFETY: fork-like clone; the child only runs `f` (a raw syscall) and _exit.
        let pid =
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
        if pid == 0 {
            f();
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
        let mut st = 0;
        // SAFETY: st is writable; pid is our child.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut st, 0) };
        if libc::WIFSIGNALED(st) {
            println!("PROBE {name}=signal={}", libc::WTERMSIG(st));
        } else {
            println!("PROBE {name}=exit={}", libc::WEXITSTATUS(st));
        }
    }

    fn int80_getpid() {
        let mut eax: u32 = 20; // getpid in the i386 table
        // SAFETY: the i386 getpid takes no arguments and touches no memory.
        unsafe { core::arch::asm!("int 0x80", inout("eax") eax) };
        let _ = eax;
    }

    fn x32_getpid() {
        // SAFETY: getpid through the x32 ABI number; no arguments.
        unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
    }

    /// Raw syscall with integer arguments.
    fn sys(nr: libc::c_long, a: [libc::c_long; 3]) -> libc::c_long {
        // SAFETY: every probe passes integers or NULL pointers the kernel checks.
        unsafe { libc::syscall(nr, a[0], a[1], a[2], 0, 0, 0) }
    }

    pub fn run() {
        report("getpid", sys(libc::SYS_getpid, [0; 3]));
        // Denied by Docker's profile (CAP_SYS_NICE, keyrings), fine without it.
        report("get_mempolicy", sys(libc::SYS_get_mempolicy, [0; 3]));
        report(
            "keyctl",
            sys(
                libc::SYS_keyctl,
                [0 /* GET_KEYRING_ID */, -3 /* SESSION */, 0],
            ),
        );
        report("getppid", sys(libc::SYS_getppid, [0; 3]));
        report(
            "getpriority_user",
            sys(libc::SYS_getpriority, [libc::PRIO_USER as _, 0, 0]),
        );
        report(
            "getpriority_process",
            sys(libc::SYS_getpriority, [libc::PRIO_PROCESS as _, 0, 0]),
        );
        // Newer than the profile: ENOSYS, so libcs fall back.
        report("fchmodat2", sys(452, [-100, 0, 0]));
        report("nr_1000", sys(1000, [0; 3]));
        report("clone3", sys(libc::SYS_clone3, [0; 3]));
        report(
            "unshare_user",
            sys(libc::SYS_unshare, [libc::CLONE_NEWUSER as _, 0, 0]),
        );
        // clone with a namespace flag: if it ever succeeds, the child leaves at once.
        // SAFETY: fork-like clone; the child only calls _exit.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long,
                0,
                0,
                0,
                0,
            )
        };
        if r == 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        if r > 0 {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(r as libc::pid_t, std::ptr::null_mut(), 0) };
        }
        report("clone_newuser", r);
        in_child("clone_plain", || {});
        report(
            "socket_vsock",
            sys(libc::SYS_socket, [40, libc::SOCK_STREAM as _, 0]),
        );
        let s = sys(
            libc::SYS_socket,
            [libc::AF_UNIX as _, libc::SOCK_STREAM as _, 0],
        );
        report("socket_unix", s);
        report(
            "personality_query",
            sys(libc::SYS_personality, [0xffff_ffff, 0, 0]),
        );
        report(
            "personality_no_randomize",
            sys(libc::SYS_personality, [libc::ADDR_NO_RANDOMIZE as _, 0, 0]),
        );
        in_child("int80", int80_getpid);
        in_child("x32", x32_getpid);
    }
}

fn facts(o: &Output) -> BTreeMap<String, String> {
    out(o)
        .lines()
        .filter_map(|l| l.strip_prefix("PROBE "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The busybox rootfs with this test binary at /probe.
fn rootfs_with_probe(e: &Env) -> PathBuf {
    let r = e.rootfs();
    let p = r.join("probe");
    if !p.exists() {
        std::fs::copy(std::env::current_exe().unwrap(), &p).unwrap();
    }
    r
}

fn run_probe(e: &Env, extra: &[&str]) -> BTreeMap<String, String> {
    let r = rootfs_with_probe(e);
    let o = e
        .cmd()
        .arg("run")
        .arg("--rootfs")
        .arg(&r)
        .args(["-e", "SANDBOX_PROBE=1"])
        .args(extra)
        .args([
            "--",
            "/probe",
            "--exact",
            "helper",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .output()
        .unwrap();
    let f = facts(&o);
    assert!(
        o.status.success() && f.contains_key("x32"),
        "probe failed: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        out(&o),
        err(&o)
    );
    f
}

const EPERM: &str = "errno=1";
const ENOSYS: &str = "errno=38";
const SIGSYS: &str = "signal=31";

#[test]
fn seccomp_default_filter_from_inside() {
    let e = Env::new();
    let f = run_probe(&e, &[]);
    let want = [
        ("getpid", "ok"),
        ("get_mempolicy", EPERM),
        ("keyctl", EPERM),
        ("fchmodat2", ENOSYS),
        ("nr_1000", ENOSYS),
        ("clone3", ENOSYS),
        ("unshare_user", EPERM),
        ("clone_newuser", EPERM),
        ("clone_plain", "exit=0"),
        ("socket_vsock", EPERM),
        ("socket_unix", "ok"),
        ("personality_query", "ok"),
        ("personality_no_randomize", EPERM),
        ("int80", SIGSYS),
        ("x32", SIGSYS),
    ];
    for (k, v) in want {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "{k}: {f:?}");
    }
    e.assert_clean();
}

/// The control: without a filter the same probes reach the kernel, so the answers
/// above come from the filter (int 0x80 works on every kernel of ours; x32 answers
/// ENOSYS where the kernel lacks it, here, and runs on Debian's kernels).
#[test]
fn seccomp_unconfined_probes_reach_the_kernel() {
    let e = Env::new();
    let f = run_probe(&e, &["--seccomp", "unconfined"]);
    assert_eq!(f["keyctl"].as_str(), "ok", "{f:?}");
    assert_eq!(f["personality_no_randomize"].as_str(), "ok", "{f:?}");
    assert_eq!(f["int80"].as_str(), "exit=0", "{f:?}");
    assert_eq!(f["x32"].as_str(), "exit=0", "{f:?}");
    // fchmodat2 exists from Linux 6.6 (the 6.1 lane answers ENOSYS by itself).
    if kernel_at_least(6, 6) {
        assert_ne!(f["fchmodat2"].as_str(), ENOSYS, "{f:?}");
    }
    e.assert_clean();
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain data filled by uname(2).
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is writable.
    assert_eq!(unsafe { libc::uname(&mut u) }, 0);
    // SAFETY: the kernel NUL-terminates release.
    let rel = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut it = rel.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

#[test]
fn seccomp_busybox_workload_under_the_default_filter() {
    let e = Env::new();
    let r = e.rootfs();
    for a in ["wget", "ping", "nc"] {
        let _ = std::os::unix::fs::symlink("busybox", r.join("bin").join(a));
    }
    let o = e.run(
        &[],
        "ls / >/dev/null && echo LS-OK; ps >/dev/null && echo PS-OK; sleep 0.1 && echo SLEEP-OK; \
         (echo sub) | cat >/dev/null && echo PIPE-OK; \
         ping -c 1 -W 2 127.0.0.1 >/dev/null && echo PING-OK; \
         nc -w 1 127.0.0.1 9 </dev/null 2>&1; wget -q -O /dev/null http://localhost:9/ 2>&1; \
         echo WGET-DONE",
    );
    let s = out(&o);
    assert!(o.status.success(), "{s}\n{}", err(&o));
    for k in [
        "LS-OK",
        "PS-OK",
        "SLEEP-OK",
        "PIPE-OK",
        "PING-OK",
        "WGET-DONE",
    ] {
        assert!(s.contains(k), "{k}: {s}");
    }
    // nc and wget reach the network stack: refused by the closed port, not by
    // seccomp (ping's raw ICMP socket works too: CAP_NET_RAW is Docker's default).
    assert_eq!(s.matches("Connection refused").count(), 2, "{s}");
    assert!(
        !s.contains("not permitted") && !s.contains("Bad system call"),
        "{s}"
    );
    e.assert_clean();
}

fn write_profile(e: &Env, name: &str, json: &str) -> PathBuf {
    let p = e.dir.path().join(name);
    std::fs::write(&p, json).unwrap();
    p
}

#[test]
fn seccomp_spec_profile_is_honoured() {
    let e = Env::new();
    // Default allow; getppid answers 42; getpriority 43 but only for PRIO_USER.
    let p = write_profile(
        &e,
        "profile.json",
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[
              {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":42},
              {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":43,
               "args":[{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]}
            ]}"#,
    );
    let f = run_probe(&e, &["--seccomp", p.to_str().unwrap()]);
    assert_eq!(f["getppid"].as_str(), "errno=42", "{f:?}");
    assert_eq!(f["getpriority_user"].as_str(), "errno=43", "{f:?}");
    assert_eq!(f["getpriority_process"].as_str(), "ok", "{f:?}");
    // Not in the profile and allowed by default: keyctl reaches the kernel.
    assert_eq!(f["keyctl"].as_str(), "ok", "{f:?}");
    // The architecture check stays whatever the profile says.
    assert_eq!(f["int80"].as_str(), SIGSYS, "{f:?}");
    assert_eq!(f["x32"].as_str(), SIGSYS, "{f:?}");
    e.assert_clean();
}

#[test]
fn seccomp_unsupported_profile_is_refused_naming_the_field() {
    let e = Env::new();
    for (json, field) in [
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerPath":"/run/seccomp.sock"}"#,
            "listenerPath",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            "SCMP_ACT_NOTIFY",
        ),
    ] {
        let p = write_profile(&e, "bad.json", json);
        let o = e.run(&["--seccomp", p.to_str().unwrap()], "true");
        assert!(!o.status.success());
        assert!(err(&o).contains(field), "{field}: {}", err(&o));
    }
    e.assert_clean();
}

/// A marker unique to this test run, to look for in the host's kernel log.
fn marker(tag: &str) -> String {
    format!("sandbox-test-{}-{tag}", std::process::id())
}

/// Whether the host's kernel log holds `needle` (/dev/kmsg read without blocking).
fn host_kmsg_contains(needle: &str) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                if String::from_utf8_lossy(&buf[..n]).contains(needle) {
                    return true;
                }
            }
            // EPIPE: a record was overwritten while reading; go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) => panic!("read /dev/kmsg: {e}"),
        }
    }
}

/// The issue's attack: mknod of /dev/kmsg's numbers (1:11) in a read-write volume,
/// then a write to it. A volume is nodev now (open fails with EACCES), and the
/// node never reaches the host's kernel log.
#[test]
fn devices_volume_is_nodev_and_nosuid() {
    let e = Env::new();
    let data = e.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let m = marker("nodev");
    let vol = format!("{}:/data", data.display());
    let o = e.run(
        &["--volume", &vol],
        &format!(
            "mknod /data/kmsg c 1 11 && echo MKNOD-OK; echo {m} > /data/kmsg && echo WRITE-OK; \
             echo x > /dev/null && echo DEVNULL-OK; grep ' /data ' /proc/self/mountinfo"
        ),
    );
    let s = format!("{}{}", out(&o), err(&o));
    assert!(s.contains("MKNOD-OK"), "{s}");
    assert!(!s.contains("WRITE-OK"), "the node worked: {s}");
    assert!(s.contains("Permission denied"), "{s}");
    assert!(s.contains("DEVNULL-OK"), "{s}");
    let line = s
        .lines()
        .find(|l| l.contains(" /data "))
        .unwrap_or_default();
    assert!(line.contains("nodev") && line.contains("nosuid"), "{s}");
    assert!(
        !host_kmsg_contains(&m),
        "the marker reached the host's kernel log"
    );
    e.assert_clean();
}

/// With the volume opened up to device nodes (`:dev`), the device allow-list is
/// what refuses the node: the kernel answers EPERM (the v1 devices controller on
/// hybrid hosts, the eBPF device program on cgroup v2), while a node in the list
/// (/dev/null's 1:3) still works, there and in /dev.
#[test]
fn devices_allow_list_refuses_kmsg_on_a_dev_volume() {
    let e = Env::new();
    let data = e.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let m = marker("cgroup");
    let vol = format!("{}:/data:rw,dev", data.display());
    let o = e.run(
        &["--volume", &vol],
        &format!(
            "mknod /data/kmsg c 1 11 && echo MKNOD-OK; echo {m} > /data/kmsg && echo WRITE-OK; \
             cat /data/kmsg >/dev/null && echo READ-OK; \
             mknod /data/null c 1 3 && echo x > /data/null && echo NULL-OK; \
             head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo DEVNULL-OK; \
             grep ' /data ' /proc/self/mountinfo"
        ),
    );
    let s = format!("{}{}", out(&o), err(&o));
    assert!(s.contains("MKNOD-OK"), "{s}");
    assert!(
        !s.contains("WRITE-OK") && !s.contains("READ-OK"),
        "kmsg opened: {s}"
    );
    assert!(s.contains("Operation not permitted"), "EPERM expected: {s}");
    assert!(s.contains("NULL-OK") && s.contains("DEVNULL-OK"), "{s}");
    assert!(s.lines().any(|l| l.trim() == "4"), "/dev/urandom: {s}");
    let line = s
        .lines()
        .find(|l| l.contains(" /data "))
        .unwrap_or_default();
    assert!(!line.contains("nodev"), "dev was asked for: {s}");
    assert!(
        !host_kmsg_contains(&m),
        "the marker reached the host's kernel log"
    );
    e.assert_clean();
}
