//! `cargo xtask demo` (being built).

use anyhow::{Result, bail};

/// Options of `cargo xtask demo`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Entry point.
pub fn run(_args: Args) -> Result<()> {
    bail!("cargo xtask demo is not built yet")
}
