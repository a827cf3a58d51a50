//! The real `cgroup_exporter` scraped over HTTP while a capped cgroup burns CPU (root;
//! host lane and VM lane).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Exporter, TestCgroup, get, is_root, lane, promtool_check_metrics, value};

fn require_root() {
    assert!(
        is_root(),
        "these tests create cgroups: run them as root (cargo xtask test does)"
    );
}

/// Whether the exporter's probe can be on here: `Ok` when the eBPF object exists where
/// the binary looks for it ($PROBES_EBPF_OBJECT, else the workspace's build path) and
/// the kernel has BTF (the tests run as root); else the part of the reason the exporter
/// must log. Found independently of the binary's own lookup, so a lookup that misses
/// the object fails the test instead of turning the probe off quietly.
fn probe_expectation() -> Result<(), &'static str> {
    let object = std::env::var_os("PROBES_EBPF_OBJECT").map_or_else(
        || {
            // exporter/server -> the workspace root.
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(probes::BUILD_OBJECT)
        },
        PathBuf::from,
    );
    if !object.is_file() {
        Err("run `cargo xtask build-ebpf`")
    } else if !Path::new(probes::btf::VMLINUX_BTF).exists() {
        Err("CONFIG_DEBUG_INFO_BTF")
    } else {
        Ok(())
    }
}

#[test]
fn throttling_matches_cpu_stat_and_removed_cgroups_vanish() {
    require_root();
    let exporter = Exporter::start(&[]);
    let mut capped = TestCgroup::new(Some(0.2));
    capped.burn();
    std::thread::sleep(Duration::from_millis(2500));

    let text = exporter.scrape();
    let stat = capped.cg().cpu_stat().unwrap();
    let id = capped.id.clone();
    let periods = value(&text, "container_cpu_cfs_throttled_periods_total", &id)
        .unwrap_or_else(|| panic!("no throttled periods for {id} in\n{text}"));
    let seconds = value(&text, "container_cpu_cfs_throttled_seconds_total", &id).unwrap();
    let all = value(&text, "container_cpu_cfs_periods_total", &id).unwrap();
    eprintln!(
        "scraped {periods} throttled of {all} periods, {seconds} s; cpu.stat right after: {} of {}, {} us",
        stat.nr_throttled, stat.nr_periods, stat.throttled_usec
    );
    assert!(
        periods >= 5.0,
        "a 0.2 CPU busy loop is throttled: {periods}"
    );
    // cpu.stat was read after the scrape: it may have grown by a period or two.
    let grown = stat.nr_throttled as f64 - periods;
    assert!(
        (0.0..=5.0).contains(&grown),
        "{periods} vs {}",
        stat.nr_throttled
    );
    let grown_s = stat.throttled_usec as f64 / 1e6 - seconds;
    assert!(
        (-1e-6..=0.5).contains(&grown_s),
        "{seconds} s vs {} us",
        stat.throttled_usec
    );
    assert!(seconds > 0.1, "throttled seconds reported: {seconds}");
    assert_eq!(
        value(&text, "container_spec_cpu_quota", &id),
        Some(20_000.0)
    );
    assert_eq!(
        value(&text, "container_spec_cpu_period", &id),
        Some(100_000.0)
    );
    assert_eq!(value(&text, "container_processes", &id), Some(1.0));
    let usage = value(&text, "container_cpu_usage_seconds_total", &id).unwrap();
    assert!(usage > 0.1 && usage < 2.0, "usage {usage}");
    assert!(value(&text, "container_memory_usage_bytes", &id).is_some());

    // The probe must be on wherever it can be: a probe that silently stays off (an
    // object the binary no longer finds) would pass every check above.
    let probe_up = text
        .lines()
        .find_map(|l| l.strip_prefix("cgroup_exporter_ebpf_probe_up "))
        .map(|v| v.trim().to_owned());
    match probe_expectation() {
        Ok(()) => {
            assert!(
                exporter.probe_on(),
                "the eBPF object exists and the kernel has BTF, but the probe is off \
                 in lane {}:\n{}",
                lane(),
                exporter.stderr()
            );
            assert_eq!(probe_up.as_deref(), Some("1"), "{text}");
            let events = value(&text, "cgroup_cpu_throttle_events_total", &id)
                .unwrap_or_else(|| panic!("probe on, but no throttle events for {id}:\n{text}"));
            assert!(events > 0.0);
            assert!(text.contains(&format!(
                "cgroup_cpu_throttle_duration_seconds_bucket{{id=\"{id}\",le=\"+Inf\"}}"
            )));
        }
        Err(reason) => {
            eprintln!("probe expected off in lane {}: {reason}", lane());
            let stderr = exporter.stderr();
            assert!(
                stderr.contains("eBPF throttle probe off (") && stderr.contains(reason),
                "expected the probe off with {reason:?}:\n{stderr}"
            );
            assert_eq!(probe_up.as_deref(), Some("0"), "{text}");
        }
    }

    match promtool_check_metrics(&text) {
        Some(report) => eprintln!("promtool check metrics: ok {report}"),
        None => eprintln!(
            "promtool check metrics skipped in lane {}: no promtool in its busybox userland",
            lane()
        ),
    }

    // A new cgroup is on the very next scrape; a removed one is gone from it.
    let fresh = TestCgroup::new(None);
    capped.remove();
    let text = exporter.scrape();
    assert!(
        text.contains(&format!("{{id=\"{}\"}}", fresh.id)),
        "new cgroup missing"
    );
    assert!(
        !text.contains(&format!("id=\"{id}\"")),
        "{id} still exported after removal"
    );
    drop(fresh);
    let st = exporter.terminate();
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st}");
}

#[test]
fn openmetrics_health_and_errors() {
    require_root();
    let exporter = Exporter::start(&["--no-ebpf", "--max-depth", "1"]);
    assert!(
        exporter
            .stderr()
            .contains("eBPF throttle probe off: --no-ebpf")
    );
    let (status, head, body) = get(exporter.addr, "/healthz", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(head.contains("content-type: text/plain"), "{head}");
    let (status, head, body) = get(
        exporter.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE container_cpu_usage_seconds counter"));
    assert!(body.contains("cgroup_exporter_ebpf_probe_up 0"));
    let (status, _, _) = get(exporter.addr, "/nope", None);
    assert_eq!(status, 404);
    let st = exporter.terminate();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn scrapes_while_cgroups_come_and_go() {
    require_root();
    let exporter = Exporter::start(&["--no-ebpf", "--include", "/exporter-test-*"]);
    // Churn cgroups in a thread while scraping: never an error status or a read error.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = std::sync::Arc::clone(&stop);
    let churn = std::thread::spawn(move || {
        let mut n = 0;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let mut cg = TestCgroup::new(Some(0.5));
            cg.remove();
            n += 1;
        }
        n
    });
    for _ in 0..40 {
        let text = exporter.scrape();
        for kind in ["io", "parse", "permission"] {
            assert!(
                text.contains(&format!(
                    "cgroup_exporter_read_errors_total{{kind=\"{kind}\"}} 0\n"
                )),
                "{text}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = churn.join().unwrap();
    eprintln!("40 scrapes during {n} cgroup create/remove cycles");
    assert_eq!(exporter.terminate().code(), Some(0));
}

#[test]
fn without_the_ebpf_object_it_says_why_and_serves() {
    require_root();
    let exporter = Exporter::start_env(&[], &[("PROBES_EBPF_OBJECT", "/nonexistent/probes-ebpf")]);
    let err = exporter.stderr();
    assert!(err.contains("eBPF throttle probe off ("), "{err}");
    assert!(err.contains("cargo xtask build-ebpf"), "{err}");
    let text = exporter.scrape();
    assert!(text.contains("container_cpu_usage_seconds_total{id=\"/\"}"));
    assert!(!text.contains("cgroup_cpu_throttle_events_total"));
}

/// Issue #12 item 10's EPIPE rule: with stdout and stderr both closed pipes
/// (`cgroup_exporter 2>&1 | head -0`), the exporter neither aborts nor stops: it
/// serves, and exits 0 on SIGTERM.
#[test]
fn closed_stdout_and_stderr_are_not_fatal() {
    require_root();
    use std::process::{Command, Stdio};
    use std::time::Instant;
    // A free loopback port: the address line cannot be read through a closed pipe.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cgroup_exporter"))
        .args([
            "--no-ebpf",
            "--max-depth",
            "0",
            "--listen",
            &addr.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read ends: every write of the child now fails with EPIPE.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let start = Instant::now();
    let body = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            write!(
                s,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut b = String::new();
            s.read_to_string(&mut b).unwrap();
            break b;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the exporter exited with its output closed"
        );
        assert!(start.elapsed() < Duration::from_secs(30), "never listened");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    // SAFETY: kill(2) on the pid of our own child, not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{st}");
}

/// With both eBPF parts loaded (the throttle probe and the cgroup iterator), the
/// exporter's peak RSS stays under 20 MB: aya's parse of the whole kernel BTF in
/// `EbpfLoader::new` (28-36 MB before) never happens (probes' stub loader).
#[test]
fn ebpf_parts_load_under_20_mb_peak() {
    require_root();
    if let Err(why) = probe_expectation() {
        panic!("this test needs the eBPF object and kernel BTF: {why}");
    }
    let exporter = Exporter::start(&["--max-depth", "1"]);
    assert!(
        exporter.stderr_shows("BPF cgroup iterator on"),
        "{}",
        exporter.stderr()
    );
    assert!(exporter.probe_on(), "{}", exporter.stderr());
    let text = exporter.scrape();
    assert!(
        text.contains("cgroup_exporter_ebpf_iterator_up 1\n"),
        "{text}"
    );
    assert!(text.contains("cgroup_exporter_ebpf_probe_up 1\n"), "{text}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", exporter.pid())).unwrap();
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let (rss, hwm) = (kb("VmRSS:"), kb("VmHWM:"));
    eprintln!("RSS {rss} kB, peak {hwm} kB with the probe and the iterator loaded");
    assert!(hwm < 20 * 1024, "peak RSS {hwm} kB");
}
