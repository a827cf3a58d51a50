//! `cargo xtask test` (being built).

use anyhow::{Result, bail};

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Entry point.
pub fn run(_args: Args) -> Result<()> {
    bail!("cargo xtask test is not built yet")
}
