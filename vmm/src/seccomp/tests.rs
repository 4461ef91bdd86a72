use super::*;

/// Set in a re-run of this test binary: device workers then run under the
/// real device filter (see `launcher::spawn_direct`).
pub const DEVICE_FILTER_ENV: &str = "VESSEL_VMM_TEST_DEVICE_SECCOMP";

#[test]
fn every_role_compiles_in_every_mode() {
    for mode in [Mode::Kill, Mode::Log] {
        let filters = Filters::compile(mode).unwrap().unwrap();
        for role in Role::ALL {
            let p = &filters.programs[&role];
            assert!(!p.allow.is_empty() && !p.errno.is_empty(), "{role:?}");
        }
    }
    assert!(Filters::compile(Mode::Off).unwrap().is_none());
}

#[test]
fn vcpu_ioctls_are_the_kernel_numbers() {
    // From <linux/kvm.h> and <linux/if_tun.h> on x86_64, as strace shows them.
    assert_eq!(
        vcpu::ioctls(),
        [
            0xae80,
            0x8090_ae81,
            0x8138_ae83,
            0x8400_ae8e,
            0x8004_ae98,
            0x8040_ae9f,
            0x5421,
            0x4004_54d0,
            0x4004_54d8
        ]
    );
}

#[test]
fn no_role_may_exec_fork_or_trace() {
    for role in Role::ALL {
        let r = role.rules().unwrap();
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_kill,
            libc::SYS_bpf,
        ] {
            assert!(!r.mentions(nr), "{role:?} allows syscall {nr}");
        }
        // Code can never be mapped executable.
        assert!(!r.allows_always(libc::SYS_mmap), "{role:?}");
        assert!(!r.allows_always(libc::SYS_mprotect), "{role:?}");
    }
}

#[test]
fn roles_get_only_their_own_powers() {
    let vcpu = Role::Vcpu.rules().unwrap();
    assert!(!vcpu.mentions(libc::SYS_socket));
    assert!(!vcpu.mentions(libc::SYS_connect));
    assert!(!vcpu.mentions(libc::SYS_clone3));
    assert!(vcpu.mentions(libc::SYS_ioctl) && !vcpu.allows_always(libc::SYS_ioctl));
    // virtio-fs activation runs on the vCPU thread.
    assert!(vcpu.allows_always(libc::SYS_sendmsg) && vcpu.allows_always(libc::SYS_recvmsg));

    let device = Role::Device.rules().unwrap();
    assert!(!device.allows_always(libc::SYS_socket));
    assert!(!device.mentions(libc::SYS_clone3));
    assert!(!device.mentions(libc::SYS_seccomp));
    for nr in [libc::SYS_readv, libc::SYS_writev, libc::SYS_pread64] {
        assert!(device.allows_always(nr));
    }
    let launcher = Role::Launcher.rules().unwrap();
    assert!(launcher.allows_always(libc::SYS_clone3));
    assert!(launcher.mentions(libc::SYS_seccomp));

    let signals = Role::Signals.rules().unwrap();
    assert!(signals.allows_always(libc::SYS_rt_sigtimedwait));
    assert!(!signals.mentions(libc::SYS_read));
    assert!(!signals.mentions(libc::SYS_ioctl));

    let main = Role::Main.rules().unwrap();
    assert!(!main.mentions(libc::SYS_ioctl));
    assert!(!main.mentions(libc::SYS_clone3));
}

/// Re-runs the virtio device unit tests in a child with every device
/// worker under the real device filter (kill): a syscall the filter lacks
/// ends the child with SIGSYS.
#[test]
fn device_unit_tests_pass_under_the_device_filter() {
    if std::env::var_os(DEVICE_FILTER_ENV).is_some() {
        return; // the child itself: only the device tests matter here
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["devices::virtio::", "--test-threads=2"])
        .env(DEVICE_FILTER_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "device tests under the device filter: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("test result: ok"), "{stdout}");
}
