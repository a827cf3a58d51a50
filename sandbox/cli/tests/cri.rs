//! Host lane: containerd 1.6's CRI plugin (what the kubelet talks to) with the runtime
//! under test as a runtime handler, driven over CRI v1 by the `k8s-cri` client.
//!
//! The runtime is `$SANDBOX_TEST_RUNTIME` (default: this package's `sandbox`), named
//! as the handler's `BinaryName` through the logging wrapper of tests/common/clients.rs.
//! containerd runs privately (own socket, root, state; pods get an absolute cgroup parent
//! of the test's own). containerd 1.6 refuses a pod without an IP: its CNI configuration
//! is a one-plugin network whose plugin (a shell script written here) reports 127.0.0.1
//! for the pod without creating any interface; go-cni's own loopback network uses
//! Debian's loopback plugin (containernetworking-plugins).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;
#[path = "common/clients.rs"]
mod harness;

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{CMD_TIMEOUT, Containerd, IMAGE, alive, assert_cpu_and_memory_limits, unique};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

const PAUSE: &str = "localhost/pause:test";
const HANDLER: &str = "sandbox";
const CNI_LOOPBACK: &str = "/usr/lib/cni/loopback";

/// A CNI plugin that hands the pod 127.0.0.1 on `eth0` (containerd 1.6 looks for that
/// interface in the result) and creates nothing, so DEL has nothing to undo.
const CNI_PLUGIN: &str = r#"#!/bin/sh
cat > /dev/null
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"0.4.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"version":"4","address":"127.0.0.1/8","interface":0}]}' "$CNI_IFNAME" "$CNI_NETNS" ;;
VERSION) printf '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
esac
"#;

/// libcni keeps its results cache in the fixed folder /var/lib/cni (containerd 1.6 has no
/// option for it); each result is removed on DEL, the folders stay. This guard removes
/// the folders on drop where this test made them (rmdir: never anything in them).
struct CniCache {
    made: Vec<&'static str>,
}

impl CniCache {
    fn new() -> CniCache {
        CniCache {
            made: ["/var/lib/cni/results", "/var/lib/cni"]
                .into_iter()
                .filter(|d| !Path::new(d).exists())
                .collect(),
        }
    }
}

impl Drop for CniCache {
    fn drop(&mut self) {
        for d in &self.made {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The runtime handler block of deploy/containerd-sandbox.toml (what operators
/// merge into their containerd config), with its binary and state root pointed at
/// the test's own; and a check that deploy/runtimeclass.yaml names that handler.
fn deploy_handler(binary: &str, root: &str) -> String {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let toml = std::fs::read_to_string(deploy.join("containerd-sandbox.toml")).unwrap();
    let block: String = toml
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        block.contains(&format!("containerd.runtimes.{HANDLER}]")),
        "deploy/containerd-sandbox.toml does not define handler {HANDLER}"
    );
    let rc = std::fs::read_to_string(deploy.join("runtimeclass.yaml")).unwrap();
    assert!(
        rc.lines()
            .any(|l| l.trim() == format!("handler: {HANDLER}")),
        "deploy/runtimeclass.yaml does not name handler {HANDLER}"
    );
    block
        .replace("/usr/local/bin/sandbox", binary)
        .replace("/run/containerd/sandbox", root)
}

/// containerd's CRI plugin with the runtime under test as handler `sandbox`, made
/// from deploy/containerd-sandbox.toml.
fn cri_containerd() -> Containerd {
    assert!(
        Path::new(CNI_LOOPBACK).is_file(),
        "{CNI_LOOPBACK} is missing: run `cargo xtask test` (it installs podman/containerd, \
         whose containernetworking-plugins ship it)"
    );
    // The handler's BinaryName is the wrapper, which sits in the scratch folder that
    // with_config makes: name it through `{dir}` and the runtime's basename.
    let runtime = harness::runtime();
    let base = runtime.file_name().unwrap().to_string_lossy().into_owned();
    let extra = format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  # Root here lacks CAP_SYS_RESOURCE: never raise a container's oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  # The pods' network namespaces are mounted under the private state, not /run/netns.
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "{HANDLER}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{dir}}/cni-bin"
    conf_dir = "{{dir}}/cni-conf"
    max_conf_num = 1
{handler}
"#,
        handler = deploy_handler(&format!("{{dir}}/bin/{base}"), "{dir}/runc"),
    );
    let c = Containerd::with_config(&extra, Some("k8s.io"), |dir| {
        let bin = dir.join("cni-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(CNI_LOOPBACK, bin.join("loopback")).unwrap();
        std::fs::write(bin.join("sbx-lo"), CNI_PLUGIN).unwrap();
        std::fs::set_permissions(bin.join("sbx-lo"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let conf = dir.join("cni-conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("10-sbx.conflist"),
            r#"{"cniVersion":"0.4.0","name":"sbx-lo","plugins":[{"type":"sbx-lo"}]}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
    });
    c.import("pause.tar", PAUSE, &["sleep", "1000000"]);
    c
}

/// Runs `f` (a CRI call) with a bound on time; fails the test naming `what`.
async fn call<T>(
    what: &str,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> T {
    match tokio::time::timeout(CMD_TIMEOUT, f).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(e)) => panic!("CRI {what}: {e}"),
        Err(_) => panic!("CRI {what}: no answer within {CMD_TIMEOUT:?}"),
    }
}

async fn connect(sock: PathBuf) -> RuntimeServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::try_from("http://[::1]:1")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(sock).await?,
                ))
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("connect to containerd's CRI socket: {e}"));
    RuntimeServiceClient::new(ch)
}

fn ns_options(pid: cri::NamespaceMode) -> Option<cri::NamespaceOption> {
    Some(cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: pid as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    })
}

fn pod_config(name: &str, logs: &Path, cgroup_parent: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "cri-pod".into(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: ns_options(cri::NamespaceMode::Pod),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(
    name: &str,
    cmd: &[&str],
    memory: i64,
    pid: cri::NamespaceMode,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 20_000,
                memory_limit_in_bytes: memory,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: ns_options(pid),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The host pid from a verbose status' `info` JSON.
fn pid_of(info: &HashMap<String, String>) -> u32 {
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    v["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {v}")) as u32
}

fn ns_link(pid: u32, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
#[cfg_attr(vm_lane, ignore = "podman/containerd are host-lane clients")]
fn cri_pod_with_two_containers_sharing_its_namespaces() {
    // Declared first, so dropped after containerd is gone.
    let _cni_cache = CniCache::new();
    let mut c = cri_containerd();
    let parent = unique("cri");
    c.own_cgroup(&parent);
    let cgroup_parent = format!("/{parent}");
    let logs = c.s.path("logs");
    let runc_root = c.runc_root.join("k8s.io");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut cl = connect(c.sock.clone()).await;
        let v = call("Version", cl.version(cri::VersionRequest::default())).await;
        assert_eq!(v.runtime_name, "containerd");

        let up = Instant::now();
        let pod_cfg = pod_config("pod1", &logs, &cgroup_parent);
        let pod = call(
            "RunPodSandbox",
            cl.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_cfg.clone()),
                runtime_handler: HANDLER.into(),
            }),
        )
        .await
        .pod_sandbox_id;
        let mut ids = Vec::new();
        for name in ["c1", "c2"] {
            let id = call(
                "CreateContainer",
                cl.create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(container_config(
                        name,
                        &["sleep", "1000"],
                        64 << 20,
                        cri::NamespaceMode::Pod,
                    )),
                    sandbox_config: Some(pod_cfg.clone()),
                }),
            )
            .await
            .container_id;
            call(
                "StartContainer",
                cl.start_container(cri::StartContainerRequest {
                    container_id: id.clone(),
                }),
            )
            .await;
            ids.push(id);
        }
        eprintln!("cri: pod and two containers up in {:?}", up.elapsed());

        let pod_status = call(
            "PodSandboxStatus",
            cl.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            }),
        )
        .await;
        assert_eq!(
            pod_status.status.as_ref().unwrap().state,
            cri::PodSandboxState::SandboxReady as i32
        );
        let pause_pid = pid_of(&pod_status.info);
        let mut pids = Vec::new();
        for id in &ids {
            let st = call(
                "ContainerStatus",
                cl.container_status(cri::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: true,
                }),
            )
            .await;
            assert_eq!(
                st.status.as_ref().unwrap().state,
                cri::ContainerState::ContainerRunning as i32
            );
            pids.push(pid_of(&st.info));
        }
        // Both containers are in the pod's network, IPC, UTS and (asked for) PID
        // namespaces: the infra container's.
        for ns in ["net", "ipc", "uts", "pid"] {
            let pause = ns_link(pause_pid, ns);
            for pid in &pids {
                assert_eq!(ns_link(*pid, ns), pause, "{ns} namespace of {pid}");
            }
            assert_ne!(
                pause,
                ns_link(std::process::id(), ns),
                "{ns}: not the host's"
            );
        }
        for pid in &pids {
            assert_cpu_and_memory_limits(*pid);
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            assert!(cg.contains(&format!("{cgroup_parent}/")), "{cg}");
        }

        // exec into c1: the pod's hostname, the infra process as pid 1, exit codes.
        let ex = call(
            "ExecSync",
            cl.exec_sync(cri::ExecSyncRequest {
                container_id: ids[0].clone(),
                cmd: [
                    "sh",
                    "-c",
                    "hostname; cat /proc/1/comm; ps -o comm | grep -c sleep; exit 3",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                timeout: 30,
            }),
        )
        .await;
        assert_eq!(
            ex.exit_code,
            3,
            "stderr {}",
            String::from_utf8_lossy(&ex.stderr)
        );
        let out = String::from_utf8_lossy(&ex.stdout).into_owned();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first(), Some(&"cri-pod"), "{out}");
        assert_eq!(
            lines.get(1),
            Some(&"sleep"),
            "pid 1 is the infra container: {out}"
        );
        assert_eq!(lines.get(2), Some(&"3"), "pause, c1 and c2's sleeps: {out}");

        // A container that asks for its own PID namespace gets one, in the pod's others.
        let own = call(
            "CreateContainer",
            cl.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(
                    "own-pid",
                    &["sleep", "1000"],
                    64 << 20,
                    cri::NamespaceMode::Container,
                )),
                sandbox_config: Some(pod_cfg.clone()),
            }),
        )
        .await
        .container_id;
        call(
            "StartContainer",
            cl.start_container(cri::StartContainerRequest {
                container_id: own.clone(),
            }),
        )
        .await;
        let st = call(
            "ContainerStatus",
            cl.container_status(cri::ContainerStatusRequest {
                container_id: own.clone(),
                verbose: true,
            }),
        )
        .await;
        let own_pid = pid_of(&st.info);
        for ns in ["net", "ipc", "uts"] {
            assert_eq!(
                ns_link(own_pid, ns),
                ns_link(pause_pid, ns),
                "{ns} of own-pid"
            );
        }
        assert_ne!(ns_link(own_pid, "pid"), ns_link(pause_pid, "pid"));
        assert_ne!(ns_link(own_pid, "pid"), ns_link(std::process::id(), "pid"));
        ids.push(own);
        pids.push(own_pid);

        // An OOM kill is reported as such.
        let hog = call(
            "CreateContainer",
            cl.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(
                    "hog",
                    &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
                    32 << 20,
                    cri::NamespaceMode::Pod,
                )),
                sandbox_config: Some(pod_cfg.clone()),
            }),
        )
        .await
        .container_id;
        call(
            "StartContainer",
            cl.start_container(cri::StartContainerRequest {
                container_id: hog.clone(),
            }),
        )
        .await;
        let end = Instant::now() + CMD_TIMEOUT;
        let st = loop {
            let st = call(
                "ContainerStatus",
                cl.container_status(cri::ContainerStatusRequest {
                    container_id: hog.clone(),
                    verbose: false,
                }),
            )
            .await
            .status
            .unwrap();
            if st.state == cri::ContainerState::ContainerExited as i32 {
                break st;
            }
            assert!(Instant::now() < end, "the hog still runs: {st:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(st.reason, "OOMKilled", "{st:?}");
        assert_eq!(st.exit_code, 137, "{st:?}");
        ids.push(hog);

        // Down: stop and remove the containers, then the pod; nothing stays.
        let down = Instant::now();
        for id in &ids {
            call(
                "StopContainer",
                cl.stop_container(cri::StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 0,
                }),
            )
            .await;
            call(
                "RemoveContainer",
                cl.remove_container(cri::RemoveContainerRequest {
                    container_id: id.clone(),
                }),
            )
            .await;
        }
        call(
            "StopPodSandbox",
            cl.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            }),
        )
        .await;
        call(
            "RemovePodSandbox",
            cl.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            }),
        )
        .await;
        eprintln!("cri: down in {:?}", down.elapsed());
        let left = call(
            "ListContainers",
            cl.list_containers(cri::ListContainersRequest::default()),
        )
        .await;
        assert!(left.containers.is_empty(), "{:?}", left.containers);
        let left = call(
            "ListPodSandbox",
            cl.list_pod_sandbox(cri::ListPodSandboxRequest::default()),
        )
        .await;
        assert!(left.items.is_empty(), "{:?}", left.items);
        for pid in pids.iter().chain([&pause_pid]) {
            assert!(!alive(*pid), "{pid} outlived its pod");
        }
    });
    // The runtime removed its state and the containers' cgroups (the parent stays
    // for the harness); containerd removed the pod's network namespace mount.
    let state: Vec<_> = std::fs::read_dir(&runc_root)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(state.is_empty(), "runtime state left: {state:?}");
    let below: Vec<PathBuf> = harness::cgroup_dirs(&cgroup_parent)
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert!(
        below.is_empty(),
        "cgroups left below the pod parent: {below:?}"
    );
    let netns: Vec<String> =
        c.s.mounts()
            .into_iter()
            .filter(|m| m.contains("netns"))
            .collect();
    assert!(netns.is_empty(), "netns mounts left: {netns:?}");
    let calls = c.s.runtime_calls();
    assert!(calls.iter().any(|l| l.contains(" create ")), "{calls:#?}");
}
