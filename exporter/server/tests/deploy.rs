//! deploy/: the DaemonSet, the Prometheus scrape config and the Grafana dashboard parse
//! and say what they promise. The files are compiled in, so the VM lane checks them too
//! (promtool only where the lane has it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const DAEMONSET: &str = include_str!("../../../deploy/daemonset.yaml");
const PROMETHEUS: &str = include_str!("../../../deploy/prometheus.yml");
const DASHBOARD: &str = include_str!("../../../deploy/grafana-dashboard.json");

fn strs(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn daemonset_mounts_cgroups_read_only_with_probe_capabilities_only() {
    let docs = YamlLoader::load_from_str(DAEMONSET).expect("daemonset.yaml parses");
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    let svc = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Service"))
        .expect("the headless Service for DNS discovery");
    assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_ne!(
        pod["hostPID"].as_bool(),
        Some(true),
        "hostPID is not needed"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let mut add = strs(&sc["capabilities"]["add"]);
    add.sort_unstable();
    assert_eq!(add, ["BPF", "PERFMON"]);
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_ne!(sc["privileged"].as_bool(), Some(true));
    let mount = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/sys/fs/cgroup"))
        .expect("/sys/fs/cgroup mounted");
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let vol = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(vol["hostPath"]["path"].as_str(), Some("/sys/fs/cgroup"));
    let ports = &c["ports"][0];
    assert_eq!(ports["containerPort"].as_i64(), Some(9753));
    assert!(
        DAEMONSET.contains("CAP_BPF") && DAEMONSET.contains("runAsNonRoot"),
        "the choices are explained in comments"
    );
}

#[test]
fn prometheus_config_scrapes_the_exporter() {
    let docs = YamlLoader::load_from_str(PROMETHEUS).expect("prometheus.yml parses");
    let jobs = docs[0]["scrape_configs"].as_vec().unwrap();
    assert!(
        jobs.iter()
            .any(|j| j["job_name"].as_str() == Some("cgroup-exporter"))
    );
    if common::lane().starts_with("vm") {
        eprintln!(
            "promtool check config skipped in lane {}: no promtool in its busybox userland",
            common::lane()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("prometheus.yml");
    std::fs::write(&f, PROMETHEUS).unwrap();
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&f)
        .output()
        .expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_plots_throttling_per_container() {
    let d: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON parses");
    let panels = d["panels"].as_array().unwrap();
    let exprs = |p: &serde_json::Value| -> Vec<String> {
        p["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["expr"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(panels.iter().any(|p| {
        exprs(p).iter().any(|e| {
            e.contains("rate(container_cpu_cfs_throttled_periods_total") && e.contains("by (id)")
        })
    }));
    let heat = panels
        .iter()
        .find(|p| p["type"] == "heatmap")
        .expect("a heatmap panel");
    assert!(exprs(heat).iter().any(|e| {
        e.contains("cgroup_cpu_throttle_duration_seconds_bucket") && e.contains("by (le)")
    }));
    assert_eq!(heat["targets"][0]["format"], "heatmap");
    // Every metric the dashboard queries is one the exporter writes.
    for p in panels {
        for e in exprs(p) {
            for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("container_") || word.starts_with("cgroup_") {
                    let base = word
                        .strip_suffix("_bucket")
                        .unwrap_or(word)
                        .trim_end_matches("_count");
                    assert!(exporter::METRIC_NAMES.contains(&base), "{word} in {e}");
                }
            }
        }
    }
}
