//! Shared helpers: a busybox rootfs and a two-layer OCI image layout made here,
//! a private state root and store per test, and checks that nothing is left.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::new_without_default
)]

pub mod registry;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";
pub const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "hostname", "ps", "ip", "mount", "id", "grep", "head", "awk",
    "sleep", "true", "false", "test", "kill", "insmod", "wc", "touch", "timeout", "stat", "tr",
    "mknod",
];

pub fn require_root_and_busybox() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "sandbox tests need root");
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install busybox-static (cargo xtask test does)"
    );
}

#[derive(Debug)]
pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub store: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        require_root_and_busybox();
        let dir = tempfile::Builder::new()
            .prefix("sandbox-test-")
            .tempdir()
            .unwrap();
        let state = dir.path().join("state");
        let store = dir.path().join("store");
        Env { dir, state, store }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sandbox"));
        c.arg("--root")
            .arg(&self.state)
            .arg("--store")
            .arg(&self.store);
        c
    }

    /// `sandbox run --rootfs <busybox> ARGS -- sh -c SCRIPT`.
    pub fn run(&self, args: &[&str], script: &str) -> Output {
        let rootfs = self.rootfs();
        let mut c = self.cmd();
        c.arg("run")
            .arg("--rootfs")
            .arg(&rootfs)
            .args(args)
            .args(["--", "sh", "-c", script]);
        c.output().unwrap()
    }

    pub fn run_image(&self, image: &str, args: &[&str], script: &str) -> Output {
        let mut c = self.cmd();
        c.args(["run", "--image", image])
            .args(args)
            .args(["--", "sh", "-c", script]);
        c.output().unwrap()
    }

    /// A busybox rootfs directory (made once per Env).
    pub fn rootfs(&self) -> PathBuf {
        let r = self.dir.path().join("rootfs");
        if !r.exists() {
            std::fs::create_dir_all(r.join("bin")).unwrap();
            std::fs::create_dir_all(r.join("tmp")).unwrap();
            std::fs::copy(BUSYBOX, r.join("bin/busybox")).unwrap();
            for a in APPLETS {
                std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
            }
        }
        r
    }

    /// An OCI layout with two gzip layers: busybox + /etc/removed + /etc/kept, then a
    /// layer that deletes /etc/removed (whiteout) and makes /opq opaque.
    pub fn layout(&self) -> PathBuf {
        self.layout_with(
            "layout",
            "busybox:test",
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
    }

    /// [`Env::layout`] with another folder, reference name and image config.
    pub fn layout_with(&self, folder: &str, reference: &str, config: &[u8]) -> PathBuf {
        let l = self.dir.path().join(folder);
        let blobs = l.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let mut b1 = tar::Builder::new(Vec::new());
        add_dir(&mut b1, "bin");
        add_dir(&mut b1, "tmp");
        let bb = std::fs::read(BUSYBOX).unwrap();
        add_file(&mut b1, "bin/busybox", &bb, 0o755);
        for a in APPLETS {
            let mut h = header();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b1.append_link(&mut h, format!("bin/{a}"), "busybox")
                .unwrap();
        }
        add_dir(&mut b1, "etc");
        add_file(&mut b1, "etc/removed", b"gone\n", 0o644);
        add_file(&mut b1, "etc/kept", b"kept\n", 0o644);
        add_dir(&mut b1, "opq");
        add_file(&mut b1, "opq/old", b"old\n", 0o644);
        let mut b2 = tar::Builder::new(Vec::new());
        add_dir(&mut b2, "etc");
        add_file(&mut b2, "etc/.wh.removed", b"", 0o644);
        add_dir(&mut b2, "opq");
        add_file(&mut b2, "opq/.wh..wh..opq", b"", 0o644);
        add_file(&mut b2, "opq/new", b"new\n", 0o644);
        let mut layers = Vec::new();
        for b in [b1, b2] {
            let raw = b.into_inner().unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&raw).unwrap();
            let gz = gz.finish().unwrap();
            layers.push((put(&blobs, &gz), gz.len()));
        }
        let cfg = put(&blobs, config);
        let layer_json: Vec<String> = layers
            .iter()
            .map(|(d, n)| {
                format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{n}}}"#)
            })
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            layer_json.join(",")
        );
        let md = put(&blobs, manifest.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{reference}"}}}}]}}"#,
            manifest.len()
        );
        std::fs::write(l.join("index.json"), index).unwrap();
        std::fs::write(l.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        l
    }

    pub fn import(&self) {
        self.import_layout(&self.layout());
    }

    pub fn import_layout(&self, l: &Path) {
        let o = self
            .cmd()
            .args(["image", "import"])
            .arg(l)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Nothing of this test's left: no mount under its folder, no cgroup named in
    /// its state, no state folder.
    pub fn assert_clean(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let me = self.dir.path().to_string_lossy().into_owned();
        assert!(
            !mounts.lines().any(|l| l.contains(&me)),
            "a mount under {me} remains:\n{mounts}"
        );
        if let Ok(rd) = std::fs::read_dir(&self.state) {
            let left: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "state left: {left:?}");
        }
    }
}

/// A tar header owned by root, with a fixed mtime.
pub fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, p: &str) {
    let mut h = header();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, p, std::io::empty()).unwrap();
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, p: &str, data: &[u8], mode: u32) {
    let mut h = header();
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, p, data).unwrap();
}

/// Writes `data` as a blob under `blobs`; returns its digest.
pub fn put(blobs: &Path, data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(blobs.join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A name unique to this process and call site.
pub fn name(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// All cgroup directories named `sandbox-<name>-*` on any hierarchy.
pub fn cgroups_of(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let prefix = format!("sandbox-{name}-");
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()));
    }
    for r in roots {
        if let Ok(rd) = std::fs::read_dir(&r) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

/// This host's hostname.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// An octal tar header field; digits filling the whole field, without terminator,
/// where the value needs it (as GNU tar writes 8+ GiB).
pub fn tar_octal(field: &mut [u8], v: u64) {
    let mut s = format!("{:0w$o}\0", v, w = field.len() - 1);
    if s.len() > field.len() {
        // Digits filling the whole field, no terminator (as GNU tar writes 8+ GiB).
        s = format!("{:0w$o}", v, w = field.len());
    }
    field.copy_from_slice(s.as_bytes());
}

/// A ustar header with any name (no checks: the tar crate refuses `..`), the
/// checksum right: for hostile layers.
pub fn tar_header(
    name: &[u8],
    typ: u8,
    size: u64,
    mode: u32,
    link: &[u8],
    dev: (u32, u32),
) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(
        name.len() <= 100 && link.len() <= 100,
        "use a long-name header"
    );
    h[..name.len()].copy_from_slice(name);
    tar_octal(&mut h[100..108], u64::from(mode));
    tar_octal(&mut h[108..116], 0);
    tar_octal(&mut h[116..124], 0);
    tar_octal(&mut h[124..136], size);
    tar_octal(&mut h[136..148], 1_700_000_000);
    h[156] = typ;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    tar_octal(&mut h[329..337], u64::from(dev.0));
    tar_octal(&mut h[337..345], u64::from(dev.1));
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}
