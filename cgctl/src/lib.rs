//! The command-line definition of `cgctl`, the cgroup CLI over cgroupkit.
//!
//! Only the clap definition and its value parsers live here, so that tools such as
//! `cargo xtask completions` and `cargo xtask man` can reach it; the `cgctl` binary
//! (src/main.rs) does the work and the printing.
//!
//! ```
//! let cmd = cgctl::command();
//! assert_eq!(cmd.get_name(), "cgctl");
//! assert!(cmd.get_subcommands().any(|s| s.get_name() == "run"));
//! ```
#![deny(missing_docs)]

pub mod cli;
pub mod units;

/// The clap command of `cgctl`, with every subcommand.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    /// clap validates a definition only when it parses in a debug build; this turns
    /// an inconsistent CLI (clashing names, bad defaults) into a test failure.
    #[test]
    fn cli_definition_is_consistent() {
        super::command().debug_assert();
    }
}
