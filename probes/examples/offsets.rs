//! Prints the struct offsets the probe would use on this kernel, for both strategies,
//! and those of the cgroup and task iterators.
//!
//! `cargo run -p probes --example offsets [BTF-FILE]`
#![allow(clippy::print_stdout)] // an example prints

use probes::{Offsets, Strategy, btf::Btf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let btf = match std::env::args_os().nth(1) {
        Some(p) => Btf::from_file(std::path::Path::new(&p))?,
        None => Btf::from_sys()?,
    };
    for p in [
        "cfs_rq.tg",
        "task_group.css.cgroup",
        "cgroup.kn",
        "kernfs_node.id",
        "task_struct.sched_task_group",
        "task_struct.pid",
        "task_struct.throttled",
        "task_struct.throttle_node",
        "cfs_rq.throttled",
    ] {
        match btf.member(p) {
            Ok(m) => println!(
                "{p:<32} bit {:>6} byte {:>5} size {} bitfield {:?}",
                m.bit_offset,
                m.byte_offset(),
                m.byte_size,
                m.bitfield_size
            ),
            Err(e) => println!("{p:<32} {e}"),
        }
    }
    for s in [Strategy::Fentry, Strategy::SchedSwitch] {
        println!("{}: {:?}", s.name(), Offsets::resolve(&btf, s));
    }
    // The cgroup and task iterators', by probes_common::iter_off index (ABSENT is
    // u64::MAX: a field the kernel lacks, or a block whose fields lie too far apart).
    let it = probes::iter::IterOffsets::resolve(&btf)?;
    for (i, v) in it.0.iter().enumerate() {
        println!("iter_off[{i}] = {}", *v as i64);
    }
    Ok(())
}
