//! Tests of the CRI → OCI spec translation, through `build` and the JSON
//! the agent receives.

use std::io::Write;

use k8s_cri::v1::{
    security_profile::ProfileType, Capability as CriCaps, ContainerConfig, ContainerMetadata,
    Device, HugepageLimit, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount as CriMount, MountPropagation, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, SecurityProfile,
};
use serde_json::{json, Value};
use vessel_agent_api::proto::SandboxInfo;

use super::*;

fn sandbox_info() -> SandboxInfo {
    SandboxInfo {
        sandbox_id: "pod1".into(),
        hostname: "web-0".into(),
        hosts_path: "/run/vessel/sandbox/hosts".into(),
        hostname_path: "/run/vessel/sandbox/hostname".into(),
        resolv_conf_path: "/run/vessel/sandbox/resolv.conf".into(),
        ..SandboxInfo::default()
    }
}

fn pod(privileged: bool, pid: NamespaceMode) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web-0".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged,
                namespace_options: Some(NamespaceOption {
                    pid: pid as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    }
}

fn image() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/app/bin:/bin".into(), "LANG=C".into()],
        entrypoint: vec!["/entry".into()],
        cmd: vec!["serve".into(), "--port=80".into()],
        working_dir: "/app".into(),
        user: String::new(),
        stop_signal: "SIGQUIT".into(),
    }
}

fn container(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "registry.local/app:1".into(),
            ..ImageSpec::default()
        }),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(sc),
        }),
        ..ContainerConfig::default()
    }
}

fn guest_path(_: usize, m: &CriMount) -> Result<String, SpecError> {
    Ok(format!("/run/vessel/shared{}", m.host_path))
}

/// Builds with the default pod and image; JSON of the spec, and run_as.
fn build_json(config: &ContainerConfig) -> Result<(Value, RunAsUser), SpecError> {
    build_with(config, &pod(false, NamespaceMode::Pod), &image())
}

fn build_with(
    config: &ContainerConfig,
    sandbox_config: &PodSandboxConfig,
    image: &ImageConfig,
) -> Result<(Value, RunAsUser), SpecError> {
    let out = build(SpecInput {
        config,
        sandbox_config,
        sandbox: &sandbox_info(),
        image,
        host_paths: &guest_path,
        extra_mounts: Vec::new(),
    })?;
    let json = serde_json::to_value(&out.spec).expect("spec as JSON");
    // The agent parses `oci_spec_json` with the same crate: it must read back the same.
    let back: oci_spec::runtime::Spec =
        serde_json::from_value(json.clone()).expect("the spec parses back");
    assert_eq!(back, out.spec);
    Ok((json, out.run_as))
}

fn ok(config: &ContainerConfig) -> Value {
    build_json(config).expect("spec").0
}

fn err_field(config: &ContainerConfig) -> String {
    match build_json(config) {
        Err(e) => e.field().expect("a field").to_string(),
        Ok((spec, _)) => panic!("expected an error, got {spec}"),
    }
}

fn sc() -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext::default()
}

fn caps(spec: &Value, set: &str) -> Vec<String> {
    let mut caps: Vec<String> = spec["process"]["capabilities"][set]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    caps.sort();
    caps
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn mount<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
    spec["mounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["destination"] == dest))
}

// --- command line ---------------------------------------------------------

#[test]
fn the_image_entrypoint_and_cmd_run_when_the_config_has_neither() {
    let spec = ok(&container(sc()));
    assert_eq!(
        spec["process"]["args"],
        json!(["/entry", "serve", "--port=80"])
    );
}

#[test]
fn args_replace_the_image_cmd_but_keep_its_entrypoint() {
    let mut c = container(sc());
    c.args = vec!["debug".into()];
    assert_eq!(ok(&c)["process"]["args"], json!(["/entry", "debug"]));
}

#[test]
fn a_command_replaces_the_entrypoint_and_drops_the_image_cmd() {
    let mut c = container(sc());
    c.command = vec!["/bin/sh".into()];
    assert_eq!(ok(&c)["process"]["args"], json!(["/bin/sh"]));
    c.args = vec!["-c".into(), "true".into()];
    assert_eq!(ok(&c)["process"]["args"], json!(["/bin/sh", "-c", "true"]));
}

#[test]
fn an_empty_string_entrypoint_means_none() {
    let mut img = image();
    img.entrypoint = vec![String::new()];
    let c = container(sc());
    let (spec, _) = build_with(&c, &pod(false, NamespaceMode::Pod), &img).expect("spec");
    assert_eq!(spec["process"]["args"], json!(["serve", "--port=80"]));
}

#[test]
fn no_command_anywhere_is_an_error_naming_command() {
    let img = ImageConfig::default();
    let err = build_with(&container(sc()), &pod(false, NamespaceMode::Pod), &img)
        .expect_err("no command");
    assert_eq!(err.field(), Some("command"));
    assert!(matches!(err, SpecError::Invalid { .. }));
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::InvalidArgument
    );
}

// --- environment, cwd, terminal ------------------------------------------

#[test]
fn config_envs_override_image_envs_in_place() {
    let mut c = container(sc());
    c.envs = vec![
        KeyValue {
            key: "LANG".into(),
            value: "en_US.UTF-8".into(),
        },
        KeyValue {
            key: "EXTRA".into(),
            value: "a=b".into(),
        },
    ];
    assert_eq!(
        ok(&c)["process"]["env"],
        json!([
            "PATH=/app/bin:/bin",
            "HOSTNAME=web-0",
            "LANG=en_US.UTF-8",
            "EXTRA=a=b"
        ])
    );
}

#[test]
fn the_default_path_stays_when_the_image_has_none_and_a_tty_adds_term() {
    let mut c = container(sc());
    c.tty = true;
    let img = ImageConfig {
        cmd: vec!["sh".into()],
        ..ImageConfig::default()
    };
    let (spec, _) = build_with(&c, &pod(false, NamespaceMode::Pod), &img).expect("spec");
    assert_eq!(
        spec["process"]["env"],
        json!([process::DEFAULT_PATH, "TERM=xterm", "HOSTNAME=web-0"])
    );
    assert_eq!(spec["process"]["terminal"], true);
    assert_eq!(spec["process"]["cwd"], "/");
}

#[test]
fn a_bad_env_key_is_named() {
    let mut c = container(sc());
    c.envs = vec![
        KeyValue {
            key: "OK".into(),
            value: "1".into(),
        },
        KeyValue {
            key: "A=B".into(),
            value: "1".into(),
        },
    ];
    assert_eq!(err_field(&c), "envs[1].key");
}

#[test]
fn the_working_dir_comes_from_the_config_then_the_image() {
    let mut c = container(sc());
    assert_eq!(ok(&c)["process"]["cwd"], "/app");
    c.working_dir = "/work".into();
    assert_eq!(ok(&c)["process"]["cwd"], "/work");
    c.working_dir = "relative".into();
    assert_eq!(err_field(&c), "working_dir");
}

// --- users and groups -----------------------------------------------------

#[test]
fn nobody_named_runs_as_root_resolved_in_the_image() {
    let (spec, run_as) = build_json(&container(sc())).expect("spec");
    assert_eq!(spec["process"]["user"]["uid"], 0);
    assert_eq!(spec["process"]["user"]["gid"], 0);
    assert_eq!(run_as.user, "0");
    assert_eq!(run_as.group, "");
}

#[test]
fn run_as_user_and_group_are_numeric_ids() {
    let mut s = sc();
    s.run_as_user = Some(Int64Value { value: 1000 });
    s.run_as_group = Some(Int64Value { value: 3000 });
    s.supplemental_groups = vec![4000, 5000];
    let (spec, run_as) = build_json(&container(s)).expect("spec");
    assert_eq!(spec["process"]["user"]["uid"], 1000);
    assert_eq!(spec["process"]["user"]["gid"], 3000);
    assert_eq!(
        spec["process"]["user"]["additionalGids"],
        json!([4000, 5000])
    );
    assert_eq!(
        (run_as.user.as_str(), run_as.group.as_str()),
        ("1000", "3000")
    );
}

#[test]
fn a_username_wins_over_a_uid_and_is_left_to_the_agent() {
    let mut s = sc();
    s.run_as_user = Some(Int64Value { value: 1000 });
    s.run_as_username = "nginx".into();
    let (spec, run_as) = build_json(&container(s)).expect("spec");
    assert_eq!((run_as.user.as_str(), run_as.group.as_str()), ("nginx", ""));
    // Not numeric: the agent resolves it, the spec holds 0 until then.
    assert_eq!(spec["process"]["user"]["uid"], 0);
}

#[test]
fn the_image_user_applies_when_the_config_names_nobody() {
    let mut img = image();
    img.user = "www:staff".into();
    let (_, run_as) =
        build_with(&container(sc()), &pod(false, NamespaceMode::Pod), &img).expect("spec");
    assert_eq!(
        (run_as.user.as_str(), run_as.group.as_str()),
        ("www", "staff")
    );
    img.user = "1001".into();
    let (spec, run_as) =
        build_with(&container(sc()), &pod(false, NamespaceMode::Pod), &img).expect("spec");
    assert_eq!(run_as.user, "1001");
    assert_eq!(spec["process"]["user"]["uid"], 1001);
    // The config's user wins over the image's.
    let mut s = sc();
    s.run_as_user = Some(Int64Value { value: 7 });
    let (_, run_as) =
        build_with(&container(s), &pod(false, NamespaceMode::Pod), &img).expect("spec");
    assert_eq!(run_as.user, "7");
}

#[test]
fn bad_users_and_groups_are_named() {
    let mut s = sc();
    s.run_as_user = Some(Int64Value { value: -1 });
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.run_as_user"
    );
    let mut s = sc();
    s.run_as_user = Some(Int64Value { value: 1 << 40 });
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.run_as_user"
    );
    let mut s = sc();
    s.run_as_group = Some(Int64Value { value: 10 });
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.run_as_group"
    );
    let mut s = sc();
    s.run_as_username = "a:b".into();
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.run_as_username"
    );
    let mut s = sc();
    s.supplemental_groups = vec![1, -5];
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.supplemental_groups[1]"
    );
    let mut s = sc();
    s.supplemental_groups_policy = k8s_cri::v1::SupplementalGroupsPolicy::Strict as i32;
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.supplemental_groups_policy"
    );
    let mut img = image();
    img.user = "bad user".into();
    let err = build_with(&container(sc()), &pod(false, NamespaceMode::Pod), &img)
        .expect_err("bad image user");
    assert_eq!(err.field(), Some("image.user"));
}

// --- capabilities ---------------------------------------------------------

fn with_caps(add: &[&str], drop: &[&str]) -> ContainerConfig {
    let mut s = sc();
    s.capabilities = Some(CriCaps {
        add_capabilities: add.iter().map(|c| c.to_string()).collect(),
        drop_capabilities: drop.iter().map(|c| c.to_string()).collect(),
        add_ambient_capabilities: Vec::new(),
    });
    container(s)
}

fn default_caps() -> Vec<String> {
    let mut v: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .expect("cap")
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_default_capabilities_are_containerds() {
    let spec = ok(&container(sc()));
    let expected = default_caps();
    assert_eq!(expected.len(), 14);
    assert!(expected.contains(&"CAP_NET_RAW".to_string()));
    for set in ["bounding", "effective", "permitted"] {
        assert_eq!(caps(&spec, set), expected, "{set}");
    }
    assert!(caps(&spec, "inheritable").is_empty());
    assert!(caps(&spec, "ambient").is_empty());
}

#[test]
fn capabilities_are_added_and_dropped_with_or_without_prefix() {
    let spec = ok(&with_caps(
        &["NET_ADMIN", "cap_sys_time"],
        &["NET_RAW", "CAP_KILL"],
    ));
    let bounding = caps(&spec, "bounding");
    assert!(bounding.contains(&"CAP_NET_ADMIN".to_string()));
    assert!(bounding.contains(&"CAP_SYS_TIME".to_string()));
    assert!(!bounding.contains(&"CAP_NET_RAW".to_string()));
    assert!(!bounding.contains(&"CAP_KILL".to_string()));
    assert_eq!(bounding.len(), 14);
    assert_eq!(caps(&spec, "effective"), bounding);
}

#[test]
fn add_all_gives_every_capability_and_drop_all_none() {
    let spec = ok(&with_caps(&["ALL"], &[]));
    assert_eq!(caps(&spec, "bounding").len(), ALL_CAPABILITIES.len());
    let spec = ok(&with_caps(&["all"], &["CHOWN"]));
    let bounding = caps(&spec, "bounding");
    assert_eq!(bounding.len(), ALL_CAPABILITIES.len() - 1);
    assert!(!bounding.contains(&"CAP_CHOWN".to_string()));
    let spec = ok(&with_caps(&[], &["ALL"]));
    assert!(caps(&spec, "bounding").is_empty());
    let spec = ok(&with_caps(&["NET_BIND_SERVICE"], &["ALL"]));
    assert_eq!(caps(&spec, "bounding"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(caps(&spec, "permitted"), ["CAP_NET_BIND_SERVICE"]);
}

#[test]
fn ambient_capabilities_are_ambient_inheritable_and_permitted() {
    let mut s = sc();
    s.capabilities = Some(CriCaps {
        add_ambient_capabilities: vec!["NET_ADMIN".into()],
        ..CriCaps::default()
    });
    let spec = ok(&container(s));
    assert_eq!(caps(&spec, "ambient"), ["CAP_NET_ADMIN"]);
    assert_eq!(caps(&spec, "inheritable"), ["CAP_NET_ADMIN"]);
    assert!(caps(&spec, "permitted").contains(&"CAP_NET_ADMIN".to_string()));
}

#[test]
fn an_unknown_capability_is_named() {
    assert_eq!(
        err_field(&with_caps(&["NET_ADMIN", "FLY"], &[])),
        "linux.security_context.capabilities.add_capabilities[1]"
    );
    assert_eq!(
        err_field(&with_caps(&[], &["NOPE"])),
        "linux.security_context.capabilities.drop_capabilities[0]"
    );
}

// --- privileged, masked and read-only paths, rootfs -----------------------

#[test]
fn unprivileged_containers_get_containerds_masked_and_readonly_paths() {
    let spec = ok(&container(sc()));
    assert_eq!(strings(&spec["linux"]["maskedPaths"]), MASKED_PATHS);
    assert_eq!(strings(&spec["linux"]["readonlyPaths"]), READONLY_PATHS);
    assert_eq!(spec["root"]["readonly"], false);
    let sys = mount(&spec, "/sys").expect("/sys");
    assert!(strings(&sys["options"]).contains(&"ro".to_string()));
}

#[test]
fn the_cri_lists_replace_the_defaults() {
    let mut s = sc();
    s.masked_paths = vec!["/proc/kcore".into()];
    s.readonly_paths = vec!["/proc/sys".into(), "/proc/bus".into()];
    let spec = ok(&container(s));
    assert_eq!(strings(&spec["linux"]["maskedPaths"]), ["/proc/kcore"]);
    assert_eq!(
        strings(&spec["linux"]["readonlyPaths"]),
        ["/proc/sys", "/proc/bus"]
    );
    let mut s = sc();
    s.masked_paths = vec!["proc/kcore".into()];
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.masked_paths[0]"
    );
}

#[test]
fn a_privileged_container_gets_everything() {
    let mut s = sc();
    s.privileged = true;
    s.masked_paths = vec!["/proc/kcore".into()];
    s.seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    let c = container(s);
    let (spec, _) = build_with(&c, &pod(true, NamespaceMode::Pod), &image()).expect("spec");
    assert_eq!(caps(&spec, "bounding").len(), ALL_CAPABILITIES.len());
    assert_eq!(spec["linux"]["maskedPaths"], json!([]));
    assert_eq!(spec["linux"]["readonlyPaths"], json!([]));
    assert!(spec["linux"].get("seccomp").is_none());
    let sys = mount(&spec, "/sys").expect("/sys");
    assert!(strings(&sys["options"]).contains(&"rw".to_string()));
    let cgroup = mount(&spec, "/sys/fs/cgroup").expect("cgroup");
    assert!(strings(&cgroup["options"]).contains(&"rw".to_string()));
    assert_eq!(
        spec["linux"]["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
    let types: Vec<String> = spec["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| n["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!types.contains(&"cgroup".to_string()), "{types:?}");
}

#[test]
fn a_privileged_container_needs_a_privileged_pod() {
    let mut s = sc();
    s.privileged = true;
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.privileged"
    );
}

#[test]
fn readonly_rootfs_makes_the_root_and_the_pod_files_readonly() {
    let mut s = sc();
    s.readonly_rootfs = true;
    let spec = ok(&container(s));
    assert_eq!(spec["root"]["readonly"], true);
    let hosts = mount(&spec, "/etc/hosts").expect("/etc/hosts");
    assert!(strings(&hosts["options"]).contains(&"ro".to_string()));
    let spec = ok(&container(sc()));
    let hosts = mount(&spec, "/etc/hosts").expect("/etc/hosts");
    assert!(strings(&hosts["options"]).contains(&"rw".to_string()));
    assert_eq!(hosts["source"], "/run/vessel/sandbox/hosts");
}

#[test]
fn no_new_privs_follows_the_request() {
    assert_eq!(ok(&container(sc()))["process"]["noNewPrivileges"], false);
    let mut s = sc();
    s.no_new_privs = true;
    assert_eq!(ok(&container(s))["process"]["noNewPrivileges"], true);
}

// --- seccomp ---------------------------------------------------------------

fn with_seccomp(profile_type: ProfileType, localhost_ref: &str) -> ContainerConfig {
    let mut s = sc();
    s.seccomp = Some(SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: localhost_ref.into(),
    });
    container(s)
}

fn rule_names(seccomp: &Value, action: &str) -> Vec<String> {
    seccomp["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|r| r["action"] == action)
        .flat_map(|r| strings(&r["names"]))
        .collect()
}

#[test]
fn runtime_default_is_the_default_profile_resolved_for_the_capabilities() {
    let spec = ok(&with_seccomp(ProfileType::RuntimeDefault, ""));
    let seccomp = &spec["linux"]["seccomp"];
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(seccomp["defaultErrnoRet"], 38);
    assert_eq!(
        seccomp["architectures"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    let allowed = rule_names(seccomp, "SCMP_ACT_ALLOW");
    for name in ["read", "write", "execve", "clone", "arch_prctl", "chroot"] {
        assert!(allowed.contains(&name.to_string()), "{name} allowed");
    }
    // Not for amd64, or needs CAP_SYS_ADMIN / CAP_SYS_MODULE the container lacks.
    for name in ["s390_runtime_instr", "bpf", "init_module"] {
        assert!(!allowed.contains(&name.to_string()), "{name} not allowed");
    }
    assert!(rule_names(seccomp, "SCMP_ACT_ERRNO").contains(&"bpf".to_string()));
    // No Docker-only fields reach the OCI profile.
    let text = seccomp.to_string();
    assert!(
        !text.contains("includes") && !text.contains("archMap"),
        "{text}"
    );
}

#[test]
fn runtime_default_follows_added_capabilities() {
    let mut s = sc();
    s.capabilities = Some(CriCaps {
        add_capabilities: vec!["SYS_ADMIN".into()],
        drop_capabilities: vec!["SYS_CHROOT".into()],
        ..CriCaps::default()
    });
    s.seccomp = Some(SecurityProfile::default()); // RuntimeDefault is 0
    let spec = ok(&container(s));
    let allowed = rule_names(&spec["linux"]["seccomp"], "SCMP_ACT_ALLOW");
    assert!(allowed.contains(&"bpf".to_string()));
    assert!(!allowed.contains(&"chroot".to_string()));
}

#[test]
fn unconfined_and_no_profile_mean_no_seccomp() {
    let spec = ok(&with_seccomp(ProfileType::Unconfined, ""));
    assert!(spec["linux"].get("seccomp").is_none());
    let spec = ok(&container(sc()));
    assert!(spec["linux"].get("seccomp").is_none());
}

#[test]
#[allow(deprecated)]
fn the_deprecated_profile_path_still_works() {
    let mut s = sc();
    s.seccomp_profile_path = "runtime/default".into();
    assert!(ok(&container(s))["linux"]["seccomp"].is_object());
    let mut s = sc();
    s.seccomp_profile_path = "unconfined".into();
    assert!(ok(&container(s))["linux"].get("seccomp").is_none());
    let mut s = sc();
    s.seccomp_profile_path = "bogus".into();
    assert_eq!(
        err_field(&container(s)),
        "linux.security_context.seccomp_profile_path"
    );
}

#[test]
fn a_localhost_profile_is_read_from_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("deny-mkdir.json");
    std::fs::write(
        &path,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .expect("write profile");
    let path = path.to_string_lossy().to_string();
    for r in [path.clone(), format!("localhost/{path}")] {
        let spec = ok(&with_seccomp(ProfileType::Localhost, &r));
        let seccomp = &spec["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(seccomp["architectures"], json!(["SCMP_ARCH_X86_64"]));
        assert_eq!(
            seccomp["syscalls"],
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}])
        );
    }
}

#[test]
fn bad_localhost_profiles_are_named() {
    let field = "linux.security_context.seccomp.localhost_ref";
    let dir = tempfile::tempdir().expect("tempdir");
    // Missing, relative, a directory.
    let missing = dir
        .path()
        .join("missing.json")
        .to_string_lossy()
        .to_string();
    for r in [
        missing.as_str(),
        "profiles/x.json",
        &dir.path().to_string_lossy(),
    ] {
        assert_eq!(
            err_field(&with_seccomp(ProfileType::Localhost, r)),
            field,
            "{r}"
        );
    }
    // Malformed.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction": "SCMP_ACT_EXPLODE"}"#).expect("write");
    let err = build_json(&with_seccomp(
        ProfileType::Localhost,
        &bad.to_string_lossy(),
    ))
    .expect_err("malformed");
    assert_eq!(err.field(), Some(field));
    assert!(err.to_string().contains("malformed"), "{err}");
    // Too large: the read stops at the bound.
    let big = dir.path().join("big.json");
    let mut f = std::fs::File::create(&big).expect("create");
    f.write_all(&vec![b' '; (MAX_PROFILE_BYTES + 10) as usize])
        .expect("write");
    let err = build_json(&with_seccomp(
        ProfileType::Localhost,
        &big.to_string_lossy(),
    ))
    .expect_err("too large");
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[test]
fn apparmor_is_ignored() {
    let mut s = sc();
    s.apparmor = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: "k8s-nginx".into(),
    });
    let spec = ok(&container(s));
    assert!(spec["process"].get("apparmorProfile").is_none());
}

// --- mounts -----------------------------------------------------------------

fn cri_mount(container_path: &str, host_path: &str, readonly: bool) -> CriMount {
    CriMount {
        container_path: container_path.into(),
        host_path: host_path.into(),
        readonly,
        ..CriMount::default()
    }
}

#[test]
fn cri_mounts_become_private_bind_mounts_of_their_guest_paths() {
    let mut c = container(sc());
    c.mounts = vec![
        cri_mount(
            "/data/cache",
            "/var/lib/kubelet/pods/u1/volumes/cache",
            false,
        ),
        cri_mount("/data", "/var/lib/kubelet/pods/u1/volumes/data", true),
        cri_mount(
            "/dev/termination-log",
            "/var/lib/kubelet/pods/u1/containers/app/x",
            false,
        ),
    ];
    c.mounts[0].selinux_relabel = true;
    let spec = ok(&c);
    let data = mount(&spec, "/data").expect("/data");
    assert_eq!(data["type"], "bind");
    assert_eq!(
        data["source"],
        "/run/vessel/shared/var/lib/kubelet/pods/u1/volumes/data"
    );
    assert_eq!(strings(&data["options"]), ["rbind", "rprivate", "ro"]);
    let cache = mount(&spec, "/data/cache").expect("/data/cache");
    assert_eq!(strings(&cache["options"]), ["rbind", "rprivate", "rw"]);
    assert!(mount(&spec, "/dev/termination-log").is_some());
    // Parents before children, whatever the request's order.
    let dests: Vec<String> = spec["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["destination"].as_str().unwrap_or_default().to_string())
        .collect();
    let at = |d: &str| dests.iter().position(|x| x == d).expect(d);
    assert!(at("/data") < at("/data/cache"), "{dests:?}");
    assert!(at("/proc") < at("/data"), "{dests:?}");
}

#[test]
fn a_cri_mount_replaces_the_default_at_its_destination() {
    let mut c = container(sc());
    c.mounts = vec![
        cri_mount("/etc/hosts", "/var/lib/kubelet/pods/u1/etc-hosts", false),
        cri_mount("/dev/shm", "/host/shm", false),
    ];
    let spec = ok(&c);
    let hosts: Vec<&Value> = spec["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| m["destination"] == "/etc/hosts")
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        hosts[0]["source"],
        "/run/vessel/shared/var/lib/kubelet/pods/u1/etc-hosts"
    );
    assert_eq!(mount(&spec, "/dev/shm").expect("shm")["type"], "bind");
    // The pod's hostname and resolv.conf stay.
    assert!(mount(&spec, "/etc/hostname").is_some());
    assert!(mount(&spec, "/etc/resolv.conf").is_some());
}

#[test]
fn mounting_dev_drops_the_default_dev_mounts() {
    let mut c = container(sc());
    c.mounts = vec![cri_mount("/dev", "/dev", false)];
    let spec = ok(&c);
    for dest in ["/dev/pts", "/dev/shm", "/dev/mqueue"] {
        assert!(mount(&spec, dest).is_none(), "{dest}");
    }
    assert_eq!(mount(&spec, "/dev").expect("/dev")["type"], "bind");
}

#[test]
fn propagation_other_than_private_is_refused() {
    for p in [
        MountPropagation::PropagationHostToContainer,
        MountPropagation::PropagationBidirectional,
    ] {
        let mut c = container(sc());
        c.mounts = vec![
            cri_mount("/a", "/a", false),
            cri_mount("/b", "/b", false),
            cri_mount("/c", "/c", false),
        ];
        c.mounts[2].propagation = p as i32;
        let err = build_json(&c).expect_err("propagation");
        assert_eq!(err.field(), Some("mounts[2].propagation"));
        assert!(err.to_string().contains(p.as_str_name()), "{err}");
    }
}

#[test]
fn bad_mount_paths_are_named() {
    let cases = [
        (
            cri_mount("relative", "/x", false),
            "mounts[0].container_path",
        ),
        (
            cri_mount("/a/../etc", "/x", false),
            "mounts[0].container_path",
        ),
        (cri_mount("/", "/x", false), "mounts[0].container_path"),
        (cri_mount("/a", "x", false), "mounts[0].host_path"),
    ];
    for (m, field) in cases {
        let mut c = container(sc());
        c.mounts = vec![m];
        assert_eq!(err_field(&c), field);
    }
    let mut c = container(sc());
    let mut m = cri_mount("/a", "/x", true);
    m.recursive_read_only = true;
    c.mounts = vec![m];
    assert_eq!(err_field(&c), "mounts[0].recursive_read_only");
}

#[test]
fn the_mappers_error_is_returned() {
    let refuse = |i: usize, m: &CriMount| -> Result<String, SpecError> {
        Err(SpecError::invalid(
            format!("mounts[{i}].host_path"),
            format!("{} cannot be shared", m.host_path),
        ))
    };
    let mut c = container(sc());
    c.mounts = vec![cri_mount("/a", "/proc/1/root", false)];
    let err = build(SpecInput {
        config: &c,
        sandbox_config: &pod(false, NamespaceMode::Pod),
        sandbox: &sandbox_info(),
        image: &image(),
        host_paths: &refuse,
        extra_mounts: Vec::new(),
    })
    .expect_err("refused");
    assert_eq!(err.field(), Some("mounts[0].host_path"));
}

#[test]
fn the_pod_files_and_default_mounts_are_there() {
    let spec = ok(&container(sc()));
    for (dest, source) in [
        ("/etc/hosts", "/run/vessel/sandbox/hosts"),
        ("/etc/hostname", "/run/vessel/sandbox/hostname"),
        ("/etc/resolv.conf", "/run/vessel/sandbox/resolv.conf"),
    ] {
        assert_eq!(mount(&spec, dest).expect(dest)["source"], source);
    }
    for dest in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ] {
        assert!(mount(&spec, dest).is_some(), "{dest}");
    }
    assert_eq!(spec["hostname"], "web-0");
    assert_eq!(spec["annotations"]["io.kubernetes.cri.sandbox-id"], "pod1");
    assert_eq!(
        spec["annotations"]["io.kubernetes.cri.container-name"],
        "app"
    );
    assert_eq!(
        spec["annotations"]["io.kubernetes.cri.image-name"],
        "registry.local/app:1"
    );
}

// --- devices ----------------------------------------------------------------

#[test]
fn devices_get_nodes_and_cgroup_rules() {
    let mut c = container(sc());
    c.devices = vec![
        Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        },
        Device {
            container_path: "/dev/zero".into(),
            host_path: "/dev/zero".into(),
            permissions: String::new(),
        },
    ];
    let spec = ok(&c);
    assert_eq!(
        spec["linux"]["devices"][0],
        json!({"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
               "fileMode": 0o666, "uid": 0, "gid": 0})
    );
    assert_eq!(spec["linux"]["devices"][1]["minor"], 5);
    assert_eq!(
        spec["linux"]["resources"]["devices"],
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        ])
    );
}

#[test]
fn bad_devices_are_named() {
    let dev = |c: &str, h: &str, p: &str| Device {
        container_path: c.into(),
        host_path: h.into(),
        permissions: p.into(),
    };
    let cases = [
        (dev("/dev/x", "/etc/hostname", "rw"), "devices[0].host_path"),
        (
            dev("/dev/x", "/no/such/device", "rw"),
            "devices[0].host_path",
        ),
        (dev("/dev/x", "dev/null", "rw"), "devices[0].host_path"),
        (dev("dev/x", "/dev/null", "rw"), "devices[0].container_path"),
        (dev("/dev/x", "/dev/null", "rwx"), "devices[0].permissions"),
    ];
    for (d, field) in cases {
        let mut c = container(sc());
        c.devices = vec![d];
        assert_eq!(err_field(&c), field);
    }
}

#[test]
fn no_devices_no_device_rules() {
    let spec = ok(&container(sc()));
    assert!(spec["linux"].get("devices").is_none());
    assert!(spec["linux"].get("resources").is_none());
}

// --- resources --------------------------------------------------------------

#[test]
fn resources_are_translated_like_containerd() {
    let mut c = container(sc());
    let resources = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 2000,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 0,
        }],
        unified: [("memory.high".to_string(), "50000000".to_string())].into(),
        memory_swap_limit_in_bytes: 0,
    };
    c.linux.as_mut().expect("linux").resources = Some(resources);
    let spec = ok(&c);
    let r = &spec["linux"]["resources"];
    assert_eq!(
        r["cpu"],
        json!({"period": 100000, "quota": 50000, "shares": 512, "cpus": "0-1", "mems": "0"})
    );
    // swap = limit: no swapping.
    assert_eq!(r["memory"], json!({"limit": 67108864, "swap": 67108864}));
    assert_eq!(
        r["hugepageLimits"],
        json!([{"pageSize": "2MB", "limit": 0}])
    );
    assert_eq!(r["unified"], json!({"memory.high": "50000000"}));
    // Clamped to the kernel's range.
    assert_eq!(spec["process"]["oomScoreAdj"], 1000);
}

#[test]
fn an_explicit_swap_limit_is_kept_and_unset_values_stay_unset() {
    let res = LinuxContainerResources {
        memory_limit_in_bytes: 1 << 20,
        memory_swap_limit_in_bytes: 2 << 20,
        oom_score_adj: -999,
        ..LinuxContainerResources::default()
    };
    let r = serde_json::to_value(linux_resources(&res, "linux").expect("resources")).expect("json");
    assert_eq!(r, json!({"memory": {"limit": 1048576, "swap": 2097152}}));
    let mut c = container(sc());
    c.linux.as_mut().expect("linux").resources = Some(res);
    assert_eq!(ok(&c)["process"]["oomScoreAdj"], -999);
    assert_eq!(ok(&container(sc()))["process"]["oomScoreAdj"], 0);
}

#[test]
fn negative_cpu_values_are_named() {
    let mut c = container(sc());
    c.linux.as_mut().expect("linux").resources = Some(LinuxContainerResources {
        cpu_period: -1,
        ..LinuxContainerResources::default()
    });
    assert_eq!(err_field(&c), "linux.resources.cpu_period");
    c.linux.as_mut().expect("linux").resources = Some(LinuxContainerResources {
        cpu_shares: -2,
        ..LinuxContainerResources::default()
    });
    assert_eq!(err_field(&c), "linux.resources.cpu_shares");
    c.linux.as_mut().expect("linux").resources = Some(LinuxContainerResources {
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: u64::MAX,
        }],
        ..LinuxContainerResources::default()
    });
    assert_eq!(err_field(&c), "linux.resources.hugepage_limits[0].limit");
}

// --- namespaces -------------------------------------------------------------

fn ns_types(spec: &Value) -> Vec<String> {
    spec["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| {
            assert!(n.get("path").is_none(), "{n}");
            n["type"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn namespaces_are_the_pods_without_paths() {
    let spec = ok(&container(sc()));
    assert_eq!(
        ns_types(&spec),
        ["pid", "ipc", "uts", "mount", "network", "cgroup"]
    );
}

#[test]
fn node_namespaces_are_refused() {
    for (field, set) in [("network", 0usize), ("pid", 1), ("ipc", 2)] {
        let mut s = sc();
        let mut ns = NamespaceOption::default();
        match set {
            0 => ns.network = NamespaceMode::Node as i32,
            1 => ns.pid = NamespaceMode::Node as i32,
            _ => ns.ipc = NamespaceMode::Node as i32,
        }
        s.namespace_options = Some(ns);
        let err = build_json(&container(s)).expect_err("node namespace");
        assert_eq!(
            err.field(),
            Some(format!("linux.security_context.namespace_options.{field}").as_str())
        );
        assert!(err.to_string().contains("own VM"), "{err}");
    }
}

#[test]
fn pid_namespace_modes_must_fit_the_pod() {
    let container_pid = |mode: NamespaceMode| {
        let mut s = sc();
        s.namespace_options = Some(NamespaceOption {
            pid: mode as i32,
            ..NamespaceOption::default()
        });
        container(s)
    };
    // Own pid namespaces in a pod without a shared one: fine.
    let c = container_pid(NamespaceMode::Container);
    assert!(build_with(&c, &pod(false, NamespaceMode::Container), &image()).is_ok());
    // POD where the pod does not share: the container gets its own.
    let c = container_pid(NamespaceMode::Pod);
    assert!(build_with(&c, &pod(false, NamespaceMode::Container), &image()).is_ok());
    // CONTAINER where the pod shares one: cannot be honoured.
    let c = container_pid(NamespaceMode::Container);
    let err = build_with(&c, &pod(false, NamespaceMode::Pod), &image()).expect_err("mismatch");
    assert_eq!(
        err.field(),
        Some("linux.security_context.namespace_options.pid")
    );
    let c = container_pid(NamespaceMode::Target);
    assert_eq!(
        err_field(&c),
        "linux.security_context.namespace_options.pid"
    );
    assert!(pod_shares_pid(&pod(false, NamespaceMode::Pod)));
    assert!(pod_shares_pid(&PodSandboxConfig::default()));
    assert!(!pod_shares_pid(&pod(false, NamespaceMode::Container)));
}

#[test]
fn extra_mounts_join_the_defaults() {
    let tmp = oci_spec::runtime::MountBuilder::default()
        .destination("/tmp")
        .typ("tmpfs")
        .source("tmpfs")
        .build()
        .expect("mount");
    let c = container(sc());
    let out = build(SpecInput {
        config: &c,
        sandbox_config: &pod(false, NamespaceMode::Pod),
        sandbox: &sandbox_info(),
        image: &image(),
        host_paths: &guest_path,
        extra_mounts: vec![tmp],
    })
    .expect("spec");
    let spec = serde_json::to_value(&out.spec).expect("json");
    assert_eq!(mount(&spec, "/tmp").expect("/tmp")["type"], "tmpfs");
}

#[test]
fn no_hostname_means_none_in_the_spec() {
    let mut info = sandbox_info();
    info.hostname.clear();
    let mut pod = pod(false, NamespaceMode::Pod);
    pod.hostname.clear();
    let c = container(sc());
    let out = build(SpecInput {
        config: &c,
        sandbox_config: &pod,
        sandbox: &info,
        image: &image(),
        host_paths: &guest_path,
        extra_mounts: Vec::new(),
    })
    .expect("spec");
    assert_eq!(out.spec.hostname(), &None);
}

// --- what the agent makes of it -------------------------------------------------

#[test]
fn the_agent_compiles_the_default_profile_for_any_capability_set() {
    for add in [vec![], vec!["ALL".to_string()]] {
        let mut s = sc();
        s.capabilities = Some(CriCaps {
            add_capabilities: add,
            ..CriCaps::default()
        });
        s.seccomp = Some(SecurityProfile::default());
        let c = container(s);
        let out = build(SpecInput {
            config: &c,
            sandbox_config: &pod(false, NamespaceMode::Pod),
            sandbox: &sandbox_info(),
            image: &image(),
            host_paths: &guest_path,
            extra_mounts: Vec::new(),
        })
        .expect("spec");
        let seccomp = out
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone())
            .expect("a profile");
        vessel_agent::container::seccomp::compile(&seccomp).expect("the agent compiles it");
    }
}

#[test]
fn the_agent_plans_the_resources_as_the_kubelet_sends_them() {
    let mut c = container(sc());
    c.linux.as_mut().expect("linux").resources = Some(LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 102,
        memory_limit_in_bytes: 64 << 20,
        hugepage_limits: vec![
            HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            },
            HugepageLimit {
                page_size: "1GB".into(),
                limit: 0,
            },
        ],
        ..LinuxContainerResources::default()
    });
    c.devices = vec![Device {
        container_path: "/dev/fuse0".into(),
        host_path: "/dev/null".into(),
        permissions: "rwm".into(),
    }];
    let out = build(SpecInput {
        config: &c,
        sandbox_config: &pod(false, NamespaceMode::Pod),
        sandbox: &sandbox_info(),
        image: &image(),
        host_paths: &guest_path,
        extra_mounts: Vec::new(),
    })
    .expect("spec");
    let resources = out
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .expect("resources");
    vessel_agent::cgroup::resources::plan(&resources).expect("the agent plans them");
}

#[test]
fn user_namespaces_are_refused_but_node_mode_is_fine() {
    let with_userns = |mode: NamespaceMode| {
        let mut s = sc();
        s.namespace_options = Some(NamespaceOption {
            userns_options: Some(k8s_cri::v1::UserNamespace {
                mode: mode as i32,
                ..Default::default()
            }),
            ..NamespaceOption::default()
        });
        container(s)
    };
    assert!(build_json(&with_userns(NamespaceMode::Node)).is_ok());
    assert_eq!(
        err_field(&with_userns(NamespaceMode::Pod)),
        "linux.security_context.namespace_options.userns_options"
    );
}
