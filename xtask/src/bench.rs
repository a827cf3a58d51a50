//! `cargo xtask bench` (being built).

use anyhow::{Result, bail};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Entry point.
pub fn run(_args: Args) -> Result<()> {
    bail!("cargo xtask bench is not built yet")
}
