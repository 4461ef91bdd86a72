//! KVM: the device, whether a standard Linux guest can boot on it, and the
//! CPU's virtualization extensions.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::CheckResult;

/// The KVM API version every kernel since 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;

// KVM_GET_API_VERSION, _IO(KVMIO, 0x00). One ioctl does not justify the
// kvm-ioctls crate here (vessel-vmm links it; vesseld does not).
nix::ioctl_none!(kvm_get_api_version, 0xAE, 0x00);

/// `/dev/kvm` exists, opens read-write, and speaks KVM API version 12.
pub fn kvm_device(device: &Path) -> CheckResult {
    const NAME: &str = "kvm device";
    let shown = device.display();
    if !device.exists() {
        return CheckResult::fail(
            NAME,
            format!("{shown} does not exist"),
            "load KVM (`modprobe kvm_intel` or `modprobe kvm_amd`) and enable VT-x/AMD-V in the firmware",
        );
    }
    let file = match OpenOptions::new().read(true).write(true).open(device) {
        Ok(f) => f,
        Err(e) => {
            return CheckResult::fail(
                NAME,
                format!("{shown} does not open read-write: {e}"),
                "run vesseld as root (or in the `kvm` group)",
            )
        }
    };
    // SAFETY: the fd is open for the whole call and the ioctl takes no
    // argument; on a file that is not a KVM device it fails with ENOTTY.
    match unsafe { kvm_get_api_version(file.as_raw_fd()) } {
        Ok(KVM_API_VERSION) => CheckResult::ok(
            NAME,
            format!("{shown} opens read-write, KVM API version {KVM_API_VERSION}"),
        ),
        Ok(v) => CheckResult::fail(
            NAME,
            format!("{shown} reports KVM API version {v}, not {KVM_API_VERSION}"),
            "use a Linux kernel with standard KVM",
        ),
        Err(e) => CheckResult::fail(
            NAME,
            format!("{shown} is not a KVM device (KVM_GET_API_VERSION: {e})"),
            format!("remove {shown} and load KVM (`modprobe kvm_intel` or `modprobe kvm_amd`)"),
        ),
    }
}

/// Whether a standard Linux guest can boot: not on a PVM host (`kvm_pvm`,
/// paravirtualized KVM without VMX/SVM), where a guest kernel hangs once it
/// leaves real mode (tests/kvm-host/README.md).
pub fn kvm_guests(sys_dir: &Path) -> CheckResult {
    const NAME: &str = "kvm guests";
    let pvm = sys_dir.join("module/kvm_pvm");
    if pvm.exists() {
        return CheckResult::fail(
            NAME,
            format!(
                "{} is loaded: this is a PVM host (paravirtualized KVM without VMX/SVM); \
                 it runs real-mode code, but a standard x86-64 Linux guest hangs once it \
                 leaves real mode, so no pod VM can boot here",
                pvm.display()
            ),
            "run vessel on a host whose KVM uses VMX/SVM (bare metal, or a VM with nested \
             virtualization); vessel's own tests boot guests on such machines inside \
             tests/kvm-host/run's nested test host",
        );
    }
    CheckResult::ok(
        NAME,
        "not a PVM host (no kvm_pvm module); `vesseld boot-vm` proves a guest boots",
    )
}

/// The CPU flags KVM needs: `vmx` (Intel VT-x) or `svm` (AMD-V).
pub fn cpu_virtualization(proc_dir: &Path) -> CheckResult {
    const NAME: &str = "cpu virtualization";
    let path = proc_dir.join("cpuinfo");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return CheckResult::fail(
                NAME,
                format!("cannot read {}: {e}", path.display()),
                "mount procfs on /proc",
            )
        }
    };
    let mut found = Vec::new();
    for line in text.lines() {
        let Some((key, flags)) = line.split_once(':') else {
            continue;
        };
        if key.trim() != "flags" {
            continue;
        }
        for flag in ["vmx", "svm"] {
            if flags.split_whitespace().any(|f| f == flag) && !found.contains(&flag) {
                found.push(flag);
            }
        }
    }
    match found.as_slice() {
        [] => CheckResult::fail(
            NAME,
            format!("no vmx or svm flag in {}", path.display()),
            "enable VT-x/AMD-V in the firmware, or nested virtualization on the hypervisor \
             that runs this node (e.g. `kvm_intel nested=1` and a CPU model with vmx)",
        ),
        flags => CheckResult::ok(
            NAME,
            format!(
                "{} ({})",
                flags.join(", "),
                if flags.contains(&"vmx") {
                    "Intel VT-x"
                } else {
                    "AMD-V"
                }
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn a_missing_or_fake_kvm_device_fails_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = kvm_device(&dir.path().join("kvm"));
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.fix.contains("modprobe kvm_intel"), "{missing:?}");
        // A regular file opens read-write but answers no KVM ioctl.
        std::fs::write(dir.path().join("kvm"), b"").unwrap();
        let fake = kvm_device(&dir.path().join("kvm"));
        assert_eq!(fake.status, Status::Fail);
        assert!(fake.detail.contains("not a KVM device"), "{fake:?}");
    }

    #[test]
    fn a_pvm_host_fails_and_says_why() {
        let sys = tempfile::tempdir().unwrap();
        assert_eq!(kvm_guests(sys.path()).status, Status::Ok);
        std::fs::create_dir_all(sys.path().join("module/kvm_pvm")).unwrap();
        let r = kvm_guests(sys.path());
        assert_eq!(r.status, Status::Fail);
        assert!(r.detail.contains("PVM host") && r.detail.contains("real mode"));
        assert!(r.fix.contains("VMX/SVM"));
    }

    #[test]
    fn vmx_or_svm_in_cpuinfo_is_required() {
        let proc_dir = tempfile::tempdir().unwrap();
        let cpuinfo = proc_dir.path().join("cpuinfo");
        std::fs::write(&cpuinfo, "processor\t: 0\nflags\t\t: fpu vme sse2 svmx\n").unwrap();
        assert_eq!(cpu_virtualization(proc_dir.path()).status, Status::Fail);
        std::fs::write(
            &cpuinfo,
            "processor\t: 0\nflags\t\t: fpu vmx sse2\n\nprocessor\t: 1\nflags\t\t: fpu vmx\n",
        )
        .unwrap();
        let r = cpu_virtualization(proc_dir.path());
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.detail, "vmx (Intel VT-x)");
        std::fs::write(&cpuinfo, "flags\t\t: svm\n").unwrap();
        assert_eq!(cpu_virtualization(proc_dir.path()).detail, "svm (AMD-V)");
    }

    #[test]
    fn the_real_kvm_device_answers_when_it_opens() {
        // On a host with /dev/kvm (CI has one), the ioctl path runs for real.
        let dev = Path::new("/dev/kvm");
        if OpenOptions::new().read(true).write(true).open(dev).is_ok() {
            let r = kvm_device(dev);
            assert_eq!(r.status, Status::Ok, "{r:?}");
        } else {
            assert_eq!(kvm_device(dev).status, Status::Fail);
        }
    }
}
