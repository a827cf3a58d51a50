//! Disk accounting (`sandbox image ls`, `sandbox system df`) and `image prune`.
//!
//! A layer is counted once on disk however many images use it: an image's size is
//! the sum of its layers, its unique size the part no other image uses, its shared
//! size the rest. Sizes are disk blocks (`st_blocks`), a hard-linked inode counted
//! once per layer.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::pull::DOWNLOADS;
use super::store::{BLOBS, Image, LAYERS, Store, hex_of, is_hex64};
use crate::error::{Error, Result, ioe};

/// One image's sizes.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    /// The image.
    pub image: Image,
    /// Its layers' size on disk.
    pub size: u64,
    /// The part of `size` in layers no other image uses.
    pub unique: u64,
    /// The part of `size` in layers other images use too.
    pub shared: u64,
}

/// The store's sizes.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Each image.
    pub images: Vec<ImageUsage>,
    /// Unpacked layers: how many and their size on disk (each counted once).
    pub layers: (usize, u64),
    /// Layers no image uses (what `image prune` removes), and their size.
    pub unused_layers: (usize, u64),
    /// Kept blobs (compressed layers, configs, manifests): how many, size.
    pub blobs: (usize, u64),
    /// Partial downloads an interrupted pull left (resumable), size.
    pub downloads: (usize, u64),
    /// The sum of every image's size: what the images would take unshared.
    pub unshared_total: u64,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    /// Layers removed.
    pub layers: usize,
    /// Blobs and partial downloads removed.
    pub files: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// The disk size of a tree (st_blocks * 512), not following symlinks, each inode
/// once.
pub(crate) fn tree_size(p: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = match std::fs::symlink_metadata(&d) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &d, e)),
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
            continue;
        }
        total += md.blocks() * 512;
        if md.is_dir() {
            for e in std::fs::read_dir(&d).map_err(ioe("read_dir", &d))? {
                stack.push(e.map_err(ioe("read_dir", &d))?.path());
            }
        }
    }
    Ok(total)
}

fn files_in(dir: &Path) -> Vec<(String, std::path::PathBuf, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let md = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                e.path(),
                md.blocks() * 512,
            ))
        })
        .collect()
}

impl Store {
    /// The sizes of images, layers, blobs and partial downloads.
    pub fn usage(&self) -> Result<Usage> {
        let images = self.list()?;
        let mut users: BTreeMap<String, usize> = BTreeMap::new();
        for i in &images {
            let mine: BTreeSet<&String> = i.layers.iter().collect();
            for l in mine {
                *users.entry(l.clone()).or_default() += 1;
            }
        }
        let mut u = Usage::default();
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for (name, path, _) in files_in(&self.root().join(LAYERS)) {
            if !is_hex64(&name) {
                continue;
            }
            let n = tree_size(&path)?;
            let d = format!("sha256:{name}");
            u.layers.0 += 1;
            u.layers.1 += n;
            if !users.contains_key(&d) {
                u.unused_layers.0 += 1;
                u.unused_layers.1 += n;
            }
            sizes.insert(d, n);
        }
        for i in images {
            let mine: BTreeSet<&String> = i.layers.iter().collect();
            let (mut size, mut unique) = (0, 0);
            for l in mine {
                let n = sizes.get(l).copied().unwrap_or(0);
                size += n;
                if users.get(l).copied().unwrap_or(0) <= 1 {
                    unique += n;
                }
            }
            u.unshared_total += size;
            u.images.push(ImageUsage {
                image: i,
                size,
                unique,
                shared: size - unique,
            });
        }
        for (name, _, n) in files_in(&self.root().join(BLOBS)) {
            if is_hex64(&name) {
                u.blobs.0 += 1;
                u.blobs.1 += n;
            }
        }
        for (_, _, n) in files_in(&self.root().join(DOWNLOADS)) {
            u.downloads.0 += 1;
            u.downloads.1 += n;
        }
        Ok(u)
    }

    /// Removes the layers and blobs no image uses, and partial downloads. Images
    /// in use by containers keep theirs (`image rm` refuses to remove those).
    pub fn prune(&self) -> Result<Pruned> {
        if !self.root().is_dir() {
            return Ok(Pruned::default());
        }
        let _l = self.lock()?;
        self.clean_stale();
        let images = self.list_images(true)?;
        let mut used: HashSet<String> = HashSet::new();
        for i in &images {
            for l in &i.layers {
                used.insert(hex_of(l)?.to_string());
            }
            for d in [Some(&i.manifest), i.config.as_ref()].into_iter().flatten() {
                if let Ok(h) = hex_of(d) {
                    used.insert(h.to_string());
                }
            }
        }
        let mut p = Pruned::default();
        for (name, path, _) in files_in(&self.root().join(LAYERS)) {
            if is_hex64(&name) && !used.contains(&name) {
                p.bytes += tree_size(&path)?;
                std::fs::remove_dir_all(&path).map_err(ioe("remove_dir_all", &path))?;
                p.layers += 1;
            }
        }
        for (name, path, n) in files_in(&self.root().join(BLOBS)) {
            if is_hex64(&name) && !used.contains(&name) {
                std::fs::remove_file(&path).map_err(ioe("remove", &path))?;
                p.files += 1;
                p.bytes += n;
            }
        }
        for (_, path, n) in files_in(&self.root().join(DOWNLOADS)) {
            std::fs::remove_file(&path).map_err(ioe("remove", &path))?;
            p.files += 1;
            p.bytes += n;
        }
        Ok(p)
    }
}
