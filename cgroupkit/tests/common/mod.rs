//! Helpers shared by cgroupkit's integration tests: a unique scratch cgroup removed
//! on drop (even when the test fails), and processes ended by pid.
#![allow(dead_code)] // each test binary uses a subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cgroupkit::{CgroupPath, Hierarchy, Pid};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The lane the test runs in (`host`, `vm-6.12`, ...), for messages.
pub fn lane() -> String {
    std::env::var("CGROUPKIT_LANE").unwrap_or_else(|_| "host".into())
}

/// A unique top-level cgroup name, `cgroupkit-test-<pid>-<n>`; its directory on every
/// hierarchy is removed (children first) on drop. Processes the test put inside must
/// be ended by then (they are `Proc`s, dropped earlier).
pub struct Scratch {
    pub name: String,
    pub h: Hierarchy,
}

impl Scratch {
    pub fn new() -> Scratch {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "integration tests run as root");
        let name = format!(
            "cgroupkit-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        Scratch {
            name,
            h: Hierarchy::detect().unwrap(),
        }
    }

    /// `<name>/<rel>` as a cgroup path.
    pub fn path(&self, rel: &str) -> CgroupPath {
        CgroupPath::new(&format!("{}/{rel}", self.name)).unwrap()
    }

    /// Creates `<name>/<rel>` with one controller.
    pub fn create(&self, rel: &str, c: cgroupkit::Controller) -> cgroupkit::Cgroup {
        cgroupkit::Cgroup::create(&self.h, &self.path(rel), &[c]).unwrap()
    }

    /// The scratch directories that exist now.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.h
            .mounts()
            .iter()
            .map(|m| m.mount_point.join(&self.name))
            .filter(|p| p.exists())
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        fn rm(dir: &std::path::Path) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm(&e.path());
                }
            }
            // Thaw what a test froze, or rmdir would wait on frozen tasks forever.
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            let start = Instant::now();
            while std::fs::remove_dir(dir).is_err() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for d in self.dirs() {
            rm(&d);
        }
    }
}

/// A process the test started; SIGKILLed by pid and reaped on drop. Those made by
/// [`Proc::sh`], [`Proc::sh_stdin`] and [`Proc::sleeper`] lead a process group of
/// their own, and the whole group is killed: a shell's children (`sleep 600 &`)
/// must not outlive the test, holding its output pipe open (a CI run once waited
/// ten minutes on one).
pub struct Proc(pub Child);

impl Proc {
    pub fn sh(script: &str) -> Proc {
        use std::os::unix::process::CommandExt;
        Proc(
            Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap(),
        )
    }
    /// `sh -c script` with a pipe on stdin: a script starting with `read _` waits
    /// until the test closes it (after moving the process into a cgroup).
    pub fn sh_stdin(script: &str) -> Proc {
        use std::os::unix::process::CommandExt;
        Proc(
            Command::new("sh")
                .args(["-c", script])
                .process_group(0)
                .stdin(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    pub fn sleeper() -> Proc {
        use std::os::unix::process::CommandExt;
        Proc(
            Command::new("sleep")
                .arg("600")
                .process_group(0)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    pub fn busy() -> Proc {
        Proc::sh("while :; do :; done")
    }
    pub fn pid(&self) -> Pid {
        Pid::new(self.0.id().into()).unwrap()
    }
    /// Lets a helper waiting on stdin (see [`helper`]) go.
    pub fn go(&mut self) {
        use std::io::Write;
        let mut stdin = self.0.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    /// Reaps the process if it has exited; true when it has.
    pub fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // Still our unreaped child, so the pid is its own: if it leads its group,
        // the group is the one we made.
        // SAFETY: getpgid and kill take integers only.
        unsafe {
            if libc::getpgid(pid) == pid {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
pub fn cpu_seconds(pid: Pid) -> f64 {
    let st = cgroupkit::Procfs::default().stat(pid).unwrap();
    (st.utime_ticks + st.stime_ticks) as f64 / cgroupkit::proc::clock_ticks_per_second() as f64
}

/// Polls `f` every 10 ms until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Runs the helper test `name` of this test binary with `env`; it waits for "go" on
/// stdin ([`wait_for_go`]) so the test can move it into a cgroup first.
pub fn helper(name: &str, env: &[(&str, String)]) -> Proc {
    let mut c = Command::new(std::env::current_exe().unwrap());
    // Helpers are `#[ignore]`d so that they never pass as tests of their own.
    c.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    Proc(c.spawn().unwrap())
}

/// In a helper: waits for the line "go" on stdin.
pub fn wait_for_go() {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

/// SIGKILLs every process left in `cg` (all started by the test that made it).
pub fn kill_all(cg: &cgroupkit::Cgroup) {
    for p in cg.procs().unwrap_or_default() {
        // SAFETY: kill(2) on a pid read from the test's own cgroup; no memory access.
        unsafe { libc::kill(p.as_raw(), libc::SIGKILL) };
    }
}

/// Whether this runs in the VM lane (pure cgroup v2).
pub fn in_vm() -> bool {
    lane().starts_with("vm-")
}

/// A kernel file's content, trimmed; panics with the path on error.
pub fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}
