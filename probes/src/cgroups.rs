//! cgroup id -> path, for the hierarchy that serves the cpu controller.
//!
//! The probe keys its stats by `cgroup->kn->id` of the cpu controller's cgroup, which
//! equals the inode number of the cgroup's directory (v1 and v2). cgroupkit finds the
//! hierarchy (v1 `cpu` mount or the v2 tree); cgroupkit's walker walks it, and this maps
//! inodes to paths.
//!
//! The index is incremental: an id is looked up once. A walk happens only when asked
//! for an id that is neither known nor known to be gone, and it stops as soon as every
//! such id is found. An id not found by a walk belongs to a removed cgroup (the probe
//! saw it throttled, so it existed before the walk began; kernfs ids are 64-bit and
//! never reused) and is remembered as gone, so it never causes another walk. Ids the
//! caller no longer asks for are forgotten, which keeps the index as small as the
//! probe's map. File handles (`open_by_handle_at` on the id) would avoid walks on
//! cgroup v2, but not on a v1 cpu hierarchy such as this project's hosts have, so the
//! walk stays the one method.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cgroupkit::walk::{Visit, Walk};
use cgroupkit::{Controller, Hierarchy};

/// The cgroup id of a cgroup directory (its inode number), e.g. of
/// `/sys/fs/cgroup/cpu/mygroup`.
pub fn cgroup_id(dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// Maps cgroup ids to paths relative to the cpu hierarchy's root (`/` for the root).
///
/// Each [`resolve`](CgroupIndex::resolve) keeps only the ids it was asked for, and
/// walks the hierarchy only for ids it has never seen (see the module docs). A cgroup
/// renamed after it was resolved keeps its old path.
#[derive(Debug)]
pub struct CgroupIndex {
    hierarchy: Hierarchy,
    paths: HashMap<u64, String>,
    gone: HashSet<u64>,
    walks: u64,
}

impl CgroupIndex {
    /// An empty index over `hierarchy`.
    pub fn new(hierarchy: Hierarchy) -> CgroupIndex {
        CgroupIndex {
            hierarchy,
            paths: HashMap::new(),
            gone: HashSet::new(),
            walks: 0,
        }
    }

    /// Paths of `ids`; ids not in the hierarchy (removed cgroups) are left out. Ids
    /// known from earlier calls are not looked up again; ids not in `ids` are forgotten.
    pub fn resolve(&mut self, ids: &[u64]) -> HashMap<u64, String> {
        let wanted: HashSet<u64> = ids.iter().copied().collect();
        self.paths.retain(|id, _| wanted.contains(id));
        self.gone.retain(|id| wanted.contains(id));
        let mut unknown: HashSet<u64> = wanted
            .iter()
            .filter(|id| !self.paths.contains_key(id) && !self.gone.contains(id))
            .copied()
            .collect();
        if !unknown.is_empty() {
            self.walk(&mut unknown);
            // What the walk did not find was removed before it.
            self.gone.extend(unknown);
        }
        ids.iter()
            .filter_map(|id| self.paths.get(id).map(|p| (*id, p.clone())))
            .collect()
    }

    /// How many times the hierarchy was walked since the index was made: a snapshot
    /// with no new cgroup does not add one.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// Walks the cpu hierarchy (cgroupkit's walker) until every id of `unknown` is
    /// found; found ids move to `paths`, the rest stay in `unknown`.
    fn walk(&mut self, unknown: &mut HashSet<u64>) {
        let Some(mount) = self.hierarchy.mount_for(Controller::Cpu) else {
            return;
        };
        self.walks += 1;
        let paths = &mut self.paths;
        // The walker's entries carry the inode from the parent's listing, which is the
        // cgroup id; their paths are relative ("" for the root), ours start with `/`.
        // Errors (the root gone, a directory that cannot be listed) only leave ids
        // unfound, which then count as removed: nothing to report to the caller.
        let _ = Walk::new(&mount.mount_point).run(
            |e| {
                if unknown.remove(&e.ino) {
                    paths.insert(e.ino, format!("/{}", e.rel));
                    if unknown.is_empty() {
                        return Visit::Stop;
                    }
                }
                Visit::Descend
            },
            |_, _| {},
        );
    }
}
