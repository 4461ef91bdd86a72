//! A container root filesystem made of Debian's `busybox-static`.

use std::os::unix::fs::symlink;
use std::path::Path;

/// The busybox binary tests/deps.sh installs.
pub const BUSYBOX: &str = "/bin/busybox";

/// Lays out a minimal rootfs at `root`: busybox with its applets, and the
/// directories a container's mounts need.
pub fn build_rootfs(root: &Path) {
    for dir in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(root.join(dir)).expect("rootfs dir");
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "cat", "echo", "ls", "ping", "sleep", "true", "id", "hostname", "ip", "nc", "dd",
        "head", "wc", "grep", "mkdir", "rm", "sync", "tty", "stty", "cp", "chmod", "mknod",
    ] {
        symlink("busybox", root.join("bin").join(applet)).expect("applet symlink");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
}
