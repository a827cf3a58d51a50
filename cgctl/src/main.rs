//! `cgctl`: the cgroup command line over cgroupkit.
//!
//! Its signature use: `cgctl limit --cpu 0.2 --pid 398` caps process 398 at 20% of one
//! CPU (a quota of 20000 us per 100000 us period) in the cgroup `cgctl/pid-398`. The
//! command-line definition is the `cgctl` library (`cgctl::command()`); this binary
//! does the work.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports to its user

#[cfg(target_env = "musl")]
mod arena;
/// See `arena`: start-up is most of what cgctl costs.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: arena::Arena = arena::Arena;
mod cmd;
mod events;
mod run;
mod show;
mod throttle;
mod top;
mod tree;

use std::process::ExitCode;

use cgctl::cli::{Cli, Cmd};
use clap::Parser;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`cgctl ls | head`) instead of panicking in
    // println!; children of `run` get the default disposition either way.
    // SAFETY: setting SIGPIPE to SIG_DFL installs no handler; nothing else in this
    // process depends on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Limit(a) => cmd::limit(a).map(ok),
        Cmd::Create(a) => cmd::create_or_set(a, false).map(ok),
        Cmd::Set(a) => cmd::create_or_set(a, true).map(ok),
        Cmd::Run(a) => run::run(a),
        Cmd::Move(a) => cmd::move_(a).map(ok),
        Cmd::Freeze(a) => cmd::freeze(a, cmd::Lifecycle::Freeze).map(ok),
        Cmd::Thaw(a) => cmd::freeze(a, cmd::Lifecycle::Thaw).map(ok),
        Cmd::Kill(a) => cmd::freeze(a, cmd::Lifecycle::Kill).map(ok),
        Cmd::Rm(a) => cmd::rm(a).map(ok),
        Cmd::Stat(a) => cmd::stat(a).map(ok),
        Cmd::Ls(a) => tree::ls(a).map(ok),
        Cmd::Top(a) => top::top(a).map(ok),
        Cmd::Events(a) => events::events(a).map(ok),
        Cmd::Throttle(a) => throttle::throttle(a).map(ok),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

fn ok((): ()) -> ExitCode {
    ExitCode::SUCCESS
}
