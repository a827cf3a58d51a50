//! Kubernetes-style labels for the cgroups of `sandbox` pods and containers, as the
//! kubelet's cAdvisor gives them: `pod`, `namespace`, `container` and `image`, read
//! from the sandbox state root (`sandbox --root`, `/run/sandbox` by default).
//!
//! - A pod (`ROOT/.pods/NAME/status.json`) has the cgroup `/sandbox-pod-NAME-ID`, and
//!   one child per container (`/sandbox-pod-NAME-ID/CTR`, the infra process's
//!   `infra`); the pod's own cgroup gets `container=""`, as cAdvisor's pod-level one.
//! - A container of `sandbox run` (`ROOT/NAME/state.json`) has its own cgroup:
//!   `container` is its name, `pod` and `namespace` are empty.
//!
//! The labels are added to each exposition line whose `id` is one of those cgroups,
//! after the `id` label; other lines are left as they are.

use std::collections::HashMap;
use std::path::Path;

/// The labels of a cgroup id (`/sandbox-pod-web-1a2b/app`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    /// `metadata.name` of the pod.
    pub pod: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The container's name.
    pub container: String,
    /// Its image.
    pub image: String,
}

/// Cgroup id to labels, for every pod and container under a sandbox state root.
pub type PodLabels = HashMap<String, Labels>;

fn read_json(p: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn text(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Reads the labels of every pod and container under the sandbox state root `root`
/// (unreadable entries are skipped: a pod may be going away meanwhile).
pub fn read(root: &Path) -> PodLabels {
    let mut out = PodLabels::new();
    if let Ok(rd) = std::fs::read_dir(root.join(".pods")) {
        for e in rd.flatten() {
            let Some(st) = read_json(&e.path().join("status.json")) else {
                continue;
            };
            let cg = text(&st, "cgroup");
            if cg.is_empty() {
                continue;
            }
            let (pod, namespace) = (text(&st, "name"), text(&st, "namespace"));
            out.insert(
                format!("/{cg}"),
                Labels {
                    pod: pod.clone(),
                    namespace: namespace.clone(),
                    ..Labels::default()
                },
            );
            let containers = st.get("containers").and_then(|c| c.as_array());
            for c in containers.into_iter().flatten() {
                let name = text(c, "name");
                out.insert(
                    format!("/{cg}/{name}"),
                    Labels {
                        pod: pod.clone(),
                        namespace: namespace.clone(),
                        image: text(c, "image"),
                        container: name,
                    },
                );
            }
            out.insert(
                format!("/{cg}/infra"),
                Labels {
                    pod,
                    namespace,
                    container: "POD".into(),
                    image: String::new(),
                },
            );
        }
    }
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let Some(st) = read_json(&e.path().join("state.json")) else {
                continue;
            };
            let cg = text(&st, "cgroup");
            if cg.is_empty() {
                continue;
            }
            out.insert(
                format!("/{cg}"),
                Labels {
                    container: text(&st, "name"),
                    image: text(&st, "image"),
                    ..Labels::default()
                },
            );
        }
    }
    out
}

/// `text` with the labels of `labels` added to every series line whose `id` has some
/// (exposition text or OpenMetrics: `name{id="..."...} value`).
pub fn relabel(text: &str, labels: &PodLabels) -> String {
    if labels.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let Some(start) = line.find("{id=\"") else {
            out.push_str(line);
            continue;
        };
        let id_start = start + 5;
        let Some(len) = line[id_start..].find('"') else {
            out.push_str(line);
            continue;
        };
        // Ids of sandbox cgroups hold no escaped characters; others are left alone.
        let id = &line[id_start..id_start + len];
        match labels.get(id) {
            Some(l) if !id.contains('\\') => {
                let cut = id_start + len + 1;
                out.push_str(&line[..cut]);
                for (k, v) in [
                    ("pod", &l.pod),
                    ("namespace", &l.namespace),
                    ("container", &l.container),
                    ("image", &l.image),
                ] {
                    out.push(',');
                    out.push_str(k);
                    out.push_str("=\"");
                    crate::expo::label_value(&mut out, v);
                    out.push('"');
                }
                out.push_str(&line[cut..]);
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pod_and_container_labels() {
        let d = tempfile::tempdir().unwrap();
        let pod = d.path().join(".pods/hello-pod");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(
            pod.join("status.json"),
            r#"{"name":"hello-pod","namespace":"default","cgroup":"sandbox-pod-hello-pod-ab12",
               "containers":[{"name":"web","image":"nginx:latest"}]}"#,
        )
        .unwrap();
        let c = d.path().join("c1");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("state.json"),
            r#"{"name":"c1","cgroup":"sandbox-c1-ff","image":"busybox:latest"}"#,
        )
        .unwrap();
        let l = read(d.path());
        let text = "# TYPE x counter\n\
                    x{id=\"/sandbox-pod-hello-pod-ab12/web\"} 3\n\
                    x{id=\"/sandbox-pod-hello-pod-ab12\",le=\"1\"} 4\n\
                    x{id=\"/sandbox-c1-ff\"} 5\n\
                    x{id=\"/other\"} 6\n";
        let out = relabel(text, &l);
        assert_eq!(
            out,
            "# TYPE x counter\n\
             x{id=\"/sandbox-pod-hello-pod-ab12/web\",pod=\"hello-pod\",namespace=\"default\",container=\"web\",image=\"nginx:latest\"} 3\n\
             x{id=\"/sandbox-pod-hello-pod-ab12\",pod=\"hello-pod\",namespace=\"default\",container=\"\",image=\"\",le=\"1\"} 4\n\
             x{id=\"/sandbox-c1-ff\",pod=\"\",namespace=\"\",container=\"c1\",image=\"busybox:latest\"} 5\n\
             x{id=\"/other\"} 6\n"
        );
    }
}
