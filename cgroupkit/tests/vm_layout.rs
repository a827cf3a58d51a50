//! Checks the cgroup mount layout the tests run under.
//!
//! Everywhere: mountinfo lists a cgroup2 mount (hybrid hosts have one at
//! /sys/fs/cgroup/unified). In the VM lane (`CGROUPKIT_LANE=vm-*`, set by
//! `cargo xtask vm-test`) the layout must be pure cgroup v2: exactly one cgroup2 mount, at
//! /sys/fs/cgroup, no v1 hierarchy, and the cpu controller available; a lane that silently
//! booted into another layout would make every v2 test there meaningless.

use std::error::Error;
use std::fs;

/// (mount point, filesystem type) of every cgroup or cgroup2 mount in this mount namespace.
fn cgroup_mounts() -> std::io::Result<Vec<(String, String)>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mountinfo
        .lines()
        .filter_map(|line| {
            // proc(5): fields up to the optional ones, then " - fstype source options".
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let fstype = post.split(' ').next()?;
            matches!(fstype, "cgroup" | "cgroup2")
                .then(|| (mount_point.to_owned(), fstype.to_owned()))
        })
        .collect())
}

#[test]
fn cgroup_layout_matches_lane() -> Result<(), Box<dyn Error>> {
    let mounts = cgroup_mounts()?;
    assert!(
        mounts.iter().any(|(_, fstype)| fstype == "cgroup2"),
        "no cgroup2 mount in /proc/self/mountinfo: {mounts:?}"
    );

    let lane = std::env::var("CGROUPKIT_LANE").unwrap_or_default();
    if lane.starts_with("vm-") {
        assert_eq!(
            mounts,
            [("/sys/fs/cgroup".to_owned(), "cgroup2".to_owned())],
            "lane {lane}: expected cgroup2 alone at /sys/fs/cgroup"
        );
        let controllers = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")?;
        assert!(
            controllers.split_whitespace().any(|c| c == "cpu"),
            "lane {lane}: cpu controller missing: {controllers:?}"
        );
    }
    Ok(())
}
