//! `sandbox commit`: a container's writable (upper) layer becomes a new image layer
//! on top of its image.
//!
//! Overlay records deletions in the upper layer as whiteouts (0/0 character
//! devices) and a replaced directory as opaque (`trusted.overlay.opaque=y`); the
//! layer tar says the same with `.wh.NAME` and `DIR/.wh..wh..opq` entries, the
//! form the image spec defines. The tar is reproducible: entries sorted by name,
//! hard links as link entries to the first name, owners and modes as found,
//! modification times fixed when asked, gzip without a timestamp. The new layer is
//! then unpacked through the same checked path as `import` (which also checks it),
//! and the image configuration is carried over with `--change`s applied.

use std::ffi::{CString, OsString};
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::reference::{Reference, hex};
use super::store::{BLOBS, Image, Store};
use crate::error::{Error, Result, ioe};

/// One `--change` to the image configuration (Dockerfile words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `ENV K=V`: sets (or replaces) one variable.
    Env(String, String),
    /// `CMD ["a","b"]` or `CMD a b`.
    Cmd(Vec<String>),
    /// `ENTRYPOINT ["a"]` or `ENTRYPOINT a b`.
    Entrypoint(Vec<String>),
    /// `WORKDIR /path`.
    WorkingDir(String),
    /// `USER uid[:gid]` or a name.
    User(String),
    /// `LABEL k=v`.
    Label(String, String),
}

impl std::str::FromStr for Change {
    type Err = Error;
    fn from_str(s: &str) -> Result<Change> {
        let bad = |why: &str| {
            Error::Config(format!(
                "--change {s:?}: {why} (expected ENV K=V, CMD [\"a\",\"b\"], ENTRYPOINT ..., \
                 WORKDIR /dir, USER u[:g] or LABEL k=v)"
            ))
        };
        let (word, rest) = s
            .trim()
            .split_once([' ', '='])
            .ok_or_else(|| bad("no value"))?;
        let rest = rest.trim();
        let kv = |r: &str| -> Result<(String, String)> {
            let (k, v) = r.split_once('=').ok_or_else(|| bad("expected K=V"))?;
            if k.is_empty() {
                return Err(bad("empty key"));
            }
            Ok((k.to_string(), v.trim_matches('"').to_string()))
        };
        let list = |r: &str| -> Result<Vec<String>> {
            if r.starts_with('[') {
                serde_json::from_str(r).map_err(|e| bad(&format!("not a JSON list: {e}")))
            } else {
                Ok(r.split_whitespace().map(str::to_string).collect())
            }
        };
        match word.to_ascii_uppercase().as_str() {
            "ENV" => kv(rest).map(|(k, v)| Change::Env(k, v)),
            "LABEL" => kv(rest).map(|(k, v)| Change::Label(k, v)),
            "CMD" => list(rest).map(Change::Cmd),
            "ENTRYPOINT" => list(rest).map(Change::Entrypoint),
            "WORKDIR" if !rest.is_empty() => Ok(Change::WorkingDir(rest.to_string())),
            "USER" if !rest.is_empty() => Ok(Change::User(rest.to_string())),
            _ => Err(bad("unknown instruction")),
        }
    }
}

/// How to commit.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    /// Configuration changes, in order.
    pub changes: Vec<Change>,
    /// Every entry's modification time (and the history's `created`), seconds since
    /// the epoch: the same changes then give the same layer digest.
    pub mtime: Option<i64>,
    /// The history entry's comment.
    pub message: Option<String>,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const OVERLAY_XATTR: &str = "trusted.overlay.";

/// Reads extended attribute `name` of `p` (not following a symlink).
fn lgetxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).ok()?;
    let cn = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and live across the call; buf is
    // valid for buf.len() bytes.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// The names of `p`'s extended attributes (not following a symlink).
fn llistxattr(p: &Path) -> Vec<String> {
    let Ok(cp) = CString::new(p.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; 65536];
    // SAFETY: cp is NUL-terminated; buf is valid for buf.len() bytes.
    let n = unsafe { libc::llistxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::str::from_utf8(s).ok().map(str::to_string))
        .collect()
}

/// Counts bytes and hashes them on their way to `inner`.
struct HashWriter<W: Write> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.sha.update(&b[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct TarMaker<'a, W: Write> {
    b: tar::Builder<W>,
    root: &'a Path,
    mtime: Option<i64>,
    links: std::collections::HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> TarMaker<'_, W> {
    fn header(&self, md: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(u64::from(md.uid()));
        h.set_gid(u64::from(md.gid()));
        h.set_mtime(self.mtime.unwrap_or(md.mtime()).max(0) as u64);
        h.set_size(0);
        h
    }

    fn err(&self, p: &Path, e: std::io::Error) -> Error {
        Error::io("write layer tar entry", p, e)
    }

    /// PAX records of the xattrs a layer carries (all but overlay's own).
    fn xattrs(&mut self, full: &Path) -> Result<()> {
        let mut recs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut names = llistxattr(full);
        names.sort();
        for n in names {
            if n.starts_with(OVERLAY_XATTR) {
                continue;
            }
            if let Some(v) = lgetxattr(full, &n) {
                recs.push((format!("SCHILY.xattr.{n}"), v));
            }
        }
        if !recs.is_empty() {
            self.b
                .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| self.err(full, e))?;
        }
        Ok(())
    }

    fn empty_file(&mut self, rel: &Path, md: &std::fs::Metadata) -> Result<()> {
        let mut h = self.header(md, tar::EntryType::Regular);
        h.set_mode(0o644);
        self.b
            .append_data(&mut h, rel, std::io::empty())
            .map_err(|e| Error::io("write layer tar entry", rel, e))
    }

    fn walk(&mut self, rel: &Path) -> Result<()> {
        let dir = self.root.join(rel);
        let mut names: Vec<OsString> = std::fs::read_dir(&dir)
            .map_err(ioe("read_dir", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(ioe("read_dir", &dir))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let r = rel.join(&name);
            let full = self.root.join(&r);
            let md = std::fs::symlink_metadata(&full).map_err(ioe("stat", &full))?;
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                // Overlay's whiteout: the lower file is deleted.
                let mut wh = OsString::from(WHITEOUT);
                wh.push(&name);
                self.empty_file(&rel.join(wh), &md)?;
                continue;
            }
            // A renamed lower directory (redirect_dir) or a metadata-only copy up
            // (metacopy) keeps its content in a lower layer: a tar of the upper
            // alone would lose it.
            for x in ["trusted.overlay.redirect", "trusted.overlay.metacopy"] {
                if lgetxattr(&full, x).is_some() {
                    return Err(Error::Image(format!(
                        "{}: has {x}: the overlay keeps part of it in a lower layer \
                         (redirect_dir or metacopy is on), which a layer cannot say; \
                         load the overlay module with redirect_dir=off metacopy=off",
                        full.display()
                    )));
                }
            }
            if name.as_bytes().starts_with(WHITEOUT.as_bytes()) {
                return Err(Error::Image(format!(
                    "{}: a file named {WHITEOUT}* cannot be put in a layer (it would read \
                     as a deletion); rename it",
                    full.display()
                )));
            }
            if ft.is_dir() {
                self.xattrs(&full)?;
                let mut h = self.header(&md, tar::EntryType::Directory);
                self.b
                    .append_data(&mut h, &r, std::io::empty())
                    .map_err(|e| self.err(&full, e))?;
                if lgetxattr(&full, "trusted.overlay.opaque").as_deref() == Some(b"y") {
                    // A directory made anew over a lower one: nothing below shows.
                    self.empty_file(&r.join(OPAQUE), &md)?;
                }
                self.walk(&r)?;
                continue;
            }
            if md.nlink() > 1 && !ft.is_dir() {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.links.get(&key).cloned() {
                    let mut h = self.header(&md, tar::EntryType::Link);
                    self.b
                        .append_link(&mut h, &r, &first)
                        .map_err(|e| self.err(&full, e))?;
                    continue;
                }
                self.links.insert(key, r.clone());
            }
            self.xattrs(&full)?;
            if ft.is_file() {
                let f = std::fs::File::open(&full).map_err(ioe("open", &full))?;
                let mut h = self.header(&md, tar::EntryType::Regular);
                h.set_size(md.len());
                self.b
                    .append_data(&mut h, &r, f)
                    .map_err(|e| self.err(&full, e))?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&full).map_err(ioe("readlink", &full))?;
                let mut h = self.header(&md, tar::EntryType::Symlink);
                self.b
                    .append_link(&mut h, &r, &target)
                    .map_err(|e| self.err(&full, e))?;
            } else {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else if ft.is_fifo() {
                    tar::EntryType::Fifo
                } else {
                    // Sockets have no tar form; Docker skips them too.
                    continue;
                };
                let mut h = self.header(&md, kind);
                let dev = md.rdev();
                let _ = h.set_device_major(libc::major(dev));
                let _ = h.set_device_minor(libc::minor(dev));
                self.b
                    .append_data(&mut h, &r, std::io::empty())
                    .map_err(|e| self.err(&full, e))?;
            }
        }
        Ok(())
    }
}

/// Writes the layer tar of `upper` (gzip) to `out`; returns (sha256 of the tar,
/// sha256 of the gzip, gzip size).
pub fn layer_tar(
    upper: &Path,
    mtime: Option<i64>,
    out: &mut dyn Write,
) -> Result<(String, String, u64)> {
    let gz_hash = HashWriter {
        inner: out,
        sha: Sha256::new(),
        bytes: 0,
    };
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(gz_hash, flate2::Compression::new(6));
    let plain = HashWriter {
        inner: gz,
        sha: Sha256::new(),
        bytes: 0,
    };
    let mut b = tar::Builder::new(plain);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let mut t = TarMaker {
        b,
        root: upper,
        mtime,
        links: std::collections::HashMap::new(),
    };
    t.walk(Path::new(""))?;
    let plain = t.b.into_inner().map_err(ioe("finish layer tar", upper))?;
    let diff_id = hex(&plain.sha.finalize());
    let gz_hash = plain.inner.finish().map_err(ioe("gzip layer", upper))?;
    let digest = hex(&gz_hash.sha.finalize());
    Ok((diff_id, digest, gz_hash.bytes))
}

/// The media type of a kept layer blob, by its first bytes.
pub(crate) fn layer_media_type(blob: &Path) -> Result<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(blob).map_err(ioe("open", blob))?;
    let n = f.read(&mut head).map_err(ioe("read", blob))?;
    Ok(if head[..n].starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    })
}

impl Store {
    /// An OCI image manifest for `layers` and the config blob `config`, made from
    /// the blobs the store keeps (sizes and compressions as stored).
    pub(crate) fn oci_manifest(&self, config: &str, layers: &[String]) -> Result<Vec<u8>> {
        let cpath = self.blob_path(config)?;
        let csize = std::fs::metadata(&cpath)
            .map_err(ioe("stat", &cpath))?
            .len();
        let mut descs = Vec::new();
        for l in layers {
            let p = self.blob_path(l)?;
            let md = std::fs::metadata(&p).map_err(|e| {
                Error::Image(format!(
                    "layer {l}: its blob is not in the store ({e}; an image imported by an \
                     older version keeps only the unpacked layer): import or pull it again"
                ))
            })?;
            descs.push(json!({
                "mediaType": layer_media_type(&p)?,
                "digest": l,
                "size": md.len(),
            }));
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": csize,
            },
            "layers": descs,
        });
        serde_json::to_vec(&m).map_err(|source| Error::Json {
            path: cpath,
            source,
        })
    }

    /// Commits the writable layer `upper` of a container made from `base` as image
    /// `name` (`NAME[:TAG]`). Returns the new image.
    pub fn commit(
        &self,
        upper: &Path,
        base: &Image,
        name: &str,
        opts: &CommitOptions,
    ) -> Result<Image> {
        let r = Reference::parse(name)?;
        let md = std::fs::symlink_metadata(upper).map_err(|e| {
            Error::Image(format!(
                "{}: no writable layer ({e}): a container is committed while it runs or \
                 after `run --keep`",
                upper.display()
            ))
        })?;
        if !md.is_dir() {
            return Err(Error::Image(format!(
                "{} is not a directory",
                upper.display()
            )));
        }
        let base_config = match &base.config {
            Some(c) => {
                let p = self.blob_path(c)?;
                let text = std::fs::read(&p).map_err(ioe("read", &p))?;
                serde_json::from_slice::<Value>(&text)
                    .map_err(|source| Error::Json { path: p, source })?
            }
            None => json!({"architecture": "amd64", "os": "linux",
                           "rootfs": {"type": "layers", "diff_ids": []}}),
        };
        let _l = self.lock()?;
        self.clean_stale();
        let blobs = self.root().join(BLOBS);
        let tmp = blobs.join(format!(".tmp-commit-{}", std::process::id()));
        let res = (|| {
            let f = std::fs::File::create(&tmp).map_err(ioe("create", &tmp))?;
            let mut w = BufWriter::new(f);
            let (diff_id, hexd, size) = layer_tar(upper, opts.mtime, &mut w)?;
            w.into_inner()
                .map_err(|e| Error::io("write", &tmp, e.into_error()))?
                .sync_all()
                .map_err(ioe("fsync", &tmp))?;
            let digest = format!("sha256:{hexd}");
            let blob = self.blob_path(&digest)?;
            std::fs::rename(&tmp, &blob).map_err(ioe("rename", &blob))?;
            let diff_id = format!("sha256:{diff_id}");
            self.unpack_blob(&blob, &digest, size, Some(&diff_id))?;
            let base_config = self.complete_diff_ids(base_config, base)?;
            let config = new_config(base_config, &diff_id, opts)?;
            let cbytes = serde_json::to_vec(&config).map_err(|source| Error::Json {
                path: blobs.clone(),
                source,
            })?;
            let cd = format!("sha256:{}", hex(&Sha256::digest(&cbytes)));
            self.put_blob(&cd, &cbytes)?;
            let mut layers = base.layers.clone();
            layers.push(digest);
            let manifest = self.oci_manifest(&cd, &layers)?;
            let md = format!("sha256:{}", hex(&Sha256::digest(&manifest)));
            self.put_blob(&md, &manifest)?;
            let img = Image {
                name: r.name.clone(),
                tag: r.tag.clone(),
                manifest: md,
                config: Some(cd),
                layers,
                source: base.source.clone(),
            };
            self.write_image(&img)?;
            Ok(img)
        })();
        let _ = std::fs::remove_file(&tmp);
        res
    }
}

impl Store {
    /// A config whose `diff_ids` do not match its layers (some layouts leave them
    /// out) gets them from the kept blobs, so that the new image is consistent.
    fn complete_diff_ids(&self, mut c: Value, base: &Image) -> Result<Value> {
        let n = c["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len);
        if n == base.layers.len() || !c.is_object() {
            return Ok(c);
        }
        let mut ids = Vec::new();
        for l in &base.layers {
            let p = self.blob_path(l)?;
            let f = std::fs::File::open(&p).map_err(ioe("open", &p))?;
            let mut r = super::store::decompress(std::io::BufReader::new(f), &p)?;
            let mut sha = HashWriter {
                inner: std::io::sink(),
                sha: Sha256::new(),
                bytes: 0,
            };
            std::io::copy(&mut r, &mut sha).map_err(ioe("read", &p))?;
            ids.push(json!(format!("sha256:{}", hex(&sha.sha.finalize()))));
        }
        c["rootfs"] = json!({"type": "layers", "diff_ids": ids});
        Ok(c)
    }
}

/// The base configuration with the new layer's diff_id, a history entry and the
/// changes applied.
fn new_config(mut c: Value, diff_id: &str, opts: &CommitOptions) -> Result<Value> {
    let bad = |what: &str| Error::Image(format!("the base image's config: {what}"));
    let obj = c.as_object_mut().ok_or_else(|| bad("not an object"))?;
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let ids = rootfs
        .as_object_mut()
        .ok_or_else(|| bad("rootfs is not an object"))?
        .entry("diff_ids")
        .or_insert_with(|| json!([]));
    ids.as_array_mut()
        .ok_or_else(|| bad("diff_ids is not a list"))?
        .push(json!(diff_id));
    let created = match opts.mtime {
        Some(t) => crate::oci::rfc3339(t.max(0) as u64, 0),
        None => crate::oci::rfc3339_now(),
    };
    obj.insert("created".into(), json!(created));
    let mut hist = json!({"created": created, "created_by": "sandbox commit"});
    if let Some(m) = &opts.message {
        hist["comment"] = json!(m);
    }
    obj.entry("history")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| bad("history is not a list"))?
        .push(hist);
    let cfg = obj
        .entry("config")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| bad("config is not an object"))?;
    for ch in &opts.changes {
        match ch {
            Change::Env(k, v) => {
                let env = cfg.entry("Env").or_insert_with(|| json!([]));
                let list = env.as_array_mut().ok_or_else(|| bad("Env is not a list"))?;
                let prefix = format!("{k}=");
                list.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
                list.push(json!(format!("{k}={v}")));
            }
            Change::Cmd(a) => {
                cfg.insert("Cmd".into(), json!(a));
            }
            Change::Entrypoint(a) => {
                cfg.insert("Entrypoint".into(), json!(a));
            }
            Change::WorkingDir(w) => {
                cfg.insert("WorkingDir".into(), json!(w));
            }
            Change::User(u) => {
                cfg.insert("User".into(), json!(u));
            }
            Change::Label(k, v) => {
                let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
                if labels.is_null() {
                    *labels = json!({});
                }
                labels
                    .as_object_mut()
                    .ok_or_else(|| bad("Labels is not an object"))?
                    .insert(k.clone(), json!(v));
            }
        }
    }
    Ok(c)
}

/// The writable layer of container `name` under the state root, and the image
/// (store key or reference) it was made from.
pub fn container_upper(state_root: &Path, name: &str) -> Result<(PathBuf, String)> {
    crate::state::check_name(name)?;
    let dir = state_root.join(name);
    let st = crate::state::read(&dir).map_err(|_| Error::Container {
        name: name.to_string(),
        what: "no such container".into(),
    })?;
    let image = st.image.ok_or_else(|| Error::Container {
        name: name.to_string(),
        what: "was not made from an image (--rootfs or a bundle): nothing to commit onto".into(),
    })?;
    let upper = dir.join(crate::state::LAYERS_DIR).join("upper");
    Ok((upper, image))
}

impl Store {
    /// The image a container was made from: its state holds the reference (or,
    /// from older versions, the store key).
    pub fn image_of_container(&self, image: &str) -> Result<Image> {
        if super::store::is_hex64(image) {
            self.get_by_key(image)
        } else {
            self.get(image)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse() {
        assert_eq!(
            "ENV A=b c".parse::<Change>().unwrap(),
            Change::Env("A".into(), "b c".into())
        );
        assert_eq!(
            r#"CMD ["cat","/x"]"#.parse::<Change>().unwrap(),
            Change::Cmd(vec!["cat".into(), "/x".into()])
        );
        assert_eq!(
            "cmd sh -c".parse::<Change>().unwrap(),
            Change::Cmd(vec!["sh".into(), "-c".into()])
        );
        assert_eq!(
            "WORKDIR /w".parse::<Change>().unwrap(),
            Change::WorkingDir("/w".into())
        );
        assert_eq!(
            "LABEL a=b".parse::<Change>().unwrap(),
            Change::Label("a".into(), "b".into())
        );
        assert!("FROM x".parse::<Change>().is_err());
        assert!("ENV novalue".parse::<Change>().is_err());
    }

    #[test]
    fn config_changes_apply() {
        let base =
            json!({"config": {"Env": ["PATH=/bin", "A=1"]}, "rootfs": {"diff_ids": ["sha256:x"]}});
        let o = CommitOptions {
            changes: vec![
                Change::Env("A".into(), "2".into()),
                Change::Label("k".into(), "v".into()),
                Change::User("1000:1000".into()),
            ],
            mtime: Some(0),
            message: None,
        };
        let c = new_config(base, "sha256:y", &o).unwrap();
        assert_eq!(c["config"]["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(c["config"]["Labels"]["k"], "v");
        assert_eq!(c["config"]["User"], "1000:1000");
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:x", "sha256:y"]));
        assert!(
            c["created"]
                .as_str()
                .unwrap()
                .starts_with("1970-01-01T00:00:00")
        );
    }
}
