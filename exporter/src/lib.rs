//! `cgroup_exporter`'s library: per-cgroup metrics, named and defined as cAdvisor
//! names them, plus the eBPF throttle probe's per-cgroup events and duration
//! histograms, read at scrape time and written as Prometheus text or OpenMetrics.
//!
//! The [`Collector`] walks the cgroup hierarchies that cgroupkit finds (v1, v2 or
//! hybrid; on v1 and hybrid hosts the per-controller trees are merged by relative
//! path into one `id` label set) with cgroupkit's walker, reads each cgroup's files
//! with cgroupkit's reader (to the end of each file: `cgroup.procs` of a busy cgroup
//! spans several `read(2)` calls), and writes the exposition text directly into one
//! buffer. With [`Collector::set_iterator`], the hierarchies are walked by the BPF
//! cgroup iterator of `probes::iter` instead (one `read(2)` each), and the values it
//! reads from the kernel's structs replace the files they come from; the output is
//! the same. Scrapes may run at once from several threads (`collect` takes `&self`).
//! Nothing is polled
//! in the background: a cgroup made just now is on the next scrape, one removed (even
//! mid-scrape) drops out without an error, and malformed or unreadable files count as
//! read errors (`cgroup_exporter_read_errors_total{kind}`), never panics.
//!
//! ```no_run
//! use exporter::{Collector, Config, Format};
//! let h = cgroupkit::Hierarchy::detect()?;
//! let c = Collector::new(h, Config::default())?;
//! let text = c.collect(Format::Text);
//! assert!(text.contains("container_cpu_usage_seconds_total"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The HTTP server, flags and eBPF loading live in the `cgroup_exporter` binary (its
//! own package, `cgroup-exporter`): this crate depends on no CLI, HTTP or async crate.
#![deny(missing_docs)]

mod expo;
mod families;
mod pattern;
pub mod pods;
mod read;
mod walk;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cgroupkit::{CgroupPath, Controller, Hierarchy, Layout, Mount, Version};
use probes::iter::{CgroupIter, Processes, TaskHierarchy};
use probes::{HIST_BUCKETS, Probe, Strategy, ThrottleStats, bucket_low_usec};

pub use expo::Format;
use expo::Value;
pub use families::METRIC_NAMES;
use families::{SelfMetrics, write_families, write_throttle_families};
pub use pattern::Pattern;
use read::{FileReader, Sample};
use walk::{
    IterState, MULTI_FILE_ROLES, Node, ROLE_CPU, ROLE_CPUACCT, ROLE_MEMORY, ROLE_PROCS, ROLE_PSI,
    Source,
};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The exporter's own metrics could not be registered (a bug: duplicate names).
    #[error("cannot register the exporter's self metrics")]
    SelfMetrics(#[source] prometheus::Error),
    /// A `--include`/`--exclude` pattern was refused.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// Why.
        reason: &'static str,
    },
}

/// The kinds of read errors counted in `cgroup_exporter_read_errors_total{kind}`.
///
/// A file or cgroup that vanished (ENOENT, ENODEV) is not an error: it is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// EACCES / EPERM.
    Permission,
    /// Content that does not parse (or is not UTF-8, or absurdly large).
    Parse,
    /// Any other I/O error.
    Io,
    /// Reading the eBPF probe's maps failed.
    Ebpf,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Permission,
        ErrorKind::Parse,
        ErrorKind::Io,
        ErrorKind::Ebpf,
    ];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Permission => "permission",
            ErrorKind::Parse => "parse",
            ErrorKind::Io => "io",
            ErrorKind::Ebpf => "ebpf",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What to export.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The subtree to watch (relative to every hierarchy's root); the root by default.
    /// The `id` labels stay full paths from the hierarchy root.
    pub cgroup_root: CgroupPath,
    /// How deep below `cgroup_root` to go (0: only `cgroup_root` itself).
    pub max_depth: Option<usize>,
    /// Export only cgroups whose id matches one of these (all when empty).
    pub include: Vec<Pattern>,
    /// Never export cgroups whose id matches one of these. A pattern ending in `*`
    /// (`/system.slice*`) also matches every descendant, so the walk skips that whole
    /// subtree without listing it; other patterns drop only the cgroups they match.
    pub exclude: Vec<Pattern>,
    /// Metric groups not to export (nor read): as cAdvisor's `--disable_metrics`,
    /// whose default set leaves out `process`.
    pub disable: Vec<MetricGroup>,
    /// Threads that read cgroup files during a scrape (at least 1). Reading is
    /// kernel work (open, seq_file show, close) that scales with cores; a scrape of
    /// fewer than [`PARALLEL_MIN`] cgroups stays on one thread. `None`: the number of
    /// CPUs this process may use, at most 4, so a node's workloads keep their cores.
    pub threads: Option<usize>,
}

/// A group of metric families that can be left out ([`Config::disable`]): each costs
/// file reads per cgroup at every scrape that the BPF cgroup iterator cannot replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricGroup {
    /// `container_processes` (`cgroup.procs`, one file per cgroup). cAdvisor leaves it
    /// out by default.
    Process,
    /// `container_pressure_*` (three PSI files per cgroup). cAdvisor 0.38 has none.
    Pressure,
}

impl std::str::FromStr for MetricGroup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "process" | "processes" => Ok(MetricGroup::Process),
            "pressure" | "psi" => Ok(MetricGroup::Pressure),
            _ => Err(format!(
                "unknown metric group {s:?}: use process or pressure"
            )),
        }
    }
}

/// Below this many cgroups a scrape reads on the calling thread only.
pub const PARALLEL_MIN: usize = 64;

impl Config {
    /// The reading threads a scrape uses.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
            .max(1)
    }

    fn exports(&self, g: MetricGroup) -> bool {
        !self.disable.contains(&g)
    }

    fn wants(&self, id: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(id)))
            && !self.exclude.iter().any(|p| p.matches(id))
    }

    /// Whether nothing below `id` can be exported: an exclude pattern that ends in
    /// `*` matches it, and so matches `id/...` as well.
    fn prunes(&self, id: &str) -> bool {
        self.exclude
            .iter()
            .any(|p| p.0.ends_with('*') && p.matches(id))
    }
}

/// What one scrape did, besides the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Cgroups exported.
    pub cgroups: usize,
    /// Read errors counted in this scrape.
    pub errors: u64,
    /// Cgroups with eBPF throttle data exported.
    pub throttled_cgroups: usize,
}

/// Reads the cgroups at scrape time and writes metric families.
///
/// Holds only buffers between scrapes (reused to keep allocations and RSS low) and,
/// optionally, the attached eBPF [`Probe`]. `Sync`: scrapes may run at once from
/// several threads (each takes its own buffers from a pool, so concurrent scrapes
/// never wait for each other; only the probe's map read is one at a time). How many
/// run at once is the caller's bound (the binary's `--max-concurrent-scrapes`).
pub struct Collector {
    hierarchy: Hierarchy,
    config: Config,
    sources: Vec<Source>,
    /// Buffers of finished scrapes, for the next ones.
    pool: Mutex<Vec<Scratch>>,
    probe: Mutex<Option<Probe>>,
    strategy: Option<Strategy>,
    iter: Option<IterState>,
    metrics: SelfMetrics,
    /// `le` labels of the throttle histogram: bucket i ends at 2^(i+1) us.
    le: Vec<String>,
    last_len: AtomicUsize,
    /// A sandbox state root: series of its pods' and containers' cgroups get `pod`,
    /// `namespace`, `container` and `image` labels ([`pods`]).
    sandbox_root: Option<std::path::PathBuf>,
    /// Which of a task's cgroups is the processes source's (the task iterator's
    /// counts are keyed by it), where that source is one it knows.
    procs_key: Option<TaskHierarchy>,
}

/// One scrape's reusable state.
#[derive(Debug)]
struct Scratch {
    reader: FileReader,
    /// The readers of the other threads of a parallel scrape (buffers kept).
    workers: Vec<FileReader>,
    samples: Vec<Sample>,
}

impl Scratch {
    fn new(sources: &[Source]) -> Scratch {
        Scratch {
            reader: reader_for(sources),
            workers: Vec::new(),
            samples: Vec::new(),
        }
    }
}

/// A file reader that opens files relative to the sources' mount points.
fn reader_for(sources: &[Source]) -> FileReader {
    FileReader::with_bases(sources.iter().map(|s| s.mount_point.as_str()))
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("layout", &self.hierarchy.layout())
            .field("config", &self.config)
            .field("sources", &self.sources)
            .field("probe", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// Decrements the in-flight gauge when a scrape ends, even by a panic.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Collector {
    /// A collector over the hierarchies of `h`: the ones serving cpu, cpuacct (v1),
    /// memory and pids, and the v2 tree (PSI). No file is read until a scrape.
    pub fn new(h: Hierarchy, config: Config) -> Result<Collector, Error> {
        let mut sources: Vec<Source> = Vec::new();
        let mut add = |m: &Mount, role: u8| {
            let mp = m.mount_point.to_string_lossy();
            let mp = mp.trim_end_matches('/');
            match sources.iter_mut().find(|s| s.mount_point == mp) {
                Some(s) => s.roles |= role,
                None => sources.push(Source {
                    mount_point: mp.to_owned(),
                    version: m.version,
                    roles: role,
                }),
            }
        };
        // cpu.stat is a core file on v2 (usage), so the v2 tree reads cpu there even
        // when the cpu controller is not enabled at its root.
        let cpu = h
            .mount_for(Controller::Cpu)
            .or_else(|| h.unified().filter(|_| h.layout() == Layout::V2));
        if let Some(m) = cpu {
            add(m, ROLE_CPU);
        }
        if let Some(m) = h
            .mount_for(Controller::Cpuacct)
            .filter(|m| m.version == Version::V1)
        {
            add(m, ROLE_CPUACCT);
        }
        if let Some(m) = h.mount_for(Controller::Memory) {
            add(m, ROLE_MEMORY);
        }
        let mut procs_key = None;
        if config.exports(MetricGroup::Process) {
            let m = h
                .mount_for(Controller::Pids)
                .or(cpu)
                .or_else(|| h.mounts().first());
            if let Some(m) = m {
                add(m, ROLE_PROCS);
                procs_key = if m.version == Version::V2 {
                    Some(TaskHierarchy::V2)
                } else if m.controllers.contains(&Controller::Pids) {
                    Some(TaskHierarchy::Pids)
                } else if m.controllers.contains(&Controller::Cpu) {
                    Some(TaskHierarchy::Cpu)
                } else if m.controllers.contains(&Controller::Memory) {
                    Some(TaskHierarchy::Memory)
                } else {
                    None
                };
            }
        }
        if config.exports(MetricGroup::Pressure)
            && let Some(u) = h.unified()
        {
            add(u, ROLE_PSI);
        }
        let metrics = SelfMetrics::new().map_err(Error::SelfMetrics)?;
        let le = (0..HIST_BUCKETS - 1)
            .map(|i| {
                let mut s = String::new();
                expo::value(&mut s, Value::usec(bucket_low_usec(i + 1)));
                s
            })
            .collect();
        Ok(Collector {
            hierarchy: h,
            config,
            sources,
            pool: Mutex::new(Vec::new()),
            probe: Mutex::new(None),
            strategy: None,
            iter: None,
            metrics,
            le,
            last_len: AtomicUsize::new(0),
            sandbox_root: None,
            procs_key,
        })
    }

    /// Labels the series of `sandbox` pods and containers found under this state
    /// root with `pod`, `namespace`, `container` and `image` ([`pods`]), read on each
    /// scrape.
    pub fn set_sandbox_root(&mut self, root: std::path::PathBuf) {
        self.sandbox_root = Some(root);
    }

    /// Exports the probe's per-cgroup throttle events and duration histograms from
    /// now on (`cgroup_cpu_throttle_*`), and reports it up.
    pub fn set_probe(&mut self, probe: Probe) {
        self.strategy = Some(probe.strategy());
        *self.probe.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(probe);
        self.metrics.ebpf_up.set(1);
    }

    /// Walks the cgroups with the BPF cgroup iterator from now on (one `read(2)` per
    /// hierarchy instead of listing directories) and takes from it the values it
    /// covers instead of reading their files: CPU bandwidth counters, quota, period
    /// and shares/weight, v1 cpuacct times, memory usage (not a v1 root's), limit
    /// and OOM kills. Hierarchies it cannot link to (the subtree root missing now)
    /// and walks that fail (counted as `ebpf` read errors) fall back to directories
    /// and files; the output is the same either way. `cgroup_exporter_ebpf_iterator_up`
    /// and `cgroup_exporter_family_source` say which is in use.
    pub fn set_iterator(&mut self, it: CgroupIter) {
        let st = IterState::new(it, &self.sources, &self.config);
        let linked: Vec<bool> = st
            .links
            .iter()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()).is_some())
            .collect();
        self.metrics
            .iter_up
            .set(i64::from(linked.iter().any(|&l| l)));
        let from_iter = |role: u8| {
            self.sources
                .iter()
                .zip(&linked)
                .any(|(s, &l)| l && s.roles & role != 0)
        };
        let v2_cpu = self
            .sources
            .iter()
            .any(|s| s.roles & ROLE_CPU != 0 && s.version == Version::V2);
        for (family, ebpf) in families::sources(
            from_iter(ROLE_CPU),
            from_iter(ROLE_CPUACCT) && !v2_cpu,
            from_iter(ROLE_MEMORY),
            from_iter(ROLE_PSI) && st.it.offsets().pressure(),
            from_iter(ROLE_PROCS) && st.it.counts_processes() && self.procs_key.is_some(),
        ) {
            self.metrics.set_source(family, ebpf);
        }
        self.iter = Some(st);
    }

    /// Whether the last scrape (or, before any, the linking) walked with the BPF
    /// cgroup iterator on at least one hierarchy.
    pub fn iterator_up(&self) -> bool {
        self.metrics.iter_up.get() == 1
    }

    /// How the attached probe attached, if one is.
    pub fn probe_strategy(&self) -> Option<Strategy> {
        self.strategy
    }

    /// The host's cgroup layout.
    pub fn layout(&self) -> Layout {
        self.hierarchy.layout()
    }

    /// One scrape: reads every cgroup now and returns the exposition text.
    pub fn collect(&self, format: Format) -> String {
        let last = self.last_len.load(Ordering::Relaxed);
        let mut out = String::with_capacity(last + last / 8 + 4096);
        self.collect_into(format, &mut out);
        self.last_len.store(out.len(), Ordering::Relaxed);
        match &self.sandbox_root {
            Some(root) => pods::relabel(&out, &pods::read(root)),
            None => out,
        }
    }

    /// One scrape, appended to `out`.
    pub fn collect_into(&self, format: Format, out: &mut String) -> ScrapeStats {
        let start = Instant::now();
        self.metrics.in_flight.inc();
        let _in_flight = InFlight(&self.metrics.in_flight);
        let mut sc = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| Scratch::new(&self.sources));
        sc.reader.errors = [0; ErrorKind::ALL.len()];
        let want_ino = self.strategy.is_some();
        let mut iter_walks = 0;
        let nodes = walk::walk(
            &self.sources,
            &self.config,
            want_ino,
            self.iter.as_ref(),
            &mut sc.reader,
            &mut iter_walks,
        );
        if self.iter.is_some() {
            self.metrics.iter_up.set(i64::from(iter_walks > 0));
        }
        let mut by_ino: HashMap<u64, usize> = HashMap::new();
        sc.samples.clear();
        let (order, list) = nodes.sorted();
        let wanted: Vec<(String, &Node)> = order
            .into_iter()
            .map(|(rel, i)| (if rel.is_empty() { "/".to_owned() } else { rel }, &list[i]))
            .filter(|(id, _)| self.config.wants(id))
            .collect();
        // Processes: one pass of the task iterator for every cgroup, where it runs.
        let counts = match (&self.iter, self.procs_key) {
            (Some(st), Some(key))
                if self.config.exports(MetricGroup::Process)
                    && iter_walks > 0
                    && st.it.counts_processes() =>
            {
                match st.it.processes() {
                    Ok(p) => Some((p, key)),
                    Err(_) => {
                        sc.reader.errors[ErrorKind::Ebpf.index()] += 1;
                        None
                    }
                }
            }
            _ => None,
        };
        let counts = counts.as_ref().map(|(p, k)| (p, *k));
        let read = self.read_all(&mut sc, &wanted, counts);
        for ((id, node), s) in wanted.into_iter().zip(read) {
            let Some(mut s) = s else {
                continue; // vanished while we looked
            };
            s.id = id;
            if want_ino && let Some(ino) = node.cpu_ino {
                by_ino.insert(ino, sc.samples.len());
            }
            sc.samples.push(s);
        }
        let throttles = self.throttles(&mut sc.reader, &by_ino);
        write_families(out, format, &sc.samples);
        if self.strategy.is_some() {
            write_throttle_families(out, format, &sc.samples, &throttles, &self.le);
        }

        let errors: u64 = sc.reader.errors.iter().sum();
        for k in ErrorKind::ALL {
            let n = sc.reader.errors[k.index()];
            if n > 0 {
                self.metrics
                    .errors
                    .with_label_values(&[k.label()])
                    .inc_by(n);
            }
        }
        let cgroups = sc.samples.len();
        self.metrics.cgroups.set(cgroups as i64);
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
        expo::families(out, format, &self.metrics.registry.gather());
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        // Keep the buffers for the next scrape, but not the samples' strings.
        sc.samples.clear();
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(sc);
        ScrapeStats {
            cgroups,
            errors,
            throttled_cgroups: throttles.len(),
        }
    }

    /// Reads the wanted cgroups (id, node), in order: on this thread, or split in
    /// contiguous parts over [`Config::threads`] threads, each with its own reader.
    fn read_all(
        &self,
        sc: &mut Scratch,
        wanted: &[(String, &Node)],
        counts: Option<(&Processes, TaskHierarchy)>,
    ) -> Vec<Option<Sample>> {
        let threads = self.config.threads();
        let sources = &self.sources;
        let procs = self.config.exports(MetricGroup::Process);
        let one = |reader: &mut FileReader, part: &[(String, &Node)]| -> Vec<Option<Sample>> {
            part.iter()
                .map(|(id, node)| {
                    read_node(
                        sources,
                        reader,
                        if id == "/" { "" } else { id },
                        node,
                        procs,
                        counts,
                    )
                })
                .collect()
        };
        if threads == 1 || wanted.len() < PARALLEL_MIN {
            return one(&mut sc.reader, wanted);
        }
        while sc.workers.len() < threads - 1 {
            sc.workers.push(reader_for(sources));
        }
        let mut parts = wanted.chunks(wanted.len().div_ceil(threads));
        let first = parts.next().unwrap_or_default();
        let (reader, workers) = (&mut sc.reader, &mut sc.workers);
        let out = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .zip(workers.iter_mut())
                .map(|(part, w)| {
                    w.errors = [0; ErrorKind::ALL.len()];
                    scope.spawn(move || one(w, part))
                })
                .collect();
            let mut out = one(reader, first);
            for h in handles {
                match h.join() {
                    Ok(v) => out.extend(v),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            out
        });
        for w in &sc.workers {
            for (total, n) in sc.reader.errors.iter_mut().zip(w.errors) {
                *total += n;
            }
        }
        out
    }

    /// The probe's counters of the exported cgroups, as (sample index, stats).
    fn throttles(
        &self,
        reader: &mut FileReader,
        by_ino: &HashMap<u64, usize>,
    ) -> Vec<(usize, ThrottleStats)> {
        let mut probe = self.probe.lock().unwrap_or_else(|p| p.into_inner());
        let Some(probe) = probe.as_mut() else {
            return Vec::new();
        };
        match probe.snapshot() {
            Ok(snap) => {
                let mut v: Vec<(usize, ThrottleStats)> = snap
                    .cgroups
                    .into_iter()
                    .filter_map(|c| by_ino.get(&c.id).map(|&i| (i, c.stats)))
                    .collect();
                v.sort_by_key(|(i, _)| *i);
                v
            }
            Err(_) => {
                reader.errors[ErrorKind::Ebpf.index()] += 1;
                Vec::new()
            }
        }
    }
}

/// Reads one cgroup from every source it is on; `None` when it vanished.
/// `rel` is the path from the hierarchy roots, empty for the root.
fn read_node(
    sources: &[Source],
    reader: &mut FileReader,
    rel: &str,
    node: &Node,
    want_procs: bool,
    counts: Option<(&Processes, TaskHierarchy)>,
) -> Option<Sample> {
    let mut s = Sample::default();
    let mut dir = String::with_capacity(128);
    let on = |si: usize| node.present & (1 << si) != 0;
    // Processes first: cgroup.procs exists in every cgroup directory, so a miss
    // there means the cgroup is gone. (Without the process group, a cgroup gone
    // meanwhile shows no series: its reads all miss.)
    let procs = sources
        .iter()
        .enumerate()
        .find(|(si, src)| on(*si) && src.roles & ROLE_PROCS != 0)
        .or_else(|| sources.iter().enumerate().find(|(si, _)| on(*si)))
        .filter(|_| want_procs);
    // The task iterator's count, where the walk of the processes source was the
    // cgroup iterator's (it gave the cgroup's id there).
    let counted = match (procs, counts, node.procs_ino) {
        (Some((si, _)), Some((p, key)), Some(ino)) if node.iter & (1 << si) != 0 => {
            Some(u64::from(p.get(key, ino)))
        }
        _ => None,
    };
    // How many files a source's directory is read for: an O_PATH fd of it (one path
    // walk, then a lookup of one name per file) pays off from two files on. With the
    // iterator, a v1 cpu or cpuacct directory has none left and a memory one only
    // memory.stat.
    let files_in = |si: usize, src: &Source| -> u32 {
        let iter = node.iter & (1 << si) != 0;
        let mut n = 0;
        if src.roles & ROLE_PROCS != 0 && want_procs && counted.is_none() {
            n += 1;
        }
        if src.roles & ROLE_CPU != 0 {
            n += match (iter, src.version) {
                (true, Version::V1) => 0,
                (true, Version::V2) => 1,
                (false, _) => 4,
            };
        }
        if src.roles & ROLE_CPUACCT != 0 && !(iter && node.vals.cpu_usage.is_some()) {
            n += 2;
        }
        if src.roles & ROLE_MEMORY != 0 {
            n += if iter { 1 } else { 4 };
        }
        if src.roles & ROLE_PSI != 0 && !(iter && node.vals.pressure.is_some()) {
            n += 3;
        }
        n
    };
    if let Some(n) = counted {
        s.processes = Some(n);
    } else if let Some((si, src)) = procs {
        dir.clear();
        dir.push_str(&src.mount_point);
        dir.push_str(rel);
        if src.roles & MULTI_FILE_ROLES != 0 && files_in(si, src) > 1 {
            reader.enter(&dir);
        }
        match reader.processes(&dir) {
            Ok(n) => s.processes = n,
            Err(_) => return None,
        }
    }
    for (si, src) in sources.iter().enumerate() {
        if !on(si) {
            continue;
        }
        dir.clear();
        dir.push_str(&src.mount_point);
        dir.push_str(rel);
        if src.roles & MULTI_FILE_ROLES != 0 && files_in(si, src) > 1 {
            reader.enter(&dir);
        }
        // The cgroup iterator walked this source: its values replace the files.
        let iv = (node.iter & (1 << si) != 0).then_some(&node.vals);
        let root = rel.is_empty();
        if src.roles & ROLE_CPU != 0 {
            match iv {
                Some(v) => reader.cpu_iter(&dir, src.version, v, root, &mut s),
                None => reader.cpu(&dir, src.version, &mut s),
            }
        }
        if src.roles & ROLE_CPUACCT != 0 {
            match iv.and_then(|v| v.cpu_usage) {
                Some(u) => {
                    s.usage_usec = Some(u.usage_ns / 1000);
                    s.user_usec = Some(u.user_ns / 1000);
                    s.system_usec = Some(u.system_ns / 1000);
                }
                None => reader.cpuacct(&dir, &mut s),
            }
        }
        if src.roles & ROLE_MEMORY != 0 {
            reader.memory(&dir, src.version, iv.map(|v| (v, root)), &mut s);
        }
        if src.roles & ROLE_PSI != 0 {
            match iv.and_then(|v| v.pressure) {
                Some(p) => {
                    for (i, [some, full]) in [p.cpu, p.memory, p.io].into_iter().enumerate() {
                        s.psi[i] = [Some(some), Some(full)];
                    }
                }
                None => reader.pressure(&dir, &mut s),
            }
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A hybrid-like host in a tempdir: v1 cpu, cpuacct, memory, pids and a cgroup2
    /// mount, with real-format files; one cgroup only on some hierarchies.
    fn fake_host() -> (tempfile::TempDir, Hierarchy) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let w = |rel: &str, content: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        };
        for c in ["cpu", "cpuacct", "memory", "pids", "unified"] {
            for g in ["", "/app", "/app/\"odd\\name"] {
                w(&format!("{c}{g}/cgroup.procs"), "1\n2\n");
            }
        }
        w("unified/cgroup.controllers", "hugetlb\n");
        for g in ["", "/app", "/app/\"odd\\name"] {
            w(
                &format!("cpu{g}/cpu.stat"),
                "nr_periods 30\nnr_throttled 21\nthrottled_time 2191433000\n",
            );
            w(&format!("cpu{g}/cpu.cfs_quota_us"), "20000\n");
            w(&format!("cpu{g}/cpu.cfs_period_us"), "100000\n");
            w(&format!("cpu{g}/cpu.shares"), "1024\n");
            w(&format!("cpuacct{g}/cpuacct.usage"), "1500000000\n");
            w(&format!("cpuacct{g}/cpuacct.usage_user"), "1000000000\n");
            w(&format!("cpuacct{g}/cpuacct.usage_sys"), "500000000\n");
            w(&format!("memory{g}/memory.usage_in_bytes"), "4096\n");
            w(&format!("memory{g}/memory.limit_in_bytes"), "67108864\n");
            w(
                &format!("memory{g}/memory.stat"),
                "total_rss 1024\ntotal_cache 2048\ntotal_inactive_file 1000\n",
            );
            w(&format!("memory{g}/memory.oom_control"), "oom_kill 1\n");
            w(
                &format!("unified{g}/cpu.pressure"),
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=500\n",
            );
        }
        // Only in the memory tree: exported with memory series only.
        w("memory/only-mem/cgroup.procs", "");
        w("memory/only-mem/memory.usage_in_bytes", "1\n");
        // Malformed: counted, never a panic.
        w("memory/app/memory.stat", "total_rss\n");
        let mut mi = String::new();
        for (i, c) in ["cpu", "cpuacct", "memory", "pids"].iter().enumerate() {
            mi.push_str(&format!(
                "{} 1 0:{} / {} rw - cgroup cgroup rw,{c}\n",
                30 + i,
                40 + i,
                root.join(c).display()
            ));
        }
        mi.push_str(&format!(
            "50 1 0:60 / {} rw - cgroup2 cgroup2 rw\n",
            root.join("unified").display()
        ));
        let h = Hierarchy::from_mountinfo_text(&mi, Path::new("fixture")).unwrap();
        (t, h)
    }

    #[test]
    fn merges_hierarchies_by_path() {
        let (_t, h) = fake_host();
        assert_eq!(h.layout(), Layout::Hybrid);
        let c = Collector::new(h, Config::default()).unwrap();
        let mut out = String::new();
        let st = c.collect_into(Format::Text, &mut out);
        assert_eq!(st.cgroups, 4, "{out}");
        assert_eq!(st.errors, 1, "{out}");
        for line in [
            "container_cpu_cfs_throttled_periods_total{id=\"/app\"} 21\n",
            "container_cpu_cfs_throttled_seconds_total{id=\"/app\"} 2.191433\n",
            "container_cpu_cfs_periods_total{id=\"/\"} 30\n",
            "container_cpu_usage_seconds_total{id=\"/app\"} 1.5\n",
            "container_spec_cpu_quota{id=\"/app\"} 20000\n",
            "container_memory_working_set_bytes{id=\"/\"} 3096\n",
            "container_memory_usage_bytes{id=\"/only-mem\"} 1\n",
            "container_oom_events_total{id=\"/app\"} 1\n",
            "container_processes{id=\"/app\"} 2\n",
            "container_pressure_cpu_waiting_seconds_total{id=\"/app\"} 1.5\n",
            "container_pressure_cpu_stalled_seconds_total{id=\"/app\"} 0.0005\n",
            "container_cpu_cfs_periods_total{id=\"/app/\\\"odd\\\\name\"} 30\n",
            "cgroup_exporter_read_errors_total{kind=\"parse\"} 1\n",
            "cgroup_exporter_cgroups 4\n",
            "cgroup_exporter_ebpf_probe_up 0\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        assert!(!out.contains("container_cpu_cfs_periods_total{id=\"/only-mem\"}"));
        // /app's memory.stat is malformed: no rss there, the rest of /app is exported.
        assert!(!out.contains("container_memory_rss{id=\"/app\"}"));
        assert!(out.contains("container_memory_usage_bytes{id=\"/app\"} 4096\n"));
    }

    #[test]
    fn filters_and_depth() {
        let (_t, h) = fake_host();
        let cfg = Config {
            cgroup_root: CgroupPath::new("app").unwrap(),
            max_depth: Some(0),
            ..Config::default()
        };
        let c = Collector::new(h.clone(), cfg).unwrap();
        let out = c.collect(Format::Text);
        assert!(out.contains("{id=\"/app\"}"));
        assert!(!out.contains("odd"));
        let cfg = Config {
            exclude: vec!["/app*".parse().unwrap()],
            include: vec!["/?*".parse().unwrap()],
            ..Config::default()
        };
        let out = Collector::new(h, cfg).unwrap().collect(Format::Text);
        assert!(out.contains("{id=\"/only-mem\"}"));
        assert!(!out.contains("{id=\"/app"));
        assert!(!out.contains("{id=\"/\"}"));
    }

    #[test]
    fn exclude_ending_in_star_prunes_the_walk() {
        let (_t, h) = fake_host();
        let walked = |exclude: &str| {
            let cfg = Config {
                exclude: vec![exclude.parse().unwrap()],
                ..Config::default()
            };
            let c = Collector::new(h.clone(), cfg).unwrap();
            walk::walk(
                &c.sources,
                &c.config,
                false,
                None,
                &mut FileReader::new(),
                &mut 0,
            )
            .sorted()
            .0
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
        };
        // `/app*` matches /app and all below it: the subtree is not even listed.
        let pruned = walked("/app*");
        assert!(pruned.contains(&"/app".to_owned()), "{pruned:?}");
        assert!(!pruned.iter().any(|k| k.starts_with("/app/")), "{pruned:?}");
        // `/app` drops only /app itself: its children are still walked and exported.
        let kept = walked("/app");
        assert!(kept.iter().any(|k| k.starts_with("/app/")), "{kept:?}");
        let cfg = Config {
            exclude: vec!["/app".parse().unwrap()],
            ..Config::default()
        };
        let out = Collector::new(h.clone(), cfg)
            .unwrap()
            .collect(Format::Text);
        assert!(out.contains("{id=\"/app/\\\"odd\\\\name\"}"), "{out}");
        assert!(!out.contains("{id=\"/app\"}"));
    }

    #[test]
    fn parallel_scrape_reads_the_same_as_one_thread() {
        let (t, h) = fake_host();
        // Enough cgroups for the parallel path: copies of /app under /many.
        for i in 0..(PARALLEL_MIN * 2) {
            for c in ["cpu", "cpuacct", "memory", "pids", "unified"] {
                let from = t.path().join(c).join("app");
                let to = t.path().join(c).join("many").join(format!("c{i}"));
                std::fs::create_dir_all(&to).unwrap();
                for e in std::fs::read_dir(&from).unwrap().flatten() {
                    if e.file_type().unwrap().is_file() {
                        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                    }
                }
            }
        }
        let scrape = |threads| {
            let cfg = Config {
                threads: Some(threads),
                ..Config::default()
            };
            let c = Collector::new(h.clone(), cfg).unwrap();
            let out = c.collect(Format::Text);
            // Self metrics differ (scrape duration); the cgroup series must not.
            let series: String = out
                .lines()
                .filter(|l| !l.contains("cgroup_exporter_"))
                .map(|l| format!("{l}\n"))
                .collect();
            let errors = out
                .lines()
                .find(|l| l.starts_with("cgroup_exporter_read_errors_total{kind=\"parse\"}"))
                .map(str::to_owned);
            (series, errors)
        };
        let (one, one_err) = scrape(1);
        let (three, three_err) = scrape(3);
        assert!(one.contains("{id=\"/many/c127\"}"), "{one}");
        assert_eq!(one, three);
        // The malformed memory.stat of /app is counted once, whichever thread read it.
        assert_eq!(one_err, three_err);
        assert!(one_err.is_some());
    }

    #[test]
    fn disabled_groups_are_neither_read_nor_exported() {
        let (_t, h) = fake_host();
        let cfg = Config {
            disable: vec![MetricGroup::Process, MetricGroup::Pressure],
            ..Config::default()
        };
        let c = Collector::new(h, cfg).unwrap();
        // The pids and unified trees are not walked at all.
        assert!(
            c.sources
                .iter()
                .all(|s| s.roles & (ROLE_PROCS | ROLE_PSI) == 0)
        );
        assert_eq!(c.sources.len(), 3, "{:?}", c.sources);
        let out = c.collect(Format::Text);
        assert!(!out.contains("\ncontainer_processes{"), "{out}");
        assert!(!out.contains("\ncontainer_pressure_"), "{out}");
        assert!(out.contains("container_cpu_cfs_throttled_periods_total{id=\"/app\"} 21\n"));
        assert!("psi".parse::<MetricGroup>() == Ok(MetricGroup::Pressure));
        assert!("disk".parse::<MetricGroup>().is_err());
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let (_t, h) = fake_host();
        let out = Collector::new(h, Config::default())
            .unwrap()
            .collect(Format::OpenMetrics);
        assert!(out.ends_with("# EOF\n"));
        assert!(out.contains("# TYPE container_cpu_usage_seconds counter\n"));
        assert!(out.contains("container_cpu_usage_seconds_total{id=\"/\"} 1.5\n"));
    }

    #[test]
    fn throttle_histogram_is_cumulative_in_seconds() {
        let samples = vec![Sample {
            id: "/x".into(),
            ..Sample::default()
        }];
        let mut st = ThrottleStats::ZERO;
        st.events = 3;
        st.throttled_ns = 150_000_000;
        st.hist[16] = 2; // 65-131 ms
        st.hist[HIST_BUCKETS - 1] = 1;
        let le: Vec<String> = (0..HIST_BUCKETS - 1)
            .map(|i| {
                let mut s = String::new();
                expo::value(&mut s, Value::usec(bucket_low_usec(i + 1)));
                s
            })
            .collect();
        let mut out = String::new();
        write_throttle_families(&mut out, Format::Text, &samples, &[(0, st)], &le);
        for line in [
            "cgroup_cpu_throttle_events_total{id=\"/x\"} 3\n",
            "cgroup_cpu_throttle_duration_seconds_bucket{id=\"/x\",le=\"0.000002\"} 0\n",
            "cgroup_cpu_throttle_duration_seconds_bucket{id=\"/x\",le=\"0.131072\"} 2\n",
            "cgroup_cpu_throttle_duration_seconds_bucket{id=\"/x\",le=\"2147.483648\"} 2\n",
            "cgroup_cpu_throttle_duration_seconds_bucket{id=\"/x\",le=\"+Inf\"} 3\n",
            "cgroup_cpu_throttle_duration_seconds_sum{id=\"/x\"} 0.15\n",
            "cgroup_cpu_throttle_duration_seconds_count{id=\"/x\"} 3\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }
}
