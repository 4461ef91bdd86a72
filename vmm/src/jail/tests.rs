use super::*;

#[test]
fn spec_keeps_socket_dirs_and_files_once() {
    let mut spec = JailSpec::new(None);
    assert_eq!(spec.dir, PathBuf::from(DEFAULT_JAIL_DIR));
    spec.keep_socket_dir(Path::new("/run/vessel/p/vsock.sock"))
        .unwrap();
    spec.keep_socket_dir(Path::new("/run/vessel/p/api.sock"))
        .unwrap();
    spec.keep_file_ro(Path::new("/var/lib/vessel/vmlinux"))
        .unwrap();
    assert_eq!(
        spec.keep,
        vec![
            Keep {
                path: PathBuf::from("/run/vessel/p"),
                read_only: false
            },
            Keep {
                path: PathBuf::from("/var/lib/vessel/vmlinux"),
                read_only: true
            },
        ]
    );
}

#[test]
fn spec_refuses_relative_and_dotdot_paths() {
    let mut spec = JailSpec::new(Some(PathBuf::from("/j")));
    assert!(matches!(
        spec.keep_socket_dir(Path::new("vsock.sock")),
        Err(JailError::Relative(_))
    ));
    assert!(matches!(
        spec.keep_file_ro(Path::new("/a/../vmlinux")),
        Err(JailError::Relative(_))
    ));
    let msg = spec.keep_file_ro(Path::new("k")).unwrap_err().to_string();
    assert!(msg.contains("absolute"), "{msg}");
}

#[test]
fn nofile_limit_covers_runtime_and_respects_the_hard_limit() {
    let runtime = nofile::runtime_fds();
    assert!(runtime >= (crate::devices::virtio::vsock::MAX_CONNECTIONS as u64));
    assert_eq!(nofile_limit(20, runtime, 1 << 20), 20 + runtime);
    assert_eq!(nofile_limit(20, runtime, 512), 512);
    assert_eq!(nofile_limit(u64::MAX, 1, u64::MAX), u64::MAX);
}
