//! The seed's pid namespace demonstration: `clone(..., CLONE_NEWPID | SIGCHLD)` gives a
//! child that is PID 1 and, with its own /proc, sees only its own processes.
//!
//! `cargo run -p nskit --example pid_ns` (as root).
#![allow(clippy::print_stdout)] // an example shows its result

use nskit::{MountSpec, Namespace, Spawn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count();
    println!("host: {host} processes in /proc");
    // A new mount namespace too, so that the fresh /proc (of the new pid namespace)
    // hides nothing on the host.
    let mut child = Spawn::new("/bin/sh")
        .args([
            "-c",
            "echo \"child: my pid is $$\"; echo \"child: processes I can see:\"; for p in /proc/[0-9]*; do echo \"  ${p#/proc/} $(cat $p/comm)\"; done",
        ])
        .namespaces(Namespace::PID | Namespace::MOUNT)
        .mount(MountSpec::proc("/proc"))
        .spawn()?;
    println!("parent: the child is pid {} out here", child.pid());
    let status = child.wait()?;
    println!("child exited: {status}");
    Ok(())
}
