//! `sandbox`: containers assembled from layered images, namespaces and cgroup limits.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod pod_cmd;

use clap::{Parser, Subcommand};

mod image_cmd;
use sandbox::assembly::{Paths, RunConfig, Source};
use sandbox::oci::{self, CreateOptions, ExecOptions};
use sandbox::spec::{Net, RunOptions, Seccomp, Volume, parse_bytes};
use sandbox::{Error, state, store};

#[derive(Parser, Debug)]
#[command(
    name = "sandbox",
    version,
    about = "Containers from layered images, namespaces and cgroup limits; an OCI runtime \
             with runc's command line"
)]
struct Cli {
    /// State root (default $SANDBOX_ROOT or /run/sandbox).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Layer store (default $SANDBOX_STORE or /var/lib/sandbox).
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    /// Also write errors (and with --debug, each command) to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json (one object a line: level, msg, time; as runc writes them).
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Log each command to --log.
    #[arg(long, global = true)]
    debug: bool,
    /// Refused: cgroups are managed through cgroupfs here, not systemd.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs a container: from an image or a rootfs (people), or an OCI bundle
    /// (`run --bundle DIR ID`: create + start + wait + delete).
    Run(Box<RunArgs>),
    /// OCI: creates a container from a bundle; its process waits for `start`.
    Create {
        /// The bundle folder (config.json and the root filesystem).
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// Write the container's pid here.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// A unix socket that receives the terminal's master (process.terminal).
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Change the root with MS_MOVE and chroot instead of pivot_root (for a root
        /// on a ramfs; less isolating: the old root stays reachable to a process
        /// with CAP_SYS_CHROOT).
        #[arg(long = "no-pivot")]
        no_pivot: bool,
        /// Keep the caller's session keyring instead of a new one named `_ses.ID`.
        #[arg(long = "no-new-keyring")]
        no_new_keyring: bool,
        /// Container id.
        id: String,
    },
    /// OCI: lets a created container's process run.
    Start {
        /// Container id.
        id: String,
    },
    /// OCI: the state of a container (JSON).
    State {
        /// Container id.
        id: String,
    },
    /// OCI: removes a container (with --force even a running one; a missing one is
    /// then not an error).
    Delete {
        /// Kill it first if it runs.
        #[arg(long, short = 'f')]
        force: bool,
        /// Container id.
        id: String,
    },
    /// OCI: lists containers.
    List {
        /// table or json.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        /// Ids only.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// OCI: freezes a container's processes.
    Pause {
        /// Container id.
        id: String,
    },
    /// OCI: thaws a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// OCI: the features document of this runtime (JSON).
    Features,
    /// OCI: writes a default config.json (busybox-ready) into the bundle folder.
    Spec {
        /// The bundle folder.
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// A user namespace mapping (for a rootless runtime; not used as root).
        #[arg(long)]
        rootless: bool,
    },
    /// OCI: changes a running container's resources (linux.resources JSON; - for stdin).
    Update {
        /// The resources file.
        #[arg(long, short = 'r')]
        resources: PathBuf,
        /// Container id.
        id: String,
    },
    /// OCI: the container's statistics (--stats: once; else every --interval).
    Events {
        /// Print one statistics object and exit.
        #[arg(long)]
        stats: bool,
        /// Seconds between statistics.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Container id.
        id: String,
    },
    /// Runs a command inside a running container (its namespaces and cgroup).
    Exec(Box<ExecArgs>),
    /// Lists containers; with an id, the processes of that container.
    Ps {
        /// Container id: list its processes.
        id: Option<String>,
        /// table or json (with an id).
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
    },
    /// SIGTERM, then SIGKILL after --time seconds.
    Stop {
        /// Container name.
        name: String,
        /// Seconds to wait before SIGKILL.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
    },
    /// Sends a signal: `kill ID [SIGNAL]` (OCI, default TERM) or `kill NAME --signal S`
    /// (default KILL for `sandbox run` containers).
    Kill {
        /// Every process of the container's cgroup.
        #[arg(long, short = 'a')]
        all: bool,
        /// Signal name or number.
        #[arg(long, short = 's')]
        signal: Option<String>,
        /// Container name or id.
        name: String,
        /// Signal name or number (runc's positional form).
        sig: Option<String>,
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
    /// Kubernetes v1 Pods on this node: run, ls, ps, logs, exec, stop, rm.
    Pod {
        #[command(subcommand)]
        cmd: pod_cmd::PodCmd,
    },
    /// Image store commands.
    Image {
        #[command(subcommand)]
        cmd: image_cmd::ImageCmd,
    },
    /// Makes an image of a container: its writable layer on top of its image.
    Commit(image_cmd::CommitArgs),
    /// Store-wide commands (`system df`).
    System {
        #[command(subcommand)]
        cmd: image_cmd::SystemCmd,
    },
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// A process.json (the spec's process) to run.
    #[arg(long, short = 'p')]
    process: Option<PathBuf>,
    /// Return once started (the caller reaps it).
    #[arg(long, short = 'd')]
    detach: bool,
    /// Write its pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// A unix socket that receives the terminal's master.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// A terminal.
    #[arg(long, short = 't')]
    tty: bool,
    /// Working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Extra environment, K=V.
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// UID[:GID].
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Container name or id.
    name: String,
    /// The command.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// An OCI bundle (config.json and its rootfs): `run --bundle DIR ID`.
    #[arg(long, short = 'b', conflicts_with_all = ["image", "rootfs"])]
    bundle: Option<PathBuf>,
    /// With --bundle: write the container's pid here.
    #[arg(long = "pid-file", requires = "bundle")]
    pid_file: Option<PathBuf>,
    /// With --bundle: the terminal's master goes to this socket.
    #[arg(long = "console-socket", requires = "bundle")]
    console_socket: Option<PathBuf>,
    /// With --bundle: return once started.
    #[arg(long, short = 'd', requires = "bundle")]
    detach: bool,
    /// With --bundle: change the root with MS_MOVE and chroot (see create).
    #[arg(long = "no-pivot", requires = "bundle")]
    no_pivot: bool,
    /// With --bundle: keep the caller's session keyring (see create).
    #[arg(long = "no-new-keyring", requires = "bundle")]
    no_new_keyring: bool,
    /// With --bundle: the container id.
    #[arg(requires = "bundle")]
    id: Option<String>,
    /// An imported image, NAME[:TAG].
    #[arg(long, conflicts_with = "rootfs", required_unless_present_any = ["rootfs", "bundle"])]
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
    /// The command (with --image: after the image's Entrypoint; its Cmd when none).
    #[arg(last = true)]
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

/// A signal by name (`KILL`, `SIGKILL`) or number.
fn parse_signal(text: &str) -> Result<nix::sys::signal::Signal, Error> {
    let s = text.trim_start_matches("SIG");
    match s.parse::<i32>() {
        Ok(n) => nix::sys::signal::Signal::try_from(n).ok(),
        Err(_) => format!("SIG{}", s.to_ascii_uppercase()).parse().ok(),
    }
    .ok_or_else(|| Error::Config(format!("unknown signal {text:?}")))
}

/// Whether `name` is a container made by `sandbox create` (it has a bundle).
fn oci_container(paths: &Paths, name: &str) -> bool {
    state::check_name(name).is_ok()
        && state::read(&paths.state.join(name)).is_ok_and(|s| s.bundle.is_some())
}

fn main_inner(cli: Cli) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    if cli.systemd_cgroup {
        return Err(Error::Config(
            "--systemd-cgroup is not supported: this runtime manages cgroups through \
             cgroupfs (configure the client with the cgroupfs driver, e.g. containerd's \
             SystemdCgroup = false or podman's cgroup_manager = \"cgroupfs\")"
                .into(),
        ));
    }
    if !matches!(cli.log_format.as_str(), "text" | "json") {
        return Err(Error::Config(format!(
            "--log-format {:?}: expected text or json",
            cli.log_format
        )));
    }
    let paths = Paths {
        state: state::state_root(cli.root),
        store: store::store_root(cli.store),
    };
    match cli.cmd {
        Cmd::Run(a) => {
            if let Some(bundle) = &a.bundle {
                let id = a.id.clone().ok_or_else(|| {
                    Error::Config("run --bundle DIR ID: give the container id".into())
                })?;
                let o = CreateOptions {
                    id,
                    bundle: bundle.clone(),
                    pid_file: a.pid_file.clone(),
                    console_socket: a.console_socket.clone(),
                    no_pivot: a.no_pivot,
                    no_new_keyring: a.no_new_keyring,
                    stdio: None,
                };
                return oci::run(&paths.state, &o, a.detach);
            }
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
        Cmd::Create {
            bundle,
            pid_file,
            console_socket,
            no_pivot,
            no_new_keyring,
            id,
        } => {
            let o = CreateOptions {
                id,
                bundle,
                pid_file,
                console_socket,
                no_pivot,
                no_new_keyring,
                stdio: None,
            };
            oci::create(&paths.state, &o)?;
            Ok(0)
        }
        Cmd::Start { id } => {
            oci::start(&paths.state, &id)?;
            Ok(0)
        }
        Cmd::State { id } => {
            let st = oci::state(&paths.state, &id)?;
            let text = serde_json::to_string_pretty(&st)
                .map_err(|e| Error::Config(format!("state: {e}")))?;
            say!(out, "{text}");
            Ok(0)
        }
        Cmd::Delete { force, id } => {
            if let Some(w) = oci::delete(&paths.state, &id, force)? {
                let _ = writeln!(
                    std::io::stderr(),
                    "sandbox: warning: {}",
                    errchain::Chain(&w)
                );
            }
            Ok(0)
        }
        Cmd::List { format, quiet } => {
            let all = oci::list(&paths.state)?;
            match (format.as_str(), quiet) {
                (_, true) => {
                    for c in &all {
                        say!(out, "{}", printable(&c.id));
                    }
                }
                ("json", _) => {
                    let text = serde_json::to_string(&all)
                        .map_err(|e| Error::Config(format!("list: {e}")))?;
                    say!(out, "{text}");
                }
                ("table", _) => {
                    say!(
                        out,
                        "{:<24} {:>8} {:<10} {:<40} CREATED",
                        "ID",
                        "PID",
                        "STATUS",
                        "BUNDLE"
                    );
                    for c in &all {
                        say!(
                            out,
                            "{:<24} {:>8} {:<10} {:<40} {}",
                            printable(&c.id),
                            c.pid,
                            c.status,
                            printable(&c.bundle.to_string_lossy()),
                            c.created
                        );
                    }
                }
                (f, _) => {
                    return Err(Error::Config(format!(
                        "--format {f:?}: expected table or json"
                    )));
                }
            }
            Ok(0)
        }
        Cmd::Pause { id } => {
            oci::set_paused(&paths.state, &id, true)?;
            Ok(0)
        }
        Cmd::Resume { id } => {
            oci::set_paused(&paths.state, &id, false)?;
            Ok(0)
        }
        Cmd::Features => {
            let text = serde_json::to_string_pretty(&oci::features())
                .map_err(|e| Error::Config(format!("features: {e}")))?;
            say!(out, "{text}");
            Ok(0)
        }
        Cmd::Spec { bundle, rootless } => {
            oci::write_default_spec(&bundle, rootless)?;
            Ok(0)
        }
        Cmd::Update { resources, id } => {
            let text = if resources.as_os_str() == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                    .map_err(|e| Error::io("read", "standard input", e))?;
                v
            } else {
                std::fs::read(&resources)
                    .map_err(|e| Error::io("read --resources", &resources, e))?
            };
            let r = serde_json::from_slice(&text).map_err(|source| Error::Json {
                path: resources.clone(),
                source,
            })?;
            oci::update(&paths.state, &id, &r)?;
            Ok(0)
        }
        Cmd::Events {
            stats,
            interval,
            id,
        } => loop {
            let v = oci::stats(&paths.state, &id)?;
            let text =
                serde_json::to_string(&v).map_err(|e| Error::Config(format!("events: {e}")))?;
            say!(out, "{text}");
            out.flush().map_err(|e| Error::io("write", STDOUT, e))?;
            if stats {
                return Ok(0);
            }
            std::thread::sleep(std::time::Duration::from_secs(interval.max(1)));
        },
        Cmd::Exec(a) => {
            if oci_container(&paths, &a.name) {
                let o = ExecOptions {
                    process: a.process.clone(),
                    args: a.cmd.clone(),
                    env: a.env.clone(),
                    cwd: a.cwd.clone(),
                    user: a.user.as_deref().map(parse_user).transpose()?,
                    tty: a.tty,
                    detach: a.detach,
                    pid_file: a.pid_file.clone(),
                    console_socket: a.console_socket.clone(),
                };
                return oci::exec(&paths.state, &a.name, &o);
            }
            if a.process.is_some() || a.detach || a.tty || a.console_socket.is_some() {
                return Err(Error::Config(format!(
                    "{}: --process, --detach, --tty and --console-socket are for containers \
                     made by `sandbox create`",
                    a.name
                )));
            }
            sandbox::lifecycle::exec(&paths, &a.name, &a.cmd, &a.env)
        }
        Cmd::Ps {
            id: Some(id),
            format,
        } => {
            let pids = oci::pids(&paths.state, &id)?;
            match format.as_str() {
                "json" => {
                    let text = serde_json::to_string(&pids)
                        .map_err(|e| Error::Config(format!("ps: {e}")))?;
                    say!(out, "{text}");
                }
                "table" => {
                    say!(out, "{:>8}  CMD", "PID");
                    for p in pids {
                        let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                            .map(|b| {
                                String::from_utf8_lossy(&b)
                                    .replace('\0', " ")
                                    .trim()
                                    .to_string()
                            })
                            .unwrap_or_default();
                        say!(out, "{p:>8}  {}", printable(&cmd));
                    }
                }
                f => {
                    return Err(Error::Config(format!(
                        "--format {f:?}: expected table or json"
                    )));
                }
            }
            Ok(0)
        }
        Cmd::Ps { id: None, .. } => {
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
                let status = if st.bundle.is_some() {
                    oci::state(&paths.state, &st.name)
                        .map(|s| s.status)
                        .unwrap_or_else(|_| "unknown".into())
                } else {
                    match (&st.status, e.supervised) {
                        (state::Status::Exited(c), _) => format!("exited({c})"),
                        (_, false) => "orphaned".into(),
                        (state::Status::Running, true) => "running".into(),
                        (state::Status::Creating | state::Status::Created, true) => {
                            "creating".into()
                        }
                    }
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
        Cmd::Kill {
            all,
            signal,
            name,
            sig,
        } => {
            let is_oci = oci_container(&paths, &name);
            let given = signal.or(sig);
            let text = given
                .as_deref()
                .unwrap_or(if is_oci { "TERM" } else { "KILL" });
            let sig = parse_signal(text)?;
            if is_oci {
                oci::kill(&paths.state, &name, sig, all)?;
            } else if all {
                return Err(Error::Config(
                    "--all is for containers made by `sandbox create`; `sandbox stop` ends \
                     every process of a `sandbox run` container"
                        .into(),
                ));
            } else {
                sandbox::lifecycle::signal(&paths, &name, sig)?;
            }
            Ok(0)
        }
        Cmd::Rm { name, force } => {
            sandbox::lifecycle::remove(&paths, &name, force)?;
            Ok(0)
        }
        Cmd::Pod { cmd } => {
            drop(out);
            pod_cmd::main(&paths, cmd)
        }
        Cmd::Gc => {
            for c in state::gc(&paths.state)? {
                say!(
                    out,
                    "removed {}",
                    printable(&c.name.unwrap_or_else(|| c.dir.display().to_string()))
                );
            }
            for p in sandbox::pod::ops::gc(&paths.state, &store::Store::at(&paths.store))? {
                say!(out, "removed pod {}", printable(&p));
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
        Cmd::Image { cmd } => image_cmd::image(&paths.store, cmd),
        Cmd::System { cmd } => image_cmd::system(&paths.store, cmd),
        Cmd::Commit(a) => image_cmd::commit(&paths.state, &paths.store, a),
    }
}

/// Appends one record to `--log`, as runc writes them: text
/// (`time="..." level=error msg="..."`) or one JSON object a line.
fn log(path: &std::path::Path, json: bool, level: &str, msg: &str) {
    let time = oci::rfc3339_now();
    let line = if json {
        serde_json::json!({ "level": level, "msg": msg, "time": time }).to_string()
    } else {
        format!("time={time:?} level={level} msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = cli.log.clone().map(|p| (p, cli.log_format == "json"));
    if cli.debug
        && let Some((p, json)) = &logging
    {
        let args: Vec<String> = std::env::args().collect();
        log(p, *json, "debug", &format!("command: {}", args.join(" ")));
    }
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
            let mut msg = errchain::Chain(&e).to_string();
            // Clients read these words to report 127/126 as a shell would (podman
            // matches runc's phrasing).
            match e.exit_code() {
                sandbox::error::EXIT_NOT_FOUND => {
                    msg.push_str(": executable file not found in $PATH: no such file or directory");
                }
                sandbox::error::EXIT_CANNOT_EXEC => msg.push_str(": permission denied"),
                _ => {}
            }
            if let Some((p, json)) = &logging {
                log(p, *json, "error", &msg);
            }
            // Nothing more to do if stderr is closed too.
            let _ = writeln!(std::io::stderr(), "sandbox: {msg}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(125))
        }
    }
}
