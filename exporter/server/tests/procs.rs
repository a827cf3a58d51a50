//! Issue #12 item 8: `cgroup.procs` is a multi-record seq_file that a read(2) hands
//! out one page at a time; a cgroup of 1000 processes was exported as 894 when the
//! first short read was taken for the end. Here a real cgroup (v1 pids/cpu on the
//! host, v2 in the VM lane) holds more than 2000 processes, and the count must be
//! exact in the exporter's scrape and in cgroupkit's own readers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use cgroupkit::{Cgroup, CgroupPath, Controller, Hierarchy, Pid};
use common::{Exporter, is_root, value};

/// sh plus this many sleeps: well past one 4 KiB page of pids (~5 bytes each).
const SLEEPERS: usize = 2100;

#[test]
fn container_processes_counts_every_process_of_a_big_cgroup() {
    assert!(is_root(), "this test creates cgroups: run it as root");
    let h = Hierarchy::detect().unwrap();
    let name = format!("exporter-test-{}-procs", std::process::id());
    let path = CgroupPath::new(&name).unwrap();
    let cg = Cgroup::create(&h, &path, &[Controller::Cpu, Controller::Pids]).unwrap();
    // Removes the cgroup (killing what is inside) even when an assertion fails.
    struct Cleanup(Option<Cgroup>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(cg) = self.0.take() {
                let _ = cg.kill();
                let _ = cg.delete_recursive(cgroupkit::Leftovers::Kill);
            }
        }
    }
    let guard = Cleanup(Some(cg.clone()));
    // The shell is moved in first (one cgroup.procs write instead of 2100), then
    // forks the sleepers, which inherit its cgroup.
    let mut sh = Command::new("sh")
        .args([
            "-c",
            &format!(
                "read go; i=0; while [ $i -lt {SLEEPERS} ]; do sleep 1000 & i=$((i+1)); done; echo started; wait"
            ),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    cg.add_process(Pid::new(i64::from(sh.id())).unwrap())
        .unwrap();
    writeln!(sh.stdin.as_mut().unwrap(), "go").unwrap();
    let mut line = String::new();
    BufReader::new(sh.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "started");
    let want = SLEEPERS + 1;

    // cgroupkit's own readers.
    assert_eq!(cg.procs().unwrap().len(), want);
    assert_eq!(cg.all_procs().unwrap().len(), want);
    let text = std::fs::read_to_string(cg.dirs()[0].file("cgroup.procs")).unwrap();
    assert!(
        text.len() > 4096,
        "a multi-page cgroup.procs: {} bytes",
        text.len()
    );

    // The exporter's scrape, over HTTP: reading files, then counting with the task
    // iterator (2100 tasks: its output spans several reads).
    let id = format!("/{name}");
    for args in [&["--no-ebpf"][..], &[]] {
        let mut a = args.to_vec();
        a.extend(["--cgroup-root", &name]);
        let exporter = Exporter::start(&a);
        for _ in 0..3 {
            let text = exporter.scrape();
            let scraped = value(&text, "container_processes", &id);
            assert_eq!(
                scraped,
                Some(want as f64),
                "container_processes of {id} ({args:?})"
            );
            if args.is_empty() {
                let line = "cgroup_exporter_family_source{family=\"container_processes\",source=\"ebpf_iterator\"} 1";
                assert!(text.contains(line), "{line} missing");
            }
        }
        assert_eq!(exporter.terminate().code(), Some(0));
    }
    drop(guard);
    let _ = sh.kill();
    let _ = sh.wait();
    std::thread::sleep(Duration::from_millis(10));
}
