//! OCI `linux.resources` → cgroup v2 interface files, with the conversions runc
//! and crun use, checked before anything is written.

use std::collections::BTreeSet;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use super::error::CgroupError;
use super::Controller;

/// Largest `cpu.shares` (cgroup v1's `MAX_SHARES`).
const MAX_SHARES: u64 = 262_144;
/// The kernel's `cpu.max` period bounds, in microseconds (1 ms .. 1 s).
const PERIOD_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
/// The kernel's smallest `cpu.max` quota, in microseconds.
const MIN_QUOTA: i64 = 1_000;
/// The default `cpu.max` period, in microseconds.
const DEFAULT_PERIOD: u64 = 100_000;

/// One interface file to write, with the spec field it comes from (for errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// File name inside the container's cgroup (`memory.max`).
    pub file: String,
    /// Value to write.
    pub value: String,
    /// The spec field, for messages (`linux.resources.memory.limit`).
    pub field: String,
    /// The controller that provides the file.
    pub controller: Controller,
    /// A kernel without the file already gives what the write asks (no swap
    /// accounting and a swap of 0 or max): skip it then instead of failing.
    pub missing_ok: bool,
}

/// What a `linux.resources` asks of the cgroup: the files, in the order to write them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The writes, in order.
    pub writes: Vec<Write>,
}

impl Plan {
    /// The controllers the writes need.
    pub fn controllers(&self) -> BTreeSet<Controller> {
        self.writes.iter().map(|w| w.controller).collect()
    }

    fn push(&mut self, controller: Controller, file: &str, value: String, field: &str) {
        self.push_write(controller, file, value, field, false);
    }

    fn push_write(
        &mut self,
        controller: Controller,
        file: &str,
        value: String,
        field: &str,
        missing_ok: bool,
    ) {
        self.writes.push(Write {
            file: file.to_owned(),
            value,
            field: format!("linux.resources.{field}"),
            controller,
            missing_ok,
        });
    }
}

fn invalid(field: &str, why: impl std::fmt::Display) -> CgroupError {
    CgroupError::InvalidArgument(format!("linux.resources.{field}: {why}"))
}

/// cgroup v1 `cpu.shares` to v2 `cpu.weight`: the linear map runc and crun use
/// (2..262144 onto 1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9_999) / (MAX_SHARES - 2)
}

/// runc's `memory.swap.max` from OCI's `swap` (memory+swap) and `limit`; `None`: leave it.
fn swap_max(swap: i64, limit: Option<i64>) -> Result<Option<String>, CgroupError> {
    let limit = limit.unwrap_or(0);
    match swap {
        // v1 compatibility: an unlimited memory limit with swap unset means unlimited swap.
        0 if limit == -1 => Ok(Some("max".into())),
        0 => Ok(None),
        -1 => Ok(Some("max".into())),
        s if s < -1 => Err(invalid("memory.swap", format!("{s} is negative"))),
        _ if limit <= 0 => Err(invalid(
            "memory.swap",
            "a swap limit needs a positive memory.limit (swap is memory+swap)",
        )),
        s if s < limit => Err(invalid(
            "memory.swap",
            format!("{s} is below memory.limit {limit} (swap is memory+swap)"),
        )),
        s => Ok(Some((s - limit).to_string())),
    }
}

fn memory(plan: &mut Plan, m: &LinuxMemory) -> Result<(), CgroupError> {
    if let Some(limit) = m.limit() {
        match limit {
            0 => {}
            -1 => plan.push(
                Controller::Memory,
                "memory.max",
                "max".into(),
                "memory.limit",
            ),
            l if l < 0 => return Err(invalid("memory.limit", format!("{l} is negative"))),
            l => plan.push(
                Controller::Memory,
                "memory.max",
                l.to_string(),
                "memory.limit",
            ),
        }
    }
    // An absent swap is 0 in runc's terms (it is a plain int64 there).
    if m.swap().is_some() || m.limit().is_some() {
        if let Some(value) = swap_max(m.swap().unwrap_or(0), m.limit())? {
            // The kubelet sends swap = limit ("no swap") with every memory
            // limit; like runc, a kernel without swap (the pod VM's) takes
            // "0" and "max" as already true. Any other value needs the file.
            let missing_ok = value == "0" || value == "max";
            let file = "memory.swap.max";
            plan.push_write(Controller::Memory, file, value, "memory.swap", missing_ok);
        }
    }
    if let Some(reservation) = m.reservation() {
        match reservation {
            0 => {}
            -1 => plan.push(
                Controller::Memory,
                "memory.low",
                "max".into(),
                "memory.reservation",
            ),
            r if r < 0 => return Err(invalid("memory.reservation", format!("{r} is negative"))),
            r => plan.push(
                Controller::Memory,
                "memory.low",
                r.to_string(),
                "memory.reservation",
            ),
        }
    }
    // kernel, kernelTCP, swappiness, disableOOMKiller and useHierarchy have no
    // cgroup v2 counterpart; runc ignores them on v2 as well.
    Ok(())
}

/// Checks a cpuset list (`0-3,5`): digits, ranges, commas.
fn check_cpuset_list(field: &str, list: &str) -> Result<(), CgroupError> {
    let ok = !list.is_empty()
        && list.len() <= 4096
        && list.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            let lo = ends.next().and_then(|n| n.trim().parse::<u32>().ok());
            match (lo, ends.next()) {
                (Some(_), None) => true,
                (Some(lo), Some(hi)) => hi.trim().parse::<u32>().is_ok_and(|hi| hi >= lo),
                _ => false,
            }
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{list:?} is not a list like \"0-3,5\""),
        ))
    }
}

fn cpu(plan: &mut Plan, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = c.shares() {
        if shares != 0 {
            if !(2..=MAX_SHARES).contains(&shares) {
                return Err(invalid(
                    "cpu.shares",
                    format!("{shares} is outside 2..={MAX_SHARES}"),
                ));
            }
            let weight = shares_to_weight(shares).to_string();
            plan.push(Controller::Cpu, "cpu.weight", weight, "cpu.shares");
        }
    }
    let quota = c.quota().unwrap_or(0);
    let period = c.period().unwrap_or(0);
    if quota != 0 || period != 0 {
        let period = if period == 0 { DEFAULT_PERIOD } else { period };
        if !PERIOD_RANGE.contains(&period) {
            return Err(invalid(
                "cpu.period",
                format!("{period} is outside 1000..=1000000 microseconds"),
            ));
        }
        let quota = match quota {
            q if q > 0 && q < MIN_QUOTA => {
                return Err(invalid(
                    "cpu.quota",
                    format!("{q} is below the kernel's minimum of {MIN_QUOTA} microseconds"),
                ))
            }
            q if q > 0 => q.to_string(),
            -1 | 0 => "max".to_owned(),
            q => return Err(invalid("cpu.quota", format!("{q} is negative"))),
        };
        plan.push(
            Controller::Cpu,
            "cpu.max",
            format!("{quota} {period}"),
            "cpu.quota",
        );
    }
    if let Some(burst) = c.burst() {
        plan.push(
            Controller::Cpu,
            "cpu.max.burst",
            burst.to_string(),
            "cpu.burst",
        );
    }
    if let Some(idle) = c.idle() {
        if !(0..=1).contains(&idle) {
            return Err(invalid("cpu.idle", format!("{idle} is not 0 or 1")));
        }
        plan.push(Controller::Cpu, "cpu.idle", idle.to_string(), "cpu.idle");
    }
    if c.realtime_runtime().is_some_and(|r| r != 0) || c.realtime_period().is_some_and(|p| p != 0) {
        return Err(invalid(
            "cpu.realtimeRuntime",
            "real-time scheduling limits do not exist on cgroup v2",
        ));
    }
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        check_cpuset_list("cpu.cpus", cpus)?;
        plan.push(
            Controller::Cpuset,
            "cpuset.cpus",
            cpus.to_owned(),
            "cpu.cpus",
        );
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        check_cpuset_list("cpu.mems", mems)?;
        plan.push(
            Controller::Cpuset,
            "cpuset.mems",
            mems.to_owned(),
            "cpu.mems",
        );
    }
    Ok(())
}

/// Checks a hugepage size as the kernel names it in `hugetlb.<size>.max` (`2MB`, `1GB`).
fn check_page_size(i: usize, size: &str) -> Result<(), CgroupError> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    let ok = !digits.is_empty()
        && digits.len() <= 6
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            &format!("hugepageLimits[{i}].pageSize"),
            format!("{size:?} is not a size like \"2MB\" or \"1GB\""),
        ))
    }
}

/// Checks a `unified` key: `<controller>.<file>` of a controller this agent manages.
fn unified_controller(key: &str) -> Result<Controller, CgroupError> {
    let field = format!("unified[{key:?}]");
    let valid_name = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'));
    let controller = key
        .split_once('.')
        .and_then(|(prefix, rest)| (!rest.is_empty()).then_some(prefix))
        .and_then(Controller::from_name);
    match controller {
        Some(c) if valid_name => Ok(c),
        _ => Err(invalid(
            &field,
            "must name an interface file of the cpu, cpuset, memory, pids or hugetlb controller",
        )),
    }
}

/// Translates and checks `resources`; writes nothing.
pub fn plan(resources: &LinuxResources) -> Result<Plan, CgroupError> {
    let mut plan = Plan::default();
    if let Some(m) = resources.memory() {
        memory(&mut plan, m)?;
    }
    if let Some(c) = resources.cpu() {
        cpu(&mut plan, c)?;
    }
    if let Some(p) = resources.pids() {
        // runc: 0 leaves it, a negative limit means unlimited.
        match p.limit() {
            0 => {}
            l if l < 0 => plan.push(Controller::Pids, "pids.max", "max".into(), "pids.limit"),
            l => plan.push(Controller::Pids, "pids.max", l.to_string(), "pids.limit"),
        }
    }
    for (i, h) in resources.hugepage_limits().iter().flatten().enumerate() {
        check_page_size(i, h.page_size())?;
        let field = format!("hugepageLimits[{i}].limit");
        let value = match h.limit() {
            -1 => "max".to_owned(),
            l if l < 0 => return Err(invalid(&field, format!("{l} is negative"))),
            l => l.to_string(),
        };
        // The kubelet sends a limit for every page size the *host* has,
        // 0 for those the pod did not ask for; the guest may lack a size
        // (1GB pages need the vCPU's pdpe1gb), and then 0 is already true.
        let missing_ok = value == "0";
        let file = format!("hugetlb.{}.max", h.page_size());
        plan.push_write(Controller::Hugetlb, &file, value, &field, missing_ok);
    }
    // Sorted, so the order (and which error comes first) does not depend on HashMap order.
    let mut unified: Vec<_> = resources.unified().iter().flatten().collect();
    unified.sort();
    for (key, value) in unified {
        let controller = unified_controller(key)?;
        if value.len() > 4096 || value.contains('\0') {
            return Err(invalid(
                &format!("unified[{key:?}]"),
                "the value is too long or has a NUL byte",
            ));
        }
        plan.push(controller, key, value.clone(), &format!("unified[{key:?}]"));
    }
    // devices are the device program's (see `devices`); blockIO, network and rdma are not applied.
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("resources json")
    }

    fn files(plan: &Plan) -> Vec<(&str, &str)> {
        plan.writes
            .iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect()
    }

    fn error(json: &str) -> String {
        match plan(&parse(json)) {
            Err(CgroupError::InvalidArgument(m)) => m,
            other => panic!("{json}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn no_swap_and_unlimited_swap_may_meet_a_kernel_without_swap() {
        let missing_ok = |json: &str| -> Vec<(String, bool)> {
            plan(&parse(json))
                .expect("plan")
                .writes
                .into_iter()
                .filter(|w| w.file == "memory.swap.max")
                .map(|w| (w.value, w.missing_ok))
                .collect()
        };
        // The kubelet's "no swap": swap (memory+swap) equal to the limit.
        let no_swap = r#"{"memory": {"limit": 33554432, "swap": 33554432}}"#;
        assert_eq!(missing_ok(no_swap), [("0".to_owned(), true)]);
        let unlimited = r#"{"memory": {"limit": 33554432, "swap": -1}}"#;
        assert_eq!(missing_ok(unlimited), [("max".to_owned(), true)]);
        // Real swap needs the file.
        let some = r#"{"memory": {"limit": 33554432, "swap": 67108864}}"#;
        assert_eq!(missing_ok(some), [("33554432".to_owned(), false)]);
    }

    #[test]
    fn a_zero_hugepage_limit_may_meet_a_size_the_guest_lacks() {
        let p = plan(&parse(
            r#"{"hugepageLimits": [{"pageSize": "1GB", "limit": 0},
                                   {"pageSize": "2MB", "limit": 4194304}]}"#,
        ))
        .expect("plan");
        let got: Vec<_> = p
            .writes
            .iter()
            .map(|w| (w.file.as_str(), w.missing_ok))
            .collect();
        assert_eq!(got, [("hugetlb.1GB.max", true), ("hugetlb.2MB.max", false)]);
    }

    #[test]
    fn shares_map_onto_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn a_full_spec_becomes_v2_files() {
        let p = plan(&parse(
            r#"{"memory": {"limit": 67108864, "swap": 134217728, "reservation": 1048576},
                "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
                "pids": {"limit": 32},
                "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
                "devices": [{"allow": false, "access": "rwm"}]}"#,
        ))
        .expect("plan");
        assert_eq!(
            files(&p),
            [
                ("memory.max", "67108864"),
                ("memory.swap.max", "67108864"),
                ("memory.low", "1048576"),
                ("cpu.weight", "39"),
                ("cpu.max", "50000 100000"),
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0"),
                ("pids.max", "32"),
                ("hugetlb.2MB.max", "0"),
            ]
        );
        assert_eq!(p.controllers().len(), 5);
    }

    #[test]
    fn unlimited_and_unset_values() {
        let p = plan(&parse(
            r#"{"memory": {"limit": -1}, "cpu": {"quota": -1}, "pids": {"limit": -1}}"#,
        ))
        .expect("plan");
        assert_eq!(
            files(&p),
            [
                ("memory.max", "max"),
                ("memory.swap.max", "max"),
                ("cpu.max", "max 100000"),
                ("pids.max", "max")
            ]
        );
        let p = plan(&parse(
            r#"{"memory": {"limit": 0}, "cpu": {"shares": 0}, "pids": {"limit": 0}}"#,
        ))
        .expect("plan");
        assert!(p.writes.is_empty(), "{p:?}");
        assert!(plan(&parse("{}")).expect("empty").writes.is_empty());
    }

    #[test]
    fn bad_values_name_their_field() {
        for (json, field) in [
            (r#"{"cpu": {"shares": 1}}"#, "cpu.shares"),
            (r#"{"cpu": {"shares": 300000}}"#, "cpu.shares"),
            (r#"{"cpu": {"quota": 10}}"#, "cpu.quota"),
            (r#"{"cpu": {"quota": -5}}"#, "cpu.quota"),
            (r#"{"cpu": {"quota": 5000, "period": 10}}"#, "cpu.period"),
            (r#"{"cpu": {"cpus": "0-x"}}"#, "cpu.cpus"),
            (r#"{"cpu": {"mems": "3-1"}}"#, "cpu.mems"),
            (r#"{"cpu": {"idle": 2}}"#, "cpu.idle"),
            (r#"{"cpu": {"realtimeRuntime": 5}}"#, "cpu.realtimeRuntime"),
            (r#"{"memory": {"limit": -7}}"#, "memory.limit"),
            (r#"{"memory": {"swap": 100}}"#, "memory.swap"),
            (r#"{"memory": {"limit": 200, "swap": 100}}"#, "memory.swap"),
            (r#"{"memory": {"reservation": -3}}"#, "memory.reservation"),
            (
                r#"{"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}"#,
                "hugepageLimits[0].pageSize",
            ),
            (
                r#"{"hugepageLimits": [{"pageSize": "../x", "limit": 1}]}"#,
                "hugepageLimits[0].pageSize",
            ),
            (
                r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": -2}]}"#,
                "hugepageLimits[0].limit",
            ),
            (r#"{"unified": {"cgroup.procs": "1"}}"#, "unified"),
            (r#"{"unified": {"memory/../x": "1"}}"#, "unified"),
        ] {
            let message = error(json);
            assert!(
                message.contains(&format!("linux.resources.{field}")),
                "{json}: {message}"
            );
        }
    }

    #[test]
    fn unified_keys_pass_through() {
        let p = plan(&parse(
            r#"{"unified": {"memory.high": "1000000", "pids.max": "9"}}"#,
        ))
        .expect("plan");
        assert_eq!(files(&p), [("memory.high", "1000000"), ("pids.max", "9")]);
    }
}
