//! `sandbox image pull`: an image from a registry that speaks the OCI distribution
//! spec, into the store, sharing the layers the store already holds.
//!
//! Manifests are fetched by us (bounded: a hostile registry cannot make us read an
//! endless manifest; oci-client reads a manifest body whole), blobs through
//! oci-client's streams. Every blob is checked against its descriptor's size while
//! it streams (one byte more is refused) and against its digest at the end. Layer
//! blobs download in parallel (bounded) to `downloads/<hex>.partial`: an
//! interrupted pull leaves that file, and the next pull resumes it with a `Range`
//! request (a registry that ignores the range sends the whole blob again). A blob
//! whose digest does not match is deleted. Only then are layers unpacked, once
//! each, through the same checked path as `import`; a pull that fails leaves no
//! layer, blob or record behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::reference::{Reference, hex};
use super::store::{Image, Store, hex_of, mkdir_private};
use crate::error::{Error, Result, ioe};

/// Where partial layer downloads wait (`<store>/downloads/<hex>.partial`).
pub(crate) const DOWNLOADS: &str = "downloads";

/// A CA certificate whose key was thrown away when it was made: it signs nothing.
/// A machine without a CA store (no ca-certificates) cannot build a TLS client at
/// all, and oci-client builds one even for plain HTTP; the `sandbox` command points
/// `SSL_CERT_FILE` at this root for `--insecure` there (see [`tls_roots_available`]).
pub const PLAIN_HTTP_ROOT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIB0TCCAXegAwIBAgIUPZ4BYzcRN6XJRbTe8IrrnElxfxcwCgYIKoZIzj0EAwIw\n\
PTE7MDkGA1UEAwwyc2FuZGJveCBwbGFpbi1IVFRQIHBsYWNlaG9sZGVyIHJvb3Qs\n\
IHNpZ25zIG5vdGhpbmcwIBcNMjYxMjA1MjIyMTA1WhgPMjEyNjExMTEyMjIxMDVa\n\
MD0xOzA5BgNVBAMMMnNhbmRib3ggcGxhaW4tSFRUUCBwbGFjZWhvbGRlciByb290\n\
LCBzaWducyBub3RoaW5nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEoHjc0io9\n\
YD7OagUhC6EzeZrIH2TG+0ECu/yiEcbhqRSo9pKOY0dFAZqbKboYPa70ysPxCqPS\n\
GPNAzmY/DDT+NKNTMFEwHQYDVR0OBBYEFMkwJ0FnakqRPCY1OsVrxDmEyEGvMB8G\n\
A1UdIwQYMBaAFMkwJ0FnakqRPCY1OsVrxDmEyEGvMA8GA1UdEwEB/wQFMAMBAf8w\n\
CgYIKoZIzj0EAwIDSAAwRQIhAK5K9pP7+5r8yVzFxn8RmczSvNyuG3i/glXFKfOu\n\
ngzmAiBJMjjtc2j7mMjJwfvsdmnD9tFD2/XkUk+T/XuVvcwtaA==\n\
-----END CERTIFICATE-----\n";

/// Whether a TLS client can be built here: false where the system has no CA store
/// (rustls' native-certs loader reads `SSL_CERT_FILE` / `SSL_CERT_DIR` and the
/// distribution's bundle).
pub fn tls_roots_available() -> bool {
    reqwest::Client::builder().build().is_ok()
}

/// Media types of manifests we accept (OCI and Docker v2 schema 2).
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Layer media types we unpack (the content is sniffed: gzip, zstd or plain tar).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// An OS/architecture pair (`linux/amd64`, `linux/arm64/v8`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub arch: String,
    /// `v8`, `v7`, ... when given.
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Platform> {
        let p: Vec<&str> = s.split('/').collect();
        let ok =
            |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match p.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::Config(format!(
                "--platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64"
            ))),
        }
    }
}

/// How to reach a registry.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// `USER:PASSWORD` (`--creds`); else the auth file's entry, else anonymous.
    pub creds: Option<String>,
    /// A docker-style `config.json` / `auth.json` (default: `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json`,
    /// `~/.docker/config.json`, the first that exists).
    pub auth_file: Option<PathBuf>,
    /// Plain HTTP to the registry the reference names (which must be named: the
    /// default registry is never reached over plain HTTP).
    pub insecure: bool,
    /// The largest manifest or config accepted.
    pub max_manifest_bytes: u64,
    /// Redirects followed per request.
    pub max_redirects: usize,
    /// No byte for this long ends a request.
    pub read_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            creds: None,
            auth_file: None,
            insecure: false,
            max_manifest_bytes: 4 << 20,
            max_redirects: 5,
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// What `pull` does beyond reaching the registry.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The registry connection.
    pub registry: RegistryOptions,
    /// The platform picked from an image index.
    pub platform: Platform,
    /// Layers downloaded at once.
    pub parallel: usize,
    /// Store the image under this `NAME:TAG` rather than the reference's.
    pub name: Option<String>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            registry: RegistryOptions::default(),
            platform: Platform::default(),
            parallel: 3,
            name: None,
        }
    }
}

/// Where a layer is in a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The store holds it already: not downloaded.
    Present,
    /// Downloading (`done` of `size` bytes).
    Downloading,
    /// Downloaded and verified.
    Downloaded,
    /// Unpacked into the store.
    Unpacked,
}

/// Receives progress of a pull (the CLI draws it).
pub trait Progress {
    /// The manifest is resolved: the image has `layers` layers.
    fn resolved(&self, reference: &str, manifest: &str, layers: usize);
    /// A layer moved on.
    fn layer(&self, digest: &str, size: u64, done: u64, phase: Phase);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn resolved(&self, _: &str, _: &str, _: usize) {}
    fn layer(&self, _: &str, _: u64, _: u64, _: Phase) {}
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image as stored.
    pub image: Image,
    /// Layers downloaded (digests).
    pub downloaded: Vec<String>,
    /// Layers the store already held.
    pub present: Vec<String>,
    /// Bytes received for layer blobs (resumed parts not counted twice).
    pub bytes: u64,
}

/// A parsed registry reference (`[REGISTRY/]REPO[:TAG][@DIGEST]`).
pub(crate) struct Remote {
    pub oci: oci_client::Reference,
    /// Whether the registry was named (not the default).
    pub explicit_registry: bool,
}

pub(crate) fn parse_remote(r: &str) -> Result<Remote> {
    let oci: oci_client::Reference = r.parse().map_err(|e| {
        Error::Image(format!(
            "bad image reference {r:?}: {e} (expected [REGISTRY/]NAME[:TAG][@sha256:...])"
        ))
    })?;
    let first = r.split('/').next().unwrap_or_default();
    let explicit_registry = r.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if let Some(d) = oci.digest() {
        hex_of(d)?;
    }
    Ok(Remote {
        oci,
        explicit_registry,
    })
}

/// A client for the reference's registry, with its authentication.
pub(crate) struct Session {
    pub client: Client,
    pub http: reqwest::Client,
    pub auth: RegistryAuth,
    pub scheme: &'static str,
    pub opts: RegistryOptions,
    /// The Authorization header [`Session::authorize`] made, for our own requests.
    pub authz: std::sync::Mutex<Option<String>>,
}

/// How much of a registry's error answer is read (oci-client reads one whole, so
/// blobs are fetched with our own requests: an endless error body cannot grow).
const MAX_ERROR_BODY: usize = 64 << 10;

impl Session {
    pub(crate) fn new(remote: &Remote, opts: &RegistryOptions, parallel: usize) -> Result<Session> {
        let registry = remote.oci.resolve_registry().to_string();
        if opts.insecure && !remote.explicit_registry {
            return Err(Error::Config(format!(
                "--insecure is for a registry named in the reference (HOST:PORT/NAME); \
                 {registry} is reached over HTTPS only"
            )));
        }
        let protocol = if opts.insecure {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        // oci-client 0.18 builds a default reqwest client too, which panics where
        // the system has no CA store: say so first.
        if !tls_roots_available() {
            return Err(Error::Image(
                "no CA certificates on this system: install ca-certificates (the registry \
                 client needs a CA store even for plain HTTP; the sandbox command supplies \
                 a placeholder for --insecure)"
                    .into(),
            ));
        }
        let config = ClientConfig {
            protocol,
            max_concurrent_download: parallel.max(1),
            max_concurrent_upload: parallel.max(1),
            read_timeout: Some(opts.read_timeout),
            connect_timeout: Some(Duration::from_secs(30)),
            platform_resolver: None,
            ..ClientConfig::default()
        };
        let client = Client::try_from(config)
            .map_err(|e| Error::Image(format!("registry client: {}", chain(&e))))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(opts.max_redirects))
            .read_timeout(opts.read_timeout)
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Image(format!("HTTP client: {}", chain(&e))))?;
        let auth = credentials(&registry, opts)?;
        Ok(Session {
            client,
            http,
            auth,
            scheme: if opts.insecure { "http" } else { "https" },
            opts: opts.clone(),
            authz: std::sync::Mutex::new(None),
        })
    }

    /// Authenticates for `op` (a bearer token from the registry's token service,
    /// basic credentials, or nothing) and returns the header our own requests use.
    pub(crate) async fn authorize(
        &self,
        r: &oci_client::Reference,
        op: RegistryOperation,
    ) -> Result<Option<String>> {
        // Pulls take their token with our own bounded requests (oci-client reads a
        // token answer whole); pushes go through oci-client, which keeps the token
        // for its own upload requests.
        let token = if matches!(op, RegistryOperation::Pull) {
            self.pull_token(r).await?
        } else {
            self.client
                .auth(r, &self.auth, op)
                .await
                .map_err(|e| registry_err(r, "authentication", &e))?
        };
        let authz = match (token, &self.auth) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, RegistryAuth::Basic(u, p)) => Some(format!(
                "Basic {}",
                base64_encode(format!("{u}:{p}").as_bytes())
            )),
            (None, _) => None,
        };
        if let Ok(mut a) = self.authz.lock() {
            a.clone_from(&authz);
        }
        Ok(authz)
    }

    /// The bearer token for pulling `r`, when the registry's challenge asks for one
    /// (distribution's token auth): `GET /v2/`, and on a `401` with `WWW-Authenticate:
    /// Bearer realm=...,service=...` a GET of the realm for `repository:REPO:pull`,
    /// with the session's basic credentials if any. Every answer is read to at
    /// most [`MAX_ERROR_BODY`].
    async fn pull_token(&self, r: &oci_client::Reference) -> Result<Option<String>> {
        let what = r.whole();
        let base = format!("{}://{}/v2/", self.scheme, r.resolve_registry());
        let res = self
            .http
            .get(&base)
            .send()
            .await
            .map_err(|e| Error::Image(format!("authentication for {what}: {}", chain(&e))))?;
        if res.status().as_u16() != 401 {
            return Ok(None);
        }
        let challenge = res
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let Some(params) = challenge
            .strip_prefix("Bearer ")
            .or_else(|| challenge.strip_prefix("bearer "))
        else {
            // Basic (or none): the credentials go with each request.
            return Ok(None);
        };
        let params = challenge_params(params);
        let realm = params.get("realm").ok_or_else(|| {
            Error::Image(format!(
                "authentication for {what}: the registry's Bearer challenge names no realm"
            ))
        })?;
        let mut query = vec![("scope", format!("repository:{}:pull", r.repository()))];
        if let Some(s) = params.get("service") {
            query.push(("service", s.clone()));
        }
        let mut req = self.http.get(realm).query(&query);
        if let RegistryAuth::Basic(u, p) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let mut res = req
            .send()
            .await
            .map_err(|e| Error::Image(format!("token from {realm} for {what}: {}", chain(&e))))?;
        let status = res.status();
        let mut body = Vec::new();
        while let Some(c) = res
            .chunk()
            .await
            .map_err(|e| Error::Image(format!("token from {realm}: {}", chain(&e))))?
        {
            if body.len() + c.len() > MAX_ERROR_BODY {
                return Err(Error::Image(format!(
                    "token from {realm} for {what}: the answer is larger than \
                     {MAX_ERROR_BODY} bytes: refused"
                )));
            }
            body.extend_from_slice(&c);
        }
        if !status.is_success() {
            let hint = if matches!(status.as_u16(), 401 | 403) {
                ": give credentials with --creds USER:PASSWORD or an auth file"
            } else {
                ""
            };
            return Err(Error::Image(format!(
                "token from {realm} for {what}: {status}{hint} ({})",
                String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
            )));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| {
            Error::Image(format!(
                "token from {realm} for {what}: not a token answer: {e}"
            ))
        })?;
        t.token.or(t.access_token).map(Some).ok_or_else(|| {
            Error::Image(format!(
                "token from {realm} for {what}: the answer holds no token"
            ))
        })
    }

    /// GETs blob `digest` of `r`'s repository from byte `offset` (a Range request
    /// when above 0), with the session's authorization. Returns the response and
    /// whether it is partial (206); any other status than 200/206 is an error
    /// quoting at most [`MAX_ERROR_BODY`] of its body.
    pub(crate) async fn blob_get(
        &self,
        r: &oci_client::Reference,
        digest: &str,
        offset: u64,
    ) -> Result<(reqwest::Response, bool)> {
        let url = format!(
            "{}://{}/v2/{}/blobs/{}",
            self.scheme,
            r.resolve_registry(),
            r.repository(),
            digest
        );
        let mut req = self.http.get(&url);
        if let Some(a) = self.authz.lock().ok().and_then(|a| a.clone()) {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        if offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let mut res = req
            .send()
            .await
            .map_err(|e| Error::Image(format!("blob {digest}: {}", chain(&e))))?;
        let status = res.status();
        match status.as_u16() {
            200 => return Ok((res, false)),
            206 if offset > 0 => return Ok((res, true)),
            _ => {}
        }
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match res.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                _ => break,
            }
        }
        body.truncate(MAX_ERROR_BODY.min(300));
        let hint = match status.as_u16() {
            401 | 403 => ": give credentials with --creds USER:PASSWORD or an auth file",
            404 => ": the registry does not have it",
            _ => "",
        };
        Err(Error::Image(format!(
            "blob {digest} of {}: the registry answered {status}{hint} ({})",
            r.whole(),
            String::from_utf8_lossy(&body).trim()
        )))
    }

    /// GETs a manifest (by tag or digest) with at most `max_manifest_bytes` read.
    /// Returns its bytes, its media type and its digest (checked against the
    /// reference's digest and the registry's `Docker-Content-Digest`).
    pub(crate) async fn manifest(
        &self,
        r: &oci_client::Reference,
        authz: Option<&str>,
    ) -> Result<(Vec<u8>, String, String)> {
        let what = r.whole();
        let target = r.digest().or(r.tag()).unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            r.resolve_registry(),
            r.repository(),
            target
        );
        let mut req = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "));
        if let Some(a) = authz {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let mut res = req
            .send()
            .await
            .map_err(|e| Error::Image(format!("manifest of {what}: {}", chain(&e))))?;
        let status = res.status();
        let max = self.opts.max_manifest_bytes;
        if let Some(n) = res.content_length()
            && n > max
        {
            return Err(Error::Image(format!(
                "manifest of {what}: the registry announces {n} bytes, more than the \
                 {max} a manifest may have: refused"
            )));
        }
        let header_digest = res
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let media = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| Error::Image(format!("manifest of {what}: {}", chain(&e))))?
        {
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(Error::Image(format!(
                    "manifest of {what} is larger than {max} bytes: refused"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            let hint = match status.as_u16() {
                401 | 403 => ": give credentials with --creds USER:PASSWORD or an auth file",
                404 => ": no such image or tag",
                _ => "",
            };
            return Err(Error::Image(format!(
                "manifest of {what}: the registry answered {status}{hint} ({})",
                text.trim()
            )));
        }
        let digest = format!("sha256:{}", hex(&Sha256::digest(&body)));
        for want in [r.digest().map(str::to_string), header_digest]
            .into_iter()
            .flatten()
        {
            if want.starts_with("sha256:") && want != digest {
                return Err(Error::Image(format!(
                    "manifest of {what} has {digest}, expected {want}: refused"
                )));
            }
        }
        let media = if media.is_empty() || !MANIFEST_TYPES.contains(&media.as_str()) {
            // Some registries send application/json: the document says.
            #[derive(Deserialize)]
            struct Typed {
                #[serde(rename = "mediaType", default)]
                media_type: String,
                #[serde(default)]
                manifests: Option<serde_json::Value>,
            }
            let t: Typed = serde_json::from_slice(&body)
                .map_err(|e| Error::Image(format!("manifest of {what}: {e}")))?;
            match (t.media_type.is_empty(), t.manifests.is_some()) {
                (false, _) => t.media_type,
                (true, true) => MANIFEST_TYPES[2].to_string(),
                (true, false) => MANIFEST_TYPES[0].to_string(),
            }
        } else {
            media
        };
        Ok((body, media, digest))
    }

    /// Downloads a small blob (a config) whole, bounded by its descriptor size.
    pub(crate) async fn small_blob(
        &self,
        r: &oci_client::Reference,
        digest: &str,
        size: u64,
    ) -> Result<Vec<u8>> {
        if size > self.opts.max_manifest_bytes {
            return Err(Error::Image(format!(
                "config {digest} is said to be {size} bytes: more than {} (refused)",
                self.opts.max_manifest_bytes
            )));
        }
        let (res, _) = self.blob_get(r, digest, 0).await?;
        let mut s = res.bytes_stream();
        let mut v = Vec::new();
        while let Some(c) = s.next().await {
            let c = c.map_err(|e| Error::Image(format!("blob {digest}: {e}")))?;
            if v.len() as u64 + c.len() as u64 > size {
                return Err(Error::Image(format!(
                    "blob {digest}: the registry sent more than its {size} bytes: refused"
                )));
            }
            v.extend_from_slice(&c);
        }
        let got = format!("sha256:{}", hex(&Sha256::digest(&v)));
        if v.len() as u64 != size || got != digest {
            return Err(Error::Image(format!(
                "blob {digest}: received {} bytes with {got}: not what its descriptor \
                 says (refused)",
                v.len()
            )));
        }
        Ok(v)
    }
}

/// An error's message with its causes.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    errchain::Chain(e).to_string()
}

fn registry_err(
    r: &oci_client::Reference,
    what: &str,
    e: &oci_client::errors::OciDistributionError,
) -> Error {
    Error::Image(format!("{} ({what}): {}", r.whole(), chain(e)))
}

/// The credentials for `registry`: `--creds`, else an auth file, else anonymous.
fn credentials(registry: &str, opts: &RegistryOptions) -> Result<RegistryAuth> {
    if let Some(c) = &opts.creds {
        let (u, p) = c
            .split_once(':')
            .ok_or_else(|| Error::Config("--creds: expected USER:PASSWORD".into()))?;
        return Ok(RegistryAuth::Basic(u.into(), p.into()));
    }
    let files: Vec<PathBuf> = match &opts.auth_file {
        Some(f) => vec![f.clone()],
        None => {
            let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
            [
                env("REGISTRY_AUTH_FILE"),
                env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")),
                env("DOCKER_CONFIG").map(|d| d.join("config.json")),
                env("HOME").map(|d| d.join(".docker/config.json")),
            ]
            .into_iter()
            .flatten()
            .collect()
        }
    };
    for f in files {
        let text = match std::fs::read(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.auth_file.is_none() => {
                continue;
            }
            Err(e) => return Err(Error::io("read", &f, e)),
        };
        if let Some(a) = auth_from_file(&text, registry, &f)? {
            return Ok(a);
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// The entry for `registry` in a docker-style `config.json` / `auth.json`.
fn auth_from_file(text: &[u8], registry: &str, f: &Path) -> Result<Option<RegistryAuth>> {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
    }
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        auths: std::collections::BTreeMap<String, Entry>,
    }
    let file: File = serde_json::from_slice(text).map_err(|source| Error::Json {
        path: f.to_path_buf(),
        source,
    })?;
    let host = |k: &str| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or_default();
        match k {
            "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
            k => k.to_string(),
        }
    };
    for (k, e) in file.auths {
        if host(&k) != host(registry) {
            continue;
        }
        if let (Some(u), Some(p)) = (&e.username, &e.password) {
            return Ok(Some(RegistryAuth::Basic(u.clone(), p.clone())));
        }
        if let Some(a) = e.auth {
            let raw = base64_decode(a.trim()).ok_or_else(|| {
                Error::Image(format!("{}: the auth of {k} is not base64", f.display()))
            })?;
            let s = String::from_utf8(raw).map_err(|_| {
                Error::Image(format!("{}: the auth of {k} is not UTF-8", f.display()))
            })?;
            let (u, p) = s.split_once(':').ok_or_else(|| {
                Error::Image(format!(
                    "{}: the auth of {k} is not USER:PASSWORD",
                    f.display()
                ))
            })?;
            return Ok(Some(RegistryAuth::Basic(u.into(), p.into())));
        }
    }
    Ok(None)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The `key="value"` parameters of a WWW-Authenticate challenge (quoted values may
/// hold commas).
fn challenge_params(s: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut rest = s.trim();
    while let Some((k, v)) = rest.split_once('=') {
        let key = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (value, after) = if let Some(q) = v.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match v.find(',') {
                Some(end) => (v[..end].trim().to_string(), &v[end..]),
                None => (v.trim().to_string(), ""),
            }
        };
        out.insert(key, value);
        rest = after.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    out
}

fn base64_encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A resolved image manifest.
struct Resolved {
    manifest: Vec<u8>,
    digest: String,
    config: (String, u64),
    layers: Vec<(String, u64)>,
}

fn pick_platform(index: &[u8], p: &Platform, what: &str) -> Result<(String, String)> {
    let idx: oci_spec::image::ImageIndex =
        serde_json::from_slice(index).map_err(|e| Error::Image(format!("index of {what}: {e}")))?;
    let mut seen = Vec::new();
    for m in idx.manifests() {
        let Some(pl) = m.platform() else { continue };
        let (os, arch) = (pl.os().to_string(), pl.architecture().to_string());
        let variant = pl.variant().clone();
        seen.push(format!(
            "{os}/{arch}{}",
            variant
                .as_deref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        ));
        if os == p.os && arch == p.arch && (p.variant.is_none() || p.variant == variant) {
            return Ok((m.digest().to_string(), m.media_type().to_string()));
        }
    }
    Err(Error::Image(format!(
        "{what} is an index without {}/{}{}: it has {}; choose one with --platform",
        p.os,
        p.arch,
        p.variant
            .as_deref()
            .map(|v| format!("/{v}"))
            .unwrap_or_default(),
        if seen.is_empty() {
            "no platforms".to_string()
        } else {
            seen.join(", ")
        }
    )))
}

impl Store {
    /// Pulls `reference` (`[REGISTRY/]NAME[:TAG][@sha256:...]`) into the store.
    ///
    /// # Errors
    /// [`Error::Image`] naming the registry's answer, the blob and what was wrong
    /// with it; nothing is left in the store but resumable partial downloads.
    pub fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Pulled> {
        let remote = parse_remote(reference)?;
        let (name, tag) = store_name(reference, &remote, opts.name.as_deref())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the async runtime", Path::new("-"), e))?;
        self.prepare()?;
        let _l = self.lock()?;
        self.clean_stale();
        mkdir_private(&self.root().join(DOWNLOADS))?;
        rt.block_on(self.pull_async(reference, &remote, name, tag, opts, progress))
    }

    async fn pull_async(
        &self,
        shown: &str,
        remote: &Remote,
        name: String,
        tag: String,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Pulled> {
        let s = Session::new(remote, &opts.registry, opts.parallel)?;
        let r = &remote.oci;
        let authz = s.authorize(r, RegistryOperation::Pull).await?;
        let res = self
            .resolve(&s, r, authz.as_deref(), &opts.platform)
            .await?;
        progress.resolved(shown, &res.digest, res.layers.len());
        for (d, size) in &res.layers {
            if *size > self.limits().max_layer_bytes {
                return Err(Error::Image(format!(
                    "layer {d} is said to be {size} bytes: more than the {} a layer may have",
                    self.limits().max_layer_bytes
                )));
            }
        }
        let cbytes = s.small_blob(r, &res.config.0, res.config.1).await?;
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&cbytes)
            .map_err(|e| Error::Image(format!("config {} of {shown}: {e}", res.config.0)))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != res.layers.len() {
            return Err(Error::Image(format!(
                "config {} lists {} diff_ids for {} layers: the image is corrupt",
                res.config.0,
                diff_ids.len(),
                res.layers.len()
            )));
        }
        // Layers the store holds are not downloaded; each other one once.
        let mut todo: Vec<(String, u64)> = Vec::new();
        let mut present = Vec::new();
        for (d, size) in &res.layers {
            if self.has_layer(d) {
                progress.layer(d, *size, *size, Phase::Present);
                present.push(d.clone());
            } else if !todo.iter().any(|(t, _)| t == d) {
                todo.push((d.clone(), *size));
            }
        }
        let downloads = self.root().join(DOWNLOADS);
        let got: Vec<(String, u64, u64, PathBuf)> =
            futures_util::stream::iter(todo.iter().map(|(d, size)| {
                Ok::<_, Error>(self.download(&s, r, d, *size, &downloads, progress))
            }))
            .try_buffer_unordered(opts.parallel.max(1))
            .try_collect()
            .await?;
        let bytes = got.iter().map(|g| g.2).sum();
        // Everything is here and verified: unpack, all or nothing.
        let mut made: Vec<String> = Vec::new();
        let mut kept: Vec<PathBuf> = Vec::new();
        let out = (|| {
            for (i, (d, size)) in res.layers.iter().enumerate() {
                let Some((_, _, _, file)) = got.iter().find(|g| &g.0 == d) else {
                    continue;
                };
                let blob = self.blob_path(d)?;
                if *file != blob {
                    std::fs::rename(file, &blob).map_err(ioe("rename", &blob))?;
                    kept.push(blob.clone());
                }
                if self.unpack_blob(&blob, d, *size, diff_ids.get(i).map(String::as_str))? {
                    made.push(d.clone());
                }
                progress.layer(d, *size, *size, Phase::Unpacked);
            }
            if self.put_blob(&res.config.0, &cbytes)? {
                kept.push(self.blob_path(&res.config.0)?);
            }
            if self.put_blob(&res.digest, &res.manifest)? {
                kept.push(self.blob_path(&res.digest)?);
            }
            let image = Image {
                name: name.clone(),
                tag: tag.clone(),
                manifest: res.digest.clone(),
                config: Some(res.config.0.clone()),
                layers: res.layers.iter().map(|(d, _)| d.clone()).collect(),
                source: Some(format!("{}/{}", r.registry(), r.repository())),
            };
            self.write_image(&image)?;
            Ok(image)
        })();
        match out {
            Ok(image) => Ok(Pulled {
                image,
                downloaded: todo.into_iter().map(|(d, _)| d).collect(),
                present,
                bytes,
            }),
            Err(e) => {
                for (_, _, _, f) in &got {
                    if f.starts_with(&downloads) {
                        let _ = std::fs::remove_file(f);
                    }
                }
                for k in &kept {
                    let _ = std::fs::remove_file(k);
                }
                let _ = self.drop_unused(&made, None);
                Err(e)
            }
        }
    }

    async fn resolve(
        &self,
        s: &Session,
        r: &oci_client::Reference,
        authz: Option<&str>,
        platform: &Platform,
    ) -> Result<Resolved> {
        let what = r.whole();
        let (mut body, mut media, mut digest) = s.manifest(r, authz).await?;
        if media.contains("index") || media.contains("manifest.list") {
            let (d, _) = pick_platform(&body, platform, &what)?;
            hex_of(&d)?;
            let pr = r.clone_with_digest(d.clone());
            (body, media, digest) = s.manifest(&pr, authz).await?;
            if digest != d {
                return Err(Error::Image(format!(
                    "manifest {d} of {what} came back as {digest}: refused"
                )));
            }
        }
        if media.contains("index") || media.contains("manifest.list") {
            return Err(Error::Image(format!(
                "{what}: an index inside an index is not an image"
            )));
        }
        let m: oci_spec::image::ImageManifest = serde_json::from_slice(&body)
            .map_err(|e| Error::Image(format!("manifest {digest} of {what}: {e}")))?;
        let config = (m.config().digest().to_string(), m.config().size());
        hex_of(&config.0)?;
        let mut layers = Vec::new();
        for l in m.layers() {
            let mt = l.media_type().to_string();
            if !LAYER_TYPES.contains(&mt.as_str()) {
                return Err(Error::Image(format!(
                    "{what}: layer {} has media type {mt}, not a layer tar (gzip, zstd or \
                     plain) that can be unpacked",
                    l.digest()
                )));
            }
            let d = l.digest().to_string();
            hex_of(&d)?;
            layers.push((d, l.size()));
        }
        Ok(Resolved {
            manifest: body,
            digest,
            config,
            layers,
        })
    }

    /// Downloads one layer blob to `downloads/<hex>.partial`, resuming what an
    /// earlier pull left. Returns (digest, size, bytes received, file).
    async fn download(
        &self,
        s: &Session,
        r: &oci_client::Reference,
        digest: &str,
        size: u64,
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<(String, u64, u64, PathBuf)> {
        let h = hex_of(digest)?;
        // A blob the store kept (an earlier pull stopped while unpacking, or the
        // layer was pruned) is used again once its digest checks.
        let kept = self.blob_path(digest)?;
        if std::fs::metadata(&kept).is_ok_and(|m| m.len() == size)
            && super::store::verify(&kept, digest).is_ok()
        {
            progress.layer(digest, size, size, Phase::Downloaded);
            return Ok((digest.to_string(), size, 0, kept));
        }
        // Room for the blob and the import's reserve, before a byte is written.
        let st =
            nix::sys::statvfs::statvfs(dir).map_err(|e| Error::io("statvfs", dir, e.into()))?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        // The import's reserve, or a tenth of a small filesystem (a 1 GiB tmpfs).
        let total = st.blocks() as u64 * st.fragment_size() as u64;
        let reserve = self.limits().min_free_bytes.min(total / 10);
        if st.blocks() > 0 && free < size.saturating_add(reserve) {
            return Err(Error::Image(format!(
                "layer {digest} is {size} bytes: {} has {free} bytes free, less than it \
                 and the {reserve} kept in reserve: free space or pull elsewhere (--store)",
                dir.display()
            )));
        }
        let path = dir.join(format!("{h}.partial"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(ioe("open", &path))?;
        let mut have = file.metadata().map_err(ioe("stat", &path))?.len();
        let mut sha = Sha256::new();
        if have > size {
            have = 0;
        }
        if have > 0 {
            // The part already here counts in the digest.
            let mut buf = vec![0u8; 1 << 16];
            let mut left = have;
            while left > 0 {
                let n = file
                    .read(&mut buf[..(left.min(1 << 16)) as usize])
                    .map_err(ioe("read", &path))?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
                left -= n as u64;
            }
        }
        let restart = |file: &mut std::fs::File, sha: &mut Sha256| -> Result<()> {
            file.set_len(0).map_err(ioe("truncate", &path))?;
            *sha = Sha256::new();
            Ok(())
        };
        let mut received = 0u64;
        if have < size {
            if have == 0 {
                restart(&mut file, &mut sha)?;
            }
            let (res, partial) = match s.blob_get(r, digest, have).await {
                Ok(got) => got,
                Err(e) => {
                    // Nothing received: no partial file to resume is left behind.
                    if have == 0 {
                        drop(file);
                        let _ = std::fs::remove_file(&path);
                    }
                    return Err(e);
                }
            };
            if have > 0 && !partial {
                // The registry ignored the range: start over.
                have = 0;
                restart(&mut file, &mut sha)?;
            }
            let mut stream = res.bytes_stream();
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(have))
                .map_err(ioe("seek", &path))?;
            let mut done = have;
            let mut last = std::time::Instant::now();
            progress.layer(digest, size, done, Phase::Downloading);
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    // oci-client checks the digest at the end itself: ours below
                    // says more.
                    Err(_) if done == size => break,
                    Err(e) => {
                        return Err(Error::Image(format!(
                            "layer {digest}: the download broke off at {done} of {size} \
                             bytes ({e}); pull again to resume it"
                        )));
                    }
                };
                if done + chunk.len() as u64 > size {
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Err(Error::Image(format!(
                        "layer {digest}: the registry sent more than the {size} bytes its \
                         descriptor says: refused"
                    )));
                }
                sha.update(&chunk);
                file.write_all(&chunk).map_err(ioe("write", &path))?;
                done += chunk.len() as u64;
                received += chunk.len() as u64;
                if last.elapsed() >= Duration::from_millis(100) {
                    progress.layer(digest, size, done, Phase::Downloading);
                    last = std::time::Instant::now();
                }
            }
            if done < size {
                return Err(Error::Image(format!(
                    "layer {digest}: the registry ended the blob at {done} of {size} bytes; \
                     pull again to resume it"
                )));
            }
        }
        let got = hex(&sha.finalize());
        if got != h {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(Error::Image(format!(
                "layer {digest}: the bytes received have sha256:{got}: not the blob asked \
                 for (refused, the download is deleted)"
            )));
        }
        file.sync_all().map_err(ioe("fsync", &path))?;
        progress.layer(digest, size, size, Phase::Downloaded);
        Ok((digest.to_string(), size, received, path))
    }
}

/// The `NAME` and `TAG` an image is stored under: `--name`, or the reference as
/// written without its digest; a reference by digest alone gets the tag
/// `sha256-<hex>`.
fn store_name(reference: &str, remote: &Remote, over: Option<&str>) -> Result<(String, String)> {
    if let Some(n) = over {
        let r = Reference::parse(n)?;
        return Ok((r.name, r.tag));
    }
    let no_digest = reference.split('@').next().unwrap_or_default();
    let last = no_digest.rsplit('/').next().unwrap_or_default();
    let has_tag = last.contains(':');
    let text = match (has_tag, remote.oci.digest()) {
        (false, Some(d)) => format!("{no_digest}:{}", d.replace(':', "-")),
        _ => no_digest.to_string(),
    };
    let r = Reference::parse(&text)?;
    Ok((r.name, r.tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_params_with_quoted_commas() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let p = challenge_params("realm=https://x/t, service=s");
        assert_eq!(
            (p["realm"].as_str(), p["service"].as_str()),
            ("https://x/t", "s")
        );
    }

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "user:pass", "user:p@ss:word"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn auth_file_entries() {
        let f = Path::new("auth.json");
        let text = br#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"dXNlcjpwYXNz"},
            "docker.io":{"username":"u","password":"p"}}}"#;
        match auth_from_file(text, "127.0.0.1:5000", f).unwrap() {
            Some(RegistryAuth::Basic(u, p)) => {
                assert_eq!((u.as_str(), p.as_str()), ("user", "pass"))
            }
            _ => panic!("no entry"),
        }
        assert!(matches!(
            auth_from_file(text, "index.docker.io", f).unwrap(),
            Some(RegistryAuth::Basic(..))
        ));
        assert!(auth_from_file(text, "ghcr.io", f).unwrap().is_none());
    }

    #[test]
    fn platforms_and_names() {
        assert_eq!(
            "linux/arm64/v8"
                .parse::<Platform>()
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        assert!("linux".parse::<Platform>().is_err());
        let n = |r: &str| store_name(r, &parse_remote(r).unwrap(), None).unwrap();
        assert_eq!(
            n("127.0.0.1:5000/a/b:1"),
            ("127.0.0.1:5000/a/b".into(), "1".into())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("localhost:5000/x@{d}")).1,
            format!("sha256-{}", "a".repeat(64))
        );
        assert_eq!(n(&format!("localhost:5000/x:t@{d}")).1, "t");
        assert!(parse_remote("localhost:5000/x@sha256:zz").is_err());
    }
}
