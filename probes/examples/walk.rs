//! Walks a cgroup subtree with the BPF cgroup iterator and prints each cgroup.
//!
//! `cargo run -p probes --example walk [DIR...]` (default: /sys/fs/cgroup/cpu)
#![allow(clippy::print_stdout)] // an example prints

use std::time::Instant;

use probes::iter::CgroupIter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let object =
        std::env::var("PROBES_EBPF_OBJECT").unwrap_or_else(|_| probes::BUILD_OBJECT.into());
    let hwm = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("start: {}", hwm());
    let t = Instant::now();
    let it = CgroupIter::from_file(object).load()?;
    println!("loaded: {}", hwm());
    println!("loaded in {:?}; offsets {:?}", t.elapsed(), it.offsets());
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    let dirs = if dirs.is_empty() {
        vec!["/sys/fs/cgroup/cpu".to_owned()]
    } else {
        dirs
    };
    for d in dirs {
        let link = it.link(&d)?;
        let t = Instant::now();
        let all = it.walk(&link)?;
        println!("{d}: {} cgroups in {:?}", all.len(), t.elapsed());
        let t = Instant::now();
        let rounds = 50;
        for _ in 0..rounds {
            let mut n = 0;
            it.walk_with(&link, |_| n += 1)?;
        }
        println!("  {:?} a walk ({rounds} walks)", t.elapsed() / rounds);
        for c in all.iter().take(12) {
            println!("  {c:?}");
        }
    }
    Ok(())
}
