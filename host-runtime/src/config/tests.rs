use std::ffi::OsString;
use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("config.toml"))
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.socket, Path::new("/run/vessel/vessel.sock"));
    assert_eq!(config.state_dir, Path::new("/var/lib/vessel"));
    assert_eq!(config.run_dir, Path::new("/run/vessel"));
    assert_eq!(config.cni.conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(
        config.cni.bin_dirs,
        [Path::new("/opt/cni/bin"), Path::new("/usr/lib/cni")]
    );
    assert_eq!(config.default_runtime_handler, "vessel");
    assert!(config.handler("").is_some());
    assert_eq!(config.handler(""), config.handler("vessel"));
}

#[test]
fn the_default_rendering_parses_back_to_the_defaults() {
    let text = Config::default_toml();
    assert_eq!(parse(&text).unwrap(), Config::default());
    // Every section is there for the operator to see.
    for section in [
        "[log]",
        "[cni]",
        "[streaming]",
        "[images]",
        "[pod_ids]",
        "[cgroup]",
        "[runtime_handlers.vessel]",
        "# [streaming.tls]",
    ] {
        assert!(text.contains(section), "{section} missing from:\n{text}");
    }
}

#[test]
fn a_full_rendering_with_every_option_parses_back() {
    let mut config = Config::default();
    config.streaming.tls = Some(TlsConfig {
        cert_file: "/etc/vessel/c.pem".into(),
        key_file: "/etc/vessel/k.pem".into(),
    });
    config.streaming.advertise_host = Some("node1.example".into());
    config.log.format = LogFormat::Json;
    config
        .runtime_handlers
        .insert("fast".into(), RuntimeHandler::default());
    let text = toml::to_string(&config).unwrap();
    assert_eq!(parse(&text).unwrap(), config);
}

#[test]
fn keys_set_in_the_file_override_defaults_and_others_stay() {
    let config = parse(
        r#"
socket = "/tmp/v.sock"
[log]
format = "json"
[cni]
bin_dirs = ["/x/bin"]
[runtime_handlers.vessel]
default_memory_mib = 512
[runtime_handlers.big]
default_vcpus = 4
kernel_args = "quiet"
"#,
    )
    .unwrap();
    assert_eq!(config.socket, Path::new("/tmp/v.sock"));
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.cni.conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(config.cni.bin_dirs, [Path::new("/x/bin")]);
    let vessel = config.handler("vessel").unwrap();
    assert_eq!(vessel.default_memory_mib, 512);
    assert_eq!(vessel.kernel, RuntimeHandler::default().kernel);
    let big = config.handler("big").unwrap();
    assert_eq!(big.default_vcpus, 4);
    assert_eq!(big.kernel_args, "quiet");
    assert!(config.handler("nope").is_none());
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err =
        parse("socket = \"/a.sock\"\n\n[cni]\nconf_dir = \"/c\"\nbin_dir = \"/b\"\n").unwrap_err();
    match &err {
        ConfigError::Parse {
            line: Some(5),
            message,
            ..
        } => assert!(message.contains("bin_dir"), "{message}"),
        other => panic!("unexpected: {other:?}"),
    }
    assert!(err.to_string().starts_with("config.toml:5:"), "{err}");

    let err = parse("[runtime_handlers.vessel]\nkernal = \"/k\"\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Parse { line: Some(2), message, .. } if message.contains("kernal")),
        "{err:?}"
    );
    let err = parse("\n\nsockets = \"/x\"\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Parse { line: Some(3), message, .. } if message.contains("sockets")),
        "{err:?}"
    );
}

#[test]
fn wrong_types_and_values_are_errors_naming_the_key() {
    let err = parse("[log]\nlevel = \"loud\"\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Parse { line: Some(2), .. }),
        "{err:?}"
    );
    for (text, key) in [
        ("state_dir = \"relative\"", "state_dir"),
        (
            "default_runtime_handler = \"kata\"",
            "default_runtime_handler",
        ),
        ("[pod_ids]\nstart = 0", "pod_ids.start"),
        (
            "[pod_ids]\nstart = 4294967000\ncount = 65536",
            "pod_ids.count",
        ),
        ("[pod_ids]\ncount = 1000", "pod_ids.count"),
        (
            "[pod_ids]\nstart = 4294901760\ncount = 65536",
            "pod_ids.count",
        ),
        (
            "[images]\nmax_unpacked_bytes = 0",
            "images.max_unpacked_bytes",
        ),
        ("[images]\nmax_entries = 0", "images.max_entries"),
        (
            "[images]\nprogress_timeout_secs = 0",
            "images.progress_timeout_secs",
        ),
        ("[images]\nmax_layers = 0", "images.max_layers"),
        ("[images]\npinned = [\"Bad Name\"]", "images.pinned"),
        ("[cgroup]\nparent = \"vessel\"", "cgroup.parent"),
        ("[cgroup]\nparent = \"/a/../b\"", "cgroup.parent"),
        ("[cni]\nbin_dirs = []", "cni.bin_dirs"),
        (
            "[runtime_handlers.x]\ndefault_vcpus = 0",
            "runtime_handlers.x.default_vcpus",
        ),
        (
            "[runtime_handlers.vessel]\nkernel = \"vmlinux\"",
            "runtime_handlers.vessel.kernel",
        ),
    ] {
        match parse(text) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: unexpected {other:?}"),
        }
    }
}

#[test]
fn env_overrides_the_file_and_flags_override_both() {
    let mut config = parse(
        "default_runtime_handler = \"mine\"\n[runtime_handlers.mine]\nkernel = \"/file/k\"\n",
    )
    .unwrap();
    let env = |name: &str| -> Option<OsString> {
        match name {
            "VESSEL_KERNEL" => Some("/env/k".into()),
            "VESSEL_VMM" => Some("/env/vmm".into()),
            "VESSEL_INITRAMFS" => Some("".into()),
            _ => None,
        }
    };
    config.apply_env(env).unwrap();
    let mine = config.handler("").unwrap();
    assert_eq!(mine.kernel, Path::new("/env/k"));
    assert_eq!(mine.vmm, Path::new("/env/vmm"));
    assert_eq!(mine.initramfs, RuntimeHandler::default().initramfs);
    // Only the default handler takes the environment.
    assert_eq!(
        config.handler("vessel").unwrap().kernel,
        RuntimeHandler::default().kernel
    );

    config
        .apply_flags(&FlagOverrides {
            socket: Some("/flag/s.sock".into()),
            cni_bin_dirs: Some(split_path_list("/a::/b:")),
            ..FlagOverrides::default()
        })
        .unwrap();
    assert_eq!(config.socket, Path::new("/flag/s.sock"));
    assert_eq!(config.state_dir, Path::new("/var/lib/vessel"));
    assert_eq!(config.cni.bin_dirs, [Path::new("/a"), Path::new("/b")]);

    let relative = config.apply_env(|n| (n == "VESSEL_VMM").then(|| "vmm".into()));
    assert!(
        matches!(&relative, Err(ConfigError::Override { source_name, .. }) if source_name == "VESSEL_VMM")
    );
    let relative = config.apply_flags(&FlagOverrides {
        run_dir: Some("run".into()),
        ..FlagOverrides::default()
    });
    assert!(
        matches!(&relative, Err(ConfigError::Override { source_name, .. }) if source_name == "--run-dir")
    );
}

#[test]
fn a_missing_file_is_the_defaults_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    assert_eq!(Config::load_or_default(&path).unwrap(), Config::default());
    assert!(matches!(Config::load(&path), Err(ConfigError::Read { .. })));
    std::fs::write(&path, "run_dir = 3\n").unwrap();
    let err = Config::load_or_default(&path).unwrap_err();
    assert!(err.to_string().contains("config.toml:1:"), "{err}");
}

#[test]
fn the_flags_parse_with_clap() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: FlagOverrides,
    }
    let cli = Cli::try_parse_from([
        "vesseld",
        "--socket",
        "/s.sock",
        "--cni-bin-dir",
        "/a:/b",
        "--cni-bin-dir",
        "/c",
    ])
    .unwrap();
    assert_eq!(cli.flags.socket.as_deref(), Some(Path::new("/s.sock")));
    assert_eq!(cli.flags.state_dir, None);
    assert_eq!(
        cli.flags.cni_bin_dirs.unwrap(),
        [Path::new("/a"), Path::new("/b"), Path::new("/c")]
    );
    let none = Cli::try_parse_from(["vesseld"]).unwrap();
    assert_eq!(none.flags, FlagOverrides::default());
}

#[test]
fn handler_names_are_dns_labels() {
    for bad in ["Vessel", "a_b", "-x", ""] {
        let text = format!("[runtime_handlers.\"{bad}\"]\n");
        match parse(&text) {
            Err(ConfigError::Invalid { key, .. }) => {
                assert!(key.starts_with("runtime_handlers"), "{key}")
            }
            other => panic!("{bad:?}: unexpected {other:?}"),
        }
    }
    assert!(parse("[runtime_handlers.vessel-big]\n").is_ok());
}

/// Every key of the default configuration has a row in the reference.
#[test]
fn the_reference_documents_every_key() {
    fn keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (k, v) in table {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    keys(&key, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut config = Config::default();
    config.streaming.tls = Some(TlsConfig {
        cert_file: "/c".into(),
        key_file: "/k".into(),
    });
    let value = toml::Value::try_from(&config).unwrap();
    let mut all = Vec::new();
    keys("", &value, &mut all);
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    let section = docs
        .split("## vesseld config.toml")
        .nth(1)
        .expect("the section")
        .split("\n## ")
        .next()
        .unwrap();
    assert!(all.len() > 20, "{all:?}");
    for key in all {
        let key = key.replace("runtime_handlers.vessel.", "runtime_handlers.NAME.");
        assert!(
            section.contains(&format!("`{key}`")),
            "docs/configuration.md does not document `{key}`"
        );
    }
}

#[test]
fn streaming_on_every_address_needs_an_advertised_host() {
    let err = parse("[streaming]\naddress = \"0.0.0.0:10010\"\n").unwrap_err();
    assert!(
        err.to_string().contains("streaming.advertise_host"),
        "{err}"
    );
    let ok =
        parse("[streaming]\naddress = \"0.0.0.0:10010\"\nadvertise_host = \"10.0.0.5\"\n").unwrap();
    assert_eq!(ok.streaming.advertise_host.as_deref(), Some("10.0.0.5"));
    let err = parse("[streaming]\nwrite_stall_timeout_secs = 0\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("streaming.write_stall_timeout_secs"),
        "{err}"
    );
}

#[test]
fn debug_logging_keeps_the_transport_crates_at_info() {
    let mut log = LogConfig::default();
    assert_eq!(log.filter_directives(), "info");
    log.level = LogLevel::Debug;
    let d = log.filter_directives();
    assert!(d.starts_with("debug,"), "{d}");
    assert!(d.contains("h2=info") && d.contains("hyper=info"), "{d}");
    // Every directive parses as tracing's filter would read it.
    assert!(tracing_subscriber::EnvFilter::try_new(&d).is_ok(), "{d}");
}
