//! Harness for the real clients of an OCI runtime (podman, containerd + ctr): each test
//! gets a private scratch folder, a private store and state for the client, a busybox
//! image loaded without any registry, and a runtime wrapper that logs every call.
//!
//! The runtime under test is `$SANDBOX_TEST_RUNTIME` (for example `/usr/sbin/runc`, to
//! check the harness itself) or else the `sandbox` binary of this package.
//!
//! Everything a test makes is removed when its guard drops, even on failure: the
//! client's containers (through the client first, then through the runtime), processes
//! left in the test's own cgroups (conmon, shims, containers: killed by PID), those
//! cgroups, mounts under the scratch folder, the folder itself.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::{APPLETS, BUSYBOX, require_root_and_busybox};

/// The image every client test runs, loaded into each client's private store.
pub const IMAGE: &str = "localhost/busybox:test";
/// How long one client command may take before the test calls it hung.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);
const HINT: &str = "run `cargo xtask test` (it installs podman/containerd)";

/// The OCI runtime under test: `$SANDBOX_TEST_RUNTIME`, else this package's `sandbox`.
pub fn runtime() -> PathBuf {
    match std::env::var_os("SANDBOX_TEST_RUNTIME") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_sandbox")),
    }
}

/// The absolute path of `tool` on PATH; fails the test (never skips) where it is missing.
pub fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{tool}` is not installed: {HINT}"))
}

/// `sandbox-clients-<pid>-<n>`: unique per process and call, short enough for socket
/// paths, used for cgroups and client namespaces.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sbx-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------
// Running client commands with a bound on time.

/// Runs `cmd` with `stdin` bytes (none: /dev/null) and captures its output; a command
/// still running after `timeout` is killed and the test fails naming it.
pub fn output_within(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let Some(status) = wait_within(&mut child, timeout) else {
        panic!(
            "{cmd:?} still runs after {timeout:?}: killed it (hung client or runtime)\nstdout so far: {}\nstderr so far: {}",
            String::from_utf8_lossy(&out.finish()),
            String::from_utf8_lossy(&err.finish()),
        )
    };
    Output {
        status,
        stdout: out.finish(),
        stderr: err.finish(),
    }
}

/// A pipe read to its end by a thread. A process the client left behind (a conmon, a
/// shim) may hold the pipe open: [`Reader::finish`] then waits 5 s, not forever.
struct Reader {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Reader {
    fn finish(&self) -> Vec<u8> {
        let end = Instant::now() + Duration::from_secs(5);
        while !self.thread.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.buf.lock().unwrap().clone()
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> Reader {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = Arc::clone(&buf);
    let thread = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    Reader { buf, thread }
}

/// Waits for `child` up to `timeout`; past it, kills and reaps it and returns None.
pub fn wait_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` every 20 ms until it returns Some, or fails the test after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails the test unless `o` exited 0, showing what was run and what it said.
#[track_caller]
pub fn ok(what: &str, o: &Output) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

// ---------------------------------------------------------------------------------------
// A pseudo-terminal the test drives, standing in for a user at a terminal.

#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
    slave: Option<OwnedFd>,
    seen: Vec<u8>,
}

impl Pty {
    pub fn open() -> Pty {
        let ws = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let p = nix::pty::openpty(Some(&ws), None).expect("openpty");
        Pty {
            master: p.master,
            slave: Some(p.slave),
            seen: Vec::new(),
        }
    }

    /// Starts `cmd` with the slave as its stdin, stdout, stderr and controlling terminal
    /// (in a new session), then closes the test's own copy of the slave so that the
    /// master reads EIO once the client is gone.
    pub fn spawn(&mut self, cmd: &mut Command) -> Child {
        let slave = self.slave.take().expect("one client per pty");
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        // SAFETY: between fork and exec this runs only setsid and ioctl, two raw syscalls
        // that take no locks and do not allocate.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        // The Command keeps its Stdio (copies of the slave) until it drops: release them.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        drop(slave);
        child
    }

    pub fn write(&self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).expect("write to the pty master");
    }

    /// Reads the terminal until its text contains `needle`; fails the test showing
    /// what was read if that takes longer than `timeout` or the terminal closes first.
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if text.contains(needle) {
                return text;
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the terminal did not show {needle:?} within {timeout:?}; it showed:\n{text}"
            );
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
            let ready = nix::poll::poll(&mut fds, ms).expect("poll the pty master");
            if ready == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    panic!("the terminal closed before showing {needle:?}; it showed:\n{text}")
                }
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("read the pty master: {e}"),
            }
        }
    }

    /// Everything the terminal showed so far.
    pub fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// The busybox image, as an OCI archive (a tar of an OCI image layout) both clients load.

/// Writes `<dir>/<file>`: an oci-archive of one gzip layer (busybox and its applets),
/// a config with PATH and `sh` as the command, named `reference`.
pub fn busybox_oci_archive(dir: &Path, file: &str, reference: &str, cmd: &[&str]) -> PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "root"] {
        tar_entry(&mut layer, d, tar::EntryType::Directory, 0o755, b"");
    }
    tar_entry(
        &mut layer,
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &std::fs::read(BUSYBOX).unwrap(),
    );
    let mut applets: Vec<&str> = APPLETS.to_vec();
    applets.extend([
        "tty", "stty", "cut", "sed", "nproc", "yes", "dd", "readlink", "uname",
    ]);
    applets.sort_unstable();
    applets.dedup();
    for a in applets {
        let mut h = tar_header(tar::EntryType::Symlink, 0o777, 0);
        layer
            .append_link(&mut h, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    tar_entry(
        &mut layer,
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    );
    tar_entry(
        &mut layer,
        "etc/group",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:\n",
    );
    let raw = layer.into_inner().unwrap();
    let diff_id = digest(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(config.as_bytes()),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest(&gz),
            "size": gz.len(),
        }],
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(manifest.as_bytes()),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }],
    })
    .to_string();

    let mut archive = tar::Builder::new(Vec::new());
    tar_entry(&mut archive, "blobs", tar::EntryType::Directory, 0o755, b"");
    tar_entry(
        &mut archive,
        "blobs/sha256",
        tar::EntryType::Directory,
        0o755,
        b"",
    );
    for blob in [gz.as_slice(), config.as_bytes(), manifest.as_bytes()] {
        let hex = digest(blob).trim_start_matches("sha256:").to_owned();
        tar_entry(
            &mut archive,
            &format!("blobs/sha256/{hex}"),
            tar::EntryType::Regular,
            0o644,
            blob,
        );
    }
    tar_entry(
        &mut archive,
        "oci-layout",
        tar::EntryType::Regular,
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    tar_entry(
        &mut archive,
        "index.json",
        tar::EntryType::Regular,
        0o644,
        index.as_bytes(),
    );
    let path = dir.join(file);
    std::fs::write(&path, archive.into_inner().unwrap()).unwrap();
    path
}

fn digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_mode(mode);
    h.set_size(size);
    h
}

fn tar_entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
) {
    let mut h = tar_header(kind, mode, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

// ---------------------------------------------------------------------------------------
// Scratch: the folder, cgroups and runtime wrapper of one test, removed on drop.

/// One test's private folder (under /tmp), the cgroup names it owns on every hierarchy,
/// and the runtime wrapper that logs each call to `runtime.log`.
#[derive(Debug)]
pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// Top-level cgroup names (`/NAME`) this test owns on every hierarchy.
    cgroups: Vec<String>,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        require_root_and_busybox();
        let dir = tempfile::Builder::new()
            .prefix(&format!("sbx-{tag}-"))
            .tempdir()
            .unwrap();
        Scratch {
            dir,
            cgroups: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `mkdir -p` of a folder in the scratch folder.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Claims the top-level cgroup `/name` on every hierarchy for cleanup.
    pub fn own_cgroup(&mut self, name: &str) {
        self.cgroups.push(name.to_owned());
    }

    /// Writes `bin/<basename of the runtime>`: a shell script that appends its arguments
    /// to `runtime.log` and execs the runtime with `prefix` before them. It keeps the
    /// runtime's basename, which is what podman matches against `runtime_supports_json`.
    pub fn runtime_wrapper(&self, prefix: &[&Path]) -> PathBuf {
        let real = runtime();
        assert!(
            real.is_file(),
            "runtime under test {} is missing (SANDBOX_TEST_RUNTIME)",
            real.display()
        );
        let name = real.file_name().unwrap().to_string_lossy().into_owned();
        let bin = self.mkdir("bin");
        let wrapper = bin.join(&name);
        let log = self.path("runtime.log");
        let mut prefix_args = String::new();
        for p in prefix {
            prefix_args.push_str(&format!(" '{}'", p.display()));
        }
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}'{prefix_args} \"$@\"\n",
            log.display(),
            real.display(),
        );
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        wrapper
    }

    /// The runtime calls logged so far, one line each.
    pub fn runtime_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("runtime.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Kills every process left in this test's cgroups (they are ours: the names are
    /// unique to this test), then removes the cgroups, deepest first.
    fn remove_cgroups(&self) {
        for name in &self.cgroups {
            let dirs: Vec<PathBuf> = hierarchies()
                .into_iter()
                .map(|h| h.join(name.trim_start_matches('/')))
                .filter(|d| d.is_dir())
                .collect();
            for d in &dirs {
                // A frozen cgroup would keep its processes from dying.
                for t in subtree(d) {
                    let _ = std::fs::write(t.join("freezer.state"), "THAWED");
                    let _ = std::fs::write(t.join("cgroup.freeze"), "0");
                }
            }
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                let mut any = false;
                for d in &dirs {
                    for t in subtree(d) {
                        for pid in procs(&t) {
                            any = true;
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
                let mut left = false;
                for d in &dirs {
                    let mut all = subtree(d);
                    all.reverse();
                    for t in all {
                        if std::fs::remove_dir(&t).is_err() && t.exists() {
                            left = true;
                        }
                    }
                }
                if !left {
                    break;
                }
                if Instant::now() >= end {
                    eprintln!(
                        "clients harness: cgroup {name} still busy after 10 s (processes: {any})"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Unmounts every mount under the scratch folder, deepest first (lazily: a busy
    /// mount must not keep the test's cleanup from finishing).
    fn unmount_all(&self) {
        let me = self.dir.path().to_string_lossy().into_owned();
        for _ in 0..4 {
            let mut under: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(unescape_mount_path))
                .filter(|m| m == &me || m.starts_with(&format!("{me}/")))
                .collect();
            if under.is_empty() {
                return;
            }
            under.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in under {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }

    /// Mounts still under the scratch folder (for assertions).
    pub fn mounts(&self) -> Vec<String> {
        let me = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mount_path))
            .filter(|m| m.starts_with(&me))
            .collect()
    }

    /// Cgroup folders of this test still present on any hierarchy (for assertions).
    pub fn cgroups_left(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for name in &self.cgroups {
            for h in hierarchies() {
                let d = h.join(name.trim_start_matches('/'));
                if d.is_dir() {
                    out.extend(subtree(&d));
                }
            }
        }
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "clients harness: runtime calls of this test ({}):\n{}",
                self.path("runtime.log").display(),
                self.runtime_calls().join("\n")
            );
        }
        // `SANDBOX_TEST_RUNTIME_LOG=FILE` collects every test's runtime calls in FILE.
        let collect = std::env::var_os("SANDBOX_TEST_RUNTIME_LOG").and_then(|file| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .ok()
        });
        if let Some(mut f) = collect {
            let _ = writeln!(
                f,
                "## {} ({})\n{}",
                std::thread::current().name().unwrap_or("?"),
                self.dir.path().display(),
                self.runtime_calls().join("\n")
            );
        }
        self.remove_cgroups();
        self.unmount_all();
        // TempDir's own drop removes the folder.
    }
}

/// `\040` and friends in mountinfo paths back to bytes.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every cgroup hierarchy root: `/sys/fs/cgroup` on pure v2, else each v1 controller
/// folder and the v2 `unified` folder of a hybrid host.
pub fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            // cpu and cpuacct are symlinks to cpu,cpuacct: visit the real folder once.
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(e.path());
            }
        }
    }
    out
}

/// The folders of cgroup `rel` (`/a/b`) on every hierarchy where it exists.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|h| h.join(rel.trim_start_matches('/')))
        .filter(|d| d.is_dir())
        .collect()
}

/// `d` and every cgroup below it, parents before children.
fn subtree(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![d.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

fn procs(cg: &Path) -> Vec<i32> {
    std::fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The cgroup folder of `pid` for `controller` ("cpu", "memory"; "" for v2), as the
/// host sees it: on pure v2 and for v2 the unified path.
pub fn cgroup_dir_of(pid: u32, controller: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a v2 line in /proc/PID/cgroup");
        return root.join(rel.trim_start_matches('/'));
    }
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, rel) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if ctrls.split(',').any(|c| c == controller) {
            let folder = hierarchies()
                .into_iter()
                .find(|h| {
                    h.file_name()
                        .map(|n| n.to_string_lossy().split(',').any(|c| c == controller))
                        .unwrap_or(false)
                })
                .expect("the controller's hierarchy under /sys/fs/cgroup");
            return folder.join(rel.trim_start_matches('/'));
        }
    }
    panic!("pid {pid} is in no {controller} cgroup:\n{text}");
}

/// Every cgroup folder of `pid` on every hierarchy (name=systemd's too).
pub fn cgroup_dirs_of(pid: u32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut out = Vec::new();
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, rel) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        for h in hierarchies() {
            let hname = h.file_name().unwrap().to_string_lossy().into_owned();
            let matches = if ctrls.is_empty() {
                hname == "unified" || h == Path::new("/sys/fs/cgroup")
            } else {
                let want = ctrls.trim_start_matches("name=");
                hname.split(',').any(|c| want.split(',').any(|w| w == c))
            };
            if matches && h.join(rel).is_dir() {
                out.push(h.join(rel));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Reads a cgroup file, trimmed.
pub fn cgroup_file(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_owned()
}

/// Asserts `pid`'s CPU limit is 0.2 CPU (quota 20000 us per 100000 us) and its memory
/// limit 64 MiB, in whichever of v1 or v2 holds each controller on this host.
pub fn assert_cpu_and_memory_limits(pid: u32) {
    let v2_only = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2_only {
        let d = cgroup_dir_of(pid, "");
        assert_eq!(
            cgroup_file(&d, "cpu.max"),
            "20000 100000",
            "{}",
            d.display()
        );
        assert_eq!(cgroup_file(&d, "memory.max"), "67108864", "{}", d.display());
    } else {
        let cpu = cgroup_dir_of(pid, "cpu");
        assert_eq!(
            cgroup_file(&cpu, "cpu.cfs_quota_us"),
            "20000",
            "{}",
            cpu.display()
        );
        assert_eq!(
            cgroup_file(&cpu, "cpu.cfs_period_us"),
            "100000",
            "{}",
            cpu.display()
        );
        let mem = cgroup_dir_of(pid, "memory");
        assert_eq!(
            cgroup_file(&mem, "memory.limit_in_bytes"),
            "67108864",
            "{}",
            mem.display()
        );
    }
}

/// Whether `pid` is alive (not a zombie, not gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------------
// podman with private storage, state, configuration, runtime root and cgroup parent.

/// podman 4.3 driving the runtime under test, everything private to one test.
#[derive(Debug)]
pub struct Podman {
    pub s: Scratch,
    podman: PathBuf,
    conf: PathBuf,
    storage_conf: PathBuf,
    wrapper: PathBuf,
    /// The runtime's `--root`, which the wrapper passes: podman 4.3 drops
    /// `--runtime-flag`s from its `delete --force` call, so the flag cannot go through it.
    pub runtime_root: PathBuf,
    /// `/sbx-podman-<pid>-<n>`: the containers' cgroup parent (conmon goes below too).
    pub cgroup_parent: String,
}

impl Podman {
    pub fn new() -> Podman {
        let podman = require_tool("podman");
        require_tool("conmon");
        let mut s = Scratch::new("podman");
        let name = unique("podman");
        s.own_cgroup(&name);
        let runtime_root = s.mkdir("runtime-root");
        let wrapper = s.runtime_wrapper(&[Path::new("--root"), &runtime_root]);
        let tmp = s.mkdir("tmp");
        let conf = s.path("containers.conf");
        let runtime_name = wrapper.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(
            &conf,
            format!(
                r#"[containers]
# Root here lacks CAP_SYS_RESOURCE: podman's default rlimits (1048576) cannot be set.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
# podman passes --log-format=json --log FILE only to runtimes named here.
runtime_supports_json = ["{runtime_name}"]
# File locks under --tmpdir instead of the host-wide /dev/shm/libpod_lock.
lock_type = "file"
image_copy_tmp_dir = "{tmp}"

[network]
network_config_dir = "{net}"
"#,
                events = s.path("events.log").display(),
                tmp = tmp.display(),
                net = s.mkdir("net").display(),
            ),
        )
        .unwrap();
        let storage_conf = s.path("storage.conf");
        // Not the host's /etc/containers/storage.conf: the same private places as the
        // command-line options say.
        std::fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                s.path("storage").display(),
                s.path("run").display()
            ),
        )
        .unwrap();
        let p = Podman {
            podman,
            conf,
            storage_conf,
            wrapper,
            runtime_root,
            cgroup_parent: format!("/{name}"),
            s,
        };
        let archive = busybox_oci_archive(p.s.dir.path(), "busybox.tar", IMAGE, &["sh"]);
        // Loading an image writes containers/image's blob-info cache to the fixed path
        // /var/lib/containers/cache; a tmpfs over /var/lib in a mount namespace of the
        // load alone keeps the host free of it.
        let mut load = p.cmd();
        load.args(["load", "-q", "-i"]).arg(&archive);
        // SAFETY: between fork and exec this runs only unshare and mount, raw syscalls
        // without locks or allocation (the C strings are made before the fork).
        unsafe {
            load.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let none = c"none".as_ptr();
                let root = c"/".as_ptr();
                if libc::mount(
                    none,
                    root,
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/var/lib".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"size=16m".as_ptr().cast(),
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = output_within(&mut load, None, CMD_TIMEOUT);
        ok("podman load of the busybox oci-archive", &o);
        p
    }

    /// `podman` with the private global options and environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.podman);
        c.arg("--root")
            .arg(self.s.path("storage"))
            .arg("--runroot")
            .arg(self.s.path("run"))
            .arg("--tmpdir")
            .arg(self.s.path("libpod"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .arg("--runtime")
            .arg(&self.wrapper)
            .env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env("TMPDIR", self.s.path("tmp"));
        c
    }

    /// The options every container of the test gets: no network, the private cgroup
    /// parent.
    pub fn opts(&self) -> Vec<String> {
        vec![
            "--network".into(),
            "none".into(),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
        ]
    }

    /// `podman ARGS`, bounded by [`CMD_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(self.cmd().args(args), None, CMD_TIMEOUT)
    }

    /// `podman VERB <opts> ARGS`: a container verb (run, create) with [`Podman::opts`].
    pub fn container(&self, verb: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.cmd();
        c.arg(verb).args(self.opts()).args(args);
        output_within(&mut c, stdin, CMD_TIMEOUT)
    }

    /// `podman inspect -f FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        ok(
            "podman inspect",
            &self.run(&["inspect", "-f", format, name]),
        )
        .trim()
        .to_owned()
    }

    /// The `State` podman ps reports for the container `name` (created, running,
    /// exited), or None where `podman ps -a` does not list it.
    pub fn ps_state(&self, name: &str) -> Option<String> {
        let o = self.run(&["ps", "-a", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&ok("podman ps -a", &o))
            .unwrap_or_else(|e| panic!("podman ps json: {e}: {}", stdout(&o)));
        v.as_array()?.iter().find_map(|c| {
            let named = c["Names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == name));
            named.then(|| c["State"].as_str().unwrap_or("").to_owned())
        })
    }

    /// Cleans up what a test left: containers through podman, then any state the
    /// runtime still holds, then (in Scratch) processes, cgroups, mounts, folder.
    fn teardown(&mut self) {
        let _ = output_within(
            self.cmd().args(["rm", "--all", "--force", "--time", "0"]),
            None,
            CMD_TIMEOUT,
        );
        runtime_delete_all(&self.runtime_root);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `RUNTIME --root ROOT delete --force ID` for every container state folder in `root`.
fn runtime_delete_all(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let id = e.file_name();
        let mut c = Command::new(runtime());
        c.arg("--root")
            .arg(root)
            .args(["delete", "--force"])
            .arg(&id);
        let o = output_within(&mut c, None, CMD_TIMEOUT);
        if !o.status.success() {
            eprintln!(
                "clients harness: {c:?}: {}: {}",
                o.status,
                stderr(&o).trim()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// containerd on a private socket, root and state, driven through ctr.

/// A private containerd (its own config, socket, root, state, temp folder; the CRI
/// plugin off) and a ctr namespace unique to the test.
#[derive(Debug)]
pub struct Containerd {
    pub s: Scratch,
    daemon: Option<Child>,
    ctr: PathBuf,
    pub sock: PathBuf,
    /// The ctr namespace; containers' cgroups are `/<ns>/<id>` (ctr's default).
    pub ns: String,
    wrapper: PathBuf,
    /// `--runc-root`: the shim adds `/<ns>`.
    pub runc_root: PathBuf,
    fifo_dir: PathBuf,
    state: PathBuf,
}

impl Containerd {
    pub fn new() -> Containerd {
        Containerd::with_config("", None, |_| {})
    }

    /// A private containerd whose configuration gets `extra` (TOML) appended; `ctr`
    /// works in namespace `ns` (CRI's is `k8s.io`), else in one unique to the test
    /// (whose top-level cgroup the test then owns). `{dir}` in `extra` is the test's
    /// scratch folder; `prepare` gets that folder before containerd starts.
    pub fn with_config(extra: &str, ns: Option<&str>, prepare: impl FnOnce(&Path)) -> Containerd {
        let containerd = require_tool("containerd");
        let ctr = require_tool("ctr");
        require_tool("containerd-shim-runc-v2");
        let mut s = Scratch::new("ctrd");
        let ns = match ns {
            Some(ns) => ns.to_owned(),
            None => {
                let ns = unique("ctr");
                s.own_cgroup(&ns);
                ns
            }
        };
        let extra = extra.replace("{dir}", &s.dir.path().to_string_lossy());
        prepare(s.dir.path());
        let wrapper = s.runtime_wrapper(&[]);
        let sock = s.path("c.sock");
        let state = s.path("state");
        let tmp = s.mkdir("tmp");
        let config = s.path("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
temp = "{tmp}"
disabled_plugins = [
{cri_off}  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{sock}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
{extra}"#,
                root = s.path("root").display(),
                state = state.display(),
                tmp = tmp.display(),
                sock = sock.display(),
                opt = s.path("opt").display(),
                // The CRI plugin runs only where the test configures it.
                cri_off = if extra.contains("io.containerd.grpc.v1.cri") {
                    ""
                } else {
                    "  \"io.containerd.grpc.v1.cri\",\n"
                },
            ),
        )
        .unwrap();
        let log = std::fs::File::create(s.path("containerd.log")).unwrap();
        let daemon = Command::new(&containerd)
            .arg("--config")
            .arg(&config)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start containerd: {e}"));
        let mut c = Containerd {
            daemon: Some(daemon),
            ctr,
            sock,
            ns,
            wrapper,
            runc_root: s.path("runc"),
            fifo_dir: s.mkdir("fifo"),
            state,
            s,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&c.sock).is_err() {
            if let Some(st) = c.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "containerd exited ({st}) before serving {}:\n{}",
                    c.sock.display(),
                    c.log()
                );
            }
            assert!(
                Instant::now() < end,
                "containerd did not serve {} within 20 s:\n{}",
                c.sock.display(),
                c.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c.import("busybox.tar", IMAGE, &["sh"]);
        c
    }

    /// Builds a busybox oci-archive named `reference` whose command is `cmd` and
    /// imports it with `ctr image import`.
    pub fn import(&self, file: &str, reference: &str, cmd: &[&str]) {
        let archive = busybox_oci_archive(self.s.dir.path(), file, reference, cmd);
        let o = self.ctr(&["image", "import"], &[archive.to_str().unwrap()]);
        ok(&format!("ctr image import of {reference}"), &o);
    }

    /// The runtime calls' wrapper (for a CRI runtime handler's BinaryName).
    pub fn wrapper(&self) -> &Path {
        &self.wrapper
    }

    /// Claims top-level cgroup `/name` on every hierarchy for cleanup.
    pub fn own_cgroup(&mut self, name: &str) {
        self.s.own_cgroup(name);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.s.path("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCK -n NS`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address").arg(&self.sock).arg("-n").arg(&self.ns);
        c
    }

    /// `ctr ... SUB ARGS`, bounded by [`CMD_TIMEOUT`].
    pub fn ctr(&self, sub: &[&str], args: &[&str]) -> Output {
        output_within(self.cmd().args(sub).args(args), None, CMD_TIMEOUT)
    }

    /// `ctr task exec --fifo-dir <private> OPTS ARGS` (ctr's default fifo folder is the
    /// host's /run/containerd/fifo, where a detached exec's fifos would stay behind).
    pub fn exec(&self, opts: &[&str], args: &[&str]) -> Output {
        let mut c = self.exec_cmd(opts);
        c.args(args);
        output_within(&mut c, None, CMD_TIMEOUT)
    }

    /// `ctr task exec --fifo-dir <private> OPTS` as a Command.
    pub fn exec_cmd(&self, opts: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["task", "exec", "--fifo-dir"])
            .arg(&self.fifo_dir)
            .args(opts);
        c
    }

    /// The options `ctr run` needs to use the runtime under test privately.
    pub fn run_opts(&self) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            self.wrapper.to_string_lossy().into_owned(),
            "--runc-root".into(),
            self.runc_root.to_string_lossy().into_owned(),
            "--fifo-dir".into(),
            self.fifo_dir.to_string_lossy().into_owned(),
        ]
    }

    /// `ctr run <run_opts> ARGS` as a Command (the test adds stdio and runs it).
    pub fn run_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("run").args(self.run_opts()).args(args);
        c
    }

    /// `ctr run <run_opts> ARGS`, bounded by [`CMD_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(&mut self.run_cmd(args), None, CMD_TIMEOUT)
    }

    /// The task table: id -> (pid, status).
    pub fn tasks(&self) -> Vec<(String, u32, String)> {
        let o = self.ctr(&["task", "ls"], &[]);
        ok("ctr task ls", &o)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    /// The container ids of the namespace.
    pub fn containers(&self) -> Vec<String> {
        let o = self.ctr(&["container", "ls", "-q"], &[]);
        ok("ctr container ls", &o)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The status ctr reports for task `id` (RUNNING, STOPPED, ...), if it exists.
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.tasks()
            .into_iter()
            .find(|(t, _, _)| t == id)
            .map(|(_, _, s)| s)
    }

    fn shim_pids(&self) -> Vec<i32> {
        let dir = self
            .state
            .join("io.containerd.runtime.v2.task")
            .join(&self.ns);
        let mut out = Vec::new();
        let sock = self.sock.to_string_lossy().into_owned();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let Ok(text) = std::fs::read_to_string(e.path().join("shim.pid")) else {
                    continue;
                };
                let Ok(pid) = text.trim().parse::<i32>() else {
                    continue;
                };
                // A pid file is a guess: only a shim serving our socket is ours.
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                if args.iter().any(|a| a == &sock) {
                    out.push(pid);
                }
            }
        }
        out
    }

    fn teardown(&mut self) {
        // Through containerd first: it removes the shims, runtime state and mounts.
        if self
            .daemon
            .as_mut()
            .is_some_and(|d| d.try_wait().ok().flatten().is_none())
        {
            for (id, _, status) in self.tasks_quiet() {
                if status != "STOPPED" {
                    let _ = self.ctr(&["task", "kill", "-a", "-s", "SIGKILL"], &[&id]);
                }
                let _ = self.ctr(&["task", "delete", "-f"], &[&id]);
            }
            for id in self.containers_quiet() {
                let _ = self.ctr(&["container", "delete"], &[&id]);
            }
        }
        if let Some(mut d) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(d.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if wait_within(&mut d, Duration::from_secs(10)).is_none() {
                eprintln!("clients harness: containerd ignored SIGTERM for 10 s: killed it");
            }
        }
        for pid in self.shim_pids() {
            eprintln!("clients harness: killing a shim left behind (pid {pid})");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        runtime_delete_all(&self.runc_root.join(&self.ns));
    }

    fn tasks_quiet(&self) -> Vec<(String, u32, String)> {
        let o = self.ctr(&["task", "ls"], &[]);
        stdout(&o)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    fn containers_quiet(&self) -> Vec<String> {
        stdout(&self.ctr(&["container", "ls", "-q"], &[]))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("clients harness: containerd log:\n{}", self.log());
        }
        self.teardown();
    }
}
