//! The vCPU role: KVM_RUN and the exits it hands to the devices, which run
//! on this thread (serial output, i8042 reset, virtio-mmio register
//! accesses, device activation and reset).

use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

use super::rules::RuleSet;
use super::{common, SeccompError};

const KVMIO: u32 = 0xAE;
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_bindings::kvm_lapic_state);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_bindings::kvm_mp_state);
ioctl_ior_nr!(
    KVM_GET_VCPU_EVENTS,
    KVMIO,
    0x9f,
    kvm_bindings::kvm_vcpu_events
);
ioctl_iow_nr!(TUNSETOFFLOAD, 'T' as u32, 208, libc::c_uint);
ioctl_iow_nr!(TUNSETVNETHDRSZ, 'T' as u32, 216, libc::c_int);

/// The ioctls a vCPU thread makes once the guest runs.
pub fn ioctls() -> [u64; 9] {
    [
        KVM_RUN(),
        // Read only to describe a guest crash in the exit reason, and for
        // the post-mortem's snapshot (with the three after them).
        KVM_GET_REGS(),
        KVM_GET_SREGS(),
        KVM_GET_LAPIC(),
        KVM_GET_MP_STATE(),
        KVM_GET_VCPU_EVENTS(),
        // Device activation: set_nonblocking on descriptors it hands over.
        libc::FIONBIO,
        // virtio-net activation configures the tap for the features the
        // driver acked (offloads, vnet header size).
        TUNSETOFFLOAD(),
        TUNSETVNETHDRSZ(),
    ]
}

/// The rules of a vCPU thread.
pub fn rules() -> Result<RuleSet, SeccompError> {
    let mut r = common::rules()?;
    r.allow_arg_in(libc::SYS_ioctl, 1, &ioctls())?;
    r.allow(&[
        // Eventfds: queue notifications and interrupts of device models.
        libc::SYS_read,
        // Device activation builds the worker's wake-up set and stop
        // eventfd here before the launcher starts the worker thread.
        libc::SYS_eventfd2,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        // virtio-fs activation is a guest MMIO write, so it runs here: the
        // vhost-user frontend sends the memory table and the vring
        // eventfds to virtiofsd (SCM_RIGHTS) and reads its replies.
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
    ]);
    Ok(r)
}
