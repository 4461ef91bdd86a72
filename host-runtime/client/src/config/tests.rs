//! Config file parsing: crictl's own examples, YAML, unknown fields, limits.

use std::io::Write;

use super::*;

/// docs/crictl.md's pod-config.json, as crictl's documentation prints it.
const CRICTL_POD_JSON: &str = r#"{
    "metadata": {
        "name": "nginx-sandbox",
        "namespace": "default",
        "attempt": 1,
        "uid": "hdishd83djaidwnduwk28bcsb"
    },
    "log_directory": "/tmp",
    "linux": {
    }
}"#;

/// docs/crictl.md's container-config.json.
const CRICTL_CONTAINER_JSON: &str = r#"{
  "metadata": {
      "name": "busybox"
  },
  "image":{
      "image": "busybox"
  },
  "command": [
      "top"
  ],
  "log_path":"busybox/0.log",
  "linux": {
  }
}"#;

fn file(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn crictl_pod_example_parses() {
    let (_dir, path) = file("pod-config.json", CRICTL_POD_JSON);
    let pod = load_pod_config(&path).unwrap();
    let md = pod.metadata.unwrap();
    assert_eq!(md.name, "nginx-sandbox");
    assert_eq!(md.namespace, "default");
    assert_eq!(md.uid, "hdishd83djaidwnduwk28bcsb");
    assert_eq!(md.attempt, 1);
    assert_eq!(pod.log_directory, "/tmp");
    assert_eq!(
        pod.linux,
        Some(k8s_cri::v1::LinuxPodSandboxConfig::default())
    );
}

#[test]
fn crictl_container_example_parses() {
    let (_dir, path) = file("container-config.json", CRICTL_CONTAINER_JSON);
    let ctr = load_container_config(&path).unwrap();
    assert_eq!(ctr.metadata.unwrap().name, "busybox");
    assert_eq!(ctr.image.unwrap().image, "busybox");
    assert_eq!(ctr.command, ["top"]);
    assert_eq!(ctr.log_path, "busybox/0.log");
    assert!(ctr.linux.is_some());
}

#[test]
fn yaml_by_extension_with_enums_by_name_or_number() {
    let yaml = "
metadata: {name: web, namespace: default}
hostname: web-1
dns_config: {servers: [10.0.0.10], searches: [svc.cluster.local], options: [ndots:5]}
port_mappings:
  - {protocol: UDP, container_port: 53, host_port: 5353}
  - {protocol: 0, container_port: 80}
labels: {app: web}
linux:
  cgroup_parent: /kubepods
  security_context:
    namespace_options: {network: NODE, pid: 1}
    run_as_user: {value: 1000}
    privileged: false
";
    for name in ["pod.yaml", "pod.YML"] {
        let (_dir, path) = file(name, yaml);
        let pod = load_pod_config(&path).unwrap();
        // An empty uid gets a random one, as crictl does.
        assert_eq!(pod.metadata.as_ref().unwrap().uid.len(), 36);
        assert_eq!(pod.hostname, "web-1");
        assert_eq!(pod.dns_config.as_ref().unwrap().options, ["ndots:5"]);
        assert_eq!(
            pod.port_mappings[0].protocol,
            k8s_cri::v1::Protocol::Udp as i32
        );
        assert_eq!(pod.port_mappings[1].container_port, 80);
        assert_eq!(pod.labels["app"], "web");
        let linux = pod.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods");
        let sc = linux.security_context.unwrap();
        let ns = sc.namespace_options.unwrap();
        assert_eq!(ns.network, k8s_cri::v1::NamespaceMode::Node as i32);
        assert_eq!(ns.pid, k8s_cri::v1::NamespaceMode::Container as i32);
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
    }
}

#[test]
fn full_container_config_yaml() {
    let yaml = r#"
metadata: {name: app, attempt: 2}
image: {image: "127.0.0.1:5000/busybox:latest"}
command: [/bin/sh, -c]
args: ["echo hi"]
working_dir: /tmp
envs: [{key: A, value: "1"}]
mounts:
  - {container_path: /data, host_path: /srv/data, readonly: true, propagation: PROPAGATION_HOST_TO_CONTAINER}
devices: [{container_path: /dev/fuse, host_path: /dev/fuse, permissions: rwm}]
annotations: {a: b}
log_path: app/0.log
stdin: true
tty: true
linux:
  resources: {memory_limit_in_bytes: 134217728, cpu_quota: 50000, cpu_period: 100000}
  security_context:
    capabilities: {add_capabilities: [NET_ADMIN], drop_capabilities: [ALL]}
    readonly_rootfs: true
    run_as_user: {value: 0}
    run_as_group: {value: 0}
    run_as_username: root
    supplemental_groups: [10, 20]
    seccomp: {profile_type: RuntimeDefault}
"#;
    let ctr = parse_container_config(yaml, true).unwrap();
    assert_eq!(ctr.metadata.as_ref().unwrap().attempt, 2);
    assert_eq!(ctr.args, ["echo hi"]);
    assert_eq!(ctr.envs[0].value, "1");
    assert_eq!(
        ctr.mounts[0].propagation,
        k8s_cri::v1::MountPropagation::PropagationHostToContainer as i32
    );
    assert!(ctr.mounts[0].readonly);
    assert_eq!(ctr.devices[0].permissions, "rwm");
    assert!(ctr.stdin && ctr.tty);
    let linux = ctr.linux.unwrap();
    assert_eq!(linux.resources.unwrap().memory_limit_in_bytes, 134_217_728);
    let sc = linux.security_context.unwrap();
    assert_eq!(sc.capabilities.unwrap().drop_capabilities, ["ALL"]);
    assert!(sc.readonly_rootfs);
    assert_eq!(sc.supplemental_groups, [10, 20]);
    assert_eq!(sc.run_as_username, "root");
    assert!(sc.seccomp.is_some());
}

#[test]
fn unknown_field_is_an_error_naming_it_and_its_path() {
    let json = r#"{"metadata":{"name":"a","namespace":"b"},"linux":{"security_context":{"privilegd":true}}}"#;
    let err = parse_pod_config(json, false).unwrap_err().to_string();
    assert!(err.contains("privilegd"), "{err}");
    assert!(err.contains("linux.security_context"), "{err}");

    let yaml = "metadata: {name: a}\nimage: {image: b}\ncomand: [top]\n";
    let err = parse_container_config(yaml, true).unwrap_err().to_string();
    assert!(err.contains("comand"), "{err}");
}

#[test]
fn bad_values_name_their_field() {
    let err = parse_pod_config(r#"{"metadata":{"attempt":-1}}"#, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("metadata.attempt"), "{err}");
    let err = parse_pod_config(r#"{"port_mappings":[{"protocol":"ICMP"}]}"#, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("port_mappings[0].protocol") && err.contains("ICMP"),
        "{err}"
    );
    let err = parse_pod_config(r#"{"port_mappings":[{"protocol":7}]}"#, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("7 is not a valid Protocol"), "{err}");
    let err = parse_pod_config(r#"{"hostname":"a"} trailing"#, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("trailing"), "{err}");
}

#[test]
fn required_fields_as_crictl_checks_them() {
    let (_d, path) = file("p.json", r#"{"metadata":{"name":"a"}}"#);
    let err = load_pod_config(&path).unwrap_err().to_string();
    assert!(err.contains("metadata.namespace: is required"), "{err}");
    let (_d, path) = file("p.json", r#"{"log_directory":"/tmp"}"#);
    assert!(load_pod_config(&path)
        .unwrap_err()
        .to_string()
        .contains("metadata: is required"));
    let (_d, path) = file("c.json", r#"{"metadata":{"name":"a"},"image":{}}"#);
    let err = load_container_config(&path).unwrap_err().to_string();
    assert!(err.contains("image.image: is required"), "{err}");
}

#[test]
fn oversized_and_missing_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"{\"hostname\":\"").unwrap();
    f.write_all(&vec![b'a'; MAX_CONFIG_SIZE as usize]).unwrap();
    f.write_all(b"\"}").unwrap();
    let err = load_pod_config(&path).unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err}");
    let err = load_pod_config(&dir.path().join("nope.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.json"), "{err}");
}
