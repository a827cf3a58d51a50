//! The layer store (default `/var/lib/sandbox`, `--store` or `$SANDBOX_STORE`):
//! content-addressed, each layer unpacked once and shared read-only.
//!
//! ```text
//! layers/<sha256 hex of the layer blob>/      the unpacked layer (overlay lower)
//! images/<key>.json                           an image: name, tag, layers bottom-up
//! users/<key>/<container id>                  containers using the image
//! ```
//!
//! Import reads an OCI image layout (directory or tar): index.json -> manifest ->
//! layers, each verified by its sha256 before it is unpacked. Layer whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) become overlay whiteouts (0/0 character devices) and
//! opaque directories (`trusted.overlay.opaque=y`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, ioe};

/// Default store root.
pub const DEFAULT_STORE_ROOT: &str = "/var/lib/sandbox";
/// Environment variable overriding the store root.
pub const STORE_ROOT_ENV: &str = "SANDBOX_STORE";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// The store root from `--store`, `$SANDBOX_STORE` or the default.
pub fn store_root(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(STORE_ROOT_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE_ROOT))
}

/// An imported image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    /// Name (`busybox`).
    pub name: String,
    /// Tag (`latest`).
    pub tag: String,
    /// Digest of the manifest (`sha256:...`).
    pub manifest: String,
    /// Layer digests, bottom layer first.
    pub layers: Vec<String>,
    /// The image config's `WorkingDir` (absent in images imported before it was
    /// recorded, and when the image sets none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

impl Image {
    /// The store key: `name_tag`.
    pub fn key(&self) -> String {
        key(&self.name, &self.tag)
    }
}

fn key(name: &str, tag: &str) -> String {
    format!("{name}_{tag}")
}

/// Splits `NAME[:TAG]` (default tag `latest`) and checks the characters.
pub fn parse_ref(r: &str) -> Result<(String, String)> {
    let (n, t) = r.rsplit_once(':').unwrap_or((r, "latest"));
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'/' | b'+'))
    };
    if !ok(n) || !ok(t) || n.contains("..") {
        return Err(Error::Image(format!(
            "bad image reference {r:?}: expected NAME[:TAG] of letters, digits, . - / +"
        )));
    }
    Ok((n.replace('/', "+"), t.to_string()))
}

/// A handle on the store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn mkdirs(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(ioe("mkdir", p))
}

fn hex_of(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::Image(format!("digest {digest:?}: only sha256 is supported")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Image(format!("digest {digest:?} is malformed")));
    }
    Ok(hex)
}

impl Store {
    /// The store at `root` (created on first import).
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    fn image_file(&self, key: &str) -> PathBuf {
        self.root.join("images").join(format!("{key}.json"))
    }

    /// The unpacked directory of a layer.
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(hex_of(digest)?))
    }

    /// Looks an image up by `NAME[:TAG]`.
    pub fn get(&self, reference: &str) -> Result<Image> {
        let (n, t) = parse_ref(reference)?;
        let p = self.image_file(&key(&n, &t));
        let text = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Image(format!(
                    "no image {reference:?} in {}: import it with `sandbox image import PATH`",
                    self.root.display()
                ))
            } else {
                Error::io("read", &p, e)
            }
        })?;
        serde_json::from_slice(&text).map_err(|source| Error::Json { path: p, source })
    }

    /// The overlay lower directories of an image, top layer first.
    pub fn lowers(&self, img: &Image) -> Result<Vec<PathBuf>> {
        img.layers.iter().rev().map(|d| self.layer_dir(d)).collect()
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<Image>> {
        let dir = self.root.join("images");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read_dir", &dir, e)),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read(&p).map_err(ioe("read", &p))?;
                out.push(serde_json::from_slice(&text).map_err(|source| Error::Json {
                    path: p.clone(),
                    source,
                })?);
            }
        }
        out.sort_by(|a: &Image, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
        Ok(out)
    }

    /// Records that container `id` (state folder `state_dir`) uses `img`.
    pub fn add_user(&self, img: &Image, id: &str, state_dir: &Path) -> Result<()> {
        let d = self.root.join("users").join(img.key());
        mkdirs(&d)?;
        let f = d.join(id);
        std::fs::write(&f, state_dir.as_os_str().as_encoded_bytes()).map_err(ioe("write", &f))
    }

    /// Forgets that container `id` uses the image `key`.
    pub fn remove_user(&self, key: &str, id: &str) {
        let _ = std::fs::remove_file(self.root.join("users").join(key).join(id));
    }

    /// Removes an image, refused while a container that uses it still exists. Layers
    /// no other image uses are deleted.
    pub fn remove(&self, reference: &str) -> Result<Image> {
        let img = self.get(reference)?;
        let users = self.root.join("users").join(img.key());
        if let Ok(rd) = std::fs::read_dir(&users) {
            for e in rd.flatten() {
                let dir = std::fs::read(e.path()).unwrap_or_default();
                let dir = PathBuf::from(String::from_utf8_lossy(&dir).into_owned());
                if dir.join(crate::state::STATE_FILE).exists() {
                    return Err(Error::Image(format!(
                        "image {reference:?} is in use by container {} ({}): remove it first",
                        e.file_name().to_string_lossy(),
                        dir.display()
                    )));
                }
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&users);
        let f = self.image_file(&img.key());
        std::fs::remove_file(&f).map_err(ioe("remove", &f))?;
        let still: Vec<String> = self.list()?.into_iter().flat_map(|i| i.layers).collect();
        for l in &img.layers {
            if !still.contains(l) {
                let d = self.layer_dir(l)?;
                std::fs::remove_dir_all(&d).map_err(ioe("remove_dir_all", &d))?;
            }
        }
        Ok(img)
    }

    /// Imports an OCI image layout (a directory, or a tar of one). `name` overrides
    /// the reference from the index's `org.opencontainers.image.ref.name`.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        mkdirs(&self.root.join("layers"))?;
        mkdirs(&self.root.join("images"))?;
        if path.is_dir() {
            return self.import_dir(path, name);
        }
        let tmp = self.root.join(format!(".import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        mkdirs(&tmp)?;
        let res = (|| {
            let f = File::open(path).map_err(ioe("open", path))?;
            let mut ar = tar::Archive::new(decompress(BufReader::new(f), path)?);
            ar.unpack(&tmp).map_err(ioe("untar", path))?;
            self.import_dir(&tmp, name)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        res
    }

    fn blob(&self, layout: &Path, digest: &str) -> Result<PathBuf> {
        Ok(layout.join("blobs").join("sha256").join(hex_of(digest)?))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, p: &Path) -> Result<T> {
        let text = std::fs::read(p).map_err(ioe("read", p))?;
        serde_json::from_slice(&text).map_err(|source| Error::Json {
            path: p.to_path_buf(),
            source,
        })
    }

    fn import_dir(&self, layout: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        let index: oci_spec::image::ImageIndex = self.read_json(&layout.join("index.json"))?;
        let mut out = Vec::new();
        for m in index.manifests() {
            let digest = m.digest().to_string();
            let mp = self.blob(layout, &digest)?;
            verify(&mp, &digest)?;
            let manifest: oci_spec::image::ImageManifest = self.read_json(&mp)?;
            let reference = name
                .map(str::to_string)
                .or_else(|| {
                    m.annotations()
                        .as_ref()
                        .and_then(|a| a.get("org.opencontainers.image.ref.name").cloned())
                })
                .unwrap_or_else(|| {
                    layout
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "image".into())
                });
            let (n, t) = parse_ref(&reference)?;
            let cd = manifest.config().digest().to_string();
            let cp = self.blob(layout, &cd)?;
            verify(&cp, &cd)?;
            let config: oci_spec::image::ImageConfiguration = self.read_json(&cp)?;
            let workdir = config
                .config()
                .as_ref()
                .and_then(|c| c.working_dir().clone())
                .filter(|w| !w.is_empty());
            let mut layers = Vec::new();
            for l in manifest.layers() {
                let ld = l.digest().to_string();
                self.unpack_layer(&self.blob(layout, &ld)?, &ld)?;
                layers.push(ld);
            }
            let img = Image {
                name: n,
                tag: t,
                manifest: digest,
                layers,
                workdir,
            };
            let f = self.image_file(&img.key());
            let text = serde_json::to_vec_pretty(&img).map_err(|source| Error::Json {
                path: f.clone(),
                source,
            })?;
            std::fs::write(&f, text).map_err(ioe("write", &f))?;
            out.push(img);
        }
        Ok(out)
    }

    /// Verifies and unpacks one layer blob, once: an existing layer is reused.
    fn unpack_layer(&self, blob: &Path, digest: &str) -> Result<()> {
        let dest = self.layer_dir(digest)?;
        if dest.is_dir() {
            return Ok(());
        }
        verify(blob, digest)?;
        let tmp =
            self.root
                .join("layers")
                .join(format!(".{}-{}", hex_of(digest)?, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        mkdirs(&tmp)?;
        let res = (|| {
            let f = File::open(blob).map_err(ioe("open", blob))?;
            unpack(decompress(BufReader::new(f), blob)?, &tmp, blob)?;
            std::fs::rename(&tmp, &dest).map_err(ioe("rename", &dest))
        })();
        if res.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        res
    }
}

/// Checks a file's sha256 against `digest`.
pub fn verify(p: &Path, digest: &str) -> Result<()> {
    let want = hex_of(digest)?;
    let mut f = File::open(p)
        .map_err(|e| Error::Image(format!("blob {digest} missing at {}: {e}", p.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(ioe("read", p))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != want {
        return Err(Error::Image(format!(
            "{} has sha256:{got}, expected {digest}: the blob is corrupt",
            p.display()
        )));
    }
    Ok(())
}

/// gzip, zstd or plain, by magic number.
fn decompress<'a, R: std::io::BufRead + 'a>(mut r: R, p: &Path) -> Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf().map_err(ioe("read", p))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = ruzstd::decoding::StreamingDecoder::new(r)
            .map_err(|e| Error::Image(format!("{}: zstd: {e}", p.display())))?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(r))
    }
}

/// A layer path made relative and free of `..`, or None to skip it.
fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Unpacks a layer tar into `dest`, turning OCI whiteouts into overlay ones.
fn unpack(r: impl Read, dest: &Path, blob: &Path) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let entries = ar.entries().map_err(ioe("read tar", blob))?;
    for e in entries {
        let mut e = e.map_err(ioe("read tar entry", blob))?;
        let path = e.path().map_err(ioe("tar path", blob))?.into_owned();
        let Some(rel) = clean(&path) else {
            return Err(Error::Image(format!(
                "{}: entry {} leaves the layer (..)",
                blob.display(),
                path.display()
            )));
        };
        let fname = rel
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if fname == OPAQUE {
            let d = dest.join(&parent);
            mkdirs(&d)?;
            nix_setxattr(&d, "trusted.overlay.opaque", b"y")?;
        } else if let Some(hidden) = fname.strip_prefix(WHITEOUT_PREFIX) {
            let d = dest.join(&parent);
            mkdirs(&d)?;
            let target = d.join(hidden);
            let _ = std::fs::remove_file(&target);
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .map_err(|e| Error::io("mknod (whiteout)", &target, e.into()))?;
        } else {
            e.unpack_in(dest).map_err(ioe("unpack", &dest.join(&rel)))?;
        }
    }
    Ok(())
}

fn nix_setxattr(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    let cp = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Image(format!("path {} holds NUL", p.display())))?;
    let cn = std::ffi::CString::new(name).map_err(|_| Error::Image("xattr name".into()))?;
    // SAFETY: NUL-terminated path and name, value buffer of value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(Error::io(
            "lsetxattr trusted.overlay.opaque",
            p,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        assert_eq!(
            parse_ref("busybox").unwrap(),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(parse_ref("a/b:1.0").unwrap(), ("a+b".into(), "1.0".into()));
        assert!(parse_ref("../x").is_err());
        assert!(parse_ref("").is_err());
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean(Path::new("./a/b")).unwrap(), PathBuf::from("a/b"));
        assert!(clean(Path::new("a/../../b")).is_none());
    }
}
