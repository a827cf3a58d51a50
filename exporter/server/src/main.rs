//! `cgroup_exporter`: serves per-cgroup metrics and eBPF throttle histograms to
//! Prometheus. Flags, the tokio runtime (one thread for the connections, a bounded
//! pool for scrapes), HTTP (hyper 1), connection limits and SIGTERM live here;
//! reading and encoding are the `exporter` library's.

mod conn;

use std::error::Error as StdError;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cgroupkit::{CgroupPath, Hierarchy};
use clap::Parser;
use exporter::{Collector, Config, MetricGroup, Pattern};
use probes::iter::CgroupIter;
use probes::{Probe, Strategy};

use conn::Limits;

/// Writes one line to stderr; a closed stderr is ignored (eprintln! would panic).
macro_rules! log {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}
pub(crate) use log;

/// Serves per-cgroup CPU, memory, process and pressure metrics (named as cAdvisor
/// names them) and eBPF CPU-throttle histograms, read from the cgroup files at every
/// scrape.
#[derive(Parser, Debug)]
#[command(
    name = "cgroup_exporter",
    version,
    after_help = "Examples:\n  \
        cgroup_exporter                                   # every cgroup, 127.0.0.1:9753\n  \
        cgroup_exporter --listen 0.0.0.0:9753 --cgroup-root kubepods.slice --max-depth 3\n  \
        cgroup_exporter --exclude '/system.slice/*' --no-ebpf\n  \
        curl -s localhost:9753/metrics | grep throttled"
)]
struct Cli {
    /// Address to serve /metrics and /healthz on (port 0: any free port; the bound
    /// address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9753")]
    listen: SocketAddr,
    /// The subtree to watch, relative to every hierarchy's root (`/`: everything).
    #[arg(long, default_value = "/", value_name = "PATH")]
    cgroup_root: String,
    /// Levels below --cgroup-root to export (0: only the root of the subtree).
    #[arg(long, value_name = "N")]
    max_depth: Option<usize>,
    /// Export only cgroups whose id (path) matches; `*` matches across `/`. Repeatable.
    #[arg(long, value_name = "GLOB")]
    include: Vec<Pattern>,
    /// Skip cgroups whose id matches; a GLOB ending in `*` (`/system.slice*`) skips the
    /// whole subtree without walking it. Repeatable.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<Pattern>,
    /// Threads reading cgroup files during a scrape [default: the CPUs this process
    /// may use, at most 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Metric groups not to export (nor read), comma-separated: `process`
    /// (container_processes: cgroup.procs) and `pressure` (container_pressure_*: PSI
    /// files), as cAdvisor's --disable_metrics (its default set has neither).
    #[arg(long, value_name = "GROUPS", value_delimiter = ',')]
    disable_metrics: Vec<MetricGroup>,
    /// Do not load the eBPF throttle probe nor the BPF cgroup iterator.
    #[arg(long)]
    no_ebpf: bool,
    /// A sandbox state root (`sandbox --root`, e.g. /run/sandbox): series of its pods'
    /// and containers' cgroups get `pod`, `namespace`, `container` and `image` labels.
    #[arg(long, value_name = "DIR")]
    sandbox_root: Option<PathBuf>,
    /// Do not walk the cgroups with the BPF cgroup iterator: list directories and
    /// read every file (the throttle probe still loads).
    #[arg(long)]
    no_ebpf_iterator: bool,
    /// Attach the probe only with this strategy: fentry or sched_switch (default:
    /// fentry, else sched_switch).
    #[arg(long, value_name = "STRATEGY", conflicts_with = "no_ebpf")]
    ebpf_strategy: Option<Strategy>,
    /// The mountinfo file the cgroup hierarchies are found from.
    #[arg(long, default_value = cgroupkit::hierarchy::MOUNTINFO, value_name = "FILE")]
    mountinfo: PathBuf,
    /// Close a connection whose request headers are not complete this long after it
    /// opened or after its previous response (half-sent requests; also bounds how
    /// long an idle keep-alive connection waits for its next request).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Close a connection on which no byte has moved either way for this long while
    /// no scrape of it is being computed (a client that stops reading its response).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Open connections at most. At the cap a new connection closes the oldest one
    /// that is not being answered (so a flood of slow clients cannot lock scrapers
    /// out); the start-up raises the soft RLIMIT_NOFILE towards the hard one and
    /// lowers this cap to fit.
    #[arg(long, default_value_t = 512, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Scrapes computed at once (more wait for a slot); each reads with up to
    /// --threads threads.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    max_concurrent_scrapes: u16,
}

/// `10s`, `500ms`, `2m` or plain seconds (`10`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with ms, s or m (e.g. 10s)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s or m")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("cgroup_exporter: error: {}", errchain::Chain(&*e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn StdError>> {
    let root = cli.cgroup_root.trim_matches('/');
    let config = Config {
        cgroup_root: if root.is_empty() {
            CgroupPath::root()
        } else {
            CgroupPath::new(root)?
        },
        max_depth: cli.max_depth,
        include: cli.include,
        exclude: cli.exclude,
        threads: cli.threads.map(usize::from),
        disable: cli.disable_metrics,
    };
    let h = Hierarchy::from_mountinfo(&cli.mountinfo)?;
    let mut collector = Collector::new(h, config)?;
    if let Some(r) = cli.sandbox_root.clone() {
        collector.set_sandbox_root(r);
    }
    if cli.no_ebpf {
        log!("cgroup_exporter: eBPF throttle probe off: --no-ebpf");
    } else {
        // The object: $PROBES_EBPF_OBJECT, else where `cargo xtask build-ebpf` put it
        // in the workspace this binary was built from (the first folder above these
        // sources that has it).
        let object = std::env::var_os("PROBES_EBPF_OBJECT").map_or_else(
            || {
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                let mut found = dir.ancestors().map(|d| d.join(probes::BUILD_OBJECT));
                let fallback = dir.parent().unwrap_or(dir).join(probes::BUILD_OBJECT);
                found.find(|p| p.is_file()).unwrap_or(fallback)
            },
            std::path::PathBuf::from,
        );
        if cli.no_ebpf_iterator {
            log!("cgroup_exporter: BPF cgroup iterator off: --no-ebpf-iterator");
        } else {
            match CgroupIter::from_file(&object).load() {
                Ok(it) => {
                    if let Some(why) = it.processes_unavailable() {
                        log!(
                            "cgroup_exporter: BPF task iterator off ({why}); container_processes from cgroup.procs"
                        );
                    }
                    collector.set_iterator(it);
                    if collector.iterator_up() {
                        log!("cgroup_exporter: BPF cgroup iterator on");
                    } else {
                        log!(
                            "cgroup_exporter: BPF cgroup iterator loaded but no hierarchy could be linked; reading files"
                        );
                    }
                }
                Err(e) => log!(
                    "cgroup_exporter: BPF cgroup iterator off ({}); reading every file",
                    errchain::Chain(&e)
                ),
            }
        }
        let mut b = Probe::from_file(object).without_paths();
        if let Some(s) = cli.ebpf_strategy {
            b = b.strategy(s);
        }
        match b.load() {
            Ok(p) => {
                log!("cgroup_exporter: eBPF throttle probe on: {}", p.strategy());
                collector.set_probe(p);
                // Loading parsed the kernel's BTF (megabytes, now freed): hand the
                // freed heap back so the long-running RSS stays small.
                #[cfg(target_env = "gnu")]
                // SAFETY: malloc_trim only releases free heap pages; no pointer is
                // invalidated.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
            Err(e) => log!(
                "cgroup_exporter: eBPF throttle probe off ({e}); serving the cgroup metrics without it"
            ),
        }
    }
    log!(
        "cgroup_exporter: {} host, watching {}",
        collector.layout(),
        if root.is_empty() { "/" } else { root }
    );
    let limits = Limits {
        header_timeout: cli.header_timeout,
        idle_timeout: cli.idle_timeout,
        max_connections: conn::fit_max_connections(cli.max_connections as usize),
        max_scrapes: usize::from(cli.max_concurrent_scrapes),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(limits.max_scrapes)
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, conn::serve(cli.listen, Arc::new(collector), limits))
}
