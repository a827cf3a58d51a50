//! Which cgroups a scrape exports: the hierarchies it reads (sources) and the walk
//! of each through cgroupkit's walker, merged by relative path.

use std::collections::HashMap;
use std::path::Path;

use cgroupkit::Version;
use cgroupkit::walk::{Visit, Walk};
use probes::iter::{
    Bandwidth, CgroupIter, CgroupStats, CpuLimits, CpuUsage, IterLink, Memory, PressureTotals,
};

use crate::read::FileReader;
use crate::{Config, ErrorKind};

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
    /// Sources (bits as in `present`) whose walk was the BPF cgroup iterator: their
    /// values in `vals` replace the files they cover.
    pub iter: u32,
    pub vals: IterVals,
    /// Its cgroup id on the processes source, from the iterator's walk of it.
    pub procs_ino: Option<u64>,
}

/// The cgroups of a walk: an index by path while merging, the nodes in a list (a
/// node is a few hundred bytes: sorting them, or moving them through a hash map's
/// growth, copied megabytes a scrape).
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    index: HashMap<String, usize>,
    list: Vec<Node>,
}

impl Nodes {
    /// The (path, node) pairs sorted by path.
    pub fn sorted(self) -> (Vec<(String, usize)>, Vec<Node>) {
        let mut order: Vec<(String, usize)> = self.index.into_iter().collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        (order, self.list)
    }
}

/// What the cgroup iterator gave for one cgroup, merged over the sources (each
/// source serves different controllers).
#[derive(Debug, Default)]
pub(crate) struct IterVals {
    pub bandwidth: Option<Bandwidth>,
    pub cpu_limits: Option<CpuLimits>,
    pub cpu_usage: Option<CpuUsage>,
    pub memory: Option<Memory>,
    pub oom_kills: Option<u64>,
    pub pressure: Option<PressureTotals>,
}

/// The loaded cgroup iterator and its link per source (`None`: that source is walked
/// through directories, e.g. the subtree root was missing when the links were made).
#[derive(Debug)]
pub(crate) struct IterState {
    pub it: CgroupIter,
    pub links: Vec<std::sync::Mutex<Option<IterLink>>>,
}

impl IterState {
    /// Links `it` to every source's subtree root that exists now.
    pub fn new(it: CgroupIter, sources: &[Source], config: &Config) -> IterState {
        let links = sources
            .iter()
            .map(|src| std::sync::Mutex::new(it.link(top(src, config)).ok()))
            .collect();
        IterState { it, links }
    }
}

fn root_rel(config: &Config) -> String {
    if config.cgroup_root.is_root() {
        String::new()
    } else {
        format!("/{}", config.cgroup_root.as_str())
    }
}

fn top(src: &Source, config: &Config) -> String {
    format!("{}{}", src.mount_point, root_rel(config))
}

/// Walks source `si` with the iterator: false when it cannot (no link, or the walk
/// failed: counted), and the caller walks the directories instead.
fn iter_walk(
    st: &IterState,
    si: usize,
    src: &Source,
    config: &Config,
    want_ino: bool,
    nodes: &mut Nodes,
    reader: &mut FileReader,
) -> bool {
    let Some(slot) = st.links.get(si) else {
        return false;
    };
    let mut link = slot.lock().unwrap_or_else(|p| p.into_inner());
    let root_rel = root_rel(config);
    let ino_here = want_ino && src.roles & ROLE_CPU != 0;
    for attempt in 0..2 {
        if link.is_none() {
            // Not linked yet (the subtree root was missing), or its cgroup was
            // removed (and maybe made again): link anew, else walk directories.
            *link = st.it.link(top(src, config)).ok();
        }
        let Some(l) = link.as_ref() else {
            return false;
        };
        // Pruned subtrees, as the directory walk skips them (pre-order: a pruned
        // cgroup comes before its descendants).
        let mut pruned: Vec<String> = Vec::new();
        let mut seen = 0usize;
        let mut rel = String::new();
        // Each record is merged as it comes: no list of a whole walk is kept.
        let res = st.it.walk_with(l, |s| {
            seen += 1;
            add_record(
                nodes,
                &mut pruned,
                &mut rel,
                s,
                si,
                src,
                config,
                &root_rel,
                ino_here,
            );
        });
        match res {
            Ok(()) if seen == 0 && attempt == 0 => *link = None,
            Ok(()) => break,
            Err(_) => {
                reader.errors[ErrorKind::Ebpf.index()] += 1;
                return false;
            }
        }
    }
    true
}

/// Merges one record of the iterator's walk of source `si` into `nodes`; `rel` is a
/// buffer for its path (kept between records: no allocation per record).
#[allow(clippy::too_many_arguments)] // the walk's state, passed down from iter_walk
fn add_record(
    nodes: &mut Nodes,
    pruned: &mut Vec<String>,
    rel: &mut String,
    s: CgroupStats,
    si: usize,
    src: &Source,
    config: &Config,
    root_rel: &str,
    ino_here: bool,
) {
    let depth = if s.path.is_empty() {
        0
    } else {
        s.path.bytes().filter(|&b| b == b'/').count() + 1
    };
    if config.max_depth.is_some_and(|d| depth > d) {
        return;
    }
    rel.clear();
    rel.push_str(root_rel);
    if !s.path.is_empty() {
        rel.push('/');
        rel.push_str(&s.path);
    }
    if pruned
        .iter()
        .any(|p| rel.starts_with(p.as_str()) && rel[p.len()..].starts_with('/'))
    {
        return;
    }
    if config.prunes(if rel.is_empty() { "/" } else { rel }) {
        pruned.push(rel.clone());
    }
    let n = mark(nodes, rel, si, ino_here.then_some(s.id));
    n.iter |= 1 << si;
    let v = &mut n.vals;
    if src.roles & ROLE_CPU != 0 {
        v.bandwidth = s.bandwidth;
        v.cpu_limits = s.cpu_limits;
    }
    if src.roles & ROLE_CPUACCT != 0 {
        v.cpu_usage = s.cpu_usage;
    }
    if src.roles & ROLE_MEMORY != 0 {
        v.memory = s.memory;
        v.oom_kills = s.oom_kills;
    }
    if src.roles & ROLE_PROCS != 0 {
        n.procs_ino = Some(s.id);
    }
    if src.roles & ROLE_PSI != 0 {
        // The hierarchy's root keeps the system's group, which lives on when
        // cgroup PSI is off (cgroup_disable=pressure) and the files are not
        // shown: taken only where the root shows its file.
        v.pressure = s
            .pressure
            .filter(|_| s.level != 0 || Path::new(&src.mount_point).join("cpu.pressure").exists());
    }
}

/// Walks every source from the configured subtree, merging by relative path (`""`
/// for the hierarchy root, else `/a/b`), and returns the cgroups sorted by it. Most
/// cgroups are leaves: the walker tells them from their parent's listing and never
/// opens them; an exclude pattern ending in `*` prunes its subtree; the subtree root missing on a hierarchy is not an
/// error, other errors below it are counted. `iter_walks` counts the sources walked
/// with the cgroup iterator.
pub(crate) fn walk(
    sources: &[Source],
    config: &Config,
    want_ino: bool,
    iter: Option<&IterState>,
    reader: &mut FileReader,
    iter_walks: &mut usize,
) -> Nodes {
    // A hash map while merging (each of the 5 walks of a v1 host looks every cgroup
    // up; a B-tree compared ~10 long common-prefix paths per lookup), sorted once.
    let mut nodes = Nodes::default();
    let root_rel = root_rel(config);
    for (si, src) in sources.iter().enumerate() {
        if let Some(st) = iter
            && iter_walk(st, si, src, config, want_ino, &mut nodes, reader)
        {
            *iter_walks += 1;
            continue;
        }
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
                mark(&mut nodes, &rel, si, ino_here.then_some(e.ino));
                if prune { Visit::Skip } else { Visit::Descend }
            },
            |_, err| reader.count_io(&err),
        );
    }
    nodes
}

/// Records that cgroup `rel` exists on source `si` (with its inode on the cpu source),
/// and returns its node.
pub(crate) fn mark<'a>(
    nodes: &'a mut Nodes,
    rel: &str,
    si: usize,
    cpu_ino: Option<u64>,
) -> &'a mut Node {
    // Allocates the key only for a cgroup not seen yet (the first walk's).
    let i = match nodes.index.get(rel) {
        Some(&i) => i,
        None => {
            nodes.index.insert(rel.to_owned(), nodes.list.len());
            nodes.list.push(Node::default());
            nodes.list.len() - 1
        }
    };
    let node = &mut nodes.list[i];
    node.present |= 1 << si;
    if cpu_ino.is_some() {
        node.cpu_ino = cpu_ino;
    }
    node
}
