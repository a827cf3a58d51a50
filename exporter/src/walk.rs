//! Which cgroups a scrape exports: the hierarchies it reads (sources) and the walk
//! of each through cgroupkit's walker, merged by relative path.

use std::collections::BTreeMap;

use cgroupkit::Version;
use cgroupkit::walk::{Visit, Walk};

use crate::Config;
use crate::read::FileReader;

pub(crate) const ROLE_CPU: u8 = 1;
pub(crate) const ROLE_CPUACCT: u8 = 2;
pub(crate) const ROLE_MEMORY: u8 = 4;
pub(crate) const ROLE_PROCS: u8 = 8;
pub(crate) const ROLE_PSI: u8 = 16;
/// Roles that read more than one file of a directory (all but processes alone): their
/// reads go through an O_PATH fd of it ([`read::FileReader::enter`]).
pub(crate) const MULTI_FILE_ROLES: u8 = ROLE_CPU | ROLE_CPUACCT | ROLE_MEMORY | ROLE_PSI;

/// One hierarchy the collector walks and what it reads there.
#[derive(Debug)]
pub(crate) struct Source {
    pub mount_point: String,
    pub version: Version,
    pub roles: u8,
}

/// A cgroup found by the walk: on which sources it exists, and its cgroup id on the
/// cpu hierarchy (the key of the eBPF probe's maps).
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub present: u32,
    pub cpu_ino: Option<u64>,
}

/// Walks every source from the configured subtree, merging by relative path (`""`
/// for the hierarchy root, else `/a/b`). Most cgroups are leaves: the walker tells
/// them from their parent's listing and never opens them; an exclude pattern ending
/// in `*` prunes its subtree; the subtree root missing on a hierarchy is not an
/// error, other errors below it are counted.
pub(crate) fn walk(
    sources: &[Source],
    config: &Config,
    want_ino: bool,
    reader: &mut FileReader,
) -> BTreeMap<String, Node> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let root_rel = if config.cgroup_root.is_root() {
        String::new()
    } else {
        format!("/{}", config.cgroup_root.as_str())
    };
    for (si, src) in sources.iter().enumerate() {
        let ino_here = want_ino && src.roles & ROLE_CPU != 0;
        let top = format!("{}{root_rel}", src.mount_point);
        // The subtree root missing on this hierarchy: nothing to export there.
        let _ = Walk::new(top).max_depth(config.max_depth).run(
            |e| {
                let mut rel = String::with_capacity(root_rel.len() + 1 + e.rel.len());
                rel.push_str(&root_rel);
                if !e.rel.is_empty() {
                    rel.push('/');
                    rel.push_str(e.rel);
                }
                let prune = config.prunes(if rel.is_empty() { "/" } else { &rel });
                mark(&mut nodes, rel, si, ino_here.then_some(e.ino));
                if prune { Visit::Skip } else { Visit::Descend }
            },
            |_, err| reader.count_io(&err),
        );
    }
    nodes
}

/// Records that cgroup `rel` exists on source `si` (with its inode on the cpu source).
pub(crate) fn mark(
    nodes: &mut BTreeMap<String, Node>,
    rel: String,
    si: usize,
    cpu_ino: Option<u64>,
) {
    let node = match nodes.get_mut(&rel) {
        Some(n) => n,
        None => nodes.entry(rel).or_default(),
    };
    node.present |= 1 << si;
    if cpu_ino.is_some() {
        node.cpu_ino = cpu_ino;
    }
}
