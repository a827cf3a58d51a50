//! Helpers of the pod tests: images made here (busybox with every applet), a pod
//! run from YAML text, waits, and checks that a pod left nothing behind.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{Env, err, out};

/// Every applet of the host's static busybox.
fn applets() -> Vec<String> {
    let o = std::process::Command::new(crate::common::BUSYBOX)
        .arg("--list")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .filter(|a| a != "busybox")
        .collect()
}

use crate::common::{header, put};

/// Imports a one-layer busybox image (every applet, `extra` files added) named
/// `reference`, its config's `config` object being `config` (JSON).
pub fn import_busybox(env: &Env, reference: &str, config: &str, extra: &[(&str, &[u8])]) {
    let folder = format!("layout-{}", reference.replace([':', '/'], "-"));
    let l = env.dir.path().join(folder);
    let blobs = l.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin", "tmp", "etc", "app", "root"] {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if d == "tmp" { 0o1777 } else { 0o755 });
        h.set_size(0);
        b.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    let bb = std::fs::read(crate::common::BUSYBOX).unwrap();
    let mut h = header();
    h.set_mode(0o755);
    h.set_size(bb.len() as u64);
    b.append_data(&mut h, "bin/busybox", &bb[..]).unwrap();
    for a in applets() {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    for (p, data) in extra {
        let mut h = header();
        h.set_mode(if p.ends_with(".sh") { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, *data).unwrap();
    }
    let raw = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();
    let layer = put(&blobs, &gz);
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{config},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    let cfgd = put(&blobs, cfg.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfgd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":{}}}]}}"#,
        cfg.len(),
        gz.len()
    );
    let md = put(&blobs, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{reference}"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(l.join("index.json"), index).unwrap();
    std::fs::write(l.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    env.import_layout(&l);
}

/// The images the seed's pods use, made here: `busybox` (cmd `sh`), `nginx` (a
/// busybox httpd on port 80 serving /www), `sample-java` (holding /sample.war) and
/// `sample-tomcat` (whose start script lists its webapps folder, then serves).
pub fn seed_images(env: &Env) {
    import_busybox(env, "busybox:latest", r#"{"Cmd":["sh"]}"#, &[]);
    import_busybox(
        env,
        "nginx:latest",
        r#"{"Cmd":["httpd","-f","-p","80","-h","/www"]}"#,
        &[("www/index.html", b"hello from nginx\n")],
    );
    import_busybox(
        env,
        "sample-java:latest",
        r#"{"Cmd":["sh"]}"#,
        &[("sample.war", b"PK-sample-war\n")],
    );
    import_busybox(
        env,
        "sample-tomcat:latest",
        r#"{"Cmd":["sh"]}"#,
        &[(
            "root/apache-tomcat/bin/start.sh",
            b"ls /root/apache-tomcat/webapps\ncat /root/apache-tomcat/webapps/sample.war\nexec sleep 1000\n",
        )],
    );
}

/// A unique pod name for this test process.
pub fn pod_name(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// Writes `yaml` to a file of the test and returns its path.
pub fn pod_file(env: &Env, name: &str, yaml: &str) -> PathBuf {
    let p = env.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p
}

/// `sandbox pod ARGS` (the binary: `$SANDBOX_POD_TEST_BINARY`, e.g. a release build
/// to measure, else this build's).
pub fn pod(env: &Env, args: &[&str]) -> Output {
    let mut c = match std::env::var_os("SANDBOX_POD_TEST_BINARY") {
        Some(b) => {
            let mut c = std::process::Command::new(b);
            c.arg("--root")
                .arg(&env.state)
                .arg("--store")
                .arg(&env.store);
            c
        }
        None => env.cmd(),
    };
    c.arg("pod")
        .args(args)
        .env("SANDBOX_POD_BACKOFF_MS", "200")
        .output()
        .unwrap()
}

/// `sandbox pod run --detach FILE`, asserted to succeed.
pub fn run_detached(env: &Env, file: &Path) {
    let o = pod(env, &["run", "--detach", file.to_str().unwrap()]);
    assert!(o.status.success(), "pod run: {}{}", out(&o), err(&o));
}

/// The pod's status (`pod ps --json`).
pub fn status(env: &Env, name: &str) -> serde_json::Value {
    let o = pod(env, &["ps", "--json", name]);
    assert!(o.status.success(), "pod ps: {}", err(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The status of container `ctr`.
pub fn ctr(st: &serde_json::Value, ctr: &str) -> serde_json::Value {
    st["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == ctr)
        .cloned()
        .unwrap_or_else(|| panic!("no container {ctr} in {st}"))
}

/// Waits (up to `secs`) until `f` holds of the pod's status.
pub fn wait_for(
    env: &Env,
    name: &str,
    secs: u64,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let st = status(env, name);
        if f(&st) {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pod exec POD -c CTR -- sh -c SCRIPT`.
pub fn exec(env: &Env, name: &str, c: &str, script: &str) -> Output {
    pod(env, &["exec", name, "-c", c, "--", "sh", "-c", script])
}

/// Removes the pod (forced) and checks nothing of it is left: folder, cgroups,
/// mounts, processes.
pub fn rm_and_check(env: &Env, name: &str) {
    let o = pod(env, &["rm", "--force", name]);
    assert!(o.status.success(), "pod rm: {}", err(&o));
    assert_nothing_left(env, name);
}

/// No folder, cgroup, mount or process of pod `name` is left.
pub fn assert_nothing_left(env: &Env, name: &str) {
    let dir = env.state.join(".pods").join(name);
    assert!(!dir.exists(), "pod folder {} remains", dir.display());
    let cgs = crate::common::cgroups_of(&format!("pod-{name}"));
    assert!(cgs.is_empty(), "cgroups remain: {cgs:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let me = env.dir.path().to_string_lossy().into_owned();
    assert!(
        !mounts.lines().any(|l| l.contains(&me)),
        "a mount under {me} remains"
    );
    // No process whose root or cwd is under the test's folder.
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(env_text) = std::fs::read(format!("/proc/{pid}/environ"))
            && String::from_utf8_lossy(&env_text).contains(&format!("HOSTNAME={name}\0"))
        {
            panic!("process {pid} of pod {name} remains");
        }
    }
}

/// Removes the pod (`pod rm --force`) when dropped: a failing test leaves nothing
/// running either.
pub struct PodGuard<'a> {
    env: &'a Env,
    name: String,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        let _ = pod(self.env, &["rm", "--force", &self.name]);
    }
}

/// A [`PodGuard`] for pod `name`.
pub fn guard<'a>(env: &'a Env, name: &str) -> PodGuard<'a> {
    PodGuard {
        env,
        name: name.to_string(),
    }
}

/// A terminal the test types into: `sandbox pod attach -it` runs on its slave (the
/// slave its controlling terminal, in a session of its own).
pub struct Term {
    master: std::os::fd::OwnedFd,
    seen: Vec<u8>,
}

impl Term {
    /// Starts `sandbox pod attach -it POD -c CTR` on a new terminal.
    pub fn attach(env: &Env, pod: &str, ctr: &str) -> (std::process::Child, Term) {
        use std::os::unix::process::CommandExt;
        let p = nix::pty::openpty(None, None).unwrap();
        let mut c = env.cmd();
        c.args(["pod", "attach", "-i", "-t", pod, "-c", ctr])
            .stdin(p.slave.try_clone().unwrap())
            .stdout(p.slave.try_clone().unwrap())
            .stderr(p.slave.try_clone().unwrap());
        // SAFETY: setsid and ioctl between fork and exec: raw syscalls, no allocation.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().unwrap();
        drop(c);
        drop(p.slave);
        (
            child,
            Term {
                master: p.master,
                seen: Vec::new(),
            },
        )
    }

    pub fn write(&self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).unwrap();
    }

    /// Sets the terminal's window size (the attaching client gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize it is given.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Reads until the terminal has shown `needle` (fails after `secs`).
    pub fn read_until(&mut self, needle: &str, secs: u64) -> String {
        use std::os::fd::AsFd;
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "the terminal never showed {needle:?}:\n{text}"
            );
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut fds, 200u16).unwrap() == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    panic!("the terminal closed before {needle:?}:\n{text}")
                }
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
}
