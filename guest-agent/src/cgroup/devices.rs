//! The cgroup v2 device controller: a `BPF_PROG_TYPE_CGROUP_DEVICE` program
//! on each container's cgroup that allows only the OCI spec's
//! `linux.resources.devices` rules plus the devices every container gets
//! (null, zero, full, random, urandom, tty, console, ptmx and the ptys).
//!
//! Like runc's `devicefilter`, the rules are reduced first (an `a *:* rwm`
//! rule resets the list and sets the default), then compiled to a few
//! instructions per rule, evaluated last rule first (the last matching rule
//! wins, as in cgroup v1), ending in the default. Unlike runc, `mknod` of an
//! arbitrary device is not allowed by default: a container holding CAP_MKNOD
//! still cannot make a disk or a serial port node.
//!
//! Written by hand: the program is ~6 instructions per rule and needs no
//! maps or BTF, so a BPF loader crate (aya, libbpf-rs) and its ELF tooling
//! would be far more than the bpf(2) calls below.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::CgroupError;

/// `BPF_DEVCG_ACC_*`: what the process does with the device.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// `BPF_DEVCG_DEV_*`: the device type.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;

/// Largest major and minor number of a Linux `dev_t` (12 and 20 bits).
const MAX_MAJOR: i64 = (1 << 12) - 1;
const MAX_MINOR: i64 = (1 << 20) - 1;

/// Which devices a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceType {
    /// Block and character devices.
    All,
    /// Character devices.
    Char,
    /// Block devices.
    Block,
}

/// One allow or deny rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// The device type.
    pub typ: DeviceType,
    /// The major number; `None` matches all.
    pub major: Option<u32>,
    /// The minor number; `None` matches all.
    pub minor: Option<u32>,
    /// `ACC_*` bits: the rule matches a request whose accesses are all in it.
    pub access: u32,
}

const fn char_rwm(major: u32, minor: Option<u32>) -> Rule {
    Rule {
        allow: true,
        typ: DeviceType::Char,
        major: Some(major),
        minor,
        access: ACC_ALL,
    }
}

/// The devices every container may make and use, after the spec's rules.
pub const DEFAULT_ALLOWED: [Rule; 9] = [
    char_rwm(1, Some(3)), // null
    char_rwm(1, Some(5)), // zero
    char_rwm(1, Some(7)), // full
    char_rwm(1, Some(8)), // random
    char_rwm(1, Some(9)), // urandom
    char_rwm(5, Some(0)), // tty
    char_rwm(5, Some(1)), // console
    char_rwm(5, Some(2)), // ptmx
    char_rwm(136, None),  // /dev/pts/*
];

/// The reduced rules: a default and the rules that differ from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// What a request no rule matches gets.
    pub default_allow: bool,
    /// In spec order; the last match wins.
    pub rules: Vec<Rule>,
}

fn invalid(i: usize, what: &str) -> CgroupError {
    CgroupError::InvalidArgument(format!("linux.resources.devices[{i}].{what}"))
}

fn number(i: usize, field: &str, value: Option<i64>, max: i64) -> Result<Option<u32>, CgroupError> {
    match value {
        None | Some(-1) => Ok(None),
        Some(v) if (0..=max).contains(&v) => Ok(u32::try_from(v).ok()),
        Some(v) => Err(invalid(
            i,
            &format!("{field}: {v} is not -1 (all) or 0..={max}"),
        )),
    }
}

/// Checks the spec's rules and reduces them, with [`DEFAULT_ALLOWED`] after them.
pub fn policy(devices: Option<&[LinuxDeviceCgroup]>) -> Result<Policy, CgroupError> {
    let mut policy = Policy {
        default_allow: false,
        rules: Vec::new(),
    };
    for (i, d) in devices.into_iter().flatten().enumerate() {
        let typ = match d.typ() {
            None | Some(LinuxDeviceType::A) => DeviceType::All,
            Some(LinuxDeviceType::C | LinuxDeviceType::U) => DeviceType::Char,
            Some(LinuxDeviceType::B) => DeviceType::Block,
            Some(LinuxDeviceType::P) => {
                return Err(invalid(
                    i,
                    "type: p (a FIFO) is not a device the cgroup controls",
                ))
            }
        };
        let major = number(i, "major", d.major(), MAX_MAJOR)?;
        let minor = number(i, "minor", d.minor(), MAX_MINOR)?;
        let access = match d.access().as_deref() {
            None | Some("") => ACC_ALL,
            Some(text) => text.chars().try_fold(0, |bits, c| match c {
                'r' => Ok(bits | ACC_READ),
                'w' => Ok(bits | ACC_WRITE),
                'm' => Ok(bits | ACC_MKNOD),
                _ => Err(invalid(
                    i,
                    &format!("access: {text:?} is not made of r, w and m"),
                )),
            })?,
        };
        let rule = Rule {
            allow: d.allow(),
            typ,
            major,
            minor,
            access,
        };
        if typ == DeviceType::All && major.is_none() && minor.is_none() && access == ACC_ALL {
            // "a *:* rwm": everything before it no longer matters.
            policy.default_allow = rule.allow;
            policy.rules.clear();
        } else {
            policy.rules.push(rule);
        }
    }
    policy.rules.extend(DEFAULT_ALLOWED);
    Ok(policy)
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_W_MEM: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54; // dst = (u32)dst & imm
const ALU32_RSH_K: u8 = 0x74; // dst = (u32)dst >> imm
const ALU32_MOV_X: u8 = 0xbc; // dst = (u32)src
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const JMP_JNE_K: u8 = 0x55; // if dst != imm goto +off
const JMP_JNE_X: u8 = 0x5d; // if dst != src goto +off
const JMP_EXIT: u8 = 0x95;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// Registers: r1 the context on entry, then r2 type, r3 access, r4 major, r5 minor.
const R0: u8 = 0;
const R1: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;

/// Compiles `policy` (see the module doc for the evaluation order).
pub fn program(policy: &Policy) -> Vec<Insn> {
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    let mut p = vec![
        insn(LDX_W_MEM, TYPE, R1, 0, 0),
        insn(ALU32_AND_K, TYPE, 0, 0, 0xffff),
        insn(LDX_W_MEM, ACCESS, R1, 0, 0),
        insn(ALU32_RSH_K, ACCESS, 0, 0, 16),
        insn(LDX_W_MEM, MAJOR, R1, 4, 0),
        insn(LDX_W_MEM, MINOR, R1, 8, 0),
    ];
    for rule in policy.rules.iter().rev() {
        // Each failed test jumps past this rule's exit; offsets are patched below.
        let mut jumps = Vec::new();
        let mut jne = |p: &mut Vec<Insn>, i: Insn| {
            jumps.push(p.len());
            p.push(i);
        };
        match rule.typ {
            DeviceType::All => {}
            DeviceType::Char => jne(&mut p, insn(JMP_JNE_K, TYPE, 0, 0, DEV_CHAR as i32)),
            DeviceType::Block => jne(&mut p, insn(JMP_JNE_K, TYPE, 0, 0, DEV_BLOCK as i32)),
        }
        if rule.access != ACC_ALL {
            // Matches when every requested access is in the rule's.
            p.push(insn(ALU32_MOV_X, R1, ACCESS, 0, 0));
            p.push(insn(ALU32_AND_K, R1, 0, 0, rule.access as i32));
            jne(&mut p, insn(JMP_JNE_X, R1, ACCESS, 0, 0));
        }
        // Majors and minors fit in 20 bits, so the sign-extended immediate is exact.
        if let Some(major) = rule.major {
            jne(&mut p, insn(JMP_JNE_K, MAJOR, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            jne(&mut p, insn(JMP_JNE_K, MINOR, 0, 0, minor as i32));
        }
        p.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow)));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let end = p.len();
        for at in jumps {
            // Relative to the next instruction; a block is a few instructions long.
            p[at].off = i16::try_from(end - at - 1).unwrap_or(i16::MAX);
        }
    }
    p.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(policy.default_allow)));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of ancestors (a host's own) keep running too; all must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;
/// Verifier log kept on a failed load, for the error.
const LOG_SIZE: usize = 16 * 1024;

fn bpf<T>(cmd: libc::c_long, attr: &T) -> libc::c_long {
    // Safe: `attr` is a repr(C) prefix of union bpf_attr that outlives the call;
    // the kernel reads exactly size_of::<T>() bytes of it.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    }
}

/// Loads `program`; on failure the verifier's last words are in the error.
fn load(program: &[Insn]) -> Result<OwnedFd, String> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"vessel_device");
    let mut log = vec![0u8; LOG_SIZE];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(program.len()).map_err(|_| "the program is too long".to_owned())?,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    let mut ret = bpf(BPF_PROG_LOAD, &attr);
    if ret < 0 && matches!(Errno::last(), Errno::EINVAL | Errno::EACCES) {
        // Once more with the verifier's log, to say why.
        attr.log_level = 1;
        attr.log_size = LOG_SIZE as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
        ret = bpf(BPF_PROG_LOAD, &attr);
    }
    if ret < 0 {
        let errno = Errno::last();
        let text = String::from_utf8_lossy(&log);
        let last = text
            .trim_end_matches('\0')
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_owned();
        return Err(if last.is_empty() {
            format!("{errno}")
        } else {
            format!("{errno}: {last}")
        });
    }
    let raw = i32::try_from(ret).map_err(|_| "bad fd".to_owned())?;
    // Safe: bpf(2) just returned this new fd to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A device program attached to a container's cgroup. The cgroup holds it
/// (and drops it when removed); this fd is what replacing it needs.
#[derive(Debug)]
pub struct Attached {
    prog: OwnedFd,
}

/// `BPF_PROG_ATTACH` or `BPF_PROG_DETACH` of `prog` on the cgroup at `dir`.
fn attach_op(cmd: libc::c_long, dir: &Path, prog: &OwnedFd) -> Result<(), CgroupError> {
    let cgroup = std::fs::File::open(dir).map_err(|e| CgroupError::io("open", dir, e))?;
    let attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: if cmd == BPF_PROG_ATTACH {
            BPF_F_ALLOW_MULTI
        } else {
            0
        },
        replace_bpf_fd: 0,
    };
    if bpf(cmd, &attr) < 0 {
        let what = if cmd == BPF_PROG_ATTACH {
            "attach"
        } else {
            "detach"
        };
        return Err(unavailable(dir, format!("{what}: {}", Errno::last())));
    }
    Ok(())
}

fn unavailable(dir: &Path, why: String) -> CgroupError {
    CgroupError::Unavailable(format!(
        "linux.resources.devices: cannot install the device program on {}: {why} \
         (the guest kernel needs CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF)",
        dir.display()
    ))
}

/// Loads the program for `policy` and attaches it to the cgroup at `dir`.
pub fn install(dir: &Path, policy: &Policy) -> Result<Attached, CgroupError> {
    let prog = load(&program(policy)).map_err(|e| unavailable(dir, format!("load: {e}")))?;
    attach_op(BPF_PROG_ATTACH, dir, &prog)?;
    Ok(Attached { prog })
}

/// Replaces `old` on the cgroup at `dir` by a program for `policy`: the new
/// one is attached first (while both are, a device must pass both), then the
/// old one detached; if that fails, the new one goes again and `old` stays.
pub fn replace(dir: &Path, old: &Attached, policy: &Policy) -> Result<Attached, CgroupError> {
    let new = install(dir, policy)?;
    if let Err(err) = attach_op(BPF_PROG_DETACH, dir, &old.prog) {
        if let Err(undo) = attach_op(BPF_PROG_DETACH, dir, &new.prog) {
            tracing::warn!(error = %undo, "cannot detach the new device program after a failed replace");
        }
        return Err(err);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).expect("device rules")
    }

    /// Runs `program` on one request, as the kernel would.
    fn run(program: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> bool {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = program[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            pc += 1;
            match i.code {
                LDX_W_MEM => r[dst] = u64::from(ctx[usize::try_from(i.off).expect("off") / 4]),
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32).into(),
                ALU32_RSH_K => r[dst] = (r[dst] as u32 >> i.imm).into(),
                ALU32_MOV_X => r[dst] = (r[src] as u32).into(),
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JMP_JNE_K | JMP_JNE_X => {}
                JMP_EXIT => return r[0] == 1,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn kubelets_deny_all_allows_only_the_defaults() {
        let p = policy(Some(&rules(r#"[{"allow": false, "access": "rwm"}]"#))).expect("policy");
        assert!(!p.default_allow);
        let prog = program(&p);
        assert!(run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3));
        assert!(run(&prog, DEV_CHAR, ACC_MKNOD, 1, 9));
        assert!(run(&prog, DEV_CHAR, ACC_WRITE, 136, 4));
        assert!(!run(&prog, DEV_BLOCK, ACC_MKNOD, 8, 0), "disk mknod");
        assert!(!run(&prog, DEV_CHAR, ACC_MKNOD, 4, 64), "serial mknod");
        assert!(!run(&prog, DEV_CHAR, ACC_READ, 4, 64), "serial read");
        assert!(
            !run(&prog, DEV_BLOCK, ACC_READ, 1, 3),
            "block 1:3 is not null"
        );
    }

    #[test]
    fn spec_rules_apply_in_order_last_match_wins() {
        let p = policy(Some(&rules(
            r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "b", "major": 8, "access": "r"},
                {"allow": false, "type": "b", "major": 8, "minor": 1, "access": "rwm"},
                {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"}]"#,
        )))
        .expect("policy");
        let prog = program(&p);
        assert!(run(&prog, DEV_BLOCK, ACC_READ, 8, 0));
        assert!(!run(&prog, DEV_BLOCK, ACC_WRITE, 8, 0), "only r");
        assert!(!run(&prog, DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 0), "rw ⊄ r");
        assert!(!run(&prog, DEV_BLOCK, ACC_READ, 8, 1), "denied later");
        assert!(run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 10, 200));
        assert!(!run(&prog, DEV_CHAR, ACC_MKNOD, 10, 200));
    }

    #[test]
    fn allow_all_then_deny() {
        let p = policy(Some(&rules(
            r#"[{"allow": true, "access": "rwm"},
                {"allow": false, "type": "c", "major": 4, "access": "rwm"}]"#,
        )))
        .expect("policy");
        assert!(p.default_allow);
        let prog = program(&p);
        assert!(run(&prog, DEV_BLOCK, ACC_MKNOD, 8, 0));
        assert!(!run(&prog, DEV_CHAR, ACC_READ, 4, 64));
        // No rules at all: deny by default, the defaults allowed.
        let prog = program(&policy(None).expect("policy"));
        assert!(!run(&prog, DEV_BLOCK, ACC_READ, 8, 0));
        assert!(run(&prog, DEV_CHAR, ACC_READ, 5, 0));
    }

    #[test]
    fn bad_rules_name_their_field() {
        for (json, field) in [
            (r#"[{"allow": true, "type": "p"}]"#, "devices[0].type"),
            (
                r#"[{"allow": true}, {"allow": true, "major": 4096}]"#,
                "devices[1].major",
            ),
            (r#"[{"allow": true, "minor": -2}]"#, "devices[0].minor"),
            (r#"[{"allow": true, "access": "rwx"}]"#, "devices[0].access"),
        ] {
            match policy(Some(&rules(json))) {
                Err(CgroupError::InvalidArgument(m)) => {
                    assert!(
                        m.contains(&format!("linux.resources.{field}")),
                        "{json}: {m}"
                    )
                }
                other => panic!("{json}: expected INVALID_ARGUMENT, got {other:?}"),
            }
        }
    }
}
