//! The metric families: cAdvisor's cgroup families, the eBPF probe's throttle
//! families and the exporter's self metrics, written from a scrape's samples.

use probes::ThrottleStats;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::ErrorKind;
use crate::expo::{Format, Kind, Value, header, id_labels, series, series_with};
use crate::read::Sample;

/// The exporter's self metrics.
#[derive(Debug)]
pub(crate) struct SelfMetrics {
    pub registry: Registry,
    pub duration: Histogram,
    pub cgroups: IntGauge,
    pub errors: IntCounterVec,
    pub ebpf_up: IntGauge,
    pub in_flight: IntGauge,
    pub iter_up: IntGauge,
    pub family_source: IntGaugeVec,
}

impl SelfMetrics {
    pub fn new() -> Result<SelfMetrics, prometheus::Error> {
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
        let in_flight = IntGauge::new(
            "cgroup_exporter_scrapes_in_flight",
            "Scrapes being read and written right now, this one included.",
        )?;
        registry.register(Box::new(ebpf_up.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        for k in ErrorKind::ALL {
            errors.with_label_values(&[k.label()]);
        }
        let iter_up = IntGauge::new(
            "cgroup_exporter_ebpf_iterator_up",
            "1 when the last scrape walked the cgroups with the BPF cgroup iterator (on at least one hierarchy), 0 when it listed directories and read every file.",
        )?;
        let family_source = IntGaugeVec::new(
            Opts::new(
                "cgroup_exporter_family_source",
                "1 for where a cgroup metric family is read from: source=\"ebpf_iterator\" (the BPF cgroup iterator) or source=\"file\" (cgroup files; values the kernel keeps in rstat always are).",
            ),
            &["family", "source"],
        )?;
        registry.register(Box::new(iter_up.clone()))?;
        registry.register(Box::new(family_source.clone()))?;
        let m = SelfMetrics {
            registry,
            duration,
            cgroups,
            errors,
            ebpf_up,
            in_flight,
            iter_up,
            family_source,
        };
        for (family, _) in sources(false, false, false, false, false) {
            m.set_source(family, false);
        }
        Ok(m)
    }

    /// Records that `family` is read by the iterator (`ebpf`) or from files.
    pub fn set_source(&self, family: &str, ebpf: bool) {
        self.family_source
            .with_label_values(&[family, "ebpf_iterator"])
            .set(i64::from(ebpf));
        self.family_source
            .with_label_values(&[family, "file"])
            .set(i64::from(!ebpf));
    }
}

/// Each cgroup family and whether the BPF iterators supply it, given that the
/// cgroup iterator walks the hierarchies of cpu, (v1) cpuacct and memory, and the
/// v2 one with the kernel's pressure groups, and the task iterator counts processes.
pub(crate) fn sources(
    cpu: bool,
    cpuacct: bool,
    memory: bool,
    psi: bool,
    procs: bool,
) -> Vec<(&'static str, bool)> {
    FAMILIES
        .iter()
        .map(|(name, ..)| {
            let ebpf = match *name {
                "container_cpu_usage_seconds_total"
                | "container_cpu_user_seconds_total"
                | "container_cpu_system_seconds_total" => cpuacct,
                "container_cpu_cfs_periods_total"
                | "container_cpu_cfs_throttled_periods_total"
                | "container_cpu_cfs_throttled_seconds_total"
                | "container_cpu_cfs_burst_periods_total"
                | "container_cpu_cfs_burst_seconds_total"
                | "container_spec_cpu_quota"
                | "container_spec_cpu_period"
                | "container_spec_cpu_shares" => cpu,
                "container_memory_usage_bytes"
                | "container_spec_memory_limit_bytes"
                | "container_oom_events_total" => memory,
                n if n.starts_with("container_pressure_") => psi,
                "container_processes" => procs,
                _ => false,
            };
            (*name, ebpf)
        })
        .collect()
}

/// The probe's families: events counter and the duration histogram (log2 buckets of
/// the probe, in seconds; bucket i ends at 2^(i+1) us, the last one is `+Inf`).
pub(crate) fn write_throttle_families(
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

pub(crate) type Getter = fn(&Sample) -> Option<Value>;

/// The cgroup families, named and defined as cAdvisor's.
pub(crate) const FAMILIES: &[(&str, &str, Kind, Getter)] = &[
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

pub(crate) fn write_families(out: &mut String, f: Format, samples: &[Sample]) {
    // Each cgroup's `{id="..."} `, escaped once instead of once per family.
    let mut labels = String::with_capacity(samples.iter().map(|s| s.id.len() + 10).sum());
    let mut ends = Vec::with_capacity(samples.len());
    for s in samples {
        id_labels(&mut labels, &s.id);
        ends.push(labels.len());
    }
    for (name, help, kind, get) in FAMILIES {
        if !samples.iter().any(|s| get(s).is_some()) {
            continue;
        }
        header(out, f, name, help, *kind);
        let mut start = 0;
        for (s, &end) in samples.iter().zip(&ends) {
            if let Some(v) = get(s) {
                series_with(out, name, &labels[start..end], v);
            }
            start = end;
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
    "cgroup_exporter_scrapes_in_flight",
    "cgroup_exporter_ebpf_iterator_up",
    "cgroup_exporter_family_source",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_match_the_name_list() {
        for (n, ..) in FAMILIES {
            assert!(METRIC_NAMES.contains(n), "{n}");
        }
    }
}
