//! cgroupkit's walker and /proc/PID/cgroup on real cgroupfs (v1 on the host lane,
//! cgroup2 in the VM lane): kernfs link counts tell leaves, inodes are cgroup ids,
//! pruning and depth hold, and a process is found in the cgroup it was moved to.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::MetadataExt;

use cgroupkit::walk::{Visit, Walk};
use cgroupkit::{Controller, Procfs};
use common::{Proc, Scratch};

#[test]
fn walks_a_real_tree_with_leaves_from_link_counts() {
    let s = Scratch::new();
    for rel in ["a", "a/b", "a/b/c", "a/d", "e", "skip", "skip/x"] {
        s.create(rel, Controller::Pids);
    }
    let top =
        s.h.mount_for(Controller::Pids)
            .unwrap()
            .mount_point
            .join(&s.name);
    let mut seen = Vec::new();
    Walk::new(&top)
        .run(
            |e| {
                let dir = if e.rel.is_empty() {
                    top.clone()
                } else {
                    top.join(e.rel)
                };
                // The inode is the cgroup id, the same stat shows.
                assert_eq!(e.ino, std::fs::metadata(&dir).unwrap().ino(), "{}", e.rel);
                // kernfs: a leaf has link count 2, and the walker said so.
                let leaf = std::fs::metadata(&dir).unwrap().nlink() == 2;
                if e.depth > 0 {
                    assert_eq!(e.leaf, leaf, "{}", e.rel);
                }
                seen.push(e.rel.to_owned());
                if e.rel == "skip" {
                    Visit::Skip
                } else {
                    Visit::Descend
                }
            },
            |rel, err| panic!("{rel}: {err}"),
        )
        .unwrap();
    seen.sort();
    assert_eq!(seen, ["", "a", "a/b", "a/b/c", "a/d", "e", "skip"]);
    let mut two = Walk::new(&top).max_depth(Some(1)).collect().unwrap();
    two.sort();
    assert_eq!(two, ["", "a", "e", "skip"]);
}

#[test]
fn finds_the_cgroup_a_process_was_moved_to() {
    let s = Scratch::new();
    let cg = s.create("member", Controller::Pids);
    let p = Proc::sleeper();
    cg.add_process(p.pid()).unwrap();
    let found = Procfs::default()
        .cgroup_of(p.pid(), &s.h, Controller::Pids)
        .unwrap();
    assert_eq!(found, Some(s.path("member")));
    drop(p);
}
