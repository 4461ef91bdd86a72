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
        // Code can never be mapped executable, nor files shared; madvise
        // only with the advices in use; signals only within the process;
        // no role truncates files but the capped logs.
        for nr in [
            libc::SYS_mmap,
            libc::SYS_mprotect,
            libc::SYS_madvise,
            libc::SYS_tgkill,
            libc::SYS_ftruncate,
        ] {
            assert!(!r.allows_always(nr), "{role:?} allows {nr} outright");
        }
        assert!(!r.mentions(libc::SYS_kill) && !r.mentions(libc::SYS_tkill));
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
    // Only the vsock worker may create and connect (Unix) sockets.
    for nr in [
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_accept4,
        libc::SYS_sendmsg,
    ] {
        assert!(!device.mentions(nr), "device role allows {nr}");
    }
    let vsock = Role::Vsock.rules().unwrap();
    assert!(vsock.mentions(libc::SYS_socket) && !vsock.allows_always(libc::SYS_socket));
    assert!(vsock.allows_always(libc::SYS_connect));
    for role in Role::ALL {
        if role != Role::Vsock && role != Role::Launcher {
            let r = role.rules().unwrap();
            assert!(!r.mentions(libc::SYS_socket), "{role:?} may create sockets");
            assert!(!r.mentions(libc::SYS_connect), "{role:?} may connect");
        }
    }
    assert!(!device.mentions(libc::SYS_clone3));
    assert!(!device.mentions(libc::SYS_seccomp));
    for nr in [libc::SYS_readv, libc::SYS_writev, libc::SYS_pread64] {
        assert!(device.allows_always(nr));
    }
    // Only the balloon worker (and the launcher that starts it) may
    // fallocate, and only to punch holes.
    for role in Role::ALL {
        let r = role.rules().unwrap();
        let may = matches!(role, Role::Balloon | Role::Launcher);
        assert_eq!(r.mentions(libc::SYS_fallocate), may, "{role:?}");
        assert!(!r.allows_always(libc::SYS_fallocate), "{role:?}");
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

#[test]
fn clone3_is_answered_enosys_not_run() {
    assert!(common::enosys_rules().allows_always(libc::SYS_clone3));
    // Where threads are started it passes the allow-list, so the ENOSYS
    // filter decides (a KILL from the allow-list would win over it).
    for role in [Role::Launcher, Role::Api, Role::Main] {
        let r = role.rules().unwrap();
        if r.mentions(libc::SYS_clone) {
            assert!(r.allows_always(libc::SYS_clone3), "{role:?}");
            assert!(
                !r.allows_always(libc::SYS_clone),
                "{role:?}: clone unfiltered"
            );
        }
    }
}

/// In a child thread under a filter with clone3 answered ENOSYS (kill
/// mode), std still starts threads: glibc falls back to clone.
#[test]
fn threads_start_without_clone3() {
    let worked = std::thread::spawn(|| {
        install_now(Role::Api, seccompiler::SeccompAction::KillProcess).unwrap();
        // SAFETY: a raw syscall with null arguments; clone3 must fail
        // before reading them.
        let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        let child = std::thread::spawn(|| 7).join().unwrap();
        (rc, errno, child)
    })
    .join()
    .unwrap();
    assert_eq!(worked, (-1, Some(libc::ENOSYS), 7));
}
