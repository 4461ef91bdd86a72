//! The Markdown tables made of the raw records: times per step, memory
//! per pod.

use std::fmt::Write as _;

use super::lifecycle::STEPS;
use super::record::Record;
use super::Runtime;
use crate::stats::stats;

/// `median (min–max)` of `xs`, or `—` when there are none.
fn cell(xs: &[f64], decimals: usize) -> String {
    if xs.is_empty() {
        return "—".into();
    }
    let s = stats(xs.to_vec());
    format!(
        "{:.d$} ({:.d$}–{:.d$})",
        s.median,
        s.min,
        s.max,
        d = decimals
    )
}

fn ratio(v: &[f64], c: &[f64]) -> String {
    if v.is_empty() || c.is_empty() {
        return "—".into();
    }
    format!("{:.2}", stats(v.to_vec()).median / stats(c.to_vec()).median)
}

/// The Markdown tables of `records`: times per step, then memory per pod.
pub fn tables(records: &[Record]) -> String {
    let mut out = String::new();
    let rounds = |rt: Runtime| -> Vec<[f64; 5]> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Round { runtime, ms, .. } if *runtime == rt => Some(*ms),
                _ => None,
            })
            .collect()
    };
    let failed = |rt: Runtime| -> Vec<String> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Failed {
                    runtime,
                    round,
                    step,
                } if *runtime == rt => Some(format!("round {round} at {step}")),
                _ => None,
            })
            .collect()
    };
    let (v, c) = (rounds(Runtime::Vessel), rounds(Runtime::Containerd));
    for rt in Runtime::ALL {
        let f = failed(rt);
        let _ = writeln!(
            out,
            "failed lifecycles (left out): {} {}{}",
            rt.name(),
            f.len(),
            if f.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.join(", "))
            }
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| step, ms ({} + {} lifecycles) | vessel median (min–max) | containerd + runc median (min–max) | ratio vessel/containerd |",
        v.len(),
        c.len()
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    let mut row = |name: &str, v: Vec<f64>, c: Vec<f64>| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            cell(&v, 0),
            cell(&c, 0),
            ratio(&v, &c)
        );
    };
    for (i, step) in STEPS.iter().enumerate() {
        row(
            step,
            v.iter().map(|m| m[i]).collect(),
            c.iter().map(|m| m[i]).collect(),
        );
    }
    row(
        "**whole lifecycle**",
        v.iter().map(|m| m.iter().sum()).collect(),
        c.iter().map(|m| m.iter().sum()).collect(),
    );
    let execs = |rt: Runtime| -> Vec<f64> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Exec { runtime, ms } if *runtime == rt => Some(*ms),
                _ => None,
            })
            .collect()
    };
    let (ve, ce) = (execs(Runtime::Vessel), execs(Runtime::Containerd));
    let _ = writeln!(
        out,
        "| ExecSync `true` ({} + {} calls) | {} | {} | {} |",
        ve.len(),
        ce.len(),
        cell(&ve, 1),
        cell(&ce, 1),
        ratio(&ve, &ce)
    );
    out.push('\n');
    out.push_str(&streams_table(records));
    out.push_str(&memory_table(records));
    out
}

/// Streaming through each runtime's streaming server: exec round trips and
/// 64 MiB out through exec and port-forward (medians, with MiB/s).
fn streams_table(records: &[Record]) -> String {
    let mut out = String::new();
    let of = |rt: Runtime, kind: &str| -> Vec<f64> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Stream { runtime, what, ms } if *runtime == rt && what == kind => Some(*ms),
                _ => None,
            })
            .collect()
    };
    if Runtime::ALL.iter().all(|rt| {
        super::streams::KINDS
            .iter()
            .all(|(kind, _)| of(*rt, kind).is_empty())
    }) {
        return out;
    }
    let _ = writeln!(
        out,
        "| streaming (median ms) | vessel | containerd + runc | vessel / containerd |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for (kind, label) in super::streams::KINDS {
        let (v, c) = (of(Runtime::Vessel, kind), of(Runtime::Containerd, kind));
        let rate = |ms: &[f64]| {
            if ms.is_empty() || !kind.ends_with("64MiB") {
                return String::new();
            }
            let median = stats(ms.to_vec()).median;
            format!(" ({:.1} MiB/s)", 64.0 / (median / 1000.0))
        };
        let _ = writeln!(
            out,
            "| {label} ({} + {} runs) | {}{} | {}{} | {} |",
            v.len(),
            c.len(),
            cell(&v, 1),
            rate(&v),
            cell(&c, 1),
            rate(&c),
            ratio(&v, &c)
        );
    }
    out.push('\n');
    out
}

/// Per-pod memory: each runtime's pod processes (PSS, guest RAM left out),
/// part by part, the container's own process, vessel's guest RAM, and the
/// daemons.
fn memory_table(records: &[Record]) -> String {
    let mut out = String::new();
    let parts = |rt: Runtime| -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for r in records {
            if let Record::Part { runtime, part, .. } = r {
                if *runtime == rt && part != "container" && !names.contains(part) {
                    names.push(part.clone());
                }
            }
        }
        names
    };
    let pods = |rt: Runtime| -> Vec<usize> {
        let mut p: Vec<usize> = records
            .iter()
            .filter_map(|r| match r {
                Record::Part { runtime, pod, .. } if *runtime == rt => Some(*pod),
                _ => None,
            })
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    // Per pod: the sum of the named parts' memory (`pss` or `rss`).
    let per_pod = |rt: Runtime, wanted: &[String], pss: bool| -> Vec<f64> {
        pods(rt)
            .into_iter()
            .map(|pod| {
                records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Part {
                            runtime,
                            pod: p,
                            part,
                            mem,
                        } if *runtime == rt && *p == pod && wanted.contains(part) => {
                            Some(if pss { mem.pss_kib } else { mem.rss_kib } as f64)
                        }
                        _ => None,
                    })
                    .sum()
            })
            .collect()
    };
    let (vp, cp) = (parts(Runtime::Vessel), parts(Runtime::Containerd));
    let n = pods(Runtime::Vessel)
        .len()
        .max(pods(Runtime::Containerd).len());
    if n == 0 {
        return "(no memory figures)\n".into();
    }
    let _ = writeln!(
        out,
        "| per pod, KiB ({n} pod{} of each running at once) | vessel median (min–max) | containerd + runc median (min–max) | ratio vessel/containerd |",
        if n == 1 { "" } else { "s" }
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    let mut row = |name: String, v: Vec<f64>, c: Vec<f64>| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            cell(&v, 0),
            cell(&c, 0),
            ratio(&v, &c)
        );
    };
    row(
        format!(
            "**PSS of the pod's host processes, guest RAM left out** ({} / {})",
            vp.join(" + "),
            cp.join(" + ")
        ),
        per_pod(Runtime::Vessel, &vp, true),
        per_pod(Runtime::Containerd, &cp, true),
    );
    for i in 0..vp.len().max(cp.len()) {
        let name = |p: &[String]| p.get(i).cloned().unwrap_or_else(|| "—".into());
        let one = |p: &[String]| p.get(i).map(std::slice::from_ref).unwrap_or(&[]).to_vec();
        row(
            format!("PSS of {} / {}", name(&vp), name(&cp)),
            per_pod(Runtime::Vessel, &one(&vp), true),
            per_pod(Runtime::Containerd, &one(&cp), true),
        );
    }
    row(
        "RSS of the same processes".into(),
        per_pod(Runtime::Vessel, &vp, false),
        per_pod(Runtime::Containerd, &cp, false),
    );
    let container = ["container".to_string()];
    let cc = per_pod(Runtime::Containerd, &container, true);
    let _ = writeln!(
        out,
        "| PSS of the container's `sleep` on the host | in the guest's RAM | {} | — |",
        cell(&cc, 0)
    );
    let held: Vec<(f64, u64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::GuestRam {
                held_kib, size_mib, ..
            } => Some((*held_kib as f64, *size_mib)),
            _ => None,
        })
        .collect();
    let size = held.first().map(|h| h.1).unwrap_or(0);
    let _ = writeln!(
        out,
        "| guest RAM held on the host (VM of {size} MiB) | {} | — | — |",
        cell(&held.iter().map(|h| h.0).collect::<Vec<_>>(), 0)
    );
    let daemon = |rt: Runtime| -> Vec<f64> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Daemon { runtime, mem, .. } if *runtime == rt => Some(mem.pss_kib as f64),
                _ => None,
            })
            .collect()
    };
    let (vd, cd) = (daemon(Runtime::Vessel), daemon(Runtime::Containerd));
    let _ = writeln!(
        out,
        "| PSS of the daemon (vesseld / containerd), whole, with those pods running | {} | {} | {} |",
        cell(&vd, 0),
        cell(&cd, 0),
        ratio(&vd, &cd)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pss::Memory;

    #[test]
    fn tables_give_medians_ratios_and_per_pod_sums() {
        let mem = |pss| Memory {
            rss_kib: pss * 2,
            pss_kib: pss,
        };
        let mut records = Vec::new();
        for (round, (v, c)) in [(10.0, 5.0), (30.0, 5.0), (20.0, 5.0)]
            .into_iter()
            .enumerate()
        {
            records.push(Record::Round {
                runtime: Runtime::Vessel,
                round,
                ms: [v; 5],
            });
            records.push(Record::Round {
                runtime: Runtime::Containerd,
                round,
                ms: [c; 5],
            });
        }
        for (rt, part, pss) in [
            (Runtime::Vessel, "VMM", 3000),
            (Runtime::Vessel, "virtiofsd", 1000),
            (Runtime::Containerd, "shim", 1500),
            (Runtime::Containerd, "pause", 500),
            (Runtime::Containerd, "container", 200),
        ] {
            records.push(Record::Part {
                runtime: rt,
                pod: 0,
                part: part.into(),
                mem: mem(pss),
            });
        }
        let t = tables(&records);
        assert!(
            t.contains("| RunPodSandbox | 20 (10–30) | 5 (5–5) | 4.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| **whole lifecycle** | 100 (50–150) | 25 (25–25) | 4.00 |"),
            "{t}"
        );
        assert!(
            t.contains(
                "(VMM + virtiofsd / shim + pause) | 4000 (4000–4000) | 2000 (2000–2000) | 2.00 |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| PSS of VMM / shim | 3000 (3000–3000) | 1500 (1500–1500) | 2.00 |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| RSS of the same processes | 8000 (8000–8000) | 4000 (4000–4000) | 2.00 |"
            ),
            "{t}"
        );
        assert!(t.contains("| in the guest's RAM | 200 (200–200) |"), "{t}");
        assert!(t.contains("failed lifecycles (left out): vessel 0"), "{t}");
    }
}
