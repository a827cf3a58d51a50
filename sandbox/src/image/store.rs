//! The store on disk, and import of OCI image layouts into it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use super::reference::{Reference, hex};
use super::unpack::{Hashed, Limits, Members, Tee, Writer, components, io_chain};
use crate::error::{Error, Result, ioe};

/// Default store root.
pub const DEFAULT_STORE_ROOT: &str = "/var/lib/sandbox";
/// Environment variable overriding the store root.
pub const STORE_ROOT_ENV: &str = "SANDBOX_STORE";
/// The mode of the store root and of each folder directly in it: only root may
/// walk into the store, so the setuid files and devices that layers hold are out of
/// reach of host users (the CVE-2021-41091 class).
pub const STORE_MODE: u32 = 0o700;
pub(crate) const LAYERS: &str = "layers";
const IMAGES: &str = "images";
const USERS: &str = "users";
pub(crate) const BLOBS: &str = "blobs/sha256";
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The store root from `--store`, `$SANDBOX_STORE` or the default.
///
/// A relative one is made absolute against the working directory (see
/// [`crate::state::state_root`]).
pub fn store_root(flag: Option<PathBuf>) -> PathBuf {
    let p = flag
        .or_else(|| std::env::var_os(STORE_ROOT_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE_ROOT));
    std::path::absolute(&p).unwrap_or(p)
}

/// An imported image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    /// Name (`busybox`, `ghcr.io/org/app`).
    pub name: String,
    /// Tag (`latest`).
    pub tag: String,
    /// Digest of the manifest (`sha256:...`).
    pub manifest: String,
    /// Digest of the image configuration (kept in the store's blobs), when known.
    #[serde(default)]
    pub config: Option<String>,
    /// Layer digests, bottom layer first.
    pub layers: Vec<String>,
    /// The repository it was pulled from (`registry/path`), for cross-repository
    /// mounts when it is pushed to the same registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Image {
    /// The store key: the sha256 (hex) of `NAME:TAG`.
    pub fn key(&self) -> String {
        super::reference::key(&self.name, &self.tag)
    }
}

/// Splits `NAME[:TAG]` (default tag `latest`) and checks it against the
/// distribution grammar (see [`Reference::parse`]).
pub fn parse_ref(r: &str) -> Result<(String, String)> {
    let r = Reference::parse(r)?;
    Ok((r.name, r.tag))
}

/// The hex part of a `sha256:` digest, checked.
pub(crate) fn hex_of(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::Image(format!("digest {digest:?}: only sha256 is supported")))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::Image(format!("digest {digest:?} is malformed")));
    }
    Ok(hex)
}

/// A handle on the store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    limits: Limits,
}

/// The exclusive store lock (flock on the root folder), held by import, remove and
/// prune for their whole run.
pub(crate) struct StoreLock(#[allow(dead_code)] File);

pub(crate) fn mkdir_private(p: &Path) -> Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(STORE_MODE)
        .create(p)
    {
        Ok(()) => fix_mode(p),
        Err(e) => Err(Error::io("mkdir", p, e)),
    }
}

/// Takes group and other permissions away from an existing folder (a store made by
/// an older version had 0755 folders).
fn fix_mode(p: &Path) -> Result<()> {
    let md = std::fs::metadata(p).map_err(ioe("stat", p))?;
    if md.mode() & 0o777 != STORE_MODE {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(STORE_MODE))
            .map_err(ioe("chmod 0700", p))?;
    }
    Ok(())
}

pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Store {
    /// The store at `root` (created on first import), with default [`Limits`].
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store {
            root: root.into(),
            limits: Limits::default(),
        }
    }

    /// The same store with other import limits.
    pub fn with_limits(mut self, limits: Limits) -> Store {
        self.limits = limits;
        self
    }

    /// The import limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the store folders (0700), and takes group and other permissions away
    /// from those of an existing store.
    pub fn prepare(&self) -> Result<()> {
        mkdir_private(&self.root)?;
        for d in [LAYERS, IMAGES, USERS, "blobs", BLOBS] {
            mkdir_private(&self.root.join(d))?;
        }
        Ok(())
    }

    pub(crate) fn lock(&self) -> Result<StoreLock> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY)
            .open(&self.root)
            .map_err(ioe("open", &self.root))?;
        // SAFETY: flock on an fd we own for the duration of the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(
                "flock",
                &self.root,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(StoreLock(f))
    }

    fn image_file(&self, key: &str) -> PathBuf {
        self.root.join(IMAGES).join(format!("{key}.json"))
    }

    /// The unpacked directory of a layer.
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join(LAYERS).join(hex_of(digest)?))
    }

    /// A blob's path in the store (a layer's compressed blob, a config, a manifest).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join(BLOBS).join(hex_of(digest)?))
    }

    /// Whether the store holds the unpacked layer `digest`.
    pub fn has_layer(&self, digest: &str) -> bool {
        self.layer_dir(digest).is_ok_and(|d| d.is_dir())
    }

    /// Copies a verified layer blob into the store's blobs (kept for `image export`
    /// and `image push`), unless it is there already.
    pub(crate) fn keep_blob(&self, src: &Path, digest: &str) -> Result<()> {
        let h = hex_of(digest)?;
        let p = self.root.join(BLOBS).join(h);
        if p.exists() {
            return Ok(());
        }
        let tmp = self.root.join(BLOBS).join(format!(".tmp-{h}"));
        std::fs::copy(src, &tmp).map_err(ioe("copy", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(ioe("rename", &p))
    }

    /// Looks an image up by its store key (the sha256 of `NAME:TAG`).
    pub fn get_by_key(&self, key: &str) -> Result<Image> {
        if !is_hex64(key) {
            return Err(Error::Image(format!("image key {key:?} is malformed")));
        }
        let p = self.image_file(key);
        let text = std::fs::read(&p).map_err(ioe("read", &p))?;
        serde_json::from_slice(&text).map_err(|source| Error::Json { path: p, source })
    }

    /// Looks an image up by `NAME[:TAG]`.
    pub fn get(&self, reference: &str) -> Result<Image> {
        let r = Reference::parse(reference)?;
        let p = self.image_file(&r.key());
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A store written by an older version keys images by name.
                if self.root.join(IMAGES).is_dir() && self.migrate()? > 0 {
                    return self.get(reference);
                }
                return Err(Error::Image(format!(
                    "no image {reference:?} in {}: import it with `sandbox image import PATH`",
                    self.root.display()
                )));
            }
            Err(e) => return Err(Error::io("read", &p, e)),
        };
        // An existing store made by an older version: close it to host users.
        fix_mode(&self.root)?;
        serde_json::from_slice(&text).map_err(|source| Error::Json { path: p, source })
    }

    /// Rewrites image records of the old layout (`images/NAME_TAG.json`, `/` in names
    /// written `+`) under their key; records whose name does not pass the grammar
    /// are left alone. Returns how many were moved.
    fn migrate(&self) -> Result<usize> {
        let _l = self.lock()?;
        self.migrate_locked()
    }

    /// [`migrate`](Self::migrate) with the store lock already held (flock locks
    /// are per open file: taking it twice in one process would wait forever).
    pub(crate) fn migrate_locked(&self) -> Result<usize> {
        let dir = self.root.join(IMAGES);
        let rd = std::fs::read_dir(&dir).map_err(ioe("read_dir", &dir))?;
        let mut n = 0;
        for e in rd.flatten() {
            let p = e.path();
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if is_hex64(stem) || p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(text) = std::fs::read(&p) else {
                continue;
            };
            let Ok(mut img) = serde_json::from_slice::<Image>(&text) else {
                continue;
            };
            img.name = img.name.replace('+', "/");
            if Reference::parse(&format!("{}:{}", img.name, img.tag)).is_err() {
                continue;
            }
            self.write_image(&img)?;
            let _ = std::fs::remove_file(&p);
            n += 1;
        }
        Ok(n)
    }

    /// The overlay lower directories of an image, top layer first.
    pub fn lowers(&self, img: &Image) -> Result<Vec<PathBuf>> {
        img.layers.iter().rev().map(|d| self.layer_dir(d)).collect()
    }

    /// The image's configuration (`Env`, `WorkingDir`, ...), when the store holds it
    /// (images imported before it kept configurations have none).
    pub fn config(&self, img: &Image) -> Result<Option<oci_spec::image::ImageConfiguration>> {
        let Some(d) = &img.config else {
            return Ok(None);
        };
        let p = self.root.join(BLOBS).join(hex_of(d)?);
        let text = std::fs::read(&p).map_err(ioe("read", &p))?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| Error::Json { path: p, source })
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<Image>> {
        self.list_images(false)
    }

    pub(crate) fn list_images(&self, locked: bool) -> Result<Vec<Image>> {
        let dir = self.root.join(IMAGES);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read_dir", &dir, e)),
        };
        let mut out = Vec::new();
        let mut old = false;
        for e in rd.flatten() {
            let p = e.path();
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if p.extension().is_some_and(|x| x == "json") {
                if !is_hex64(stem) {
                    old = true;
                    continue;
                }
                let text = std::fs::read(&p).map_err(ioe("read", &p))?;
                out.push(serde_json::from_slice(&text).map_err(|source| Error::Json {
                    path: p.clone(),
                    source,
                })?);
            }
        }
        let migrated = match (old, locked) {
            (false, _) => 0,
            (true, false) => self.migrate()?,
            (true, true) => self.migrate_locked()?,
        };
        if migrated > 0 {
            return self.list_images(locked);
        }
        out.sort_by(|a: &Image, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
        Ok(out)
    }

    /// Records that container `id` (state folder `state_dir`) uses `img`.
    pub fn add_user(&self, img: &Image, id: &str, state_dir: &Path) -> Result<()> {
        check_id(id)?;
        let d = self.root.join(USERS).join(img.key());
        mkdir_private(&d)?;
        let f = d.join(id);
        std::fs::write(&f, state_dir.as_os_str().as_encoded_bytes()).map_err(ioe("write", &f))?;
        // `image rm` may have run meanwhile: then the image is gone and so is the use.
        if !self.image_file(&img.key()).exists() {
            let _ = std::fs::remove_file(&f);
            return Err(Error::Image(format!(
                "image {}:{} was removed while the container started",
                img.name, img.tag
            )));
        }
        Ok(())
    }

    /// Forgets that container `id` uses the image `key`.
    pub fn remove_user(&self, key: &str, id: &str) {
        if check_id(id).is_ok() && is_hex64(key) {
            let d = self.root.join(USERS).join(key);
            let _ = std::fs::remove_file(d.join(id));
            let _ = std::fs::remove_dir(d);
        }
    }

    /// The containers recorded as users of image `key`: (id, state folder, alive).
    /// A record is alive while its state folder holds the state of that same
    /// container id; a killed run that `sandbox gc` collected leaves a dead one.
    pub(crate) fn users(&self, key: &str) -> Vec<(PathBuf, String, PathBuf, bool)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.root.join(USERS).join(key)) else {
            return out;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let raw = std::fs::read(e.path()).unwrap_or_default();
            let dir = PathBuf::from(std::ffi::OsString::from(
                String::from_utf8_lossy(&raw).into_owned(),
            ));
            let alive = crate::state::read(&dir).is_ok_and(|st| st.id == id);
            out.push((e.path(), id, dir, alive));
        }
        out
    }

    /// Removes the user records of containers that no longer exist (runs that were
    /// killed and then collected by `sandbox gc`, or removed by hand), and the
    /// folders of keys left without records. Returns how many records went.
    pub fn prune_users(&self) -> Result<usize> {
        let users = self.root.join(USERS);
        if !users.is_dir() {
            return Ok(0);
        }
        let _l = self.lock()?;
        self.prune_users_locked()
    }

    pub(crate) fn prune_users_locked(&self) -> Result<usize> {
        let users = self.root.join(USERS);
        let rd = match std::fs::read_dir(&users) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("read_dir", &users, e)),
        };
        let mut n = 0;
        for k in rd.flatten() {
            let key = k.file_name().to_string_lossy().into_owned();
            for (rec, _, _, alive) in self.users(&key) {
                if !alive && std::fs::remove_file(&rec).is_ok() {
                    n += 1;
                }
            }
            let _ = std::fs::remove_dir(k.path());
        }
        Ok(n)
    }

    /// Removes an image, refused while a container that uses it still exists. Layers
    /// no other image uses are deleted.
    pub fn remove(&self, reference: &str) -> Result<Image> {
        let img = self.get(reference)?;
        let _l = self.lock()?;
        for (rec, id, dir, alive) in self.users(&img.key()) {
            if alive {
                return Err(Error::Image(format!(
                    "image {reference:?} is in use by container {id} ({}): remove it first",
                    dir.display()
                )));
            }
            let _ = std::fs::remove_file(rec);
        }
        let _ = std::fs::remove_dir(self.root.join(USERS).join(img.key()));
        let f = self.image_file(&img.key());
        std::fs::remove_file(&f).map_err(ioe("remove", &f))?;
        self.drop_unused(&img.layers, img.config.as_deref())?;
        Ok(img)
    }

    /// Deletes the layers (and config blob) given that no image record names.
    pub(crate) fn drop_unused(&self, layers: &[String], config: Option<&str>) -> Result<()> {
        let images = self.list_images(true)?;
        for l in layers {
            if !images.iter().any(|i| i.layers.contains(l)) {
                let d = self.layer_dir(l)?;
                match std::fs::remove_dir_all(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove_dir_all", &d, e)),
                }
                let _ = std::fs::remove_file(self.blob_path(l)?);
            }
        }
        if let Some(c) = config
            && !images.iter().any(|i| i.config.as_deref() == Some(c))
        {
            let _ = std::fs::remove_file(self.root.join(BLOBS).join(hex_of(c)?));
        }
        Ok(())
    }

    /// Removes what an import killed half-way left behind (hidden `.tmp-*` folders):
    /// imports hold the store lock, so under it none is in progress.
    pub(crate) fn clean_stale(&self) {
        for dir in [
            self.root.clone(),
            self.root.join(LAYERS),
            self.root.join(BLOBS),
        ] {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(".tmp-") {
                        let p = e.path();
                        if p.is_dir() {
                            let _ = std::fs::remove_dir_all(&p);
                        } else {
                            let _ = std::fs::remove_file(&p);
                        }
                    }
                }
            }
        }
    }

    /// Imports an OCI image layout (a directory, or a tar of one, plain or
    /// compressed). `name` overrides the reference from the index's
    /// `org.opencontainers.image.ref.name`. All or nothing: a refused import leaves
    /// no layer, blob or record behind.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        self.prepare()?;
        let _l = self.lock()?;
        self.clean_stale();
        self.migrate_locked()?;
        self.prune_users_locked()?;
        if path.is_dir() {
            return self.import_dir(path, name, path);
        }
        let tmp = self
            .root
            .join(format!(".tmp-import-{}", std::process::id()));
        mkdir_private(&tmp)?;
        let res = self
            .extract_layout(path, &tmp)
            .and_then(|()| self.import_dir(&tmp, name, path));
        let _ = std::fs::remove_dir_all(&tmp);
        res
    }

    /// Extracts from a layout tar only what a layout is made of (`index.json`,
    /// `oci-layout`, `blobs/sha256/<hex>`), as regular files; every other entry is
    /// skipped, so nothing in it can name a path outside `tmp`.
    fn extract_layout(&self, path: &Path, tmp: &Path) -> Result<()> {
        let what = format!("layout tar {}", path.display());
        let f = File::open(path).map_err(ioe("open", path))?;
        let plain = Hashed::new(self.limits.max_layer_bytes);
        let r = Tee {
            inner: decompress(BufReader::new(f), path)?,
            state: plain,
        };
        let mut ar = tar::Archive::new(r);
        let mut members = Members::new(&mut ar, &what)?;
        mkdir_private(&tmp.join(BLOBS))?;
        let root = open(
            tmp,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", tmp, e.into()))?;
        let mut w = Writer::new(root, &self.limits, &what);
        while let Some((m, mut e)) = members.next_member()? {
            let kind = e.header().entry_type();
            // Only the names a layout is made of are taken: anything else (`..`,
            // symlinks, devices, other files) is skipped.
            let Ok(comps) = components(&m.path) else {
                continue;
            };
            let c: Vec<&str> = comps.iter().filter_map(|c| c.to_str()).collect();
            let wanted = c.len() == comps.len()
                && match c.as_slice() {
                    ["index.json"] | ["oci-layout"] => true,
                    ["blobs", "sha256", h] => is_hex64(h),
                    _ => false,
                };
            if !wanted || !(kind.is_file() || kind == tar::EntryType::Continuous) {
                continue;
            }
            let mut m = m;
            m.uid = 0;
            m.gid = 0;
            m.mode = 0o600;
            m.xattrs.clear();
            w.member(&m, kind, &mut e, false)?;
        }
        w.finish()
    }

    fn import_dir(&self, layout: &Path, name: Option<&str>, shown: &Path) -> Result<Vec<Image>> {
        let what = |m: String| Error::Image(format!("{}: {m}", shown.display()));
        let index_path = layout.join("index.json");
        let text = read_bounded(&index_path, self.limits.max_json_bytes)?;
        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(&text).map_err(|source| Error::Json {
                path: index_path.clone(),
                source,
            })?;
        // Everything is read and checked before anything is written.
        let mut plans = Vec::new();
        for m in index.manifests() {
            let digest = m.digest().to_string();
            let mt = m.media_type().to_string();
            if mt.contains("index") || mt.contains("manifest.list") {
                return Err(what(format!(
                    "manifest {digest} is an index ({mt}): nested indexes (multi-platform \
                     layouts) are not supported; copy one platform's image"
                )));
            }
            let mbytes = self.read_blob(layout, &digest, m.size())?;
            let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&mbytes)
                .map_err(|e| what(format!("manifest {digest}: {e}")))?;
            let reference = match name {
                Some(n) => n.to_string(),
                None => m
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME).cloned())
                    .or_else(|| shown.file_stem().map(|s| s.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| "image".into()),
            };
            let r = Reference::parse(&reference).map_err(|e| {
                what(format!(
                    "{e}; name the image with `sandbox image import --name NAME:TAG`"
                ))
            })?;
            let cd = manifest.config().digest().to_string();
            let cbytes = self.read_blob(layout, &cd, manifest.config().size())?;
            let config: oci_spec::image::ImageConfiguration =
                serde_json::from_slice(&cbytes).map_err(|e| what(format!("config {cd}: {e}")))?;
            let diff_ids = config.rootfs().diff_ids().clone();
            let layers: Vec<(String, u64)> = manifest
                .layers()
                .iter()
                .map(|l| (l.digest().to_string(), l.size()))
                .collect();
            if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
                return Err(what(format!(
                    "config {cd} lists {} diff_ids for {} layers",
                    diff_ids.len(),
                    layers.len()
                )));
            }
            for (d, _) in &layers {
                hex_of(d)?;
            }
            plans.push((r, digest, cd, cbytes, layers, diff_ids, mbytes));
        }
        let mut made: Vec<String> = Vec::new();
        let mut configs: Vec<String> = Vec::new();
        let res = (|| {
            let mut out = Vec::new();
            for (r, digest, cd, cbytes, layers, diff_ids, mbytes) in &plans {
                for (i, (ld, size)) in layers.iter().enumerate() {
                    let blob = layout.join(BLOBS).join(hex_of(ld)?);
                    if self.unpack_blob(&blob, ld, *size, diff_ids.get(i).map(String::as_str))? {
                        made.push(ld.clone());
                    }
                    // The compressed blob is kept for `image export` and `push`.
                    self.keep_blob(&blob, ld)?;
                }
                if self.put_blob(cd, cbytes)? {
                    configs.push(cd.clone());
                }
                self.put_blob(digest, mbytes)?;
                out.push(Image {
                    name: r.name.clone(),
                    tag: r.tag.clone(),
                    manifest: digest.clone(),
                    config: Some(cd.clone()),
                    layers: layers.iter().map(|(d, _)| d.clone()).collect(),
                    source: None,
                });
            }
            for img in &out {
                self.write_image(img)?;
            }
            Ok(out)
        })();
        if res.is_err() {
            let _ = self.drop_unused(&made, None);
            for c in &configs {
                let _ = self.drop_unused(&[], Some(c));
            }
        }
        res
    }

    pub(crate) fn write_image(&self, img: &Image) -> Result<()> {
        let f = self.image_file(&img.key());
        let text = serde_json::to_vec_pretty(img).map_err(|source| Error::Json {
            path: f.clone(),
            source,
        })?;
        let tmp = self.root.join(IMAGES).join(format!(".tmp-{}", img.key()));
        std::fs::write(&tmp, text).map_err(ioe("write", &tmp))?;
        std::fs::rename(&tmp, &f).map_err(ioe("rename", &f))
    }

    /// Stores a verified blob under its digest; returns whether it is new.
    pub(crate) fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<bool> {
        let h = hex_of(digest)?;
        let p = self.root.join(BLOBS).join(h);
        if p.exists() {
            return Ok(false);
        }
        let tmp = self.root.join(BLOBS).join(format!(".tmp-{h}"));
        std::fs::write(&tmp, bytes).map_err(ioe("write", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(ioe("rename", &p))?;
        Ok(true)
    }

    /// Reads a JSON blob of the layout, bounded, and checks its size and digest.
    fn read_blob(&self, layout: &Path, digest: &str, size: u64) -> Result<Vec<u8>> {
        let p = layout.join(BLOBS).join(hex_of(digest)?);
        if size > self.limits.max_json_bytes {
            return Err(Error::Image(format!(
                "blob {digest} is said to be {size} bytes: more than the {} a manifest or \
                 config may have",
                self.limits.max_json_bytes
            )));
        }
        let f = open_blob(&p, digest, size)?;
        let mut bytes = Vec::new();
        f.take(size + 1)
            .read_to_end(&mut bytes)
            .map_err(ioe("read", &p))?;
        let got = hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if bytes.len() as u64 != size || got != hex_of(digest)? {
            return Err(corrupt(&p, &got, digest));
        }
        Ok(bytes)
    }

    /// Unpacks one layer blob, once (an existing layer is reused), hashing the
    /// blob as it is read: the digest checked is that of the bytes unpacked, and
    /// the layer appears under its name only when it matched. Returns whether the
    /// layer is new.
    pub(crate) fn unpack_blob(
        &self,
        blob: &Path,
        digest: &str,
        size: u64,
        diff_id: Option<&str>,
    ) -> Result<bool> {
        let hexd = hex_of(digest)?;
        let dest = self.layer_dir(digest)?;
        if dest.is_dir() {
            return Ok(false);
        }
        let blob = blob.to_path_buf();
        let file = open_blob(&blob, digest, size)?;
        let tmp = self
            .root
            .join(LAYERS)
            .join(format!(".tmp-{hexd}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(ioe("mkdir", &tmp))?;
        let what = format!("layer {digest}");
        let raw = Hashed::new(u64::MAX);
        let res = (|| {
            let plain = Hashed::new(self.limits.max_layer_bytes);
            let compressed = BufReader::new(Tee {
                inner: &file,
                state: raw.clone(),
            });
            let r = Tee {
                inner: decompress(compressed, &blob)?,
                state: plain.clone(),
            };
            let mut ar = tar::Archive::new(r);
            let root = open(
                &tmp,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open", &tmp, e.into()))?;
            let mut w = Writer::new(root, &self.limits, &what);
            {
                let mut members = Members::new(&mut ar, &what)?;
                while let Some((m, mut e)) = members.next_member()? {
                    let kind = e.header().entry_type();
                    w.member(&m, kind, &mut e, true)?;
                }
            }
            w.finish()?;
            // The rest of both streams counts in their digests.
            let mut rest = ar.into_inner();
            std::io::copy(&mut rest, &mut std::io::sink())
                .map_err(|e| Error::Image(format!("{what}: reading the end: {}", io_chain(&e))))?;
            drop(rest);
            let mut tail = Tee {
                inner: &file,
                state: raw.clone(),
            };
            std::io::copy(&mut tail, &mut std::io::sink()).map_err(ioe("read", &blob))?;
            let got = raw.borrow().hex();
            if raw.borrow().bytes != size || got != hexd {
                return Err(corrupt(&blob, &got, digest));
            }
            if let Some(d) = diff_id {
                let want = hex_of(d)?;
                let got = plain.borrow().hex();
                if got != want {
                    return Err(Error::Image(format!(
                        "{what}: its uncompressed content has sha256:{got}, the config's \
                         diff_id is {d}: the image is corrupt"
                    )));
                }
            }
            std::fs::rename(&tmp, &dest).map_err(ioe("rename", &dest))
        })();
        match res {
            Ok(()) => Ok(true),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                // A blob that is not what its digest says explains any failure
                // reading it: report that.
                let mut tail = Tee {
                    inner: &file,
                    state: raw.clone(),
                };
                if std::io::copy(&mut tail, &mut std::io::sink()).is_ok() {
                    let got = raw.borrow().hex();
                    if got != hexd {
                        return Err(corrupt(&blob, &got, digest));
                    }
                }
                Err(e)
            }
        }
    }
}

fn corrupt(p: &Path, got: &str, digest: &str) -> Error {
    Error::Image(format!(
        "{} has sha256:{got}, expected {digest}: the blob is corrupt",
        p.display()
    ))
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::Image(format!(
            "container id {id:?} is not alphanumeric"
        )));
    }
    Ok(())
}

/// Opens a layout blob for reading: a regular file (a FIFO or device would block or
/// never end) of exactly the size its descriptor gives.
fn open_blob(p: &Path, digest: &str, size: u64) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| Error::Image(format!("blob {digest} missing at {}: {e}", p.display())))?;
    let md = f.metadata().map_err(ioe("stat", p))?;
    if !md.is_file() {
        return Err(Error::Image(format!(
            "blob {} is not a regular file",
            p.display()
        )));
    }
    if md.len() != size {
        return Err(Error::Image(format!(
            "blob {} is {} bytes, its descriptor says {size}: the layout is corrupt",
            p.display(),
            md.len()
        )));
    }
    Ok(f)
}

/// Reads a small file whole, refusing more than `max` bytes.
fn read_bounded(p: &Path, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .map_err(ioe("open", p))?;
    if !f.metadata().map_err(ioe("stat", p))?.is_file() {
        return Err(Error::Image(format!(
            "{} is not a regular file",
            p.display()
        )));
    }
    let mut v = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut v)
        .map_err(ioe("read", p))?;
    if v.len() as u64 > max {
        return Err(Error::Image(format!(
            "{} is larger than {max} bytes",
            p.display()
        )));
    }
    Ok(v)
}

/// Checks a file's sha256 against `digest`.
pub fn verify(p: &Path, digest: &str) -> Result<()> {
    let want = hex_of(digest)?;
    let mut f = File::open(p)
        .map_err(|e| Error::Image(format!("blob {digest} missing at {}: {e}", p.display())))?;
    let state = Hashed::new(u64::MAX);
    let mut t = Tee {
        inner: &mut f,
        state: state.clone(),
    };
    std::io::copy(&mut t, &mut std::io::sink()).map_err(ioe("read", p))?;
    let got = state.borrow().hex();
    if got != want {
        return Err(corrupt(p, &got, digest));
    }
    Ok(())
}

/// gzip, zstd or plain, by magic number.
pub(crate) fn decompress<'a, R: std::io::BufRead + 'a>(
    mut r: R,
    p: &Path,
) -> Result<Box<dyn Read + 'a>> {
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
