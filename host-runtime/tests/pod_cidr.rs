//! `UpdateRuntimeConfig` through a real `vesseld serve`: the kubelet's pod
//! CIDR turns `cni.conf_template` into the node's pod network (NetworkReady
//! goes from false to true), `Status` reports the CIDR, a malformed CIDR is
//! refused naming the field and changes nothing.

mod serve;

use k8s_cri::v1::{NetworkConfig, RuntimeConfig, StatusRequest, UpdateRuntimeConfigRequest};
use tonic::Code;
use vessel_client::Cri;

use serve::Daemon;

/// The bridge network of `docs/kubernetes.md`'s example template.
const TEMPLATE: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "vessel-pods",
  "plugins": [
    {"type": "bridge", "bridge": "vessel0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "{{.PodCIDR}}"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#;

/// NetworkReady's status and reason, and the verbose `podCIDR`.
async fn network(cri: &mut Cri) -> (bool, String, String) {
    let r = cri
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let c = r
        .status
        .and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.r#type == "NetworkReady")
        })
        .expect("a NetworkReady condition");
    let cidr = r.info.get("podCIDR").cloned().unwrap_or_default();
    (c.status, c.reason, cidr)
}

fn update(cidr: &str) -> UpdateRuntimeConfigRequest {
    UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_cidr_writes_the_network_from_the_template() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template.conflist");
    std::fs::write(&template, TEMPLATE).unwrap();
    let extra = format!("conf_template = \"{}\"", template.display());
    let (daemon, mut cri) = Daemon::start(tmp.path(), &extra).await;
    let rendered = tmp.path().join("cni/10-vessel-net.conflist");

    assert_eq!(
        network(&mut cri).await,
        (false, "NetworkPluginNotReady".into(), String::new())
    );

    let e = cri
        .runtime
        .update_runtime_config(update("10.88.0.0/33"))
        .await
        .expect_err("a bad CIDR");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("pod_cidr"), "{e}");
    assert!(!rendered.exists(), "a refused CIDR wrote the network");

    cri.runtime
        .update_runtime_config(update("10.88.0.0/16"))
        .await
        .unwrap_or_else(|e| panic!("UpdateRuntimeConfig: {e}\n{}", daemon.log()));
    let text = std::fs::read_to_string(&rendered).expect("the rendered network");
    assert!(text.contains(r#""subnet": "10.88.0.0/16""#), "{text}");
    assert_eq!(
        network(&mut cri).await,
        (true, String::new(), "10.88.0.0/16".into())
    );

    // An empty CIDR (the kubelet before it knows one) keeps what is there.
    cri.runtime
        .update_runtime_config(update(""))
        .await
        .expect("an empty CIDR");
    assert_eq!(network(&mut cri).await.2, "10.88.0.0/16");
}
