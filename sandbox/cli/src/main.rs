//! `sandbox`: containers assembled from layered images, namespaces and cgroup limits.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sandbox::assembly::{Paths, RunConfig, Source};
use sandbox::spec::{Net, RunOptions, Seccomp, Volume, parse_bytes};
use sandbox::{Error, state, store};

#[derive(Parser, Debug)]
#[command(
    name = "sandbox",
    version,
    about = "Containers from layered images, namespaces and cgroup limits"
)]
struct Cli {
    /// State root (default $SANDBOX_ROOT or /run/sandbox).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Layer store (default $SANDBOX_STORE or /var/lib/sandbox).
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs a command in a new container and exits with its status (128+N on signal N).
    Run(Box<RunArgs>),
    /// Runs a command inside a running container (its namespaces and cgroup).
    Exec {
        /// Container name.
        name: String,
        /// Extra environment, K=V.
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// The command.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Lists containers.
    Ps,
    /// SIGTERM, then SIGKILL after --time seconds.
    Stop {
        /// Container name.
        name: String,
        /// Seconds to wait before SIGKILL.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
    },
    /// Sends a signal (default KILL) to the container's first process.
    Kill {
        /// Container name.
        name: String,
        /// Signal name or number.
        #[arg(long, short = 's', default_value = "KILL")]
        signal: String,
    },
    /// Removes a stopped (or, with --force, running) container.
    Rm {
        /// Container name.
        name: String,
        /// Kill it first if it runs.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Removes what killed sandboxes left: processes, cgroups, mounts, state.
    Gc,
    /// The cgroup statistics of a running container.
    Stats {
        /// Container name.
        name: String,
    },
    /// Image store commands.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Imports an OCI image layout (a directory or a tar).
    Import {
        /// The layout.
        path: PathBuf,
        /// NAME[:TAG] (default: the index's ref.name annotation).
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists images.
    Ls,
    /// Removes an image (refused while a container uses it).
    Rm {
        /// NAME[:TAG].
        name: String,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// An imported image, NAME[:TAG].
    #[arg(long, conflicts_with = "rootfs", required_unless_present = "rootfs")]
    image: Option<String>,
    /// A directory to use as the (read-only, shared) lower layer.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// CPU limit in CPUs (0.5 = half a CPU).
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory limit (64M, 1G).
    #[arg(long)]
    memory: Option<String>,
    /// Maximum number of tasks.
    #[arg(long)]
    pids: Option<i64>,
    /// Hostname (default: the name).
    #[arg(long)]
    hostname: Option<String>,
    /// none (own network namespace, lo only) or host.
    #[arg(long, default_value = "none")]
    net: String,
    /// SRC:DST[:OPTS] bind mount; OPTS comma-separated: ro, rw, dev, suid. Volumes are
    /// nosuid,nodev unless `suid` / `dev` is given.
    #[arg(long, short = 'v')]
    volume: Vec<String>,
    /// tmpfs mount point.
    #[arg(long)]
    tmpfs: Vec<PathBuf>,
    /// K=V environment entry.
    #[arg(long, short = 'e')]
    env: Vec<String>,
    /// Working directory.
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// UID:GID of the process.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// A user namespace: container 0..65536 = host 100000..165536.
    #[arg(long)]
    userns: bool,
    /// Read-only root filesystem.
    #[arg(long)]
    read_only: bool,
    /// A tiny PID 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    /// Keep the container's state and writable layer after exit.
    #[arg(long)]
    keep: bool,
    /// An OCI `linux.seccomp` profile (JSON file) instead of Docker's default
    /// profile, or `unconfined` for no filter.
    #[arg(long, value_name = "PROFILE.json|unconfined")]
    seccomp: Option<PathBuf>,
    /// The command.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

fn parse_user(s: &str) -> Result<(u32, u32), Error> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    match (u.parse(), g.parse()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(Error::Config(format!(
            "--user {s:?}: expected numeric UID:GID"
        ))),
    }
}

fn run_opts(a: &RunArgs) -> Result<RunOptions, Error> {
    Ok(RunOptions {
        args: a.cmd.clone(),
        hostname: a.hostname.clone(),
        net: match a.net.as_str() {
            "none" => Net::None,
            "host" => Net::Host,
            n => return Err(Error::Config(format!("--net {n:?}: expected none or host"))),
        },
        volumes: a
            .volume
            .iter()
            .map(|v| v.parse::<Volume>())
            .collect::<Result<_, _>>()?,
        tmpfs: a.tmpfs.clone(),
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        user: a.user.as_deref().map(parse_user).transpose()?,
        userns: a.userns,
        read_only: a.read_only,
        cpus: a.cpu,
        memory_bytes: a
            .memory
            .as_deref()
            .map(|m| parse_bytes(m).map_err(|e| Error::Config(format!("--memory {m:?}: {e}"))))
            .transpose()?,
        pids: a.pids,
        seccomp: match a.seccomp.as_deref() {
            None => Seccomp::Default,
            Some(p) if p.as_os_str() == "unconfined" => Seccomp::Unconfined,
            Some(p) => Seccomp::Profile(Box::new(
                serde_json::from_slice(
                    &std::fs::read(p).map_err(|e| Error::io("read --seccomp", p, e))?,
                )
                .map_err(|e| Error::Config(format!("--seccomp {}: {e}", p.display())))?,
            )),
        },
    })
}

/// The name of the CLI's output in errors.
const STDOUT: &str = "standard output";

/// `writeln!` to the CLI's output; a write error (a closed pipe) ends the command.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*).map_err(|e| Error::io("write", STDOUT, e))?
    };
}

/// `s` with control characters escaped (`\u{1b}`), so that a name, a cgroup path
/// or a command recorded in a state file cannot drive the terminal.
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn main_inner(cli: Cli) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    let paths = Paths {
        state: state::state_root(cli.root),
        store: store::store_root(cli.store),
    };
    match cli.cmd {
        Cmd::Run(a) => {
            let cfg = RunConfig {
                name: a.name.clone(),
                source: match (&a.image, &a.rootfs) {
                    (Some(i), _) => Source::Image(i.clone()),
                    (None, Some(r)) => Source::Rootfs(r.clone()),
                    (None, None) => return Err(Error::Config("give --image or --rootfs".into())),
                },
                init: a.init,
                keep: a.keep,
            };
            sandbox::assembly::run(&paths, &cfg, &run_opts(&a)?)
        }
        Cmd::Exec { name, env, cmd } => sandbox::lifecycle::exec(&paths, &name, &cmd, &env),
        Cmd::Ps => {
            say!(
                out,
                "{:<24} {:<10} {:>8}  {:<40} COMMAND",
                "NAME",
                "STATUS",
                "PID",
                "CGROUP"
            );
            for e in state::list(&paths.state)? {
                let Some(st) = e.state else { continue };
                let status = match (&st.status, e.supervised) {
                    (state::Status::Exited(c), _) => format!("exited({c})"),
                    (_, false) => "orphaned".into(),
                    (state::Status::Running, true) => "running".into(),
                    (state::Status::Creating, true) => "creating".into(),
                };
                say!(
                    out,
                    "{:<24} {:<10} {:>8}  {:<40} {}",
                    printable(&st.name),
                    status,
                    st.pid.map(|p| p.to_string()).unwrap_or_default(),
                    printable(&st.cgroup),
                    printable(&st.command.join(" "))
                );
            }
            Ok(0)
        }
        Cmd::Stop { name, time } => {
            sandbox::lifecycle::stop(&paths, &name, std::time::Duration::from_secs(time))?;
            Ok(0)
        }
        Cmd::Kill { name, signal } => {
            let s = signal.trim_start_matches("SIG");
            let sig = match s.parse::<i32>() {
                Ok(n) => nix::sys::signal::Signal::try_from(n).ok(),
                Err(_) => format!("SIG{s}").parse().ok(),
            }
            .ok_or_else(|| Error::Config(format!("unknown signal {signal:?}")))?;
            sandbox::lifecycle::signal(&paths, &name, sig)?;
            Ok(0)
        }
        Cmd::Rm { name, force } => {
            sandbox::lifecycle::remove(&paths, &name, force)?;
            Ok(0)
        }
        Cmd::Gc => {
            for c in state::gc(&paths.state)? {
                say!(
                    out,
                    "removed {}",
                    printable(&c.name.unwrap_or_else(|| c.dir.display().to_string()))
                );
            }
            // The collected containers' records of image use go with them.
            store::Store::at(&paths.store).prune_users()?;
            Ok(0)
        }
        Cmd::Stats { name } => {
            let st = state::read(&paths.state.join(&name)).map_err(|_| Error::Container {
                name: name.clone(),
                what: "no such container".into(),
            })?;
            let h = cgroupkit::Hierarchy::detect()?;
            let cg = cgroupkit::Cgroup::load(&h, &cgroupkit::CgroupPath::new(&st.cgroup)?)?;
            let cpu = cg.cpu_stat()?;
            say!(
                out,
                "cgroup {}\nnr_periods {}\nnr_throttled {}\nthrottled_usec {}",
                st.cgroup,
                cpu.nr_periods,
                cpu.nr_throttled,
                cpu.throttled_usec
            );
            if let Ok(p) = cg.pids_stat() {
                say!(out, "pids.current {}", p.current);
            }
            Ok(0)
        }
        Cmd::Image { cmd } => {
            let s = store::Store::at(&paths.store);
            match cmd {
                ImageCmd::Import { path, name } => {
                    for i in s.import(&path, name.as_deref())? {
                        say!(
                            out,
                            "imported {}:{} ({} layers, {})",
                            printable(&i.name),
                            printable(&i.tag),
                            i.layers.len(),
                            i.manifest
                        );
                    }
                }
                ImageCmd::Ls => {
                    say!(
                        out,
                        "{:<30} {:<12} {:>6}  MANIFEST",
                        "NAME",
                        "TAG",
                        "LAYERS"
                    );
                    for i in s.list()? {
                        say!(
                            out,
                            "{:<30} {:<12} {:>6}  {}",
                            printable(&i.name.replace('+', "/")),
                            printable(&i.tag),
                            i.layers.len(),
                            i.manifest
                        );
                    }
                }
                ImageCmd::Rm { name } => {
                    let i = s.remove(&name)?;
                    say!(out, "removed {}:{}", printable(&i.name), printable(&i.tag));
                }
            }
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match main_inner(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        // The reader went away (`sandbox ps | head -1`): end quietly, as a tool in a
        // pipeline does.
        Err(Error::Io {
            op: "write",
            path,
            source,
        }) if path.as_os_str() == STDOUT && source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Nothing more to do if stderr is closed too.
            let _ = writeln!(std::io::stderr(), "sandbox: {}", errchain::Chain(&e));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(125))
        }
    }
}
