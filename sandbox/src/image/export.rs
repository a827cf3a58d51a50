//! `sandbox image export` (an OCI image layout, a folder or a tar) and `sandbox
//! image push` (to a registry, sending only the blobs it lacks).
//!
//! Both send an OCI image manifest made from the blobs the store keeps: the
//! compressed layers as pulled, imported or committed (their digests unchanged),
//! and the configuration.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_client::RegistryOperation;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::pull::{RegistryOptions, Session, chain, parse_remote};
use super::reference::hex;
use super::store::{Image, REF_NAME, Store, hex_of};
use crate::error::{Error, Result, ioe};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The chunk a blob is pushed in.
const PUSH_CHUNK: usize = 4 << 20;

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What a push did with each blob.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    /// The pushed manifest's digest.
    pub manifest: String,
    /// Blobs uploaded.
    pub uploaded: Vec<String>,
    /// Blobs the registry had already.
    pub present: Vec<String>,
    /// Blobs mounted from the repository the image came from.
    pub mounted: Vec<String>,
}

/// An image's blobs (digest, path in the store), its manifest bytes and digest.
type Blobs = (Vec<(String, PathBuf)>, Vec<u8>, String);

impl Store {
    /// The blobs of an image as (digest, path), layers and config, and its
    /// manifest bytes and digest.
    fn image_blobs(&self, img: &Image) -> Result<Blobs> {
        let config = img.config.clone().ok_or_else(|| {
            Error::Image(format!(
                "{}:{} has no configuration in the store (imported by an older version): \
                 import or pull it again",
                img.name, img.tag
            ))
        })?;
        let manifest = self.oci_manifest(&config, &img.layers)?;
        let md = format!("sha256:{}", hex(&Sha256::digest(&manifest)));
        let mut blobs = Vec::new();
        for d in img.layers.iter().chain(std::iter::once(&config)) {
            if !blobs.iter().any(|(x, _)| x == d) {
                blobs.push((d.clone(), self.blob_path(d)?));
            }
        }
        Ok((blobs, manifest, md))
    }

    /// Writes image `reference` as an OCI image layout: into folder `dest` (made
    /// if missing; an existing layout gets the image added) or, when `dest` ends in
    /// `.tar`, a tar of one. The index names it `NAME:TAG`
    /// (`org.opencontainers.image.ref.name`).
    pub fn export(&self, reference: &str, dest: &Path) -> Result<Image> {
        let img = self.get(reference)?;
        let (blobs, manifest, md) = self.image_blobs(&img)?;
        let refname = format!("{}:{}", img.name, img.tag);
        let entry = json!({
            "mediaType": MANIFEST_TYPE,
            "digest": md,
            "size": manifest.len(),
            "annotations": { REF_NAME: refname },
        });
        if dest.extension().is_some_and(|e| e == "tar") {
            let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]});
            self.export_tar(dest, &blobs, &manifest, &md, &index)?;
            return Ok(img);
        }
        let index_path = dest.join("index.json");
        let mut index: Value = if index_path.exists() {
            let text = std::fs::read(&index_path).map_err(ioe("read", &index_path))?;
            serde_json::from_slice(&text).map_err(|source| Error::Json {
                path: index_path.clone(),
                source,
            })?
        } else {
            if dest.exists()
                && std::fs::read_dir(dest)
                    .map_err(ioe("read_dir", dest))?
                    .next()
                    .is_some()
            {
                return Err(Error::Image(format!(
                    "{} is a folder that is neither empty nor an OCI layout: give a new \
                     folder or a FILE.tar",
                    dest.display()
                )));
            }
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        };
        let b = dest.join("blobs/sha256");
        std::fs::create_dir_all(&b).map_err(ioe("mkdir", &b))?;
        for (d, p) in &blobs {
            let to = b.join(hex_of(d)?);
            if !to.exists() {
                std::fs::copy(p, &to).map_err(ioe("copy", &to))?;
            }
        }
        std::fs::write(b.join(hex_of(&md)?), &manifest).map_err(ioe("write", &b))?;
        let list = index["manifests"]
            .as_array_mut()
            .ok_or_else(|| Error::Image(format!("{}: no manifests list", index_path.display())))?;
        list.retain(|m| m["annotations"][REF_NAME].as_str() != Some(refname.as_str()));
        list.push(entry);
        let layout = dest.join("oci-layout");
        std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(ioe("write", &layout))?;
        let text = serde_json::to_vec(&index).map_err(|source| Error::Json {
            path: index_path.clone(),
            source,
        })?;
        let tmp = dest.join(".index.json.tmp");
        std::fs::write(&tmp, text).map_err(ioe("write", &tmp))?;
        std::fs::rename(&tmp, &index_path).map_err(ioe("rename", &index_path))?;
        Ok(img)
    }

    fn export_tar(
        &self,
        dest: &Path,
        blobs: &[(String, PathBuf)],
        manifest: &[u8],
        md: &str,
        index: &Value,
    ) -> Result<()> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let res = (|| {
            let f = std::fs::File::create(&tmp).map_err(ioe("create", &tmp))?;
            let mut t = tar::Builder::new(std::io::BufWriter::new(f));
            let add =
                |t: &mut tar::Builder<_>, path: &str, data: &mut dyn std::io::Read, size: u64| {
                    let mut h = tar::Header::new_ustar();
                    h.set_mode(0o644);
                    h.set_size(size);
                    h.set_mtime(0);
                    h.set_uid(0);
                    h.set_gid(0);
                    t.append_data(&mut h, path, data)
                        .map_err(|e| Error::io("write", &tmp, e))
                };
            for d in ["blobs", "blobs/sha256"] {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(0);
                h.set_uid(0);
                h.set_gid(0);
                t.append_data(&mut h, d, std::io::empty())
                    .map_err(|e| Error::io("write", &tmp, e))?;
            }
            let lay = br#"{"imageLayoutVersion":"1.0.0"}"#;
            add(&mut t, "oci-layout", &mut &lay[..], lay.len() as u64)?;
            let idx = serde_json::to_vec(index).map_err(|source| Error::Json {
                path: tmp.clone(),
                source,
            })?;
            add(&mut t, "index.json", &mut &idx[..], idx.len() as u64)?;
            for (d, p) in blobs {
                let mut f = std::fs::File::open(p).map_err(ioe("open", p))?;
                let size = f.metadata().map_err(ioe("stat", p))?.len();
                add(
                    &mut t,
                    &format!("blobs/sha256/{}", hex_of(d)?),
                    &mut f,
                    size,
                )?;
            }
            add(
                &mut t,
                &format!("blobs/sha256/{}", hex_of(md)?),
                &mut &manifest[..],
                manifest.len() as u64,
            )?;
            let mut w = t.into_inner().map_err(|e| Error::io("write", &tmp, e))?;
            w.flush().map_err(|e| Error::io("write", &tmp, e))?;
            std::fs::rename(&tmp, dest).map_err(ioe("rename", dest))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Pushes image `reference` (a local `NAME[:TAG]`) to `dest`
    /// (`REGISTRY/NAME:TAG`; default: the image's own name). Blobs the registry
    /// has are not sent; blobs of an image pulled from the same registry are
    /// mounted from the repository it came from where the registry allows it.
    pub fn push(
        &self,
        reference: &str,
        dest: Option<&str>,
        opts: &RegistryOptions,
    ) -> Result<Pushed> {
        let img = self.get(reference)?;
        let target = dest
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}:{}", img.name, img.tag));
        let remote = parse_remote(&target)?;
        if remote.oci.digest().is_some() {
            return Err(Error::Image(format!(
                "push to {target:?}: name a tag, not a digest"
            )));
        }
        let (blobs, manifest, md) = self.image_blobs(&img)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the async runtime", Path::new("-"), e))?;
        rt.block_on(async {
            let s = Session::new(&remote, opts, 3)?;
            let r = &remote.oci;
            let err = |what: &str, e: &oci_client::errors::OciDistributionError| {
                Error::Image(format!("push to {}: {what}: {}", r.whole(), chain(e)))
            };
            s.authorize(r, RegistryOperation::Push).await?;
            // Where the image came from, when that is another repository of the
            // same registry.
            let source = img.source.as_ref().and_then(|src| {
                let (reg, repo) = src.split_once('/')?;
                (reg == r.registry() && repo != r.repository()).then(|| {
                    oci_client::Reference::with_tag(reg.to_string(), repo.to_string(), "x".into())
                })
            });
            let mut out = Pushed {
                manifest: md.clone(),
                ..Pushed::default()
            };
            for (d, p) in &blobs {
                if s.client
                    .blob_exists(r, d)
                    .await
                    .map_err(|e| err(&format!("HEAD {d}"), &e))?
                {
                    out.present.push(d.clone());
                    continue;
                }
                if let Some(src) = &source
                    && s.client.mount_blob(r, src, d).await.is_ok()
                    && s.client.blob_exists(r, d).await.unwrap_or(false)
                {
                    out.mounted.push(d.clone());
                    continue;
                }
                // Streamed in 4 MiB chunks: a layer is never whole in memory.
                let f = std::fs::File::open(p).map_err(ioe("open", p))?;
                let size = f.metadata().map_err(ioe("stat", p))?.len();
                let chunks = futures_util::stream::unfold(f, |mut f| async move {
                    let mut buf = vec![0u8; PUSH_CHUNK];
                    match read_full(&mut f, &mut buf) {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(bytes::Bytes::from(buf)), f))
                        }
                        Err(e) => Some((Err(e.into()), f)),
                    }
                });
                s.client
                    .push_blob_stream(r, chunks, d, Some(size))
                    .await
                    .map_err(|e| err(&format!("blob {d}"), &e))?;
                out.uploaded.push(d.clone());
            }
            s.client
                .push_manifest_raw(
                    r,
                    manifest,
                    reqwest::header::HeaderValue::from_static(MANIFEST_TYPE),
                )
                .await
                .map_err(|e| err("manifest", &e))?;
            Ok(out)
        })
    }
}
