//! Context-switch-heavy workload for `cargo xtask bench probes`: two processes pass one
//! byte back and forth over pipes, so every round trip is two context switches.
//!
//! `pingpong [--rounds N] [--cpu C] [--probe] [--stats] [--pairs K]`:
//! - `--cpu C` pins both processes to CPU `C`: each round trip is then exactly two
//!   direct switches between them. Unpinned, the scheduler moves the pair between one
//!   CPU and two, where each wake-up is an IPI to a halted vCPU; on a small VM a round
//!   trip then swings between ~8 and ~100 µs from one run to the next.
//! - `--probe` attaches the throttle probe (strategy the kernel accepts) for the run.
//!   Prints `rounds=N ns=T hits=H switches=S`: `hits` is the number of program runs the
//!   probe counted meanwhile (system-wide), `switches` the two processes' own context
//!   switches (getrusage).
//! - `--stats` (with `--probe`) also enables the kernel's run statistics for the run
//!   (BPF_ENABLE_STATS, released at exit) and adds the main program's run count and run
//!   time from the kernel (`runs=R run_ns=P`): the program body alone, without the
//!   tracepoint's dispatch. Timing each run costs two clock reads, so `ns` is not
//!   comparable then.
//! - `--pairs K`: K blocks in this one process, each measuring N round trips three
//!   ways: without any program, with an empty program on sched_switch (the object's
//!   `sched_switch_empty`: the tracepoint's dispatch alone, the floor under any probe
//!   there), and with the probe (each loaded for its part of the block; the order of
//!   the three rotates through all six orders), one line per block:
//!   `without_ns=A empty_ns=E with_ns=B hits=H`. Comparing within a block cancels what
//!   differs between processes and drifts over time (placement, other load).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)] // a bench tool

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

fn switches(who: i32) -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid `who` constant and a valid pointer.
    unsafe { libc::getrusage(who, &mut ru) };
    (ru.ru_nvcsw + ru.ru_nivcsw) as u64
}

/// Pins the calling process (and the children it spawns afterwards) to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t; CPU_SET ignores CPUs beyond its size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the size and pointer are those of `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}

/// The eBPF object: `$PROBES_EBPF_OBJECT`, else where `cargo xtask build-ebpf` puts it.
fn object() -> std::path::PathBuf {
    std::env::var_os("PROBES_EBPF_OBJECT").map_or_else(
        || {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            dir.parent().unwrap_or(dir).join(probes::BUILD_OBJECT)
        },
        std::path::PathBuf::from,
    )
}

/// The object's empty sched_switch program, loaded and attached (detached on drop).
fn load_empty() -> aya::Ebpf {
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = aya::EbpfLoader::new()
        .btf(Some(&btf))
        .load_file(object())
        .expect("load the probe object");
    let prog: &mut aya::programs::BtfTracePoint = ebpf
        .program_mut("sched_switch_empty")
        .expect("the object has sched_switch_empty (rebuild it: cargo xtask build-ebpf)")
        .try_into()
        .expect("a tp_btf program");
    prog.load("sched_switch", &btf)
        .expect("load sched_switch_empty");
    prog.attach().expect("attach sched_switch_empty");
    ebpf
}

fn load_probe() -> probes::Probe {
    probes::Probe::from_file(object())
        .without_paths()
        .load()
        .expect("load the probe")
}

/// (run count, run time ns) of the main program: sched_switch, or unthrottle_cfs_rq's.
fn prog_stats(p: &probes::Probe) -> (u64, u64) {
    p.program_stats()
        .unwrap()
        .first()
        .map_or((0, 0), |s| (s.run_count, s.run_time.as_nanos() as u64))
}

/// The child process that echoes each byte back.
struct Echo {
    child: Child,
    to: Option<ChildStdin>,
    from: ChildStdout,
}

impl Echo {
    fn spawn(exe: &str) -> Echo {
        let mut child = Command::new(exe)
            .arg("--child")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let to = child.stdin.take();
        let from = child.stdout.take().unwrap();
        Echo { child, to, from }
    }

    /// `n` round trips; their wall time in ns.
    fn round_trips(&mut self, n: u64) -> u128 {
        let to = self.to.as_mut().unwrap();
        let mut b = [7u8; 1];
        let t = Instant::now();
        for _ in 0..n {
            to.write_all(&b).unwrap();
            self.from.read_exact(&mut b).unwrap();
        }
        t.elapsed().as_nanos()
    }

    /// `n` round trips with `probe`'s hit counter read around them: (ns, hits).
    fn measure(&mut self, n: u64, probe: Option<&probes::Probe>) -> (u128, u64) {
        let h0 = probe.map_or(0, |p| p.hits().unwrap());
        let ns = self.round_trips(n);
        let h1 = probe.map_or(0, |p| p.hits().unwrap());
        (ns, h1 - h0)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let mut b = [0u8; 1];
        let (mut i, mut o) = (std::io::stdin().lock(), std::io::stdout().lock());
        while i.read_exact(&mut b).is_ok() {
            if o.write_all(&b).and_then(|()| o.flush()).is_err() {
                break;
            }
        }
        return;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let flag = |f: &str| args.iter().any(|a| a == f);
    let rounds: u64 = value("--rounds").map_or(200_000, |s| s.parse().expect("--rounds N"));
    if let Some(cpu) = value("--cpu") {
        pin(cpu.parse().expect("--cpu N"));
    }

    if let Some(pairs) = value("--pairs") {
        let pairs: u64 = pairs.parse().expect("--pairs K");
        let mut echo = Echo::spawn(&args[0]);
        // 0: without, 1: empty program, 2: probe; every order once in six blocks.
        const ORDERS: [[usize; 3]; 6] = [
            [0, 1, 2],
            [1, 2, 0],
            [2, 0, 1],
            [0, 2, 1],
            [2, 1, 0],
            [1, 0, 2],
        ];
        for k in 0..pairs {
            let mut ns = [0u128; 3];
            let mut hits = 0;
            for arm in ORDERS[(k % 6) as usize] {
                match arm {
                    0 => {
                        echo.round_trips(1000);
                        ns[0] = echo.measure(rounds, None).0;
                    }
                    1 => {
                        let _empty = load_empty();
                        echo.round_trips(1000);
                        ns[1] = echo.measure(rounds, None).0;
                    }
                    _ => {
                        let probe = load_probe();
                        echo.round_trips(1000);
                        (ns[2], hits) = echo.measure(rounds, Some(&probe));
                    }
                }
            }
            println!(
                "without_ns={} empty_ns={} with_ns={} hits={hits}",
                ns[0], ns[1], ns[2]
            );
        }
        return;
    }

    let stats =
        flag("--stats").then(|| probes::enable_run_stats().expect("enable BPF run statistics"));
    let probe = flag("--probe").then(load_probe);
    let mut echo = Echo::spawn(&args[0]);
    echo.round_trips(1000);
    let r0 = probe.as_ref().map_or((0, 0), prog_stats);
    let s0 = switches(libc::RUSAGE_SELF);
    let (ns, hits) = echo.measure(rounds, probe.as_ref());
    let r1 = probe.as_ref().map_or((0, 0), prog_stats);
    let own = switches(libc::RUSAGE_SELF) - s0;
    drop(echo);
    // The child's switches mirror the parent's (one per round each way).
    print!("rounds={rounds} ns={ns} hits={hits} switches={}", own * 2);
    if stats.is_some() {
        print!(" runs={} run_ns={}", r1.0 - r0.0, r1.1 - r0.1);
    }
    println!();
}
