//! OCI hooks: run in the runtime's namespaces with the container's state on stdin,
//! each bounded by its timeout.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// A hook's default timeout when it names none (runc has none; a hung hook must not
/// hang the runtime).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `hooks` of kind `kind` in order; the first failure is returned.
pub fn run(kind: &str, hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, state_json).map_err(|what| {
            Error::Config(format!(
                "hooks.{kind}[{i}] ({}): {what}",
                h.path().display()
            ))
        })?;
    }
    Ok(())
}

fn run_one(h: &Hook, state_json: &[u8]) -> std::result::Result<(), String> {
    let mut c = Command::new(h.path());
    let args = h.args().clone().unwrap_or_default();
    if let Some(a0) = args.first() {
        c.arg0(a0);
    }
    c.args(args.iter().skip(1));
    c.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            c.env(k, v);
        }
    }
    c.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = c.spawn().map_err(|e| format!("could not run it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state_json);
    }
    let timeout = h
        .timeout()
        .filter(|t| *t > 0)
        .map_or(DEFAULT_TIMEOUT, |t| Duration::from_secs(t as u64));
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("failed: {st}")),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {} s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}
