//! `cgctl throttle`: per-cgroup CPU throttling from the eBPF probe (probes crate).

use std::path::{Path, PathBuf};

use cgctl::cli::ThrottleArgs;
use probes::{HIST_BUCKETS, Probe, Strategy, bucket_label};
use serde::Serialize;

use crate::cmd::{Failure, Result};
use crate::show::shown;

#[derive(Serialize)]
struct Line<'a> {
    path: &'a str,
    id: u64,
    events: u64,
    throttled_ns: u64,
    /// Non-empty buckets, shortest first.
    histogram: Vec<Bucket>,
}

#[derive(Serialize)]
struct Bucket {
    /// e.g. `1-2ms`.
    range: String,
    /// Lower bound of the bucket in microseconds.
    low_usec: u64,
    count: u64,
}

/// Names the environment variable that points cgctl at the eBPF object.
const OBJECT_ENV: &str = "PROBES_EBPF_OBJECT";

/// The eBPF object: `$PROBES_EBPF_OBJECT`, else where `cargo xtask build-ebpf` put it in
/// the workspace this cgctl was built from (the first folder above cgctl's sources that
/// has it; the VM lane copies only the object, not the workspace).
pub(crate) fn ebpf_object() -> PathBuf {
    if let Some(p) = std::env::var_os(OBJECT_ENV) {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|d| d.join(probes::BUILD_OBJECT))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            manifest
                .parent()
                .unwrap_or(manifest)
                .join(probes::BUILD_OBJECT)
        })
}

fn probe_failure(e: probes::Error) -> Failure {
    let hint = match &e {
        probes::Error::ObjectNotFound { .. } => {
            "run `cargo xtask build-ebpf` first, or point PROBES_EBPF_OBJECT at a built object"
        }
        probes::Error::NotPrivileged => "run cgctl throttle as root",
        probes::Error::Btf(_) | probes::Error::KernelBtf(_) => {
            "the probe needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y)"
        }
        _ => "try the other --strategy, or see shared/PLATFORM.md for what loads where",
    };
    Failure::new(errchain::chain(&e), hint)
}

/// `cgctl throttle`.
pub fn throttle(a: ThrottleArgs) -> Result<()> {
    let mut b = Probe::from_file(ebpf_object());
    if let Some(s) = &a.strategy {
        let s: Strategy = s
            .parse()
            .map_err(|e: String| Failure::new(e, "use --strategy fentry or sched_switch"))?;
        b = b.strategy(s);
    }
    let mut probe = b.load().map_err(probe_failure)?;
    if !a.json {
        eprintln!(
            "cgctl: watching CPU throttling for {:.1}s with {}",
            a.duration.as_secs_f64(),
            probe.strategy()
        );
    }
    std::thread::sleep(a.duration);
    let snap = probe.snapshot().map_err(probe_failure)?;
    for cg in &snap.cgroups {
        let path = cg.display_path();
        let histogram: Vec<Bucket> = (0..HIST_BUCKETS)
            .filter(|&i| cg.stats.hist[i] != 0)
            .map(|i| Bucket {
                range: bucket_label(i),
                low_usec: probes::bucket_low_usec(i),
                count: cg.stats.hist[i],
            })
            .collect();
        if a.json {
            let line = serde_json::to_string(&Line {
                path: &path,
                id: cg.id,
                events: cg.stats.events,
                throttled_ns: cg.stats.throttled_ns,
                histogram,
            })
            .map_err(|e| {
                Failure::new(format!("cannot encode JSON: {e}"), "report this as a bug")
            })?;
            println!("{line}");
        } else {
            // JSON escapes control characters itself; a terminal needs `shown`.
            println!(
                "{}  events {}  throttled {:.1} ms",
                shown(&*path),
                cg.stats.events,
                cg.stats.throttled_ns as f64 / 1e6
            );
            let hist: Vec<String> = histogram
                .iter()
                .map(|b| format!("{}: {}", b.range, b.count))
                .collect();
            println!("    {}", hist.join("  "));
        }
    }
    if !a.json {
        if snap.cgroups.is_empty() {
            println!("no cgroup was throttled");
        }
        if snap.dropped != 0 {
            eprintln!(
                "cgctl: {} throttle events dropped (probe maps full)",
                snap.dropped
            );
        }
    }
    Ok(())
}
