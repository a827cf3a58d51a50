//! The demo's last step: a container from a local image, capped at 0.2 CPU, seen
//! throttled.
//!
//! Builds a one-layer OCI image layout from busybox-static (as the sandbox tests do),
//! imports it into a store of the demo's own, runs a busy loop in a container with
//! `--cpu`, shows the loop's CPU share second by second and the container cgroup's
//! throttling counters (`sandbox stats`: nr_periods, nr_throttled, throttled time),
//! then stops the container and removes the image and every folder it made. The
//! state root and store are private temporary folders: the user's `/run/sandbox` and
//! `/var/lib/sandbox` are not touched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::util;

const IMAGE: &str = "demo-busybox:latest";
const BUSYBOX: &str = "/bin/busybox";
/// The applets the image links to busybox.
const APPLETS: [&str; 4] = ["sh", "true", "sleep", "cat"];

/// What the step made, undone on drop (even when a step fails): the container is
/// stopped and its `sandbox run` (our child) reaped, the image removed, the folder
/// (state root, store, layout) deleted.
struct Made {
    sandbox: PathBuf,
    dir: PathBuf,
    name: String,
    run: Option<Child>,
    imported: bool,
}

impl Made {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.sandbox);
        c.arg("--root")
            .arg(self.dir.join("state"))
            .arg("--store")
            .arg(self.dir.join("store"));
        c
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(mut run) = self.run.take() {
            // `sandbox stop` ends the container; its `sandbox run` then removes the
            // cgroup, mounts and state. SIGKILL to our own child only if it lingers.
            let _ = self
                .cmd()
                .args(["stop", "-t", "1", &self.name])
                .stderr(Stdio::null())
                .status();
            let start = Instant::now();
            while !matches!(run.try_wait(), Ok(Some(_))) {
                if start.elapsed() > Duration::from_secs(5) {
                    let _ = run.kill();
                    let _ = run.wait();
                    let _ = self.cmd().arg("gc").stdout(Stdio::null()).status();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.imported {
            let _ = self
                .cmd()
                .args(["image", "rm", IMAGE])
                .stdout(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the step: `seconds` of a busy loop in a container capped at `cpu` CPUs.
pub fn run(sandbox: &Path, cpu: &str, seconds: u64) -> Result<()> {
    util::apt_install(&["busybox-static"])?;
    let dir = std::env::temp_dir().join(format!("sandbox-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut made = Made {
        sandbox: sandbox.to_path_buf(),
        dir: dir.clone(),
        name: format!("demo-{}", std::process::id()),
        run: None,
        imported: false,
    };

    let layout = dir.join("layout");
    println!("\n== an OCI image layout from {BUSYBOX}, imported into a store of the demo's own");
    write_layout(&layout)?;
    let o = made.cmd().args(["image", "import"]).arg(&layout).output()?;
    if !o.status.success() {
        bail!(
            "sandbox image import failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    made.imported = true;
    util::run(made.cmd().args(["image", "ls"]))?;

    let name = made.name.clone();
    println!(
        "\n== sandbox run --image {IMAGE} --name {name} --cpu {cpu} -- sh -c 'while :; do :; done'"
    );
    let run = made
        .cmd()
        .args(["run", "--image", IMAGE, "--name", &name, "--cpu", cpu])
        .args(["--", "sh", "-c", "while :; do :; done"])
        .stdin(Stdio::null())
        .spawn()
        .context("start sandbox run")?;
    made.run = Some(run);
    let pid = wait_running(&dir.join("state").join(&name), made.run.as_mut())?;
    println!("   its process: pid {pid} on the host, PID 1 in the container");

    println!("\n== its CPU share, measured from /proc/{pid}/stat");
    for s in 1..=seconds {
        let c0 = super::cpu_seconds(pid)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let share = (super::cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64();
        println!("   second {s}: {:5.1}% of one CPU", share * 100.0);
    }

    println!("\n== sandbox stats {name}: the container cgroup's throttling counters");
    let o = made.cmd().args(["stats", &name]).output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        bail!("sandbox stats: {}", String::from_utf8_lossy(&o.stderr));
    }
    let mut throttled = 0u64;
    for l in text.lines() {
        println!("   {l}");
        if let Some(v) = l.strip_prefix("throttled_usec ") {
            let usec: f64 = v.trim().parse().unwrap_or(0.0);
            println!("   (throttled for {:.2} s in all)", usec / 1e6);
        }
        if let Some(v) = l.strip_prefix("nr_throttled ") {
            throttled = v.trim().parse().unwrap_or(0);
        }
    }
    if throttled == 0 {
        bail!("the container was never throttled: {text}");
    }

    println!("\n== sandbox stop -t 1 {name}; sandbox image rm {IMAGE}");
    drop(made);
    println!("   container, cgroup, mounts, image and folders removed");
    Ok(())
}

/// Waits until `sandbox run` marks the container running; its host pid.
fn wait_running(dir: &Path, run: Option<&mut Child>) -> Result<i64> {
    let start = Instant::now();
    let mut run = run;
    loop {
        if let Ok(t) = std::fs::read_to_string(dir.join("state.json")) {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            if v["status"] == "running"
                && let Some(p) = v["pid"].as_i64()
            {
                return Ok(p);
            }
        }
        if let Some(r) = run.as_deref_mut()
            && let Some(st) = r.try_wait()?
        {
            bail!("sandbox run exited early ({st})");
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the container did not start within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An OCI image layout at `dir` (image-spec's `oci-layout`, `index.json`, blobs):
/// one gzip layer holding busybox and its applet links, a config, a manifest, and
/// the index naming it [`IMAGE`].
fn write_layout(dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        let mut h = header(tar::EntryType::Directory, 0o755);
        b.append_data(&mut h, d, std::io::empty())?;
    }
    let bb = std::fs::read(BUSYBOX).with_context(|| format!("read {BUSYBOX}"))?;
    let mut h = header(tar::EntryType::Regular, 0o755);
    h.set_size(bb.len() as u64);
    b.append_data(&mut h, "bin/busybox", bb.as_slice())?;
    for a in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner()?)?;
    let layer = gz.finish()?;
    let layer_digest = put(&blobs, &layer)?;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = put(&blobs, config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    })
    .to_string();
    let manifest_digest = put(&blobs, manifest.as_bytes())?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": IMAGE},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    h
}

/// Stores `data` as a blob named by its sha256; the `sha256:...` digest.
fn put(blobs: &Path, data: &[u8]) -> Result<String> {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(blobs.join(&hex), data)?;
    Ok(format!("sha256:{hex}"))
}
