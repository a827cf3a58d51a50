//! `cgctl ls`: the cgroup tree with its processes, the hierarchies of a v1 or hybrid
//! host merged by relative path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cgctl::cli::LsArgs;
use cgroupkit::walk::{Visit, Walk};
use cgroupkit::{CgroupPath, Hierarchy, Layout, Mount, Pid, Procfs, Version};

use crate::cmd::{Failure, Result};
use crate::show::shown;

/// One cgroup of the merged tree.
#[derive(Debug, Default)]
pub struct Node {
    /// Its path relative to the hierarchy roots.
    pub path: String,
    /// The hierarchies it exists on (labels from [`label`]).
    pub hierarchies: Vec<String>,
    /// Processes in it, on any of those hierarchies.
    pub pids: BTreeSet<i32>,
    /// Child cgroups by name.
    pub children: BTreeMap<String, Node>,
}

/// How a hierarchy is named in listings: `cpu,cpuacct`, `name=systemd`, `unified`.
pub fn label(h: &Hierarchy, m: &Mount) -> String {
    match (m.version, &m.name) {
        (Version::V1, Some(n)) => format!("name={n}"),
        (Version::V1, None) => m
            .controllers
            .iter()
            .map(|c| c.v1_name())
            .collect::<Vec<_>>()
            .join(","),
        (Version::V2, _) if h.layout() == Layout::Hybrid => "unified".to_owned(),
        (Version::V2, _) => "v2".to_owned(),
    }
}

/// The tree under `top` on every mount `keep` accepts, at most `depth` levels deep,
/// with the processes of each cgroup when `procs` is set. Errors if `top` exists on
/// none of them.
pub fn merged(
    h: &Hierarchy,
    top: &CgroupPath,
    depth: Option<usize>,
    procs: bool,
    keep: impl Fn(&Mount) -> bool,
) -> Result<Node> {
    let mut root = Node {
        path: top.to_string(),
        ..Node::default()
    };
    let mut found = false;
    for m in h.mounts().iter().filter(|m| keep(m)) {
        let dir = top.under(&m.mount_point);
        if dir.is_dir() {
            found = true;
            add(&mut root, &dir, &label(h, m), depth, procs);
        }
    }
    if !found {
        return Err(Failure::from(cgroupkit::Error::NotFound {
            path: top.to_string(),
        }));
    }
    Ok(root)
}

/// Adds the tree under `dir` (one hierarchy, labelled `label`) to `root`, through
/// cgroupkit's walker.
fn add(root: &mut Node, dir: &Path, label: &str, depth: Option<usize>, procs: bool) {
    // A cgroup removed meanwhile, or one we may not list, leaves a gap, not an error.
    let _ = Walk::new(dir).max_depth(depth).run(
        |e| {
            let mut node = &mut *root;
            for name in e.rel.split('/').filter(|n| !n.is_empty()) {
                let parent_path = node.path.clone();
                node = node
                    .children
                    .entry(name.to_owned())
                    .or_insert_with(|| Node {
                        path: if parent_path == "/" || parent_path.is_empty() {
                            name.to_owned()
                        } else {
                            format!("{parent_path}/{name}")
                        },
                        ..Node::default()
                    });
            }
            node.hierarchies.push(label.to_owned());
            if procs {
                let d = if e.rel.is_empty() {
                    dir.to_path_buf()
                } else {
                    dir.join(e.rel)
                };
                if let Ok(text) = cgroupkit::reader::read_string(&d.join("cgroup.procs")) {
                    node.pids
                        .extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            }
            Visit::Descend
        },
        |_, _| {},
    );
}

/// `cgctl ls`.
pub fn ls(a: LsArgs) -> Result<()> {
    let h = Hierarchy::detect()?;
    let top = match &a.cgroup {
        Some(n) => CgroupPath::new(n)?,
        None => CgroupPath::root(),
    };
    let tree = merged(&h, &top, a.depth, true, |_| true)?;
    let procfs = Procfs::default();
    let show_labels = h.mounts().len() > 1;
    let mut out = String::new();
    let top_name = if top.is_root() {
        "/".to_owned()
    } else {
        top.to_string()
    };
    line(&mut out, "", &top_name, &tree, show_labels);
    render(&mut out, &tree, "", &procfs, show_labels);
    print!("{out}");
    Ok(())
}

fn line(out: &mut String, prefix: &str, name: &str, n: &Node, show_labels: bool) {
    out.push_str(prefix);
    out.push_str(&shown(name));
    if show_labels {
        out.push_str("  [");
        out.push_str(&n.hierarchies.join(" "));
        out.push(']');
    }
    out.push('\n');
}

fn render(out: &mut String, n: &Node, indent: &str, procfs: &Procfs, show_labels: bool) {
    let total = n.pids.len() + n.children.len();
    let mut i = 0;
    for &pid in &n.pids {
        i += 1;
        let branch = if i == total { "└─" } else { "├─" };
        let comm = Pid::new(i64::from(pid))
            .ok()
            .and_then(|p| procfs.stat(p).ok())
            .map_or_else(|| "?".to_owned(), |s| s.comm);
        out.push_str(&format!("{indent}{branch}{pid} {}\n", shown(&comm)));
    }
    for (name, c) in &n.children {
        i += 1;
        let last = i == total;
        line(
            out,
            &format!("{indent}{}", if last { "└─" } else { "├─" }),
            name,
            c,
            show_labels,
        );
        let deeper = format!("{indent}{}", if last { "  " } else { "│ " });
        render(out, c, &deeper, procfs, show_labels);
    }
}
