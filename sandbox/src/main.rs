//! `sandbox`: containers assembled from layered images, namespaces and cgroup limits.
//!
//! Not built yet (the sandbox issue); the binary says so instead of pretending.

fn main() -> std::process::ExitCode {
    #[allow(clippy::print_stderr)] // a binary reporting to its user
    {
        eprintln!("sandbox: not implemented yet; see the sandbox issue in the tracker");
    }
    std::process::ExitCode::from(2)
}
