//! A real registry on loopback (Debian's docker-registry, distribution 2.8) with a
//! private storage folder, seeded with skopeo; OCI layouts built here; and a small
//! hostile registry (an HTTP server run by the test) that answers what it is told.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const REGISTRY: &str = "/usr/bin/docker-registry";
pub const SKOPEO: &str = "/usr/bin/skopeo";

pub fn require_tools() {
    for t in [REGISTRY, SKOPEO] {
        assert!(
            Path::new(t).exists(),
            "{t} is missing: install docker-registry and skopeo (cargo xtask test does)"
        );
    }
}

pub fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a registry authenticates.
pub enum Auth {
    None,
    /// htpasswd basic auth with this user and password.
    Basic(&'static str, &'static str),
    /// Bearer tokens from a token service: realm URL, service, issuer, the
    /// certificate bundle whose key signs the tokens.
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
}

/// A docker-registry process; killed (by its pid) and reaped on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        require_tools();
        let dir = tempfile::Builder::new()
            .prefix("sandbox-test-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Basic(u, p) => {
                let o = Command::new("htpasswd")
                    .args(["-Bbn", u, p])
                    .output()
                    .expect("htpasswd (apache2-utils)");
                assert!(o.status.success());
                let f = dir.path().join("htpasswd");
                std::fs::write(&f, &o.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    f.display()
                )
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: \
                 {issuer}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: \
             127.0.0.1:{port}\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.path().join("registry.log");
        let lf = std::fs::File::create(&log).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(lf.try_clone().unwrap())
            .stderr(lf)
            .spawn()
            .unwrap();
        let r = Registry {
            child,
            port,
            dir,
            log,
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "docker-registry did not listen: {}",
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies `oci:LAYOUT[:REF]` to `docker://HOST/DEST` with skopeo (`extra`: more
    /// options, e.g. `--all`, `--dest-creds`).
    pub fn seed(&self, layout: &Path, dest: &str, extra: &[&str]) {
        let o = Command::new(SKOPEO)
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.host()))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo copy to {dest}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// The blob digests GET with success, in log order (the registry's access log).
    pub fn blob_gets(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .filter(|l| l.contains("\" 200 ") || l.contains("\" 206 "))
            .filter_map(|l| {
                let i = l.find("/blobs/sha256:")? + "/blobs/".len();
                Some(l[i..i + 71].to_string())
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- layouts

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compress {
    Gzip,
    Zstd,
    Plain,
}

/// A layer tar (uncompressed) of regular files, directories and symlinks.
pub fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_mode(*mode);
        if p.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, p.trim_end_matches('/'), std::io::empty())
                .unwrap();
        } else {
            h.set_size(data.len() as u64);
            b.append_data(&mut h, p, *data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

/// The busybox layer: /bin/busybox and its applets, /tmp, /etc.
pub fn busybox_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let bb = std::fs::read(super::BUSYBOX).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    for d in ["bin", "tmp", "etc"] {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(bb.len() as u64);
    b.append_data(&mut h, "bin/busybox", &bb[..]).unwrap();
    for a in super::APPLETS {
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    b.into_inner().unwrap()
}

pub fn compress(raw: &[u8], c: Compress) -> (Vec<u8>, &'static str) {
    match c {
        Compress::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(raw).unwrap();
            (
                gz.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Compress::Zstd => (
            ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        Compress::Plain => (raw.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
    }
}

/// One image of a layout: its manifest (bytes, digest) made from layer tars.
pub struct Built {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub layers: Vec<(String, Vec<u8>)>,
    pub config: Vec<u8>,
}

pub fn put(blobs: &Path, data: &[u8]) -> String {
    std::fs::create_dir_all(blobs).unwrap();
    let h = sha(data);
    std::fs::write(blobs.join(&h), data).unwrap();
    format!("sha256:{h}")
}

/// Writes the blobs of one image (layer tars compressed with `c`) into `layout`.
pub fn build_image(layout: &Path, tars: &[Vec<u8>], c: Compress, arch: &str, cfg: &str) -> Built {
    let blobs = layout.join("blobs/sha256");
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for t in tars {
        let (blob, mt) = compress(t, c);
        let d = put(&blobs, &blob);
        descs.push(format!(
            r#"{{"mediaType":"{mt}","digest":"{d}","size":{}}}"#,
            blob.len()
        ));
        diff_ids.push(format!("\"sha256:{}\"", sha(t)));
        layers.push((d, blob));
    }
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{{cfg}}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let cd = put(&blobs, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let digest = put(&blobs, manifest.as_bytes());
    Built {
        manifest: manifest.into_bytes(),
        digest,
        layers,
        config: config.into_bytes(),
    }
}

/// A layout holding one image (index.json names it `ref`).
pub fn layout(dir: &Path, reference: &str, tars: &[Vec<u8>], c: Compress, cfg: &str) -> Built {
    let b = build_image(dir, tars, c, "amd64", cfg);
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{reference}"}}}}]}}"#,
            b.digest,
            b.manifest.len()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    b
}

/// A layout whose image is an index of the given (arch, image) pairs.
pub fn index_layout(dir: &Path, reference: &str, images: &[(&str, &Built)]) {
    let entries: Vec<String> = images
        .iter()
        .map(|(arch, b)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"{arch}"}}}}"#,
                b.digest,
                b.manifest.len()
            )
        })
        .collect();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    let d = put(&dir.join("blobs/sha256"), index.as_bytes());
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{reference}"}}}}]}}"#,
            index.len()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

// ---------------------------------------------------------------- a hostile registry

/// What the hostile server answers for a request.
pub enum Reply {
    /// Status, content type, body (with a Content-Length).
    Body(u16, &'static str, Vec<u8>),
    /// 200 with no length, bytes forever (until the client goes).
    Endless,
    /// This error status with no length, bytes forever.
    EndlessError(u16),
    /// 401 with this `WWW-Authenticate` challenge.
    Challenge(String),
    /// 200 announcing `len` bytes, sending only `send` of `body`, then closing.
    Cut { body: Vec<u8>, send: usize },
    /// A redirect.
    Redirect(String),
    /// 404.
    NotFound,
}

/// A request as the hostile server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// An HTTP/1.1 server on loopback answering with `handler(request, n)` (n counts
/// requests to that path); it stops when dropped.
pub struct Hostile {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Hostile {
    pub fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Hostile {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s2, st2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st2.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (h, s) = (handler.clone(), s2.clone());
                        let st = st2.clone();
                        std::thread::spawn(move || serve(c, &*h, &s, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Hostile { port, seen, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn serve(c: TcpStream, h: &Handler, seen: &Mutex<Vec<Seen>>, stop: &std::sync::atomic::AtomicBool) {
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut range = None;
    let mut auth = None;
    let mut len = 0usize;
    loop {
        let mut hl = String::new();
        if r.read_line(&mut hl).unwrap_or(0) == 0 {
            return;
        }
        let hl = hl.trim_end();
        if hl.is_empty() {
            break;
        }
        let lower = hl.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range:") {
            range = Some(v.trim().to_string());
        }
        if lower.starts_with("authorization:") {
            auth = Some(hl["authorization:".len()..].trim().to_string());
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    let s = Seen {
        method,
        path: path.clone(),
        range,
        auth,
    };
    let n = {
        let mut v = seen.lock().unwrap();
        v.push(s.clone());
        v.iter().filter(|x| x.path == path).count()
    };
    let reply = match h(&s, n) {
        // The API root answers 200 unless the handler challenges there.
        r @ Reply::Challenge(_) => r,
        _ if s.path == "/v2/" => Reply::Body(200, "application/json", b"{}".to_vec()),
        r => r,
    };
    let head = |status: u16, extra: &str| {
        format!("HTTP/1.1 {status} X\r\n{extra}Connection: close\r\n\r\n")
    };
    match reply {
        Reply::Body(status, ct, b) => {
            let mut out = head(
                status,
                &format!("Content-Type: {ct}\r\nContent-Length: {}\r\n", b.len()),
            )
            .into_bytes();
            if s.method != "HEAD" {
                out.extend_from_slice(&b);
            }
            let _ = w.write_all(&out);
        }
        Reply::Endless | Reply::EndlessError(_) => {
            let status = match reply {
                Reply::EndlessError(s) => s,
                _ => 200,
            };
            let _ = w.write_all(
                head(
                    status,
                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                )
                .as_bytes(),
            );
            let chunk = vec![b' '; 1 << 16];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
        Reply::Cut { body, send } => {
            let _ =
                w.write_all(head(200, &format!("Content-Length: {}\r\n", body.len())).as_bytes());
            let _ = w.write_all(&body[..send]);
        }
        Reply::Redirect(to) => {
            let _ = w.write_all(
                head(307, &format!("Location: {to}\r\nContent-Length: 0\r\n")).as_bytes(),
            );
        }
        Reply::Challenge(c) => {
            let _ = w.write_all(
                head(
                    401,
                    &format!("WWW-Authenticate: {c}\r\nContent-Length: 0\r\n"),
                )
                .as_bytes(),
            );
        }
        Reply::NotFound => {
            let _ = w.write_all(head(404, "Content-Length: 0\r\n").as_bytes());
        }
    }
}

/// Serves one image: `/v2/<repo>/manifests/<tag or digest>` and its blobs, and
/// lets `over` replace any answer (path, n) -> Some(reply).
pub fn serve_image(
    b: &Built,
    over: impl Fn(&Seen, usize) -> Option<Reply> + Send + Sync + 'static,
) -> Hostile {
    let manifest = b.manifest.clone();
    let digest = b.digest.clone();
    let config = b.config.clone();
    let cd = format!("sha256:{}", sha(&config));
    let layers = b.layers.clone();
    Hostile::start(move |s, n| {
        if let Some(r) = over(s, n) {
            return r;
        }
        if s.path.contains("/manifests/") {
            if s.path.ends_with("/manifests/t") || s.path.ends_with(&digest) {
                return Reply::Body(
                    200,
                    "application/vnd.oci.image.manifest.v1+json",
                    manifest.clone(),
                );
            }
            return Reply::NotFound;
        }
        if s.path.ends_with(&cd) {
            return Reply::Body(200, "application/octet-stream", config.clone());
        }
        for (d, blob) in &layers {
            if s.path.ends_with(d.as_str()) {
                if let Some(r) = &s.range {
                    let from: usize = r
                        .trim_start_matches("bytes=")
                        .split('-')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    return Reply::Body(206, "application/octet-stream", blob[from..].to_vec());
                }
                return Reply::Body(200, "application/octet-stream", blob.clone());
            }
        }
        Reply::NotFound
    })
}

// ---------------------------------------------------------------- a token service

fn b64(data: &[u8], url: bool) -> String {
    let t: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(t[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A token service (the distribution token protocol) the test runs: it checks a
/// basic user/password and issues RS256 JWTs signed (with openssl) by a key whose
/// self-signed certificate the registry trusts (`x5c` header).
pub struct TokenService {
    pub server: Hostile,
    pub cert: PathBuf,
    pub issued: Arc<Mutex<usize>>,
}

pub const TOKEN_SERVICE: &str = "test-service";
pub const TOKEN_ISSUER: &str = "test-issuer";

impl TokenService {
    pub fn start(dir: &Path, user: &'static str, password: &'static str) -> TokenService {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        let o = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=sandbox-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = b64(&der, false);
        let issued = Arc::new(Mutex::new(0usize));
        let count = issued.clone();
        let server = Hostile::start(move |s, _| {
            let auth = s.auth.as_deref();
            let want = format!(
                "basic {}",
                b64(format!("{user}:{password}").as_bytes(), false)
            );
            if auth.map(str::to_ascii_lowercase).as_deref() != Some(&want.to_ascii_lowercase()) {
                return Reply::Body(
                    401,
                    "application/json",
                    br#"{"details":"bad credentials"}"#.to_vec(),
                );
            }
            let query = s.path.split_once('?').map(|(_, q)| q).unwrap_or_default();
            let mut access = Vec::new();
            for kv in query.split('&') {
                if let Some(v) = kv.strip_prefix("scope=") {
                    let v = percent_decode(v);
                    let mut p = v.splitn(3, ':');
                    let (t, name, actions) = (
                        p.next().unwrap(),
                        p.next().unwrap_or(""),
                        p.next().unwrap_or(""),
                    );
                    let acts: Vec<String> =
                        actions.split(',').map(|a| format!("\"{a}\"")).collect();
                    access.push(format!(
                        r#"{{"type":"{t}","name":"{name}","actions":[{}]}}"#,
                        acts.join(",")
                    ));
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = format!(r#"{{"typ":"JWT","alg":"RS256","x5c":["{x5c}"]}}"#);
            let claims = format!(
                r#"{{"iss":"{TOKEN_ISSUER}","sub":"{user}","aud":"{TOKEN_SERVICE}","exp":{},"nbf":{},"iat":{now},"jti":"{now}-{}","access":[{}]}}"#,
                now + 300,
                now - 10,
                access.len(),
                access.join(",")
            );
            let signing = format!(
                "{}.{}",
                b64(header.as_bytes(), true),
                b64(claims.as_bytes(), true)
            );
            let mut child = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(signing.as_bytes())
                .unwrap();
            let sig = child.wait_with_output().unwrap().stdout;
            *count.lock().unwrap() += 1;
            let token = format!("{signing}.{}", b64(&sig, true));
            Reply::Body(
                200,
                "application/json",
                format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#)
                    .into_bytes(),
            )
        });
        TokenService {
            server,
            cert,
            issued,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.host())
    }
}

// ---------------------------------------------------------------- hostile tars

/// A ustar header with any name, mode 0644 (see [`super::tar_header`]).
pub fn raw_header(name: &[u8], typ: u8, size: u64, link: &[u8]) -> [u8; 512] {
    super::tar_header(name, typ, size, 0o644, link, (0, 0))
}

/// A tar of raw entries: (name, type byte, data, link target).
pub fn raw_tar(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    let mut t = Vec::new();
    for (name, typ, data, link) in entries {
        t.extend_from_slice(&raw_header(
            name.as_bytes(),
            *typ,
            data.len() as u64,
            link.as_bytes(),
        ));
        t.extend_from_slice(data);
        t.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }
    t.extend(std::iter::repeat_n(0u8, 1024));
    t
}
