//! `cgctl ls`: the cgroup tree with its processes, the hierarchies of a v1 or hybrid
//! host merged by relative path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cgctl::cli::LsArgs;
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

fn add(node: &mut Node, dir: &Path, label: &str, depth: Option<usize>, procs: bool) {
    node.hierarchies.push(label.to_owned());
    if procs && let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        node.pids
            .extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if depth == Some(0) {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        // cgroupfs holds only files and directories; symlinks are never followed.
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let child = node.children.entry(name.clone()).or_insert_with(|| Node {
            path: if node.path == "/" || node.path.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", node.path)
            },
            ..Node::default()
        });
        add(child, &e.path(), label, depth.map(|d| d - 1), procs);
    }
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
