//! `cargo xtask bench image`: pulling a ~100 MB image from a registry on loopback
//! (Debian's docker-registry, seeded by skopeo), `sandbox image pull` vs `podman
//! pull` vs `skopeo copy` to an OCI layout, cold (nothing local) and warm (its
//! base layer already there), against the cost of its new layer alone; and unpack
//! throughput of `sandbox image import` vs `tar -xzf` of the same layers.
//!
//! The image: a base layer (70% of `--size-mb`) and an app layer (30%), files of
//! 1 MiB each half pseudo-random bytes and half text (`gzip -6` packs them to about
//! 50%), built here so that every run measures the same bytes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::{median, time};
use crate::util;

const MIB: usize = 1 << 20;

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A layer tar of `n` files of 1 MiB, seeded by `seed`.
fn layer(prefix: &str, n: usize, seed: u64) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut x = seed | 1;
    for i in 0..n {
        let mut data = Vec::with_capacity(MIB);
        while data.len() < MIB / 2 {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        while data.len() < MIB {
            data.extend_from_slice(format!("line {i} of a text file in {prefix}\n").as_bytes());
        }
        data.truncate(MIB);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("{prefix}/f{i:04}"), &data[..])?;
    }
    Ok(b.into_inner()?)
}

fn put(blobs: &Path, data: &[u8]) -> Result<String> {
    let h = hex(&Sha256::digest(data));
    std::fs::write(blobs.join(&h), data)?;
    Ok(format!("sha256:{h}"))
}

/// A layer as (tar, gzip of it).
type Layer = (Vec<u8>, Vec<u8>);

/// A layout holding one image per (ref name, layers) pair.
fn write_layout(dir: &Path, images: &[(&str, Vec<&Layer>)]) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut entries = Vec::new();
    for (name, layers) in images {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (raw, gz) in layers {
            let d = put(&blobs, gz)?;
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d, "size": gz.len()}));
            diff_ids.push(format!("sha256:{}", hex(&Sha256::digest(raw))));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids}}))?;
        let cd = put(&blobs, &config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd, "size": config.len()},
            "layers": descs}))?;
        let md = put(&blobs, &manifest)?;
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}}));
    }
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries}))?,
    )?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// gzip -6 -n (GNU gzip, as image builders' gzip writes incompressible data: stored
/// blocks; miniz_oxide codes it as literals, which tar -xz then inflates 3x slower).
fn gzip(raw: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-6", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let data = raw.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer thread panicked"))??;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Unmounts everything mounted under `dir` (podman's overlay driver makes its
/// storage folder a private mount) and removes it.
fn wipe(dir: &Path) -> Result<()> {
    let me = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut under: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&me))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        let _ = Command::new("umount").args(["-l", &m]).status();
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", dir.display())),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Entry point.
pub fn run(runs: usize, size_mb: usize) -> Result<()> {
    if runs == 0 || size_mb < 10 {
        bail!("--runs must be at least 1 and --size-mb at least 10");
    }
    util::apt_install(&["docker-registry", "skopeo", "podman"])?;
    util::run(util::cargo().args(["build", "--release", "--quiet", "-p", "sandbox-cli"]))?;
    let sandbox = util::release_bin("sandbox");
    let scratch = PathBuf::from(format!("/var/tmp/xtask-bench-image-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let res = bench(&sandbox, &scratch, runs, size_mb);
    let cleaned = wipe(&scratch);
    res?;
    cleaned?;
    println!("cleanup: {} removed", scratch.display());
    Ok(())
}

fn bench(sandbox: &Path, scratch: &Path, runs: usize, size_mb: usize) -> Result<()> {
    let base_n = size_mb * 7 / 10;
    let app_n = size_mb - base_n;
    eprintln!("xtask: building a {size_mb} MiB image ({base_n} MiB base + {app_n} MiB app layer)");
    let base_raw = layer("base", base_n, 0x9e37_79b9_7f4a_7c15)?;
    let app_raw = layer("app", app_n, 0x0123_4567_89ab_cdef)?;
    let base_gz = gzip(&base_raw)?;
    let base = (base_raw, base_gz);
    let app_gz = gzip(&app_raw)?;
    let app = (app_raw, app_gz);
    let layout = scratch.join("layout");
    write_layout(
        &layout,
        &[
            ("base", vec![&base]),
            ("app", vec![&base, &app]),
            ("apponly", vec![&app]),
        ],
    )?;
    let compressed = (base.1.len() + app.1.len()) as f64 / MIB as f64;
    let plain = (base.0.len() + app.0.len()) as f64 / MIB as f64;

    // The registry, private storage, loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = scratch.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            scratch.join("registry").display()
        ),
    )?;
    let _reg = Registry(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start docker-registry")?,
    );
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("docker-registry did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let host = format!("127.0.0.1:{port}");
    for name in ["base", "app", "apponly"] {
        util::run(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:{name}", layout.display()))
                .arg(format!("docker://{host}/bench/{name}:1")),
        )?;
    }
    let r = |name: &str| format!("{host}/bench/{name}:1");
    let store = scratch.join("store");
    let podroot = scratch.join("podman");
    let skodir = scratch.join("skopeo");
    let sandbox_pull = |name: &str| {
        let mut c = Command::new(sandbox);
        c.arg("--store")
            .arg(&store)
            .args(["image", "pull", "--insecure", "-q"])
            .arg(r(name));
        c
    };
    let podman_pull = |name: &str| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(podroot.join("root"))
            .arg("--runroot")
            .arg(podroot.join("run"))
            .args([
                "--storage-driver",
                "overlay",
                "--events-backend",
                "file",
                "--cgroup-manager",
                "cgroupfs",
                "pull",
                "-q",
                "--tls-verify=false",
            ])
            .arg(format!("docker://{}", r(name)));
        c
    };
    let skopeo_copy = |name: &str| {
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}", r(name)))
            .arg(format!("oci:{}:{name}", skodir.display()));
        c
    };
    type Make<'a> = &'a dyn Fn(&str) -> Command;
    let tools: [(&str, Make, &Path); 3] = [
        ("sandbox image pull", &sandbox_pull, &store),
        ("podman pull", &podman_pull, &podroot),
        ("skopeo copy (OCI layout)", &skopeo_copy, &skodir),
    ];
    let mut cold = vec![Vec::new(); 3];
    let mut warm = vec![Vec::new(); 3];
    let mut alone = vec![Vec::new(); 3];
    for _ in 0..runs {
        for (i, (_, make, dir)) in tools.iter().enumerate() {
            wipe(dir)?;
            cold[i].push(time(&mut make("app"))?);
            wipe(dir)?;
            util::run(make("base").stdout(Stdio::null()))?;
            warm[i].push(time(&mut make("app"))?);
            wipe(dir)?;
            alone[i].push(time(&mut make("apponly"))?);
            wipe(dir)?;
        }
    }
    println!(
        "pull of a {size_mb} MiB image ({plain:.0} MiB in tar, {compressed:.0} MiB gzip; \
         base {base_n} MiB + app {app_n} MiB) from docker-registry on loopback, median of {runs}:"
    );
    println!(
        "{:<26} {:>10} {:>14} {:>16}",
        "", "cold", "warm (base)", "app layer alone"
    );
    let mut med = Vec::new();
    for (i, (name, _, _)) in tools.iter().enumerate() {
        let (c, w, a) = (
            median(&mut cold[i]),
            median(&mut warm[i]),
            median(&mut alone[i]),
        );
        println!("{name:<26} {:>10} {:>14} {:>16}", ms(c), ms(w), ms(a));
        med.push((c, w, a));
    }
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    println!(
        "sandbox vs podman: cold {:.2}x faster, warm {:.2}x; sandbox warm / app layer alone: {:.2}",
        ratio(med[0].0, med[1].0),
        ratio(med[0].1, med[1].1),
        med[0].1.as_secs_f64() / med[0].2.as_secs_f64().max(1e-9)
    );

    // Unpack: import of the local layout (gunzip, digest checks, fd-relative
    // writes) vs tar -xzf of the same two layer blobs.
    let blobs = layout.join("blobs/sha256");
    let mut imp = Vec::new();
    let mut tarx = Vec::new();
    // (xtask is a debug build: hashing here would be slower than the tar.)
    let layer_files: Vec<PathBuf> = [&base, &app]
        .iter()
        .map(|(_, gz)| blobs.join(hex(&Sha256::digest(gz))))
        .collect();
    let single = scratch.join("single");
    write_layout(&single, &[("app", vec![&base, &app])])?;
    for _ in 0..runs {
        wipe(&store)?;
        imp.push(time(
            Command::new(sandbox)
                .arg("--store")
                .arg(&store)
                .args(["image", "import", "--name", "app:1"])
                .arg(&single),
        )?);
        let out = scratch.join("tar-x");
        wipe(&out)?;
        std::fs::create_dir_all(&out)?;
        let t = Instant::now();
        for d in &layer_files {
            util::run(Command::new("tar").arg("-xzf").arg(d).arg("-C").arg(&out))?;
        }
        tarx.push(t.elapsed());
        wipe(&out)?;
    }
    let (i, t) = (median(&mut imp), median(&mut tarx));
    println!(
        "unpack of the same {plain:.0} MiB (two gzip layers), median of {runs}: sandbox image \
         import {} ({:.0} MiB/s, digests checked), tar -xzf {} ({:.0} MiB/s)",
        ms(i),
        plain / i.as_secs_f64(),
        ms(t),
        plain / t.as_secs_f64()
    );
    wipe(&store)?;
    Ok(())
}
