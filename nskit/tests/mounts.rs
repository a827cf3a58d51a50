//! Host and VM lane (root): overlay, pivot_root, confined resolution, bind/read-only/
//! unmount, the fd-based mount API. Every mount is made by a child in its own mount
//! namespace (this binary re-executed as `helper`) and disappears with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{child as helper_child, fact, run};
use nskit::mount::{self, DetachedMount, Overlay, Propagation, Root};
use nskit::{Error, MountSpec, Namespace, NsHandle, Spawn};

fn dir_env() -> PathBuf {
    std::env::var_os("NSKIT_DIR").unwrap().into()
}

fn mountinfo_has(path: &Path) -> bool {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn helper() {
    let Ok(mode) = std::env::var("NSKIT_HELPER") else {
        return; // run directly, it has nothing to do (the assertions are in the tests)
    };
    match mode.as_str() {
        "overlay" => {
            let d = dir_env();
            let merged = d.join("merged");
            // The VM lane loads the overlay module, the host has it: no skipping.
            Overlay::new()
                .lower(d.join("lower"))
                .upper(d.join("upper"), d.join("work"))
                .mount(&merged)
                .unwrap();
            fact("merged", names(&merged).join(","));
            std::fs::write(merged.join("new.txt"), "new").unwrap();
            std::fs::remove_file(merged.join("a.txt")).unwrap();
            fact("merged_after", names(&merged).join(","));
        }
        "many_lowers" => {
            let d = dir_env();
            let mut o = Overlay::new();
            let n: usize = std::env::var("NSKIT_N").unwrap().parse().unwrap();
            for i in 0..n {
                o.lower(d.join(format!(
                    "layer-with-a-rather-long-name-to-fill-the-page-{i:04}"
                )));
            }
            let merged = d.join("merged");
            o.mount(&merged).unwrap();
            fact("files", names(&merged).len());
            fact(
                "top",
                std::fs::read_to_string(merged.join("shadowed")).unwrap(),
            );
        }
        "overlay_bytes" => {
            let d = dir_env();
            let merged = d.join("merged");
            let (lower, upper, work) = non_utf8_layers(&d);
            Overlay::new()
                .lower(&lower)
                .upper(&upper, &work)
                .mount(&merged)
                .unwrap();
            fact("merged", names(&merged).join(","));
            std::fs::write(merged.join("new.txt"), "new").unwrap();
        }
        "pivot" => {
            // Run as /helper inside the new root, after pivot_root.
            fact("root", names(Path::new("/")).join(","));
            let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let points: Vec<&str> = mi.lines().filter_map(|l| l.split(' ').nth(4)).collect();
            fact("mounts", points.join(","));
            let root = std::fs::metadata("/").unwrap();
            let up = std::fs::metadata("/..").unwrap();
            fact(
                "dotdot_is_root",
                root.ino() == up.ino() && root.dev() == up.dev(),
            );
            fact(
                "outside_visible",
                Path::new(&std::env::var("NSKIT_OUTSIDE").unwrap()).exists(),
            );
        }
        "confined" => {
            let d = dir_env();
            let root = Root::open(d.join("rootfs")).unwrap();
            // An absolute symlink to a host directory: inside the root it names
            // rootfs/<that path>, which does not exist.
            let e = MountSpec::tmpfs("/abs").mount_in(&root).unwrap_err();
            fact("abs", format!("{:?}", e.raw_os_error()));
            // A relative symlink climbing out: `..` stops at the root.
            MountSpec::tmpfs("/rel").mount_in(&root).unwrap();
            fact("victim_mounted", mountinfo_has(&d.join("victim")));
            fact("inner_mounted", mountinfo_has(&d.join("rootfs/victim")));
            // create_dir_all through the symlink stays inside too.
            root.create_dir_all("/rel/sub/dir").unwrap();
            fact("inner_dir", d.join("rootfs/victim/sub/dir").is_dir());
            fact("victim_dir", d.join("victim/sub").exists());
        }
        "bind" => {
            let d = dir_env();
            let (src, dst) = (d.join("src"), d.join("dst"));
            MountSpec::bind(&src, &dst).readonly().mount().unwrap();
            let w = std::fs::write(dst.join("x"), "x").unwrap_err();
            fact("ro_write", format!("{:?}", w.raw_os_error()));
            fact("seen", names(&dst).join(","));
            mount::unmount(&dst, false).unwrap();
            // rbind through open_tree + move_mount, then read-only via mount_setattr.
            MountSpec::tmpfs(src.join("sub")).mount().unwrap();
            mount::bind(&src, &dst, true).unwrap();
            fact("rbind_sub", mountinfo_has(&dst.join("sub")));
            mount::remount_readonly(&dst, true).unwrap();
            let w = std::fs::write(dst.join("sub/y"), "y").unwrap_err();
            fact("rec_ro_write", format!("{:?}", w.raw_os_error()));
            // Busy: a plain unmount is refused, a lazy detach is not.
            let busy = std::fs::File::open(dst.join("sub")).unwrap();
            let e = mount::unmount(dst.join("sub"), false).unwrap_err();
            fact("busy", format!("{:?}", e.raw_os_error()));
            mount::unmount(dst.join("sub"), true).unwrap();
            fact("detached", !mountinfo_has(&dst.join("sub")));
            drop(busy);
            // Propagation: "/" was made private by Spawn; a shared mount shows a peer group.
            mount::set_propagation(&dst, Propagation::Shared, false).unwrap();
            let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let line = mi
                .lines()
                .find(|l| l.split(' ').nth(4) == dst.to_str())
                .unwrap();
            fact("shared", line.contains("shared:"));
            let root_line = mi
                .lines()
                .find(|l| l.split(' ').nth(4) == Some("/"))
                .unwrap();
            fact("root_private", !root_line.contains("shared:"));
            // The special filesystems.
            for (i, m) in [
                MountSpec::sysfs(d.join("s0")),
                MountSpec::devpts(d.join("s1")),
                MountSpec::mqueue(d.join("s2")),
                MountSpec::proc(d.join("s3")),
            ]
            .into_iter()
            .enumerate()
            {
                m.mount().unwrap();
                fact(
                    &format!("special{i}"),
                    mountinfo_has(&d.join(format!("s{i}"))),
                );
            }
        }
        "bindflags" => {
            let d = dir_env();
            // Spawn's child made dst (an rbind of src, whose sub its first mount made)
            // nosuid,nodev; now the same by MountSpec::mount, a plain bind.
            fact("spawn_top", mount_opts(&d.join("dst")));
            fact("spawn_sub", mount_opts(&d.join("dst/sub")));
            MountSpec::bind(d.join("src"), d.join("dst2"))
                .flags(nskit::MsFlags::MS_NOSUID | nskit::MsFlags::MS_NOEXEC)
                .mount()
                .unwrap();
            fact("classic_top", mount_opts(&d.join("dst2")));
        }
        "fdapi" => {
            let d = dir_env();
            let m = DetachedMount::new_fs("tmpfs", &[("size", Some("1m")), ("mode", Some("0700"))])
                .unwrap();
            m.attach(d.join("t")).unwrap();
            let st = std::fs::metadata(d.join("t")).unwrap();
            fact("tmpfs_mode", format!("{:o}", st.mode() & 0o7777));
            // Idmapped bind of src through the holder's user namespace.
            let pid: i32 = std::env::var("NSKIT_TARGET").unwrap().parse().unwrap();
            let userns = NsHandle::open(pid, Namespace::USER).unwrap();
            let m = DetachedMount::clone_tree(d.join("src"), false).unwrap();
            match m.idmap(&userns) {
                Ok(()) => {
                    m.attach(d.join("dst")).unwrap();
                    let st = std::fs::metadata(d.join("dst/file")).unwrap();
                    fact("idmapped_uid", st.uid());
                }
                Err(e) => fact("idmap_error", format!("{e}: {:?}", e.raw_os_error())),
            }
        }
        "hold" => {}
        _ => panic!("unknown helper mode {mode}"),
    }
    common::hold();
}

/// The per-mount options (mountinfo's sixth field) of the topmost mount at `at`.
fn mount_opts(at: &Path) -> String {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .rfind(|l| l.split(' ').nth(4) == at.to_str())
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn bind_gets_its_per_mount_flags_without_read_only() {
    common::assert_root();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for s in ["src", "src/sub", "dst", "dst2"] {
        std::fs::create_dir(d.join(s)).unwrap();
    }
    // A bind's nosuid/nodev/noexec used to be applied only along with `ro`: a
    // writable volume kept suid and dev. The rbind's submount gets them too where
    // mount_setattr (5.12) is there: both lanes' kernels have it.
    let f = run(helper_child("bindflags")
        .namespaces(Namespace::MOUNT)
        .env("NSKIT_DIR", d)
        .mount(MountSpec::tmpfs(d.join("src/sub")))
        .mount(
            MountSpec::rbind(d.join("src"), d.join("dst"))
                .flags(nskit::MsFlags::MS_NOSUID | nskit::MsFlags::MS_NODEV),
        ));
    for k in ["spawn_top", "spawn_sub"] {
        let o: Vec<&str> = f[k].split(',').collect();
        assert!(o.contains(&"rw"), "{k}: {o:?}");
        assert!(o.contains(&"nosuid") && o.contains(&"nodev"), "{k}: {o:?}");
    }
    let o: Vec<&str> = f["classic_top"].split(',').collect();
    assert!(o.contains(&"rw"), "classic: {o:?}");
    assert!(
        o.contains(&"nosuid") && o.contains(&"noexec"),
        "classic: {o:?}"
    );
    assert!(!mountinfo_has(&d.join("dst")), "the mount leaked out");
}

/// Layer directories whose names are not UTF-8 (lower, upper, work), with a UTF-8
/// twin of each that a lossy conversion would name instead.
fn non_utf8_layers(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use std::os::unix::ffi::OsStrExt;
    let n = |b: &[u8]| d.join(std::ffi::OsStr::from_bytes(b));
    (n(b"lower-\xff"), n(b"upper-\xfe"), n(b"work-\xfd"))
}

fn in_mount_ns(mode: &str, dir: &Path) -> std::collections::BTreeMap<String, String> {
    run(helper_child(mode)
        .namespaces(Namespace::MOUNT)
        .env("NSKIT_DIR", dir))
}

#[test]
fn overlay_whiteout_hides_lower_and_writes_land_in_upper() {
    common::assert_root();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for s in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(d.join(s)).unwrap();
    }
    std::fs::write(d.join("lower/a.txt"), "a").unwrap();
    std::fs::write(d.join("lower/gone.txt"), "gone").unwrap();
    // An overlay whiteout: a 0/0 character device in the upper layer.
    nix::sys::stat::mknod(
        &d.join("upper/gone.txt"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let f = in_mount_ns("overlay", d);
    assert_eq!(f["merged"], "a.txt", "the whiteout hides gone.txt");
    assert_eq!(f["merged_after"], "new.txt");
    assert_eq!(
        std::fs::read_to_string(d.join("upper/new.txt")).unwrap(),
        "new"
    );
    assert!(
        !d.join("lower/new.txt").exists(),
        "a write reached the lower layer"
    );
    assert!(
        d.join("lower/a.txt").exists(),
        "a delete reached the lower layer"
    );
    let wh = std::fs::symlink_metadata(d.join("upper/a.txt")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "no whiteout for a.txt"
    );
    assert!(!mountinfo_has(&d.join("merged")), "the overlay leaked out");
}

/// Layer paths that are not UTF-8 reach the kernel as they are (fsconfig on 6.8+, the
/// mount(2) option string before): a lossy conversion named `lower-\u{fffd}`, which
/// does not exist, or the UTF-8 twin made here, whose content must not show.
#[test]
fn overlay_layers_with_non_utf8_names() {
    common::assert_root();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let (lower, upper, work) = non_utf8_layers(d);
    for p in [&lower, &upper, &work, &d.join("merged")] {
        std::fs::create_dir(p).unwrap();
        // The directory a lossy conversion would give.
        let twin = PathBuf::from(p.to_string_lossy().into_owned());
        if twin != *p {
            std::fs::create_dir(&twin).unwrap();
            std::fs::write(twin.join("wrong.txt"), "").unwrap();
        }
    }
    std::fs::write(lower.join("a.txt"), "a").unwrap();
    let f = in_mount_ns("overlay_bytes", d);
    assert_eq!(
        f["merged"], "a.txt",
        "the wrong lower directory was mounted"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("new.txt")).unwrap(),
        "new"
    );
    assert!(!mountinfo_has(&d.join("merged")), "the overlay leaked out");
}

#[test]
fn overlay_with_many_lowers_beyond_the_option_page() {
    common::assert_root();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let n = 150;
    let mut total = 0;
    for i in 0..n {
        let l = d.join(format!(
            "layer-with-a-rather-long-name-to-fill-the-page-{i:04}"
        ));
        total += l.as_os_str().len() + 1;
        std::fs::create_dir(&l).unwrap();
        std::fs::write(l.join(format!("f{i}")), "").unwrap();
        std::fs::write(l.join("shadowed"), format!("{i}")).unwrap();
    }
    assert!(
        total > 4096,
        "the layer list must exceed one page ({total} bytes)"
    );
    std::fs::create_dir(d.join("merged")).unwrap();
    let f = run(helper_child("many_lowers")
        .namespaces(Namespace::MOUNT)
        .env("NSKIT_DIR", d)
        .env("NSKIT_N", n.to_string()));
    assert_eq!(f["files"], (n + 1).to_string());
    assert_eq!(f["top"], "0", "the first lower is the top layer");
}

#[test]
fn pivot_root_leaves_no_path_to_the_old_root() {
    common::assert_root();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    std::fs::create_dir_all(root.join("proc")).unwrap();
    // The test binary (static: the workspace builds static musl binaries) is bound
    // in, not copied: a copy is a file written by this process, and a child that
    // another test thread cloned meanwhile holds that write fd until its exec, so the
    // exec of the copy failed with ETXTBSY now and then under load.
    std::fs::File::create(root.join("helper")).unwrap();
    let outside = t.path().join("outside-marker");
    std::fs::write(&outside, "x").unwrap();
    let mut s = Spawn::new("/helper");
    s.args(["--exact", "helper", "--nocapture", "--test-threads=1", "-q"])
        .env("NSKIT_HELPER", "pivot")
        .env("NSKIT_OUTSIDE", &outside)
        .namespaces(Namespace::MOUNT | Namespace::PID)
        .root(&root)
        .mount(MountSpec::proc("/proc"))
        .mount(MountSpec::bind(std::env::current_exe().unwrap(), "/helper").readonly())
        .pivot_root(true)
        .current_dir("/");
    if common::root_is_rootfs() {
        // The VM lane runs from the initramfs: its rootfs cannot be pivoted away from.
        let e = s.spawn().unwrap_err();
        assert!(
            matches!(&e, Error::Child { step, .. } if step.starts_with("pivot_root")),
            "{e:?}"
        );
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        return;
    }
    let f = run(&mut s);
    assert_eq!(f["root"], "helper,proc");
    assert_eq!(
        f["mounts"], "/,/proc,/helper",
        "only the new root, its /proc and the helper are mounted"
    );
    assert_eq!(f["dotdot_is_root"], "true");
    assert_eq!(f["outside_visible"], "false");
}

#[test]
fn confined_resolution_keeps_symlinks_inside_the_root() {
    common::assert_root();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let rootfs = d.join("rootfs");
    std::fs::create_dir_all(rootfs.join("victim")).unwrap();
    std::fs::create_dir(d.join("victim")).unwrap();
    std::os::unix::fs::symlink(d.join("victim"), rootfs.join("abs")).unwrap();
    std::os::unix::fs::symlink("../victim", rootfs.join("rel")).unwrap();
    let f = in_mount_ns("confined", d);
    assert_eq!(f["abs"], format!("{:?}", Some(libc::ENOENT)));
    assert_eq!(f["victim_mounted"], "false", "a mount escaped the root");
    assert_eq!(f["inner_mounted"], "true");
    assert_eq!(f["victim_dir"], "false");
    assert!(d.join("victim").read_dir().unwrap().next().is_none());

    // The same through Spawn::root: the child refuses the escaping target.
    let e = Spawn::new("true")
        .namespaces(Namespace::MOUNT)
        .root(&rootfs)
        .mount(MountSpec::tmpfs("/abs"))
        .spawn()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Child { step, .. } if step.contains("RESOLVE_IN_ROOT")),
        "{e:?}"
    );
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert!(!mountinfo_has(&d.join("victim")));
}

#[test]
fn bind_readonly_unmount_detach_propagation() {
    common::assert_root();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for s in ["src", "dst", "src/sub", "s0", "s1", "s2", "s3"] {
        std::fs::create_dir(d.join(s)).unwrap();
    }
    std::fs::write(d.join("src/file"), "x").unwrap();
    let f = in_mount_ns("bind", d);
    assert_eq!(f["ro_write"], format!("{:?}", Some(libc::EROFS)));
    assert_eq!(f["seen"], "file,sub");
    assert_eq!(f["rbind_sub"], "true");
    assert_eq!(f["rec_ro_write"], format!("{:?}", Some(libc::EROFS)));
    assert_eq!(f["busy"], format!("{:?}", Some(libc::EBUSY)));
    assert_eq!(f["detached"], "true");
    assert_eq!(f["shared"], "true");
    assert_eq!(f["root_private"], "true");
    for i in 0..4 {
        assert_eq!(f[&format!("special{i}")], "true", "special{i}");
    }
    assert!(!d.join("dst/file").exists(), "the bind leaked out");
}

#[test]
fn fd_based_mounts_and_idmapped_bind() {
    common::assert_root();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for s in ["t", "src", "dst"] {
        std::fs::create_dir(d.join(s)).unwrap();
    }
    std::fs::write(d.join("src/file"), "x").unwrap();
    // A holder whose user namespace maps 0..65536 inside to 100000.. outside.
    let held = common::Held::start(
        helper_child("none")
            .namespaces(Namespace::USER)
            .uid_map(nskit::IdMap::new(0, 100_000, 65_536))
            .gid_map(nskit::IdMap::new(0, 100_000, 65_536))
            .env("NSKIT_HELPER", "hold"),
    );
    let f = run(helper_child("fdapi")
        .namespaces(Namespace::MOUNT)
        .env("NSKIT_DIR", d)
        .env("NSKIT_TARGET", held.child.pid().to_string()));
    assert_eq!(f["tmpfs_mode"], "700");
    match f.get("idmapped_uid") {
        Some(uid) => assert_eq!(
            uid, "100000",
            "root's file seen as 100000 through the idmap"
        ),
        None => {
            // Idmapped mounts need filesystem support: tmpfs (the VM lane's /tmp) has
            // it only since 6.3.
            let fs = nix::sys::statfs::statfs(d).unwrap().filesystem_type();
            assert!(
                fs == nix::sys::statfs::TMPFS_MAGIC && nskit::kernel_version() < (6, 3),
                "idmap failed: {}",
                f["idmap_error"]
            );
            // ... and then the error is the kernel's refusal, named.
            assert!(f["idmap_error"].contains("MOUNT_ATTR_IDMAP"), "{f:?}");
        }
    }
    assert!(!mountinfo_has(&d.join("t")));
}
