//! `cargo xtask`: the project's automation, one subcommand per job.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports to its user

mod bench;
mod demo;
mod docs;
mod ebpf;
mod test;
mod util;
mod vm;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project automation for the cgroupkit workspace")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing, then run every test lane: unit, host (root), VM.
    Test(test::Args),
    /// Run the integration tests inside Debian kernels under QEMU with pure cgroup v2.
    VmTest(vm::Args),
    /// Side-by-side benchmarks against the tools a user would otherwise pick.
    Bench(bench::Args),
    /// The quick-start demo: cap a busy process at 0.2 CPU and show it throttled.
    Demo(demo::Args),
    /// Install the Rust eBPF toolchain where missing and build probes/ebpf.
    BuildEbpf(ebpf::Args),
    /// Write cgctl's shell completions (bash, zsh, fish).
    Completions(docs::CompletionsArgs),
    /// Write cgctl's man pages (cgctl.1 and one per subcommand).
    Man(docs::ManArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every subcommand builds the workspace, whose target a fresh machine lacks.
    util::ensure_rust_target()?;
    // aws-lc-sys (rustls under the sandbox's registry client) compiles C for the musl
    // target with musl-gcc (.cargo/config.toml names it).
    util::apt_install(&["musl-tools"]).context("install musl-tools (musl-gcc, for aws-lc-sys)")?;
    match cli.cmd {
        Cmd::Test(a) => test::run(a),
        Cmd::VmTest(a) => vm::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::BuildEbpf(a) => ebpf::run(a),
        Cmd::Completions(a) => docs::completions(a),
        Cmd::Man(a) => docs::man(a),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks its definitions only when a command is parsed in a debug build;
    /// this makes a clash (such as two flattened groups named `Args`) a test failure.
    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
