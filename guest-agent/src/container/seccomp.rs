//! OCI `linux.seccomp` profiles, compiled to seccomp BPF with `seccompiler`.
//!
//! seccompiler compiles a filter with one match action and one mismatch
//! action, while an OCI profile has a default action plus rules with actions
//! of their own. So a profile becomes a small stack of filters; the kernel runs
//! every filter of a process and takes the result of highest precedence
//! (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > TRACE > LOG > ALLOW):
//!
//! - per rule action `A` (other than ALLOW and the default): `A` when a rule
//!   with action `A` matches, ALLOW otherwise;
//! - if the default is not ALLOW: ALLOW when any rule matches, else the default.
//!
//! A call that matches a rule of action `A` gets `A` (every other filter says
//! ALLOW); a call that matches no rule gets the default. Rules with different
//! actions that match the same call give the stricter action.
//!
//! Syscall names come from the `syscalls` crate's table for the agent's own
//! architecture (seccompiler keeps its table private); names it lacks are
//! skipped, as runc skips names the running kernel lacks.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde_json::Value;

/// Where the profile sits in a `Create` request, for error messages.
pub const FIELD: &str = "oci_spec_json.linux.seccomp";

/// errno a rule returns when its action is ERRNO or TRACE without `errnoRet` (runc's choice).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// Largest errno a filter may return (the kernel's MAX_ERRNO).
const MAX_ERRNO: u32 = 4095;

/// Number of syscall arguments a condition can look at.
const MAX_ARGS: usize = 6;

/// A profile that cannot be compiled; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ProfileError {
    field: String,
    message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> ProfileError {
    ProfileError {
        field: field.into(),
        message: message.into(),
    }
}

/// A compiled profile, ready to install.
#[derive(Debug, Default)]
pub struct Profile {
    /// The filters, in install order (the one that may deny `seccomp` itself last).
    filters: Vec<Vec<libc::sock_filter>>,
    /// `SECCOMP_FILTER_FLAG_*` bits for every filter.
    flags: libc::c_ulong,
    /// Syscall names this agent has no number for; they were skipped.
    pub unknown: Vec<String>,
}

impl Profile {
    /// Whether installing would change nothing (everything allowed).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Number of BPF filters the profile installs.
    pub fn filter_count(&self) -> usize {
        self.filters.len()
    }

    /// Installs the filters on the calling thread. The caller must have set
    /// no_new_privs or hold CAP_SYS_ADMIN. Allocates nothing.
    pub fn install(&self) -> std::io::Result<()> {
        for (i, filter) in self.filters.iter().enumerate() {
            let len = u16::try_from(filter.len()).map_err(std::io::Error::other)?;
            let prog = libc::sock_fprog {
                len,
                filter: filter.as_ptr().cast_mut(),
            };
            // seccompiler's `apply_filter` would also force no_new_privs on and takes no
            // flags, so the syscall is made here. Safe: `prog` points at a live filter,
            // which the kernel copies.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    self.flags,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                return Err(std::io::Error::new(
                    err.kind(),
                    format!("filter {} of {}: {err}", i + 1, self.filters.len()),
                ));
            }
        }
        Ok(())
    }
}

/// One argument comparison.
#[derive(Clone, Debug)]
struct Cond {
    index: u8,
    op: SeccompCmpOp,
    value: u64,
}

/// When a syscall matches: always, or when any of the condition lists all hold.
#[derive(Clone, Debug)]
enum Match {
    Always,
    AnyOf(Vec<Vec<Cond>>),
}

impl Match {
    fn merge(&mut self, other: &Match) {
        match (&mut *self, other) {
            (Match::Always, _) => {}
            (_, Match::Always) => *self = Match::Always,
            (Match::AnyOf(mine), Match::AnyOf(theirs)) => mine.extend(theirs.iter().cloned()),
        }
    }

    fn into_rules(self) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        match self {
            Match::Always => Ok(Vec::new()),
            Match::AnyOf(lists) => lists
                .into_iter()
                .map(|conds| {
                    let conds = conds
                        .into_iter()
                        .map(|c| {
                            SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, c.op, c.value)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    SeccompRule::new(conds)
                })
                .collect(),
        }
    }
}

type Rules = BTreeMap<i64, Match>;

fn add(rules: &mut Rules, nr: i64, m: &Match) {
    match rules.get_mut(&nr) {
        Some(existing) => existing.merge(m),
        None => {
            rules.insert(nr, m.clone());
        }
    }
}

/// Maps an OCI action (with its errno) to seccompiler's.
fn action(
    field: &str,
    action: LinuxSeccompAction,
    errno: Option<u32>,
) -> Result<SeccompAction, ProfileError> {
    let errno = errno.unwrap_or(DEFAULT_ERRNO);
    if errno > MAX_ERRNO {
        return Err(error(
            field,
            format!("errno {errno} is larger than {MAX_ERRNO}"),
        ));
    }
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno),
        // libseccomp's SCMP_ACT_KILL is KILL_THREAD.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(error(
                field,
                "SCMP_ACT_NOTIFY is not supported (no seccomp agent in the guest)",
            ))
        }
    })
}

fn operator(op: LinuxSeccompOperator, value: u64, value_two: u64) -> (SeccompCmpOp, u64) {
    match op {
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, value),
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, value),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, value),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, value),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, value),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, value),
        // As libseccomp: `value` is the mask, `valueTwo` what the masked argument must equal.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (SeccompCmpOp::MaskedEq(value), value_two),
    }
}

/// The OCI name of the agent's own architecture.
fn native_arch() -> Option<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Arch::ScmpArchX86_64),
        "aarch64" => Some(Arch::ScmpArchAarch64),
        "riscv64" => Some(Arch::ScmpArchRiscv64),
        _ => None,
    }
}

fn check_architectures(seccomp: &LinuxSeccomp) -> Result<(), ProfileError> {
    let Some(archs) = seccomp.architectures().as_ref().filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    let native = native_arch();
    if archs
        .iter()
        .any(|a| *a == Arch::ScmpArchNative || Some(*a) == native)
    {
        // Other architectures' calls (32-bit x86, x32) are killed by every filter's
        // architecture check; the guest kernel has no IA32 emulation anyway.
        return Ok(());
    }
    Err(error(
        format!("{FIELD}.architectures"),
        format!(
            "{archs:?} does not include this guest's architecture ({})",
            std::env::consts::ARCH
        ),
    ))
}

fn flags(seccomp: &LinuxSeccomp) -> libc::c_ulong {
    seccomp
        .flags()
        .iter()
        .flatten()
        .map(|flag| match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // The container's process is single-threaded when the filter goes on.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
        })
        .fold(0, |acc, bit| acc | bit)
}

/// The syscall number of `name` on this architecture.
fn syscall_number(name: &str) -> Option<i64> {
    name.parse::<syscalls::Sysno>()
        .ok()
        .map(|s| i64::from(s.id()))
}

/// The conditions of one rule: ANDed, or (as runc does, since libseccomp cannot
/// AND two comparisons of one argument) ORed when an argument index repeats.
fn rule_match(field: &str, rule: &oci_spec::runtime::LinuxSyscall) -> Result<Match, ProfileError> {
    let args = rule.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Ok(Match::Always);
    }
    let mut conds = Vec::with_capacity(args.len());
    for (j, arg) in args.iter().enumerate() {
        let index = u8::try_from(arg.index())
            .ok()
            .filter(|i| usize::from(*i) < MAX_ARGS)
            .ok_or_else(|| {
                error(
                    format!("{field}.args[{j}].index"),
                    format!("{} is not a syscall argument (0-5)", arg.index()),
                )
            })?;
        let (op, value) = operator(arg.op(), arg.value(), arg.value_two().unwrap_or(0));
        conds.push(Cond { index, op, value });
    }
    let mut indexes: Vec<u8> = conds.iter().map(|c| c.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if indexes.len() == conds.len() {
        Ok(Match::AnyOf(vec![conds]))
    } else {
        Ok(Match::AnyOf(conds.into_iter().map(|c| vec![c]).collect()))
    }
}

fn build(
    rules: Rules,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<Vec<libc::sock_filter>, ProfileError> {
    let too_large = |e: seccompiler::BackendError| error(FIELD, format!("cannot compile: {e}"));
    let rules = rules
        .into_iter()
        .map(|(nr, m)| m.into_rules().map(|r| (nr, r)))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(too_large)?;
    let filter = SeccompFilter::new(rules, mismatch, matched, arch).map_err(too_large)?;
    let program = BpfProgram::try_from(filter).map_err(too_large)?;
    Ok(program
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

/// Compiles `seccomp`; errors name the offending field.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Profile, ProfileError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| {
        error(
            FIELD,
            format!("seccomp is not supported on this architecture: {e}"),
        )
    })?;
    check_architectures(seccomp)?;
    let default = action(
        &format!("{FIELD}.defaultAction"),
        seccomp.default_action(),
        seccomp.default_errno_ret(),
    )?;
    let mut by_action: Vec<(SeccompAction, Rules)> = Vec::new();
    let mut any_rule = Rules::new();
    let mut unknown = Vec::new();
    for (i, rule) in seccomp.syscalls().iter().flatten().enumerate() {
        let field = format!("{FIELD}.syscalls[{i}]");
        let act = action(&format!("{field}.action"), rule.action(), rule.errno_ret())?;
        let m = rule_match(&field, rule)?;
        if act == default {
            // Same as the default: nothing to do (runc skips these too).
            continue;
        }
        for name in rule.names() {
            let Some(nr) = syscall_number(name) else {
                if !unknown.contains(name) {
                    unknown.push(name.clone());
                }
                continue;
            };
            add(&mut any_rule, nr, &m);
            if act != SeccompAction::Allow {
                let slot = match by_action.iter().position(|(a, _)| *a == act) {
                    Some(pos) => pos,
                    None => {
                        by_action.push((act.clone(), Rules::new()));
                        by_action.len() - 1
                    }
                };
                add(&mut by_action[slot].1, nr, &m);
            }
        }
    }
    // A filter that may deny `seccomp` would stop the filters after it from going
    // on: those go last, and the default filter (which may deny it too) very last.
    let seccomp_nr = libc::SYS_seccomp;
    by_action.sort_by_key(|(_, rules)| rules.contains_key(&seccomp_nr));
    let mut filters = Vec::with_capacity(by_action.len() + 1);
    for (act, rules) in by_action {
        filters.push(build(rules, SeccompAction::Allow, act, arch)?);
    }
    if default != SeccompAction::Allow {
        filters.push(build(any_rule, default, SeccompAction::Allow, arch)?);
    }
    Ok(Profile {
        filters,
        flags: flags(seccomp),
        unknown,
    })
}

/// When a spec fails to parse, finds a bad action, operator, architecture or
/// flag in its seccomp profile and names the field (serde's message does not).
pub fn explain_parse_error(json: &str) -> Option<String> {
    let value: Value = serde_json::from_str(json).ok()?;
    let seccomp = value.get("linux")?.get("seccomp")?;
    let bad = |v: &Value, ok: bool| -> Option<String> { (!ok).then(|| v.to_string()) };
    let is = |v: &Value, f: fn(Value) -> bool| f(v.clone());
    let action_ok = |v: Value| serde_json::from_value::<LinuxSeccompAction>(v).is_ok();
    let op_ok = |v: Value| serde_json::from_value::<LinuxSeccompOperator>(v).is_ok();
    let arch_ok = |v: Value| serde_json::from_value::<Arch>(v).is_ok();
    let flag_ok = |v: Value| serde_json::from_value::<LinuxSeccompFilterFlag>(v).is_ok();
    if let Some(v) = seccomp.get("defaultAction") {
        if let Some(s) = bad(v, is(v, action_ok)) {
            return Some(format!("{FIELD}.defaultAction: unknown action {s}"));
        }
    }
    for (list, check, what) in [
        (
            "architectures",
            arch_ok as fn(Value) -> bool,
            "architecture",
        ),
        ("flags", flag_ok, "flag"),
    ] {
        let items = seccomp.get(list).and_then(Value::as_array);
        for (k, v) in items.into_iter().flatten().enumerate() {
            if let Some(s) = bad(v, is(v, check)) {
                return Some(format!("{FIELD}.{list}[{k}]: unknown {what} {s}"));
            }
        }
    }
    let syscalls = seccomp.get("syscalls").and_then(Value::as_array);
    for (i, rule) in syscalls.into_iter().flatten().enumerate() {
        if let Some(v) = rule.get("action") {
            if let Some(s) = bad(v, is(v, action_ok)) {
                return Some(format!("{FIELD}.syscalls[{i}].action: unknown action {s}"));
            }
        }
        let args = rule.get("args").and_then(Value::as_array);
        for (j, arg) in args.into_iter().flatten().enumerate() {
            if let Some(v) = arg.get("op") {
                if let Some(s) = bad(v, is(v, op_ok)) {
                    return Some(format!(
                        "{FIELD}.syscalls[{i}].args[{j}].op: unknown operator {s}"
                    ));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: Value) -> LinuxSeccomp {
        serde_json::from_value(json).expect("profile")
    }

    #[test]
    fn allow_by_default_with_one_errno_rule_is_one_filter() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
        })))
        .expect("compile");
        assert_eq!(p.filter_count(), 1);
        assert!(p.unknown.is_empty());
    }

    #[test]
    fn errno_default_with_allow_list_and_kill_rule() {
        let p = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                { "names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["personality"], "action": "SCMP_ACT_ALLOW",
                  "args": [{ "index": 0, "value": 0, "op": "SCMP_CMP_EQ" },
                           { "index": 0, "value": 8, "op": "SCMP_CMP_EQ" }] },
                { "names": ["clone"], "action": "SCMP_ACT_ALLOW",
                  "args": [{ "index": 0, "value": 2114060288, "valueTwo": 0,
                             "op": "SCMP_CMP_MASKED_EQ" }] },
                { "names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS" },
                { "names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }
            ]
        })))
        .expect("compile");
        // KILL_PROCESS rules, then the default (ERRNO 38, the same as `close`'s rule).
        assert_eq!(p.filter_count(), 2);
        assert_eq!(p.unknown, ["no_such_call"]);
        assert_eq!(p.flags, libc::SECCOMP_FILTER_FLAG_LOG);
    }

    #[test]
    fn allow_everything_installs_nothing() {
        let p = compile(&profile(
            serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW" }),
        ))
        .expect("compile");
        assert!(p.is_empty());
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_NOTIFY" }),
                "linux.seccomp.defaultAction",
            ),
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    { "names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99999 }] }),
                "linux.seccomp.syscalls[0].action",
            ),
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    { "names": ["read"], "action": "SCMP_ACT_ERRNO",
                      "args": [{ "index": 6, "value": 1, "op": "SCMP_CMP_EQ" }] }] }),
                "linux.seccomp.syscalls[0].args[0].index",
            ),
            (
                serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW",
                                    "architectures": ["SCMP_ARCH_S390X"] }),
                "linux.seccomp.architectures",
            ),
        ];
        for (json, field) in cases {
            let err = compile(&profile(json)).expect_err(field);
            assert!(err.to_string().contains(field), "{err} lacks {field}");
        }
    }

    #[test]
    fn parse_errors_name_the_seccomp_field() {
        let spec =
            |seccomp: Value| serde_json::json!({ "linux": { "seccomp": seccomp } }).to_string();
        let msg = explain_parse_error(&spec(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ALLOW" },
                         { "names": ["mkdir"], "action": "SCMP_ACT_BOGUS" }]
        })));
        assert_eq!(
            msg.as_deref(),
            Some(
                "oci_spec_json.linux.seccomp.syscalls[1].action: unknown action \"SCMP_ACT_BOGUS\""
            )
        );
        let msg = explain_parse_error(&spec(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ERRNO",
                           "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_BOGUS" }] }]
        })));
        assert!(msg.is_some_and(|m| m.contains("syscalls[0].args[0].op")));
        assert!(explain_parse_error("{}").is_none());
    }

    #[test]
    fn names_resolve_on_this_architecture() {
        assert_eq!(syscall_number("getpid"), Some(libc::SYS_getpid));
        assert_eq!(syscall_number("mkdirat"), Some(libc::SYS_mkdirat));
        assert_eq!(syscall_number("not_a_syscall"), None);
    }
}
