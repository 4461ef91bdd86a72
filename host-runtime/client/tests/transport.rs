//! End to end over a real Unix socket: `connect` and the verbs against an
//! in-process tonic server.
//!
//! The server here is a *minimal fake* that answers a few RPCs from memory and
//! `Unimplemented` for the rest. It exists only to test the client's
//! transport, request building and output; vesseld itself (the real server)
//! is tested by the end-to-end suite.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::{ImageService, ImageServiceServer};
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use vessel_client::verbs::{self, Deadlines, Format};
use vessel_client::{connect, ClientError, Cri};

const DEADLINES: Deadlines = Deadlines {
    quick: Some(Duration::from_secs(5)),
    long: Some(Duration::from_secs(5)),
};

/// Bytes of stdout the fake's ExecSync returns for `big`: more than tonic's
/// 4 MiB default decode limit, as ExecSync may carry 16 MiB per stream.
const BIG_OUTPUT: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct State {
    pods: Vec<cri::PodSandbox>,
    containers: Vec<(cri::Container, String)>,
    configs: Vec<cri::PodSandboxConfig>,
    handlers: Vec<String>,
    stats_calls: u64,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
}

/// Writes `impl $trait for Fake` with the given RPCs, and `Unimplemented`
/// stubs for the rest (the generated traits have no default methods).
macro_rules! fake_service {
    ($trait:ident { $($body:item)* } unimplemented { $($name:ident($req:ident) -> $resp:ident;)* }) => {
        #[tonic::async_trait]
        impl $trait for Fake {
            $($body)*
            $(
                async fn $name(&self, _: Request<cri::$req>) -> Result<Response<cri::$resp>, Status> {
                    Err(Status::unimplemented(concat!(stringify!($name), " is not in the fake")))
                }
            )*
        }
    };
}

fake_service! {
    RuntimeService {
        type GetContainerEventsStream = tokio_stream::Empty<Result<cri::ContainerEventResponse, Status>>;

        async fn get_container_events(
            &self,
            _: Request<cri::GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            Err(Status::unimplemented("get_container_events is not in the fake"))
        }

        async fn version(&self, r: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
            assert_eq!(r.into_inner().version, "v1");
            Ok(Response::new(cri::VersionResponse {
                version: "0.1.0".into(),
                runtime_name: "fake".into(),
                runtime_version: "9.9.9".into(),
                runtime_api_version: "v1".into(),
            }))
        }

        async fn run_pod_sandbox(
            &self,
            r: Request<cri::RunPodSandboxRequest>,
        ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
            let r = r.into_inner();
            let config = r.config.ok_or_else(|| Status::invalid_argument("config is required"))?;
            let mut state = self.state();
            let n = state.pods.len();
            let id = format!("deadbeef{:x}{:055x}", 10 + n, n);
            state.pods.push(cri::PodSandbox {
                id: id.clone(),
                metadata: config.metadata.clone(),
                state: cri::PodSandboxState::SandboxReady as i32,
                created_at: 1_700_000_000_000_000_000,
                labels: config.labels.clone(),
                runtime_handler: r.runtime_handler.clone(),
                ..Default::default()
            });
            state.configs.push(config);
            state.handlers.push(r.runtime_handler);
            Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id: id }))
        }

        async fn stop_pod_sandbox(
            &self,
            r: Request<cri::StopPodSandboxRequest>,
        ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
            let id = r.into_inner().pod_sandbox_id;
            let mut state = self.state();
            let pod = state.pods.iter_mut().find(|p| p.id == id).ok_or_else(|| Status::not_found(id.clone()))?;
            pod.state = cri::PodSandboxState::SandboxNotready as i32;
            Ok(Response::new(cri::StopPodSandboxResponse {}))
        }

        async fn remove_pod_sandbox(
            &self,
            r: Request<cri::RemovePodSandboxRequest>,
        ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
            let id = r.into_inner().pod_sandbox_id;
            self.state().pods.retain(|p| p.id != id);
            Ok(Response::new(cri::RemovePodSandboxResponse {}))
        }

        async fn pod_sandbox_status(
            &self,
            r: Request<cri::PodSandboxStatusRequest>,
        ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
            let r = r.into_inner();
            let state = self.state();
            let pod = state
                .pods
                .iter()
                .find(|p| p.id == r.pod_sandbox_id)
                .ok_or_else(|| Status::not_found(format!("pod {} not found", r.pod_sandbox_id)))?;
            let info = if r.verbose {
                HashMap::from([("info".to_string(), r#"{"vmmPid":4242}"#.to_string())])
            } else {
                HashMap::new()
            };
            Ok(Response::new(cri::PodSandboxStatusResponse {
                status: Some(cri::PodSandboxStatus {
                    id: pod.id.clone(),
                    metadata: pod.metadata.clone(),
                    state: pod.state,
                    created_at: pod.created_at,
                    network: Some(cri::PodSandboxNetworkStatus {
                        ip: "10.88.0.7".into(),
                        additional_ips: vec![],
                    }),
                    ..Default::default()
                }),
                info,
                ..Default::default()
            }))
        }

        async fn list_pod_sandbox(
            &self,
            r: Request<cri::ListPodSandboxRequest>,
        ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
            let filter = r.into_inner().filter.unwrap_or_default();
            let items = self
                .state()
                .pods
                .iter()
                .filter(|p| filter.state.as_ref().is_none_or(|s| s.state == p.state))
                .filter(|p| filter.label_selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                .cloned()
                .collect();
            Ok(Response::new(cri::ListPodSandboxResponse { items }))
        }

        async fn list_containers(
            &self,
            r: Request<cri::ListContainersRequest>,
        ) -> Result<Response<cri::ListContainersResponse>, Status> {
            let filter = r.into_inner().filter.unwrap_or_default();
            let containers = self
                .state()
                .containers
                .iter()
                .map(|(c, _)| c.clone())
                .filter(|c| filter.state.as_ref().is_none_or(|s| s.state == c.state))
                .collect();
            Ok(Response::new(cri::ListContainersResponse { containers }))
        }

        async fn container_status(
            &self,
            r: Request<cri::ContainerStatusRequest>,
        ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
            let id = r.into_inner().container_id;
            let state = self.state();
            let (c, log) = state
                .containers
                .iter()
                .find(|(c, _)| c.id == id)
                .ok_or_else(|| Status::not_found(id.clone()))?;
            Ok(Response::new(cri::ContainerStatusResponse {
                status: Some(cri::ContainerStatus {
                    id: c.id.clone(),
                    metadata: c.metadata.clone(),
                    state: c.state,
                    log_path: log.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
        }

        async fn stop_container(
            &self,
            r: Request<cri::StopContainerRequest>,
        ) -> Result<Response<cri::StopContainerResponse>, Status> {
            let id = r.into_inner().container_id;
            let mut state = self.state();
            let (c, _) = state.containers.iter_mut().find(|(c, _)| c.id == id).ok_or_else(|| Status::not_found(id.clone()))?;
            c.state = cri::ContainerState::ContainerExited as i32;
            Ok(Response::new(cri::StopContainerResponse {}))
        }

        async fn remove_container(
            &self,
            r: Request<cri::RemoveContainerRequest>,
        ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
            let id = r.into_inner().container_id;
            self.state().containers.retain(|(c, _)| c.id != id);
            Ok(Response::new(cri::RemoveContainerResponse {}))
        }

        async fn exec_sync(
            &self,
            r: Request<cri::ExecSyncRequest>,
        ) -> Result<Response<cri::ExecSyncResponse>, Status> {
            let r = r.into_inner();
            let stdout = match r.cmd.first().map(String::as_str) {
                Some("big") => vec![b'x'; BIG_OUTPUT],
                _ => r.cmd.join(" ").into_bytes(),
            };
            Ok(Response::new(cri::ExecSyncResponse {
                stdout,
                stderr: b"to stderr".to_vec(),
                exit_code: 3,
            }))
        }

        async fn list_pod_sandbox_stats(
            &self,
            _: Request<cri::ListPodSandboxStatsRequest>,
        ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
            // Cumulative CPU only, growing by half a core-second per (fake) second.
            let mut state = self.state();
            state.stats_calls += 1;
            let n = state.stats_calls as i64;
            Ok(Response::new(cri::ListPodSandboxStatsResponse {
                stats: vec![cri::PodSandboxStats {
                    attributes: Some(cri::PodSandboxAttributes {
                        id: "deadbeefa".into(),
                        metadata: Some(cri::PodSandboxMetadata {
                            name: "web".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    linux: Some(cri::LinuxPodSandboxStats {
                        cpu: Some(cri::CpuUsage {
                            timestamp: n * 1_000_000_000,
                            usage_core_nano_seconds: Some(cri::UInt64Value { value: n as u64 * 500_000_000 }),
                            usage_nano_cores: None,
                        }),
                        memory: Some(cri::MemoryUsage {
                            working_set_bytes: Some(cri::UInt64Value { value: 64_000_000 }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    windows: None,
                }],
            }))
        }

        async fn status(&self, _: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
            Ok(Response::new(cri::StatusResponse {
                status: Some(cri::RuntimeStatus {
                    conditions: vec![cri::RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    }],
                }),
                runtime_handlers: vec![cri::RuntimeHandler {
                    name: "vessel".into(),
                    features: None,
                }],
                ..Default::default()
            }))
        }
    }
    unimplemented {
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
    }
}

fake_service! {
    ImageService {
        async fn list_images(&self, _: Request<cri::ListImagesRequest>) -> Result<Response<cri::ListImagesResponse>, Status> {
            Ok(Response::new(cri::ListImagesResponse {
                images: vec![cri::Image {
                    id: "sha256:8c811b4aec35f259572d0f79207bc0678df4c736eeec50bc9fec37ed936a472a".into(),
                    repo_tags: vec!["127.0.0.1:5000/busybox:latest".into()],
                    size: 1_150_000,
                    ..Default::default()
                }],
            }))
        }

        async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> Result<Response<cri::PullImageResponse>, Status> {
            let r = r.into_inner();
            let auth = r.auth.unwrap_or_default();
            if auth.username != "user" || auth.password != "secret" {
                return Err(Status::unauthenticated("bad credentials"));
            }
            Ok(Response::new(cri::PullImageResponse {
                image_ref: format!("{}@sha256:1234", r.image.unwrap_or_default().image),
            }))
        }
    }
    unimplemented {
        image_status(ImageStatusRequest) -> ImageStatusResponse;
        remove_image(RemoveImageRequest) -> RemoveImageResponse;
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
    }
}

/// Starts the fake on a socket in `dir`; returns its endpoint.
async fn serve(dir: &Path, fake: Fake) -> String {
    let socket = dir.join("cri.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(fake.clone()))
            .add_service(ImageServiceServer::new(fake))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    format!("unix://{}", socket.display())
}

async fn setup() -> (tempfile::TempDir, Fake, Cri) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let endpoint = serve(dir.path(), fake.clone()).await;
    let cri = connect(&endpoint).await.unwrap();
    (dir, fake, cri)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn version_over_the_socket() {
    let (_dir, _fake, mut cri) = setup().await;
    let mut out = Vec::new();
    verbs::version(&mut cri, DEADLINES, &mut out).await.unwrap();
    assert_eq!(
        text(out),
        "Version:  0.1.0\nRuntimeName:  fake\nRuntimeVersion:  9.9.9\nRuntimeApiVersion:  v1\n"
    );
}

#[tokio::test]
async fn bare_path_endpoint_and_missing_socket() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = serve(dir.path(), Fake::default()).await;
    let bare = endpoint.trim_start_matches("unix://");
    let mut cri = connect(bare).await.unwrap();
    verbs::version(&mut cri, DEADLINES, &mut Vec::new())
        .await
        .unwrap();
    let missing = dir.path().join("nope.sock");
    let err = connect(missing.to_str().unwrap()).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("No such file"), "{err}");
}

fn write_pod_config(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(
        &path,
        format!(r#"{{"metadata":{{"name":"{name}","namespace":"default","uid":"u-{name}"}},"labels":{{"app":"{name}"}},"log_directory":"/tmp","linux":{{}}}}"#),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn runp_then_pods_inspectp_stopp_rmp() {
    let (dir, fake, mut cri) = setup().await;
    let mut out = Vec::new();
    let id = verbs::runp(
        &mut cri,
        &write_pod_config(dir.path(), "web"),
        "vessel",
        DEADLINES,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(text(out), format!("{id}\n"));
    assert_eq!(
        fake.state().configs[0].metadata.as_ref().unwrap().uid,
        "u-web"
    );
    assert_eq!(fake.state().handlers, ["vessel"]);
    verbs::runp(
        &mut cri,
        &write_pod_config(dir.path(), "db"),
        "",
        DEADLINES,
        &mut Vec::new(),
    )
    .await
    .unwrap();

    // The table, crictl's columns and widths.
    let mut out = Vec::new();
    verbs::pods(&mut cri, &Default::default(), DEADLINES, &mut out)
        .await
        .unwrap();
    let table = text(out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("POD ID              CREATED"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&id[..13]) && l.contains("Ready") && l.contains("web")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("db") && l.ends_with("(default)")),
        "{table}"
    );

    // Filters: name regex, label, quiet.
    let mut out = Vec::new();
    let o = verbs::PodsOptions {
        name: Some("^w".into()),
        quiet: true,
        ..Default::default()
    };
    verbs::pods(&mut cri, &o, DEADLINES, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out), format!("{id}\n"));
    let mut out = Vec::new();
    let o = verbs::PodsOptions {
        labels: vec!["app=db".into()],
        output: Format::Json,
        ..Default::default()
    };
    verbs::pods(&mut cri, &o, DEADLINES, &mut out)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["items"].as_array().unwrap().len(), 1);
    assert_eq!(doc["items"][0]["metadata"]["name"], "db");
    assert_eq!(doc["items"][0]["state"], "SANDBOX_READY");
    assert_eq!(doc["items"][0]["createdAt"], "1700000000000000000");

    // inspectp by unique prefix: crictl's document, with the info parsed.
    let mut out = Vec::new();
    verbs::inspectp(
        &mut cri,
        &[id[..9].to_string()],
        Format::Json,
        DEADLINES,
        &mut out,
    )
    .await
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["status"]["id"], id.as_str());
    assert_eq!(doc["status"]["state"], "SANDBOX_READY");
    assert_eq!(doc["status"]["network"]["ip"], "10.88.0.7");
    assert_eq!(doc["status"]["createdAt"], "2023-11-14T22:13:20Z");
    assert_eq!(doc["info"]["vmmPid"], 4242);

    // An ambiguous prefix is refused before any pod is touched.
    let err = verbs::stopp(
        &mut cri,
        &["deadbeef".to_string()],
        DEADLINES,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ClientError::Ambiguous { count: 2, .. }),
        "{err}"
    );

    // rmp refuses a ready pod without --force, then stops and removes with it.
    let err = verbs::rmp(
        &mut cri,
        std::slice::from_ref(&id),
        false,
        false,
        DEADLINES,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("please stop it first"), "{err}");
    let mut out = Vec::new();
    verbs::stopp(&mut cri, std::slice::from_ref(&id), DEADLINES, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out), format!("Stopped sandbox {id}\n"));
    let mut out = Vec::new();
    verbs::rmp(&mut cri, &[], true, true, DEADLINES, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out).lines().count(), 2);
    assert!(fake.state().pods.is_empty());
}

#[tokio::test]
async fn rpc_errors_keep_their_code_and_message() {
    let (_dir, _fake, mut cri) = setup().await;
    let err = verbs::stats(&mut cri, &Default::default(), DEADLINES, &mut Vec::new())
        .await
        .unwrap_err();
    match &err {
        ClientError::Rpc { code, message } => {
            assert_eq!(*code, tonic::Code::Unimplemented);
            assert_eq!(message, "list_container_stats is not in the fake");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        err.to_string(),
        "Unimplemented: list_container_stats is not in the fake"
    );
    let err = verbs::stopp(&mut cri, &["nope".into()], DEADLINES, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no pod matches ID \"nope\"");
}

#[tokio::test]
async fn exec_sync_carries_16_mib_and_the_exit_code() {
    let (_dir, fake, mut cri) = setup().await;
    fake.state().containers.push((
        cri::Container {
            id: "c0ffee".into(),
            state: cri::ContainerState::ContainerRunning as i32,
            ..Default::default()
        },
        String::new(),
    ));
    let reply = verbs::exec_sync(&mut cri, "c0f", &["echo".into(), "hi".into()], 0, DEADLINES)
        .await
        .unwrap();
    assert_eq!(
        (
            reply.stdout.as_slice(),
            reply.stderr.as_slice(),
            reply.exit_code
        ),
        (&b"echo hi"[..], &b"to stderr"[..], 3)
    );
    let reply = verbs::exec_sync(&mut cri, "c0ffee", &["big".into()], 10, DEADLINES)
        .await
        .unwrap();
    assert_eq!(reply.stdout.len(), BIG_OUTPUT);
}

#[tokio::test]
async fn logs_and_ps_and_info_and_images_and_pull() {
    let (dir, fake, mut cri) = setup().await;
    let log = dir.path().join("app.log");
    std::fs::write(
        &log,
        "2026-12-02T10:00:00.1Z stdout P hel\n2026-12-02T10:00:00.2Z stderr F oops\n2026-12-02T10:00:00.3Z stdout F lo\n",
    )
    .unwrap();
    fake.state().containers.push((
        cri::Container {
            id: "feed01".into(),
            pod_sandbox_id: "pod01".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            state: cri::ContainerState::ContainerExited as i32,
            created_at: 1,
            ..Default::default()
        },
        log.display().to_string(),
    ));

    let (mut out, mut err) = (Vec::new(), Vec::new());
    let o = verbs::LogsOptions {
        follow: true, // The container has exited: follow ends after one read.
        ..Default::default()
    };
    verbs::logs(&mut cri, "feed", &o, DEADLINES, &mut out, &mut err)
        .await
        .unwrap();
    assert_eq!(
        (text(out), text(err)),
        ("hello\n".to_string(), "oops\n".to_string())
    );

    // ps shows running containers by default, every one with -a.
    let mut out = Vec::new();
    verbs::ps(&mut cri, &Default::default(), DEADLINES, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out).lines().count(), 1);
    let mut out = Vec::new();
    let o = verbs::PsOptions {
        all: true,
        ..Default::default()
    };
    verbs::ps(&mut cri, &o, DEADLINES, &mut out).await.unwrap();
    let table = text(out);
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("feed01") && row.contains("busybox") && row.contains("Exited"),
        "{table}"
    );
    assert!(row.ends_with("unknown"), "{table}");

    let mut out = Vec::new();
    verbs::info(&mut cri, Format::Json, DEADLINES, &mut out)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["status"]["conditions"][0]["type"], "RuntimeReady");
    assert_eq!(doc["runtimeHandlers"][0]["name"], "vessel");

    let mut out = Vec::new();
    verbs::images(&mut cri, &Default::default(), DEADLINES, &mut out)
        .await
        .unwrap();
    let table = text(out);
    assert_eq!(
        table.lines().nth(1).unwrap(),
        format!(
            "{:<25}{:<20}{:<20}1.15MB",
            "127.0.0.1:5000/busybox", "latest", "8c811b4aec35f"
        )
    );

    let o = verbs::PullOptions {
        creds: Some("user:secret".into()),
        auth: None,
    };
    let mut out = Vec::new();
    verbs::pull(&mut cri, "busybox", &o, DEADLINES, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out), "Image is up to date for busybox@sha256:1234\n");
    let err = verbs::pull(
        &mut cri,
        "busybox",
        &Default::default(),
        DEADLINES,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "Unauthenticated: bad credentials");
}

#[tokio::test]
async fn run_rolls_the_pod_back_when_create_fails() {
    let (dir, fake, mut cri) = setup().await;
    let ctr = dir.path().join("ctr.yaml");
    std::fs::write(&ctr, "metadata: {name: app}\nimage: {image: busybox}\n").unwrap();
    let o = verbs::RunOptions {
        container_config: ctr,
        pod_config: write_pod_config(dir.path(), "web"),
        no_pull: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    let err = verbs::run(&mut cri, &o, DEADLINES, &mut out)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Unimplemented: create_container is not in the fake"
    );
    assert!(out.is_empty());
    // The pod was made (its config reached the server), then removed again.
    assert_eq!(fake.state().configs.len(), 1);
    assert!(fake.state().pods.is_empty());
}

/// Runs the `vessel` binary against `endpoint`; returns (status code, stdout, stderr).
async fn vessel(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("-r")
        .arg(endpoint)
        .args(args)
        .env_remove("VESSEL_RUNTIME_ENDPOINT")
        .env_remove("CONTAINER_RUNTIME_ENDPOINT")
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        text(output.stdout),
        text(output.stderr),
    )
}

#[tokio::test]
async fn the_binary_prints_results_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    fake.state().containers.push((
        cri::Container {
            id: "c0ffee".into(),
            state: cri::ContainerState::ContainerRunning as i32,
            ..Default::default()
        },
        String::new(),
    ));
    let endpoint = serve(dir.path(), fake).await;

    let (code, out, err) = vessel(&endpoint, &["version"]).await;
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(
        out.starts_with("Version:  0.1.0\nRuntimeName:  fake\n"),
        "{out}"
    );

    let (code, out, err) = vessel(&endpoint, &["stats"]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        "vessel: stats: Unimplemented: list_container_stats is not in the fake\n"
    );

    // exec: the command's output on the matching streams, its exit code as ours.
    let (code, out, err) = vessel(&endpoint, &["exec", "c0f", "sh", "-c", "exit 3"]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "sh -c exit 3", "to stderr")
    );

    let (code, _, err) = vessel(&endpoint, &["inspect", "zzz"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "vessel: inspect: no container matches ID \"zzz\"\n")
    );

    let (code, _, err) = vessel(&endpoint, &["runp", "/nonexistent/pod.json"]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("vessel: runp: /nonexistent/pod.json: No such file"),
        "{err}"
    );

    let missing = format!("unix://{}", dir.path().join("none.sock").display());
    let (code, _, err) = vessel(&missing, &["pods"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("vessel: pods: connect to unix://"), "{err}");
}

#[tokio::test]
async fn statsp_computes_cpu_from_two_samples() {
    let (_dir, fake, mut cri) = setup().await;
    let mut out = Vec::new();
    verbs::statsp(&mut cri, None, &[], Format::Table, DEADLINES, &mut out)
        .await
        .unwrap();
    assert_eq!(fake.state().stats_calls, 2);
    let table = text(out);
    assert_eq!(
        table.lines().nth(1).unwrap(),
        format!("{:<20}{:<20}{:<20}64MB", "web", "deadbeefa", "50.00"),
        "{table}"
    );
    let mut out = Vec::new();
    verbs::statsp(&mut cri, None, &[], Format::Json, DEADLINES, &mut out)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        doc["stats"][0]["linux"]["cpu"]["usageCoreNanoSeconds"]["value"],
        "1500000000"
    );
}

#[tokio::test]
async fn logs_follow_until_the_container_exits() {
    let (dir, fake, mut cri) = setup().await;
    let log = dir.path().join("f.log");
    std::fs::write(&log, "t1 stdout F first\n").unwrap();
    fake.state().containers.push((
        cri::Container {
            id: "f011".into(),
            state: cri::ContainerState::ContainerRunning as i32,
            ..Default::default()
        },
        log.display().to_string(),
    ));
    let writer = {
        let (fake, log) = (fake.clone(), log.clone());
        tokio::spawn(async move {
            use std::io::Write;
            let append = |text: &str| {
                let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                f.write_all(text.as_bytes()).unwrap();
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            append("t2 stdout P sec\nt3 stderr F warn\n");
            tokio::time::sleep(Duration::from_millis(300)).await;
            append("t4 stdout F ond\n");
            fake.state().containers[0].0.state = cri::ContainerState::ContainerExited as i32;
        })
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let o = verbs::LogsOptions {
        follow: true,
        timestamps: true,
        ..Default::default()
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        verbs::logs(&mut cri, "f0", &o, DEADLINES, &mut out, &mut err),
    )
    .await
    .expect("logs -f ends once the container has exited")
    .unwrap();
    writer.await.unwrap();
    assert_eq!(text(out), "t1 first\nt2 second\n");
    assert_eq!(text(err), "t3 warn\n");
}

#[tokio::test]
async fn rm_refuses_running_containers_without_force_and_removes_logs() {
    let (dir, fake, mut cri) = setup().await;
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    for name in ["a.log", "a.log.1", "a.log.20261202", "ab.log", "b.log"] {
        std::fs::write(logs.join(name), "t stdout F x\n").unwrap();
    }
    for (id, log, state) in [
        ("aaa1", "a.log", cri::ContainerState::ContainerRunning),
        ("bbb2", "b.log", cri::ContainerState::ContainerExited),
    ] {
        fake.state().containers.push((
            cri::Container {
                id: id.into(),
                state: state as i32,
                ..Default::default()
            },
            logs.join(log).display().to_string(),
        ));
    }
    let err = verbs::rm(
        &mut cri,
        &["aaa".into()],
        Default::default(),
        DEADLINES,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    assert_eq!(fake.state().containers.len(), 2);

    let keep = verbs::RmOptions {
        keep_logs: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    verbs::rm(
        &mut cri,
        &["bbb".into()],
        keep,
        DEADLINES,
        &mut out,
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(text(out), "bbb2\n");
    assert!(logs.join("b.log").exists());

    let force = verbs::RmOptions {
        force: true,
        ..Default::default()
    };
    let (mut out, mut warnings) = (Vec::new(), Vec::new());
    verbs::rm(
        &mut cri,
        &["aaa1".into()],
        force,
        DEADLINES,
        &mut out,
        &mut warnings,
    )
    .await
    .unwrap();
    assert_eq!(
        (text(out), text(warnings)),
        ("aaa1\n".to_string(), String::new())
    );
    assert!(fake.state().containers.is_empty());
    let mut left: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["ab.log", "b.log"]);
}

#[tokio::test]
async fn stop_resolves_prefixes_and_stops_each() {
    let (_dir, fake, mut cri) = setup().await;
    for id in ["aaa1", "bbb2"] {
        fake.state().containers.push((
            cri::Container {
                id: id.into(),
                state: cri::ContainerState::ContainerRunning as i32,
                ..Default::default()
            },
            String::new(),
        ));
    }
    let mut out = Vec::new();
    verbs::stop(
        &mut cri,
        &["aa".into(), "bbb2".into()],
        5,
        DEADLINES,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(text(out), "aaa1\nbbb2\n");
    assert!(fake
        .state()
        .containers
        .iter()
        .all(|(c, _)| c.state == cri::ContainerState::ContainerExited as i32));
    let err = verbs::stop(&mut cri, &["zzz".into()], 5, DEADLINES, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("zzz"), "{err}");
}
