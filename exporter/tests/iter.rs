//! The collector with the BPF cgroup iterator against the collector reading files, on
//! the same cgroups: every series of one is in the other, counters only move forward
//! (files, then iterator, then files again) and gauges stay within what the two file
//! scrapes saw. Host lane (hybrid v1) and VM lane (v2). Needs root, kernel BTF and
//! the object of `cargo xtask build-ebpf`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // tests

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cgroupkit::{Cgroup, CgroupPath, Controller, Hierarchy, Version};
use exporter::{Collector, Config, Format};
use probes::iter::CgroupIter;

const CONTROLLERS: &[Controller] = &[Controller::Cpu, Controller::Memory, Controller::Pids];

/// `exporter-test-<pid>` with children, their processes; all killed and removed on drop.
struct Tree {
    parent: Option<Cgroup>,
    children: Vec<Cgroup>,
    procs: Vec<Child>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
        }
        for p in &mut self.procs {
            let _ = p.wait();
        }
        for c in self.children.drain(..).rev() {
            let _ = c.delete();
        }
        if let Some(p) = self.parent.take()
            && let Err(e) = p.delete()
        {
            eprintln!("cannot remove the test cgroup: {e}");
        }
    }
}

/// Runs `argv` in `cg` (it moves itself in before exec: no RCU wait on v1).
fn spawn_in(cg: &Cgroup, argv: &[&str]) -> Child {
    let files: Vec<CString> = cg
        .dirs()
        .iter()
        // The v2 directory too on a hybrid host: pressure is accounted there.
        .filter(|d| {
            d.version == Version::V2 || d.controllers.iter().any(|c| CONTROLLERS.contains(c))
        })
        .map(|d| {
            let f = if d.version == Version::V1 {
                "tasks"
            } else {
                "cgroup.procs"
            };
            CString::new(d.file(f).into_os_string().into_encoded_bytes()).unwrap()
        })
        .collect();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: between fork and exec only open/write/close on prepared C strings.
    unsafe {
        cmd.pre_exec(move || {
            for f in &files {
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn tree(h: &Hierarchy, name: &str, n: usize) -> Tree {
    let parent = Cgroup::create(h, &CgroupPath::new(name).unwrap(), CONTROLLERS).unwrap();
    let mut t = Tree {
        parent: Some(parent),
        children: Vec::new(),
        procs: Vec::new(),
    };
    for i in 0..n {
        let cg = Cgroup::create(
            h,
            &CgroupPath::new(&format!("{name}/c{i}")).unwrap(),
            CONTROLLERS,
        )
        .unwrap();
        for d in cg.dirs() {
            let has = |c| d.controllers.contains(&c);
            match d.version {
                Version::V1 if has(Controller::Cpu) => {
                    std::fs::write(d.file("cpu.cfs_quota_us"), "2000").unwrap();
                    if i % 5 == 0 {
                        std::fs::write(d.file("cpu.shares"), "256").unwrap();
                    }
                }
                Version::V1 if has(Controller::Memory) && i % 3 == 0 => {
                    std::fs::write(d.file("memory.limit_in_bytes"), "100000000").unwrap();
                }
                Version::V2 if has(Controller::Cpu) => {
                    std::fs::write(d.file("cpu.max"), "2000 100000").unwrap();
                    if i % 5 == 0 {
                        std::fs::write(d.file("cpu.weight"), "25").unwrap();
                    }
                    if i % 3 == 0 {
                        std::fs::write(d.file("memory.max"), "100000000").unwrap();
                    }
                }
                _ => {}
            }
        }
        // Some busy (throttled), most asleep, a few empty.
        let argv: &[&str] = if i < 10 {
            &["sh", "-c", "while :; do :; done"]
        } else {
            &["sleep", "600"]
        };
        if i % 10 != 9 {
            t.procs.push(spawn_in(&cg, argv));
        }
        t.children.push(cg);
    }
    t
}

/// `series -> value` of the cgroup families (self metrics left out).
fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("cgroup_exporter_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn iterator_scrape_equals_file_scrape() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "runs as root");
    let h = Hierarchy::detect().unwrap();
    let name = format!("exporter-test-{}", std::process::id());
    let n = 200;
    let t = tree(&h, &name, n);
    std::thread::sleep(Duration::from_millis(400));
    let config = || Config {
        cgroup_root: CgroupPath::new(&name).unwrap(),
        ..Config::default()
    };
    let files = Collector::new(h.clone(), config()).unwrap();
    let mut with_iter = Collector::new(h.clone(), config()).unwrap();
    let object = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(probes::BUILD_OBJECT);
    with_iter.set_iterator(CgroupIter::from_file(&object).load().unwrap());
    assert!(with_iter.iterator_up());

    let a = files.collect(Format::Text);
    let b_text = with_iter.collect(Format::Text);
    let c = files.collect(Format::Text);
    let (a, b, c) = (series(&a), series(&b_text), series(&c));
    assert!(a.len() > n * 10, "{} series", a.len());
    let keys = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b), "the same series both ways");
    assert_eq!(keys(&a), keys(&c));
    let (mut throttled, mut stalled) = (0, 0);
    for (k, &va) in &a {
        let (vb, vc) = (b[k], c[k]);
        let family = k.split('{').next().unwrap();
        if family.ends_with("_total") {
            assert!(
                va <= vb && vb <= vc,
                "{k}: counter {vb} not within [{va}, {vc}]"
            );
            if family == "container_cpu_cfs_throttled_periods_total" && vb > 0.0 {
                throttled += 1;
            }
            if family == "container_pressure_cpu_waiting_seconds_total" && vb > 0.0 {
                stalled += 1;
            }
        } else {
            let (lo, hi) = (va.min(vc), va.max(vc));
            assert!(
                lo <= vb && vb <= hi,
                "{k}: gauge {vb} not within [{lo}, {hi}]"
            );
        }
    }
    assert!(throttled >= 5, "only {throttled} cgroups throttled");
    for line in [
        "cgroup_exporter_ebpf_iterator_up 1\n",
        "cgroup_exporter_family_source{family=\"container_cpu_cfs_throttled_periods_total\",source=\"ebpf_iterator\"} 1\n",
        "cgroup_exporter_family_source{family=\"container_memory_rss\",source=\"file\"} 1\n",
        "cgroup_exporter_family_source{family=\"container_processes\",source=\"ebpf_iterator\"} 1\n",
        "cgroup_exporter_read_errors_total{kind=\"ebpf\"} 0\n",
    ] {
        assert!(b_text.contains(line), "missing {line:?}");
    }
    // Pressure comes from the iterator where the kernel shows pressure files, and
    // the throttled cgroups' tasks wait runnable: values other than zero compared.
    if h.unified()
        .is_some_and(|u| u.mount_point.join("cpu.pressure").exists())
    {
        assert!(stalled >= 5, "only {stalled} cgroups under CPU pressure");
        let line = "cgroup_exporter_family_source{family=\"container_pressure_cpu_waiting_seconds_total\",source=\"ebpf_iterator\"} 1\n";
        assert!(b_text.contains(line), "missing {line:?}");
    }
    let files_text = files.collect(Format::Text);
    assert!(files_text.contains("cgroup_exporter_ebpf_iterator_up 0\n"));

    // Depth limits and pruning excludes select the same cgroups both ways.
    for cfg in [
        Config {
            max_depth: Some(0),
            ..config()
        },
        Config {
            exclude: vec![format!("/{name}/c1*").parse().unwrap()],
            ..config()
        },
    ] {
        let files = Collector::new(h.clone(), cfg.clone()).unwrap();
        let mut with_iter = Collector::new(h.clone(), cfg).unwrap();
        with_iter.set_iterator(CgroupIter::from_file(&object).load().unwrap());
        let a = series(&files.collect(Format::Text));
        let b = series(&with_iter.collect(Format::Text));
        assert_eq!(keys(&a), keys(&b));
        assert!(!a.is_empty());
    }
    drop(t);
}

/// A subtree root missing when the iterator is set up is linked once it exists: its
/// cgroups are walked by the iterator from the next scrape on.
#[test]
fn a_root_made_later_is_linked_then() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "runs as root");
    let h = Hierarchy::detect().unwrap();
    let name = format!("exporter-test-{}-late", std::process::id());
    let config = Config {
        cgroup_root: CgroupPath::new(&name).unwrap(),
        ..Config::default()
    };
    let mut c = Collector::new(h.clone(), config).unwrap();
    let object = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(probes::BUILD_OBJECT);
    c.set_iterator(CgroupIter::from_file(&object).load().unwrap());
    assert!(!c.iterator_up(), "nothing to link yet");
    let before = c.collect(Format::Text);
    assert!(
        before.contains("cgroup_exporter_ebpf_iterator_up 0\n"),
        "{before}"
    );
    assert!(!before.contains(&format!("id=\"/{name}\"")));
    let t = tree(&h, &name, 3);
    let after = c.collect(Format::Text);
    assert!(
        after.contains("cgroup_exporter_ebpf_iterator_up 1\n"),
        "{after}"
    );
    assert!(
        after.contains(&format!(
            "container_cpu_cfs_periods_total{{id=\"/{name}/c2\"}}"
        )),
        "{after}"
    );
    drop(t);
}
