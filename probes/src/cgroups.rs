//! cgroup id -> path, for the hierarchy that serves the cpu controller.
//!
//! The probe keys its stats by `cgroup->kn->id` of the cpu controller's cgroup, which
//! equals the inode number of the cgroup's directory (v1 and v2). cgroupkit finds the
//! hierarchy (v1 `cpu` mount or the v2 tree); this walks it and maps inodes to paths.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cgroupkit::{Controller, Hierarchy};

/// The cgroup id of a cgroup directory (its inode number), e.g. of
/// `/sys/fs/cgroup/cpu/mygroup`.
pub fn cgroup_id(dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// Maps cgroup ids to paths relative to the cpu hierarchy's root (`/` for the root).
/// Rescans the hierarchy when asked for an id it has not seen.
#[derive(Debug)]
pub struct CgroupIndex {
    hierarchy: Hierarchy,
    paths: HashMap<u64, String>,
}

impl CgroupIndex {
    /// An empty index over `hierarchy`.
    pub fn new(hierarchy: Hierarchy) -> CgroupIndex {
        CgroupIndex {
            hierarchy,
            paths: HashMap::new(),
        }
    }

    /// Paths of `ids`; ids not in the hierarchy (removed cgroups) are left out.
    pub fn resolve(&mut self, ids: &[u64]) -> HashMap<u64, String> {
        if ids.iter().any(|id| !self.paths.contains_key(id)) {
            self.rescan();
        }
        ids.iter()
            .filter_map(|id| self.paths.get(id).map(|p| (*id, p.clone())))
            .collect()
    }

    fn rescan(&mut self) {
        self.paths.clear();
        let Some(mount) = self.hierarchy.mount_for(Controller::Cpu) else {
            return;
        };
        let root = mount.mount_point.clone();
        let mut stack = vec![(root.clone(), "/".to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            // symlink_metadata: a cgroup tree has no symlinks; never follow one out.
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            self.paths.insert(meta.ino(), rel.clone());
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let child = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((e.path(), child));
                }
            }
        }
    }
}
