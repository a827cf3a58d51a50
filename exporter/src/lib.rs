//! `cgroup_exporter`'s library: per-cgroup metrics, named and defined as cAdvisor
//! names them, plus the eBPF throttle probe's per-cgroup events and duration
//! histograms, read at scrape time and written as Prometheus text or OpenMetrics.
//!
//! The [`Collector`] walks the cgroup hierarchies that cgroupkit finds (v1, v2 or
//! hybrid; on v1 and hybrid hosts the per-controller trees are merged by relative
//! path into one `id` label set), reads each cgroup's files with one `read(2)` per
//! file, and writes the exposition text directly into one buffer. Nothing is polled
//! in the background: a cgroup made just now is on the next scrape, one removed (even
//! mid-scrape) drops out without an error, and malformed or unreadable files count as
//! read errors (`cgroup_exporter_read_errors_total{kind}`), never panics.
//!
//! ```no_run
//! use exporter::{Collector, Config, Format};
//! let h = cgroupkit::Hierarchy::detect()?;
//! let mut c = Collector::new(h, Config::default())?;
//! let text = c.collect(Format::Text);
//! assert!(text.contains("container_cpu_usage_seconds_total"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The HTTP server, flags and eBPF loading live in the `cgroup_exporter` binary.
#![deny(missing_docs)]

mod expo;
mod read;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::time::Instant;

use cgroupkit::{CgroupPath, Controller, Hierarchy, Layout, Mount, Version};
use probes::{HIST_BUCKETS, Probe, ThrottleStats, bucket_low_usec};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

pub use expo::Format;
use expo::{Kind, Value, header, series};
use read::{FileReader, Miss, Sample};

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

/// A shell-style pattern matched against a cgroup's `id` (its path, `/` for the
/// root): `*` matches any run of characters, `/` included; `?` one character.
///
/// # Examples
/// ```
/// use exporter::Pattern;
/// let p: Pattern = "/kubepods*".parse()?;
/// assert!(p.matches("/kubepods.slice/pod1"));
/// assert!(!p.matches("/system.slice"));
/// # Ok::<(), exporter::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl std::str::FromStr for Pattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Pattern, Error> {
        if s.is_empty() {
            return Err(Error::Pattern {
                pattern: s.into(),
                reason: "empty; use `*` to match everything",
            });
        }
        Ok(Pattern(s.to_owned()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Pattern {
    /// Whether `id` matches the whole pattern.
    pub fn matches(&self, id: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (self.0.chars().collect(), id.chars().collect());
        // Iterative wildcard match: remember the last `*` and retry from there.
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
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
    /// Threads that read cgroup files during a scrape (at least 1). Reading is
    /// kernel work (open, seq_file show, close) that scales with cores; a scrape of
    /// fewer than [`PARALLEL_MIN`] cgroups stays on one thread. `None`: the number of
    /// CPUs this process may use, at most 4, so a node's workloads keep their cores.
    pub threads: Option<usize>,
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

const ROLE_CPU: u8 = 1;
const ROLE_CPUACCT: u8 = 2;
const ROLE_MEMORY: u8 = 4;
const ROLE_PROCS: u8 = 8;
const ROLE_PSI: u8 = 16;
/// Roles that read more than one file of a directory (all but processes alone): their
/// reads go through an O_PATH fd of it ([`read::FileReader::enter`]).
const MULTI_FILE_ROLES: u8 = ROLE_CPU | ROLE_CPUACCT | ROLE_MEMORY | ROLE_PSI;

/// One hierarchy the collector walks and what it reads there.
#[derive(Debug)]
struct Source {
    mount_point: String,
    version: Version,
    roles: u8,
}

/// A cgroup found by the walk: on which sources it exists, and its cgroup id on the
/// cpu hierarchy (the key of the eBPF probe's maps).
#[derive(Debug, Default)]
struct Node {
    present: u32,
    cpu_ino: Option<u64>,
}

/// The exporter's self metrics.
#[derive(Debug)]
struct SelfMetrics {
    registry: Registry,
    duration: Histogram,
    cgroups: IntGauge,
    errors: IntCounterVec,
    ebpf_up: IntGauge,
}

impl SelfMetrics {
    fn new() -> Result<SelfMetrics, prometheus::Error> {
        let registry = Registry::new();
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "cgroup_exporter_scrape_duration_seconds",
                "Time to read every cgroup and write the metrics, per scrape.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let cgroups = IntGauge::new(
            "cgroup_exporter_cgroups",
            "Cgroups exported by the last scrape.",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "cgroup_exporter_read_errors_total",
                "Cgroup or eBPF map reads that failed, by kind (vanished cgroups are not errors).",
            ),
            &["kind"],
        )?;
        let ebpf_up = IntGauge::new(
            "cgroup_exporter_ebpf_probe_up",
            "1 when the eBPF throttle probe is attached, 0 when it is off.",
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(cgroups.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(ebpf_up.clone()))?;
        for k in ErrorKind::ALL {
            errors.with_label_values(&[k.label()]);
        }
        Ok(SelfMetrics {
            registry,
            duration,
            cgroups,
            errors,
            ebpf_up,
        })
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
/// optionally, the attached eBPF [`Probe`].
pub struct Collector {
    hierarchy: Hierarchy,
    config: Config,
    sources: Vec<Source>,
    reader: FileReader,
    /// The readers of the other threads of a parallel scrape (buffers kept).
    workers: Vec<FileReader>,
    samples: Vec<Sample>,
    probe: Option<Probe>,
    metrics: SelfMetrics,
    /// `le` labels of the throttle histogram: bucket i ends at 2^(i+1) us.
    le: Vec<String>,
    last_len: usize,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collector")
            .field("layout", &self.hierarchy.layout())
            .field("config", &self.config)
            .field("sources", &self.sources)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
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
        match h.mount_for(Controller::Pids).or(cpu) {
            Some(m) => add(m, ROLE_PROCS),
            None => {
                if let Some(m) = h.mounts().first() {
                    add(m, ROLE_PROCS);
                }
            }
        }
        if let Some(u) = h.unified() {
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
            reader: FileReader::new(),
            workers: Vec::new(),
            samples: Vec::new(),
            probe: None,
            metrics,
            le,
            last_len: 0,
        })
    }

    /// Exports the probe's per-cgroup throttle events and duration histograms from
    /// now on (`cgroup_cpu_throttle_*`), and reports it up.
    pub fn set_probe(&mut self, probe: Probe) {
        self.probe = Some(probe);
        self.metrics.ebpf_up.set(1);
    }

    /// The attached probe, if any.
    pub fn probe(&self) -> Option<&Probe> {
        self.probe.as_ref()
    }

    /// The host's cgroup layout.
    pub fn layout(&self) -> Layout {
        self.hierarchy.layout()
    }

    /// One scrape: reads every cgroup now and returns the exposition text.
    pub fn collect(&mut self, format: Format) -> String {
        let mut out = String::with_capacity(self.last_len + self.last_len / 8 + 4096);
        self.collect_into(format, &mut out);
        self.last_len = out.len();
        out
    }

    /// One scrape, appended to `out`.
    pub fn collect_into(&mut self, format: Format, out: &mut String) -> ScrapeStats {
        let start = Instant::now();
        self.reader.errors = [0; ErrorKind::ALL.len()];
        let nodes = self.walk();
        let want_ino = self.probe.is_some();
        let mut by_ino: HashMap<u64, usize> = HashMap::new();
        self.samples.clear();
        let wanted: Vec<(String, Node)> = nodes
            .into_iter()
            .map(|(rel, node)| (if rel.is_empty() { "/".to_owned() } else { rel }, node))
            .filter(|(id, _)| self.config.wants(id))
            .collect();
        let read = self.read_all(&wanted);
        for ((id, node), s) in wanted.into_iter().zip(read) {
            let Some(mut s) = s else {
                continue; // vanished while we looked
            };
            s.id = id;
            if want_ino && let Some(ino) = node.cpu_ino {
                by_ino.insert(ino, self.samples.len());
            }
            self.samples.push(s);
        }
        let throttles = self.throttles(&by_ino);
        write_families(out, format, &self.samples);
        self.write_throttles(out, format, &throttles);

        let errors: u64 = self.reader.errors.iter().sum();
        for k in ErrorKind::ALL {
            let n = self.reader.errors[k.index()];
            if n > 0 {
                self.metrics
                    .errors
                    .with_label_values(&[k.label()])
                    .inc_by(n);
            }
        }
        self.metrics.cgroups.set(self.samples.len() as i64);
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
        expo::families(out, format, &self.metrics.registry.gather());
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        ScrapeStats {
            cgroups: self.samples.len(),
            errors,
            throttled_cgroups: throttles.len(),
        }
    }

    /// Walks every source from the configured subtree, merging by relative path.
    fn walk(&mut self) -> BTreeMap<String, Node> {
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let root_rel = if self.config.cgroup_root.is_root() {
            String::new()
        } else {
            format!("/{}", self.config.cgroup_root.as_str())
        };
        let max_depth = self.config.max_depth.unwrap_or(usize::MAX);
        let want_ino = self.probe.is_some();
        let mut dir = String::with_capacity(256);
        for (si, src) in self.sources.iter().enumerate() {
            let ino_here = want_ino && src.roles & ROLE_CPU != 0;
            let root_ino = if ino_here {
                std::fs::metadata(format!("{}{root_rel}", src.mount_point))
                    .ok()
                    .map(|m| m.ino())
            } else {
                None
            };
            // (path, depth, inode when this is the cpu source and the probe wants it,
            // known to have no subdirectories)
            let mut stack: Vec<(String, usize, Option<u64>, bool)> =
                vec![(root_rel.clone(), 0, root_ino, false)];
            let mut first = true;
            while let Some((rel, depth, ino, leaf)) = stack.pop() {
                let list = depth < max_depth
                    && !self.config.prunes(if rel.is_empty() { "/" } else { &rel });
                // Most cgroups are leaves, and listing a directory costs an open, two
                // getdents over its 10-30 files and a close (the walk was a seventh of
                // a scrape): a directory the parent's listing found leaf-like, or
                // whose children are not wanted, is recorded without it. The subtree
                // root is always listed.
                if !first && (leaf || !list) {
                    mark(&mut nodes, rel, si, ino);
                    continue;
                }
                dir.clear();
                dir.push_str(&src.mount_point);
                dir.push_str(&rel);
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) => {
                        // The subtree root missing on a hierarchy, or a cgroup removed
                        // since its parent was listed: nothing to export there.
                        if !(first || Miss::from_io(&e) == Miss::Gone) {
                            self.reader.count_io(&e);
                        }
                        first = false;
                        continue;
                    }
                };
                first = false;
                if list {
                    for e in rd.flatten() {
                        // d_type from getdents: no stat per entry.
                        if !e.file_type().is_ok_and(|t| t.is_dir()) {
                            continue;
                        }
                        let name = e.file_name();
                        let Some(name) = name.to_str() else { continue };
                        // kernfs keeps a directory's link count at 2 + its
                        // subdirectories: a stat relative to this directory (fstatat,
                        // one name to look up) tells a leaf. Other counts: list it.
                        let leaf = if depth + 1 < max_depth {
                            match e.metadata() {
                                Ok(m) => m.nlink() == 2,
                                Err(err) => {
                                    // Removed since the listing: nothing to export.
                                    if Miss::from_io(&err) != Miss::Gone {
                                        self.reader.count_io(&err);
                                    }
                                    continue;
                                }
                            }
                        } else {
                            true
                        };
                        let mut child = String::with_capacity(rel.len() + 1 + name.len());
                        child.push_str(&rel);
                        child.push('/');
                        child.push_str(name);
                        stack.push((child, depth + 1, ino_here.then(|| e.ino()), leaf));
                    }
                }
                mark(&mut nodes, rel, si, ino);
            }
        }
        nodes
    }

    /// Reads the wanted cgroups (id, node), in order: on this thread, or split in
    /// contiguous parts over [`Config::threads`] threads, each with its own reader.
    fn read_all(&mut self, wanted: &[(String, Node)]) -> Vec<Option<Sample>> {
        let threads = self.config.threads();
        let sources = &self.sources;
        let one = |reader: &mut FileReader, part: &[(String, Node)]| -> Vec<Option<Sample>> {
            part.iter()
                .map(|(id, node)| read_node(sources, reader, if id == "/" { "" } else { id }, node))
                .collect()
        };
        if threads == 1 || wanted.len() < PARALLEL_MIN {
            return one(&mut self.reader, wanted);
        }
        while self.workers.len() < threads - 1 {
            self.workers.push(FileReader::new());
        }
        let mut parts = wanted.chunks(wanted.len().div_ceil(threads));
        let first = parts.next().unwrap_or_default();
        let (reader, workers) = (&mut self.reader, &mut self.workers);
        let out = std::thread::scope(|sc| {
            let handles: Vec<_> = parts
                .zip(workers.iter_mut())
                .map(|(part, w)| {
                    w.errors = [0; ErrorKind::ALL.len()];
                    sc.spawn(move || one(w, part))
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
        for w in &self.workers {
            for (total, n) in self.reader.errors.iter_mut().zip(w.errors) {
                *total += n;
            }
        }
        out
    }
    /// The probe's counters of the exported cgroups, as (sample index, stats).
    fn throttles(&mut self, by_ino: &HashMap<u64, usize>) -> Vec<(usize, ThrottleStats)> {
        let Some(probe) = &mut self.probe else {
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
                self.reader.errors[ErrorKind::Ebpf.index()] += 1;
                Vec::new()
            }
        }
    }

    fn write_throttles(&self, out: &mut String, f: Format, t: &[(usize, ThrottleStats)]) {
        if self.probe.is_none() {
            return;
        }
        write_throttle_families(out, f, &self.samples, t, &self.le);
    }
}

/// Reads one cgroup from every source it is on; `None` when it vanished.
/// `rel` is the path from the hierarchy roots, empty for the root.
fn read_node(
    sources: &[Source],
    reader: &mut FileReader,
    rel: &str,
    node: &Node,
) -> Option<Sample> {
    let mut s = Sample::default();
    let mut dir = String::with_capacity(128);
    let on = |si: usize| node.present & (1 << si) != 0;
    // Processes first: cgroup.procs exists in every cgroup directory, so a miss
    // there means the cgroup is gone.
    let procs = sources
        .iter()
        .enumerate()
        .find(|(si, src)| on(*si) && src.roles & ROLE_PROCS != 0)
        .or_else(|| sources.iter().enumerate().find(|(si, _)| on(*si)));
    if let Some((_, src)) = procs {
        dir.clear();
        dir.push_str(&src.mount_point);
        dir.push_str(rel);
        if src.roles & MULTI_FILE_ROLES != 0 {
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
        if src.roles & MULTI_FILE_ROLES != 0 {
            reader.enter(&dir);
        }
        if src.roles & ROLE_CPU != 0 {
            reader.cpu(&dir, src.version, &mut s);
        }
        if src.roles & ROLE_CPUACCT != 0 {
            reader.cpuacct(&dir, &mut s);
        }
        if src.roles & ROLE_MEMORY != 0 {
            reader.memory(&dir, src.version, &mut s);
        }
        if src.roles & ROLE_PSI != 0 {
            reader.pressure(&dir, &mut s);
        }
    }
    Some(s)
}

/// The probe's families: events counter and the duration histogram (log2 buckets of
/// the probe, in seconds; bucket i ends at 2^(i+1) us, the last one is `+Inf`).
fn write_throttle_families(
    out: &mut String,
    f: Format,
    samples: &[Sample],
    t: &[(usize, ThrottleStats)],
    le: &[String],
) {
    const EVENTS: &str = "cgroup_cpu_throttle_events_total";
    const DURATION: &str = "cgroup_cpu_throttle_duration_seconds";
    header(
        out,
        f,
        EVENTS,
        "CPU throttle events seen by the eBPF probe since it attached (per cfs_rq with fentry, per task with sched_switch).",
        Kind::Counter,
    );
    for (i, st) in t {
        series(out, EVENTS, &samples[*i].id, None, Value::Int(st.events));
    }
    header(
        out,
        f,
        DURATION,
        "Durations of CPU throttle events seen by the eBPF probe.",
        Kind::Histogram,
    );
    let bucket = format!("{DURATION}_bucket");
    let sum = format!("{DURATION}_sum");
    let count = format!("{DURATION}_count");
    for (i, st) in t {
        let id = &samples[*i].id;
        let mut cum = 0u64;
        for (b, le) in le.iter().enumerate() {
            cum += st.hist.get(b).copied().unwrap_or(0);
            series(out, &bucket, id, Some(le), Value::Int(cum));
        }
        cum += st.hist.get(le.len()..).map_or(0, |r| r.iter().sum());
        // The map is read while the probe updates it: keep the buckets monotonic.
        let total = cum.max(st.events);
        series(out, &bucket, id, Some("+Inf"), Value::Int(total));
        series(
            out,
            &sum,
            id,
            None,
            Value::Float(st.throttled_ns as f64 / 1e9),
        );
        series(out, &count, id, None, Value::Int(total));
    }
}

type Getter = fn(&Sample) -> Option<Value>;

/// The cgroup families, named and defined as cAdvisor's.
const FAMILIES: &[(&str, &str, Kind, Getter)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        Kind::Counter,
        |s| s.usage_usec.map(Value::usec),
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        Kind::Counter,
        |s| s.user_usec.map(Value::usec),
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        Kind::Counter,
        |s| s.system_usec.map(Value::usec),
    ),
    (
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        Kind::Counter,
        |s| s.nr_periods.map(Value::Int),
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        Kind::Counter,
        |s| s.nr_throttled.map(Value::Int),
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        Kind::Counter,
        |s| s.throttled_usec.map(Value::usec),
    ),
    (
        "container_cpu_cfs_burst_periods_total",
        "Number of periods when burst occurs.",
        Kind::Counter,
        |s| s.nr_bursts.map(Value::Int),
    ),
    (
        "container_cpu_cfs_burst_seconds_total",
        "Total time duration the container has been bursted.",
        Kind::Counter,
        |s| s.burst_usec.map(Value::usec),
    ),
    (
        "container_spec_cpu_quota",
        "CPU quota of the container (microseconds per period); absent when unlimited.",
        Kind::Gauge,
        |s| s.quota_usec.map(Value::Int),
    ),
    (
        "container_spec_cpu_period",
        "CPU period of the container (microseconds).",
        Kind::Gauge,
        |s| s.period_usec.map(Value::Int),
    ),
    (
        "container_spec_cpu_shares",
        "CPU share of the container (v2 cpu.weight converted to shares).",
        Kind::Gauge,
        |s| s.shares.map(Value::Int),
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        Kind::Gauge,
        |s| s.mem_usage.map(Value::Int),
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes (usage minus inactive file pages).",
        Kind::Gauge,
        |s| s.mem_working_set.map(Value::Int),
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes (v2 anon, v1 total_rss).",
        Kind::Gauge,
        |s| s.mem_rss.map(Value::Int),
    ),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory (v2 file, v1 total_cache).",
        Kind::Gauge,
        |s| s.mem_cache.map(Value::Int),
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container (0: unlimited).",
        Kind::Gauge,
        |s| s.mem_limit.map(Value::Int),
    ),
    (
        "container_oom_events_total",
        "Count of out of memory events observed for the container (OOM kills).",
        Kind::Counter,
        |s| s.oom_kills.map(Value::Int),
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        Kind::Gauge,
        |s| s.processes.map(Value::Int),
    ),
    (
        "container_pressure_cpu_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to CPU congestion.",
        Kind::Counter,
        |s| s.psi[0][0].map(Value::usec),
    ),
    (
        "container_pressure_cpu_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        Kind::Counter,
        |s| s.psi[0][1].map(Value::usec),
    ),
    (
        "container_pressure_memory_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to memory congestion.",
        Kind::Counter,
        |s| s.psi[1][0].map(Value::usec),
    ),
    (
        "container_pressure_memory_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to memory congestion.",
        Kind::Counter,
        |s| s.psi[1][1].map(Value::usec),
    ),
    (
        "container_pressure_io_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to IO congestion.",
        Kind::Counter,
        |s| s.psi[2][0].map(Value::usec),
    ),
    (
        "container_pressure_io_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to IO congestion.",
        Kind::Counter,
        |s| s.psi[2][1].map(Value::usec),
    ),
];

fn write_families(out: &mut String, f: Format, samples: &[Sample]) {
    for (name, help, kind, get) in FAMILIES {
        if !samples.iter().any(|s| get(s).is_some()) {
            continue;
        }
        header(out, f, name, help, *kind);
        for s in samples {
            if let Some(v) = get(s) {
                series(out, name, &s.id, None, v);
            }
        }
    }
}

/// Every metric family name the exporter can write (cgroup, eBPF and self metrics).
pub const METRIC_NAMES: &[&str] = &[
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_cfs_burst_periods_total",
    "container_cpu_cfs_burst_seconds_total",
    "container_spec_cpu_quota",
    "container_spec_cpu_period",
    "container_spec_cpu_shares",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_memory_rss",
    "container_memory_cache",
    "container_spec_memory_limit_bytes",
    "container_oom_events_total",
    "container_processes",
    "container_pressure_cpu_waiting_seconds_total",
    "container_pressure_cpu_stalled_seconds_total",
    "container_pressure_memory_waiting_seconds_total",
    "container_pressure_memory_stalled_seconds_total",
    "container_pressure_io_waiting_seconds_total",
    "container_pressure_io_stalled_seconds_total",
    "cgroup_cpu_throttle_events_total",
    "cgroup_cpu_throttle_duration_seconds",
    "cgroup_exporter_scrape_duration_seconds",
    "cgroup_exporter_cgroups",
    "cgroup_exporter_read_errors_total",
    "cgroup_exporter_ebpf_probe_up",
];

/// Records that cgroup `rel` exists on source `si` (with its inode on the cpu source).
fn mark(nodes: &mut BTreeMap<String, Node>, rel: String, si: usize, cpu_ino: Option<u64>) {
    let node = match nodes.get_mut(&rel) {
        Some(n) => n,
        None => nodes.entry(rel).or_default(),
    };
    node.present |= 1 << si;
    if cpu_ino.is_some() {
        node.cpu_ino = cpu_ino;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn patterns() {
        let p = |s: &str| s.parse::<Pattern>().unwrap();
        assert!(p("*").matches("/"));
        assert!(p("/a/*/c").matches("/a/b/x/c"));
        assert!(!p("/a/*/c").matches("/a/c"));
        assert!(p("/a?").matches("/ab"));
        assert!(!p("/a?").matches("/a"));
        assert!(p("*test*").matches("/exporter-test-1-2"));
        assert!("".parse::<Pattern>().is_err());
    }

    #[test]
    fn families_match_the_name_list() {
        for (n, ..) in FAMILIES {
            assert!(METRIC_NAMES.contains(n), "{n}");
        }
    }

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
        let mut c = Collector::new(h, Config::default()).unwrap();
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
        let mut c = Collector::new(h.clone(), cfg).unwrap();
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
            let mut c = Collector::new(h.clone(), cfg).unwrap();
            c.walk().into_keys().collect::<Vec<_>>()
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
            let mut c = Collector::new(h.clone(), cfg).unwrap();
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
