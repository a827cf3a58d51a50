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

/// `FileReader::read_record` stops at the first short read; that is right for every
/// cgroup control file the kernel prints in one record, which is all of them but the
/// pid lists. Checked on real cgroupfs, every hierarchy the lane has: each readable
/// file of a populated cgroup and of the hierarchy's root reads the same both ways
/// (files whose values move between two reads, such as usage counters, are compared
/// by their keys and line count).
#[test]
fn one_record_reads_match_reads_to_the_end_on_every_control_file() {
    let s = Scratch::new();
    let mut procs = Vec::new();
    for c in [
        Controller::Cpu,
        Controller::Memory,
        Controller::Pids,
        Controller::Io,
    ] {
        if s.h.mount_for(c).is_some() {
            let cg = s.create(&format!("rec-{}", c.v1_name()), c);
            let p = Proc::sleeper();
            cg.add_process(p.pid()).unwrap();
            procs.push(p);
        }
    }
    let mut dirs = Vec::new();
    for top in s.dirs() {
        for e in std::fs::read_dir(&top).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            }
        }
        // The hierarchy's root: the busiest files of the host.
        dirs.push(top.parent().unwrap().to_path_buf());
        dirs.push(top);
    }
    let shape = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
            .collect()
    };
    let mut r = cgroupkit::reader::FileReader::new();
    let mut checked = 0;
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().unwrap().is_file()
                || ["cgroup.procs", "tasks", "cgroup.threads"].contains(&name.as_str())
            {
                continue;
            }
            // A file may change between two reads (a device's first I/O adds a line
            // to blkio/io stats at the root): a truncating read differs every time,
            // a moving file agrees on some try.
            let mut last = None;
            for _ in 0..5 {
                let Ok(full) = r.read(&dir, &name).map(str::to_owned) else {
                    break;
                };
                let one = r.read_record(&dir, &name).unwrap().to_owned();
                if shape(&one) == shape(&full) {
                    last = None;
                    checked += 1;
                    break;
                }
                last = Some((one, full));
            }
            if let Some((one, full)) = last {
                panic!(
                    "{}/{name}: one-record read differs from the read to the end:\n{one}\n---\n{full}",
                    dir.display()
                );
            }
        }
    }
    assert!(checked > 20, "only {checked} files read");
    drop(procs);
}
