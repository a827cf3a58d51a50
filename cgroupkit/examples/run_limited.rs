//! Run a command under limits, the way a container runtime would, with cgroupkit only.
//!
//! ```text
//! sudo cargo run -p cgroupkit --example run_limited -- 0.5 64M -- sh -c 'echo hi; sleep 1'
//!                                                     CPUS MEMORY   COMMAND...
//! ```
//!
//! 1. find the hierarchies (v1, v2 or hybrid) and make a cgroup for the command;
//! 2. apply CPU, memory and pids limits (one meaning on every layout);
//! 3. start the command *inside* the cgroup: the child joins it between fork and exec
//!    through pre-opened cgroup.procs fds (async-signal-safe), so not one instruction
//!    of the command runs outside the limits;
//! 4. wait, report what it used (CPU, throttling, memory peak, OOM kills), and remove
//!    the cgroup, killing anything the command left behind.
#![allow(clippy::print_stdout, clippy::print_stderr)] // an example program reports to its user

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode};

use cgroupkit::{
    Cgroup, CgroupPath, Cpu, CpuQuota, Hierarchy, Leftovers, Limit, Memory, Pids, Resources,
};

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("{s:?} is not a size such as 64M"))
}

fn run() -> Result<i32, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sep = args
        .iter()
        .position(|a| a == "--")
        .ok_or("usage: run_limited CPUS MEMORY -- COMMAND [ARGS...]")?;
    let (limits, cmd) = (&args[..sep], &args[sep + 1..]);
    let [cpus, memory] = limits else {
        return Err("usage: run_limited CPUS MEMORY -- COMMAND [ARGS...]".into());
    };
    let program = cmd.first().ok_or("no command given after --")?;

    // 1. The hierarchies and a cgroup named after us.
    let h = Hierarchy::detect()?;
    let mut r = Resources::default();
    r.cpu = Some(Cpu::with_quota(CpuQuota::from_cpus(
        cpus.parse()?,
        100_000,
    )?));
    r.memory = Some(Memory::with_max(Limit::Bytes(parse_size(memory)?)));
    r.pids = Some(Pids::with_max(256)?);
    let path = CgroupPath::new(&format!("run_limited/{}", std::process::id()))?;
    let mut cg = Cgroup::create(&h, &path, &r.controllers())?;

    // 2. Limits; on failure, leave nothing behind.
    if let Err(e) = cg.apply(&r) {
        cg.rollback()?;
        return Err(e.into());
    }
    println!(
        "cgroup {path} on {} ({} hierarchies)",
        h.layout(),
        cg.dirs().len()
    );

    // 3. Start the command inside the cgroup.
    let handles = cg.spawn_handles()?;
    let mut command = Command::new(program);
    command.args(&cmd[1..]);
    // SAFETY: join_self only makes write(2) syscalls on fds opened before the fork; it
    // allocates nothing and takes no lock, so it is safe between fork and exec.
    unsafe { command.pre_exec(move || handles.join_self()) };
    let status = command.status()?;

    // 4. What it used, then clean up.
    let cpu = cg.cpu_stat()?;
    let mem = cg.memory_stat()?;
    println!(
        "cpu: {} us used, throttled in {} of {} periods ({} us)",
        cpu.usage_usec.map_or("?".into(), |u| u.to_string()),
        cpu.nr_throttled,
        cpu.nr_periods,
        cpu.throttled_usec
    );
    println!(
        "memory: peak {} bytes, OOM kills {}",
        mem.peak_bytes.map_or("?".into(), |p| p.to_string()),
        mem.events.oom_kill.unwrap_or(0)
    );
    let top = CgroupPath::new("run_limited")?;
    cg.delete_recursive(Leftovers::Kill)?;
    // The shared parent goes too once the last run_limited has finished with it.
    if let Ok(parent) = Cgroup::load(&h, &top) {
        let _ = parent.delete();
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("run_limited: {e}");
            ExitCode::FAILURE
        }
    }
}
