//! What one walk of the cgroup iterator costs, and one pass of the task iterator:
//! walks each given directory (an existing subtree; it creates nothing) `ROUNDS`
//! times and prints the wall time per walk and the programs' own run time (BPF run
//! statistics, enabled through `BPF_ENABLE_STATS` while it runs) per walk and per
//! cgroup.
//!
//! `cargo run --release -p probes --example iter_cost -- DIR...` (root; ROUNDS=200)
#![allow(clippy::print_stdout)] // an example prints

use std::time::Instant;

use probes::iter::CgroupIter;

/// (run time ns, runs) of the newest loaded program named `name`.
fn stats(name: &str) -> Option<(u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .max_by_key(|p| p.id())
        .map(|p| (p.run_time().as_nanos() as u64, p.run_count()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let object =
        std::env::var("PROBES_EBPF_OBJECT").unwrap_or_else(|_| probes::BUILD_OBJECT.into());
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let it = CgroupIter::from_file(object).load()?;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    for d in std::env::args().skip(1) {
        let link = it.link(&d)?;
        let n = it.walk(&link)?.len();
        let before = stats("cgroup_records").unwrap_or_default();
        let t = Instant::now();
        for _ in 0..rounds {
            it.walk_with(&link, |_| {})?;
        }
        let wall = t.elapsed().as_nanos() as u64 / u64::from(rounds);
        let after = stats("cgroup_records").unwrap_or_default();
        let bpf = (after.0 - before.0) / u64::from(rounds);
        println!(
            "{d}: {n} cgroups: {wall} ns a walk, of which BPF {bpf} ns ({} ns a cgroup, {} runs)",
            bpf / (n as u64 + 1),
            (after.1 - before.1) / u64::from(rounds),
        );
    }
    if it.counts_processes() {
        let before = stats("task_cgroups").unwrap_or_default();
        let t = Instant::now();
        for _ in 0..rounds {
            it.processes()?;
        }
        let wall = t.elapsed().as_nanos() as u64 / u64::from(rounds);
        let after = stats("task_cgroups").unwrap_or_default();
        let runs = (after.1 - before.1) / u64::from(rounds);
        let bpf = (after.0 - before.0) / u64::from(rounds);
        println!(
            "tasks: {runs} tasks: {wall} ns a pass, of which BPF {bpf} ns ({} ns a task)",
            bpf / runs.max(1)
        );
    }
    Ok(())
}
