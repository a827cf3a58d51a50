//! `cgctl`: the cgroup command line over cgroupkit.
//!
//! Its signature use: `cgctl limit --cpu 0.2 --pid 398` caps process 398 at 20% of one
//! CPU (a quota of 20000 us per 100000 us period) in the cgroup `cgctl/pid-398`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports to its user

mod cmd;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  cgctl limit --cpu 0.2 --pid 398          cap process 398 at 20% of one CPU
  cgctl limit --cpu 1.5 --pid 398 --cgroup web/api --period 50ms
  cgctl stat cgctl/pid-398 --json          usage and throttling counters
  cgctl rm --drain cgctl/pid-398           move its processes to the parent, remove it";

#[derive(Parser)]
#[command(name = "cgctl", version, about = "Create, limit and inspect cgroups (v1, v2 and hybrid hosts)", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cap a running process: create (or reuse) its cgroup, set the limits, move the
    /// whole process (every thread) in.
    Limit(cmd::LimitArgs),
    /// Show a cgroup's limits, CPU usage, throttling counters and processes.
    Stat(cmd::StatArgs),
    /// Remove a cgroup.
    Rm(cmd::RmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Limit(a) => cmd::limit(a),
        Cmd::Stat(a) => cmd::stat(a),
        Cmd::Rm(a) => cmd::rm(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
