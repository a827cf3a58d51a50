//! Walking a cgroup tree: the one walker of the workspace (the exporter's scrape,
//! cgctl's `ls` and `top`, cgroupkit's recursive thaw and delete use it).
//!
//! Pre-order, depth first, on one hierarchy's directory. It is built for a scrape of
//! thousands of cgroups every few seconds:
//! - entries come from the parent's listing (`getdents`, `d_type`: no stat per
//!   file), and only directories are entries;
//! - most cgroups are leaves, and listing a directory costs an open, two `getdents`
//!   over its 10-30 files and a close: kernfs keeps a directory's link count at
//!   2 + its subdirectories, so one `fstatat` relative to the parent's open directory
//!   (one name to look up) tells a leaf, which is then never opened;
//! - the visitor prunes: [`Visit::Skip`] keeps a subtree (an excluded slice) from
//!   being listed at all, [`Visit::Stop`] ends the walk (a search that found what
//!   it looked for), and [`Walk::max_depth`] stops the descent.
//!
//! A cgroup removed while the walk runs (ENOENT, ENODEV) is skipped silently; other
//! errors below the top go to the error callback, and the walk goes on.
//!
//! ```no_run
//! use cgroupkit::walk::{Visit, Walk};
//! let mut ids = Vec::new();
//! Walk::new("/sys/fs/cgroup/cpu").max_depth(Some(2)).run(
//!     |e| {
//!         ids.push((e.rel.to_owned(), e.ino));
//!         if e.rel.starts_with("system.slice") { Visit::Skip } else { Visit::Descend }
//!     },
//!     |rel, err| eprintln!("{rel}: {err}"),
//! )?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the visitor wants below the entry it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// List the entry's children (unless it is a known leaf or at the depth limit).
    Descend,
    /// Do not list its children: the whole subtree is skipped.
    Skip,
    /// End the walk here: nothing more is listed or visited, and
    /// [`Walk::run`] returns `Ok`.
    Stop,
}

/// One cgroup the walk found.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The path relative to the walk's top, `/`-separated, without a leading `/`:
    /// `""` for the top itself, `"a"`, `"a/b"`.
    pub rel: &'a str,
    /// Levels below the top (0 for the top).
    pub depth: usize,
    /// The directory's inode number: the kernel's cgroup id (`cgroup->kn->id`),
    /// the key BPF programs use. From the parent's listing (`d_ino`).
    pub ino: u64,
    /// The parent's `fstatat` showed no subdirectories (link count 2), or the entry
    /// is at the depth limit: it will not be listed.
    pub leaf: bool,
}

/// A walk of one directory tree; see the module docs.
#[derive(Clone, Debug)]
pub struct Walk {
    top: PathBuf,
    max_depth: Option<usize>,
}

impl Walk {
    /// A walk of the tree under `top` (a cgroup directory on one hierarchy, e.g.
    /// `/sys/fs/cgroup/cpu/kubepods`), with no depth limit.
    pub fn new(top: impl Into<PathBuf>) -> Walk {
        Walk {
            top: top.into(),
            max_depth: None,
        }
    }

    /// Visits at most `depth` levels below the top (`Some(0)`: the top only).
    pub fn max_depth(mut self, depth: Option<usize>) -> Walk {
        self.max_depth = depth;
        self
    }

    /// The top directory.
    pub fn top(&self) -> &Path {
        &self.top
    }

    /// Runs the walk: `visit` sees every cgroup in pre-order (the top first) and says
    /// whether to go below it or to stop the walk; `on_error` gets the errors met below the top (with the
    /// entry's relative path) other than "removed meanwhile".
    ///
    /// Fails only when the top itself cannot be looked up (`lstat`) or is not a
    /// directory (`NotADirectory`); a top removed after that ends the walk quietly.
    pub fn run(
        &self,
        mut visit: impl FnMut(&Entry<'_>) -> Visit,
        mut on_error: impl FnMut(&str, io::Error),
    ) -> io::Result<()> {
        let max_depth = self.max_depth.unwrap_or(usize::MAX);
        let meta = std::fs::symlink_metadata(&self.top)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", self.top.display()),
            ));
        }
        // (rel, depth, ino, leaf). The top is listed unless depth 0 forbids it.
        let mut stack: Vec<(String, usize, u64, bool)> =
            vec![(String::new(), 0, meta.ino(), max_depth == 0)];
        let mut dir = PathBuf::with_capacity(256);
        while let Some((rel, depth, ino, leaf)) = stack.pop() {
            let e = Entry {
                rel: &rel,
                depth,
                ino,
                leaf,
            };
            match visit(&e) {
                Visit::Stop => return Ok(()),
                Visit::Skip => continue,
                Visit::Descend if leaf || depth >= max_depth => continue,
                Visit::Descend => {}
            }
            dir.clear();
            dir.push(&self.top);
            if !rel.is_empty() {
                dir.push(&rel);
            }
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(err) => {
                    if !gone(&err) {
                        on_error(&rel, err);
                    }
                    continue;
                }
            };
            for ent in rd {
                let ent = match ent {
                    Ok(ent) => ent,
                    Err(err) => {
                        if !gone(&err) {
                            on_error(&rel, err);
                        }
                        break;
                    }
                };
                // d_type from getdents: cgroupfs holds only files and directories,
                // and a symlink is never followed.
                if !ent.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = ent.file_name();
                // Cgroup names that are not UTF-8 cannot be a CgroupPath: skipped.
                let Some(name) = name.to_str() else { continue };
                let mut child = String::with_capacity(rel.len() + 1 + name.len());
                child.push_str(&rel);
                if !rel.is_empty() {
                    child.push('/');
                }
                child.push_str(name);
                let child_leaf = if depth + 1 < max_depth {
                    // DirEntry::metadata is fstatat(dirfd of this listing, name).
                    match ent.metadata() {
                        Ok(m) => m.nlink() == 2,
                        Err(err) => {
                            if !gone(&err) {
                                on_error(&child, err);
                            }
                            continue;
                        }
                    }
                } else {
                    true
                };
                stack.push((child, depth + 1, ent.ino(), child_leaf));
            }
        }
        Ok(())
    }

    /// Every cgroup of the tree in pre-order (relative paths, `""` for the top),
    /// failing on the first error other than "removed meanwhile".
    pub fn collect(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut first_err = None;
        self.run(
            |e| {
                out.push(e.rel.to_owned());
                Visit::Descend
            },
            |_, err| {
                first_err.get_or_insert(err);
            },
        )?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// ENOENT / ENODEV: the cgroup was removed between the listing and the look.
fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for d in ["a/b/c", "a/d", "e", "skip/deep/er"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        std::fs::write(t.path().join("a/cgroup.procs"), "").unwrap();
        std::os::unix::fs::symlink("/", t.path().join("a/link")).unwrap();
        t
    }

    #[test]
    fn pre_order_depth_and_pruning() {
        let t = tree();
        let mut all = Walk::new(t.path()).collect().unwrap();
        // Pre-order: every parent before its children.
        for (i, p) in all.iter().enumerate() {
            if let Some((parent, _)) = p.rsplit_once('/') {
                assert!(all[..i].iter().any(|q| q == parent), "{all:?}");
            }
        }
        all.sort();
        assert_eq!(
            all,
            [
                "",
                "a",
                "a/b",
                "a/b/c",
                "a/d",
                "e",
                "skip",
                "skip/deep",
                "skip/deep/er"
            ]
        );
        let mut d1 = Walk::new(t.path()).max_depth(Some(1)).collect().unwrap();
        d1.sort();
        assert_eq!(d1, ["", "a", "e", "skip"]);
        let mut seen = Vec::new();
        Walk::new(t.path())
            .run(
                |e| {
                    seen.push(e.rel.to_owned());
                    if e.rel == "skip" {
                        Visit::Skip
                    } else {
                        Visit::Descend
                    }
                },
                |rel, e| panic!("{rel}: {e}"),
            )
            .unwrap();
        assert!(seen.contains(&"skip".to_owned()));
        assert!(!seen.iter().any(|s| s.starts_with("skip/")), "{seen:?}");
        assert_eq!(
            Walk::new(t.path()).max_depth(Some(0)).collect().unwrap(),
            [""]
        );
        assert!(Walk::new(t.path().join("none")).collect().is_err());
        assert!(
            Walk::new(t.path().join("a/cgroup.procs"))
                .collect()
                .is_err()
        );
    }

    #[test]
    fn stop_ends_the_walk_at_once() {
        let t = tree();
        let all = Walk::new(t.path()).collect().unwrap();
        // Stopping at each entry in turn: exactly the entries before it and itself
        // were visited, in the same order as the full walk, and nothing after.
        for (i, target) in all.iter().enumerate() {
            let mut seen = Vec::new();
            Walk::new(t.path())
                .run(
                    |e| {
                        seen.push(e.rel.to_owned());
                        if e.rel == target {
                            Visit::Stop
                        } else {
                            Visit::Descend
                        }
                    },
                    |rel, e| panic!("{rel}: {e}"),
                )
                .unwrap();
            assert_eq!(seen, all[..=i], "stopped at {target:?}");
        }
    }
}
