//! Shared helpers of the exporter's integration tests: the real binary on a loopback
//! port, a tiny HTTP/1.1 client, and capped cgroups that clean up after themselves.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cgroupkit::{Cgroup, CgroupPath, Controller, Cpu, CpuQuota, Hierarchy, Pid, Resources};

/// The lane these tests run in (`host`, `vm-6.12`, ...), from CGROUPKIT_LANE.
pub fn lane() -> String {
    std::env::var("CGROUPKIT_LANE").unwrap_or_else(|_| "host".into())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The exporter binary, started on 127.0.0.1 with a free port; killed by pid on drop.
pub struct Exporter {
    child: Option<Child>,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Exporter {
    pub fn start(args: &[&str]) -> Exporter {
        Exporter::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Exporter {
        Exporter::start_with(args, env, None)
    }

    /// Started with RLIMIT_NOFILE `n` (soft and hard), so it cannot raise it.
    pub fn start_nofile(args: &[&str], n: u64) -> Exporter {
        Exporter::start_with(args, &[], Some(n))
    }

    fn start_with(args: &[&str], env: &[(&str, &str)], nofile: Option<u64>) -> Exporter {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cgroup_exporter"));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let rl = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: between fork and exec only the raw prlimit64 syscall runs (musl's
            // setrlimit would take the thread-list lock of a threaded parent); `rl`
            // is a copy owned by the closure.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::syscall(
                        libc::SYS_prlimit64,
                        0,
                        libc::RLIMIT_NOFILE,
                        &rl as *const libc::rlimit,
                        std::ptr::null_mut::<libc::rlimit>(),
                    );
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start cgroup_exporter");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[exporter] {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut e = Exporter {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            stderr,
        };
        // Loading the eBPF probe parses the kernel's BTF: slow under QEMU emulation.
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no address on stdout; stderr:\n{}", e.stderr()));
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        e.addr = addr.parse().unwrap();
        // The binary writes its start-up lines to stderr before the address to stdout,
        // but the two pipes are read by different threads: wait for the last of them
        // ("... host, watching ...") so that stderr() holds them all.
        let start = Instant::now();
        while !e.stderr().contains(" host, watching ") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no start-up lines on stderr:\n{}",
                e.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        e
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether `needle` shows up on stderr within 10 s: lines that come after the
    /// "watching" line (the start-up waits only for that one) reach `stderr()` through
    /// the reader thread some time after the process wrote them.
    pub fn stderr_shows(&self, needle: &str) -> bool {
        let start = Instant::now();
        while !self.stderr().contains(needle) {
            if start.elapsed() > Duration::from_secs(10) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Whether the eBPF probe attached (the binary says so on stderr).
    pub fn probe_on(&self) -> bool {
        self.stderr().contains("eBPF throttle probe on")
    }

    pub fn scrape(&self) -> String {
        let (status, _, body) = get(self.addr, "/metrics", None);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// SIGTERM, then wait (at most 30 s) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the exporter did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`: (status, headers, body).
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the exporter");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head.to_owned(), body.to_owned())
}

/// The value of `name{id="<id>"}` in exposition text.
pub fn value(text: &str, name: &str, id: &str) -> Option<f64> {
    let prefix = format!("{name}{{id=\"{id}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().expect("a number"))
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A cgroup `exporter-test-<pid>-<n>` (optionally capped, optionally holding a busy
/// shell loop); on drop the process is killed by pid and the cgroup removed.
pub struct TestCgroup {
    pub cg: Option<Cgroup>,
    pub id: String,
    busy: Option<Child>,
}

impl TestCgroup {
    pub fn new(cpus: Option<f64>) -> TestCgroup {
        let h = Hierarchy::detect().unwrap();
        let name = format!(
            "exporter-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let path = CgroupPath::new(&name).unwrap();
        let cg = Cgroup::create(&h, &path, &[Controller::Cpu, Controller::Memory]).unwrap();
        let t = TestCgroup {
            cg: Some(cg),
            id: format!("/{name}"),
            busy: None,
        };
        if let Some(c) = cpus {
            let mut r = Resources::default();
            r.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(c, 100_000).unwrap()));
            t.cg().apply(&r).unwrap();
        }
        t
    }

    pub fn cg(&self) -> &Cgroup {
        self.cg.as_ref().unwrap()
    }

    /// Starts `sh -c 'while :; do :; done'` inside.
    pub fn burn(&mut self) {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start a busy loop");
        let pid = Pid::new(i64::from(child.id())).unwrap();
        self.busy = Some(child);
        self.cg().add_process(pid).unwrap();
    }

    /// Kills the process (by pid) and removes the cgroup.
    pub fn remove(&mut self) {
        if let Some(mut c) = self.busy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(cg) = self.cg.take() {
            let start = Instant::now();
            let mut cg = Some(cg);
            while let Some(c) = cg.take() {
                let keep = c.clone();
                match c.delete() {
                    Ok(()) => break,
                    Err(e) if start.elapsed() > Duration::from_secs(5) => {
                        panic!("cannot remove {}: {e}", self.id)
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        cg = Some(keep);
                    }
                }
            }
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Best effort: never a double panic.
            if let Some(mut c) = self.busy.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if let Some(cg) = self.cg.take() {
                std::thread::sleep(Duration::from_millis(100));
                let _ = cg.delete();
            }
        } else {
            self.remove();
        }
    }
}

/// `promtool check metrics` on `text`, or `None` where the lane has no promtool.
pub fn promtool_check_metrics(text: &str) -> Option<String> {
    if lane().starts_with("vm") {
        return None;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics: {report}");
    Some(report)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
