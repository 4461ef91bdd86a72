//! What a real `vesseld serve` answers before any VM is involved: its
//! socket (mode 0660, a second vesseld refused), `Status`'s RuntimeReady on
//! this host, and bad requests (missing fields, empty ids) refused with
//! `InvalidArgument` naming the field.

mod serve;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StatusRequest, StopPodSandboxRequest,
};
use tonic::Code;

use serve::Daemon;

/// Asserts that `r` failed with InvalidArgument and a message naming `field`.
fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, field: &str) {
    let e = r.expect_err(field);
    assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e}");
    assert!(e.message().contains(field), "{field}: {e}");
}

fn pod_metadata() -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: "p".into(),
        namespace: "ns".into(),
        uid: "u".into(),
        attempt: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_0660_and_a_second_vesseld_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (daemon, _cri) = Daemon::start(tmp.path(), "").await;
    let socket = tmp.path().join("vessel.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");

    let second = Command::new(env!("CARGO_BIN_EXE_vesseld"))
        .args(["--config"])
        .arg(tmp.path().join("config.toml"))
        .stdin(Stdio::null())
        .output()
        .expect("a second vesseld");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second vesseld served: {stderr}"
    );
    // The state database is taken first, then the socket: either refusal names the other vesseld.
    assert!(stderr.contains("another vesseld"), "{stderr}");
    // With a state dir of its own, the live socket is what refuses it.
    let config = std::fs::read_to_string(tmp.path().join("config.toml")).unwrap();
    let own_state = tmp.path().join("state2");
    let config2 = tmp.path().join("config2.toml");
    let state = format!("state_dir = \"{}\"", tmp.path().join("state").display());
    let state2 = format!("state_dir = \"{}\"", own_state.display());
    std::fs::write(&config2, config.replace(&state, &state2)).unwrap();
    let second = Command::new(env!("CARGO_BIN_EXE_vesseld"))
        .arg("--config")
        .arg(&config2)
        .stdin(Stdio::null())
        .output()
        .expect("a second vesseld");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second vesseld served: {stderr}"
    );
    assert!(
        stderr.contains("another vesseld is serving on it"),
        "{stderr}"
    );
    // The first one still serves, on the same socket.
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_ready_says_whether_guests_can_boot_here() {
    let tmp = tempfile::tempdir().unwrap();
    let (_daemon, mut cri) = Daemon::start(tmp.path(), "").await;
    let status = cri
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let ready = status
        .status
        .and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.r#type == "RuntimeReady")
        })
        .expect("a RuntimeReady condition");
    // `vesseld check`'s verdict on the same host decides which answer is right.
    use vessel_host_runtime::check::{kvm_device, kvm_guests, Status as Check};
    let unusable = [
        kvm_device(Path::new("/dev/kvm")),
        kvm_guests(Path::new("/sys")),
    ]
    .into_iter()
    .find(|r| r.status == Check::Fail);
    match unusable {
        Some(why) => {
            assert!(!ready.status, "{ready:?}");
            assert_eq!(ready.reason, "KVMUnusable", "{ready:?}");
            assert!(ready.message.contains(&why.detail), "{ready:?} vs {why:?}");
        }
        // A KVM host: only the handler's files (the test config's defaults,
        // which need not exist here) can make it not ready.
        None => assert!(
            ready.status || ready.reason == "HandlerIncomplete",
            "{ready:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let (_daemon, mut cri) = Daemon::start(tmp.path(), "").await;
    let rt = &mut cri.runtime;

    refused(
        rt.run_pod_sandbox(RunPodSandboxRequest::default()).await,
        "config",
    );
    refused(
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig::default()),
            runtime_handler: String::new(),
        })
        .await,
        "metadata",
    );
    refused(
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(pod_metadata()),
                ..PodSandboxConfig::default()
            }),
            runtime_handler: "no-such-handler".into(),
        })
        .await,
        "runtime_handler",
    );

    let container = |metadata: Option<ContainerMetadata>, image: &str| CreateContainerRequest {
        pod_sandbox_id: "0123".into(),
        config: Some(ContainerConfig {
            metadata,
            image: Some(ImageSpec {
                image: image.into(),
                ..ImageSpec::default()
            }),
            ..ContainerConfig::default()
        }),
        sandbox_config: None,
    };
    refused(
        rt.create_container(CreateContainerRequest::default()).await,
        "config",
    );
    refused(
        rt.create_container(container(None, "busybox")).await,
        "config.metadata",
    );
    let named = Some(ContainerMetadata {
        name: "c".into(),
        attempt: 0,
    });
    refused(
        rt.create_container(container(named.clone(), "")).await,
        "config.image.image",
    );
    // A well-formed request for a pod that is not there.
    let e = rt
        .create_container(container(named, "busybox"))
        .await
        .expect_err("unknown pod");
    assert_eq!(e.code(), Code::NotFound, "{e}");

    // An empty id is not an unknown one.
    refused(
        rt.pod_sandbox_status(PodSandboxStatusRequest::default())
            .await,
        "pod_sandbox_id",
    );
    refused(
        rt.stop_pod_sandbox(StopPodSandboxRequest::default()).await,
        "pod_sandbox_id",
    );
    refused(
        rt.remove_pod_sandbox(RemovePodSandboxRequest::default())
            .await,
        "pod_sandbox_id",
    );
    refused(
        rt.container_status(ContainerStatusRequest::default()).await,
        "container_id",
    );
    refused(
        rt.start_container(StartContainerRequest::default()).await,
        "container_id",
    );
    // Unknown ids stay NotFound; Stop and Remove of an unknown pod are no-ops.
    let e = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: "ffff".into(),
            verbose: false,
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: "ffff".into(),
    })
    .await
    .expect("removing an unknown pod is idempotent");
}
