//! The benchmark's raw records (one line each, so that rounds run in
//! several test hosts can be merged) and the Markdown tables made of them.

use std::fmt::Write as _;
use std::time::Duration;

use super::lifecycle::{Steps, STEPS};
use super::Runtime;
use crate::pss::Memory;
use crate::stats::stats;

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A whole lifecycle (ms per step, in [`STEPS`] order).
    Round {
        /// Whose.
        runtime: Runtime,
        /// The round's number in the run.
        round: usize,
        /// Milliseconds per step.
        ms: [f64; 5],
    },
    /// A lifecycle that failed at `step`.
    Failed {
        /// Whose.
        runtime: Runtime,
        /// The round's number in the run.
        round: usize,
        /// The RPC that failed.
        step: String,
    },
    /// One ExecSync of `true` (ms).
    Exec {
        /// Whose.
        runtime: Runtime,
        /// Milliseconds.
        ms: f64,
    },
    /// A host process (or group) of running pod `pod`: `part` is `VMM`,
    /// `virtiofsd`, `shim`, `pause`, or `container` for the workload.
    Part {
        /// Whose.
        runtime: Runtime,
        /// Which of the running pods.
        pod: usize,
        /// What it is.
        part: String,
        /// Its memory, guest RAM left out.
        mem: Memory,
    },
    /// The guest RAM a vessel pod holds on the host.
    GuestRam {
        /// Which of the running pods.
        pod: usize,
        /// KiB held (allocated in the memfd).
        held_kib: u64,
        /// The VM's size, MiB.
        size_mib: u64,
    },
    /// The daemon itself while `pods` pods run.
    Daemon {
        /// Whose.
        runtime: Runtime,
        /// How many pods ran.
        pods: usize,
        /// Its memory.
        mem: Memory,
    },
}

/// Milliseconds, for a raw line.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

impl Record {
    /// The record of a lifecycle.
    pub fn round(runtime: Runtime, round: usize, steps: &Steps) -> Record {
        Record::Round {
            runtime,
            round,
            ms: steps.0.map(ms),
        }
    }
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::Round { runtime, round, ms } => {
                write!(f, "raw round {} {round}", runtime.name())?;
                ms.iter().try_for_each(|m| write!(f, " {m}"))
            }
            Record::Failed {
                runtime,
                round,
                step,
            } => write!(f, "raw failed {} {round} {step}", runtime.name()),
            Record::Exec { runtime, ms } => write!(f, "raw exec {} {ms}", runtime.name()),
            Record::Part {
                runtime,
                pod,
                part,
                mem,
            } => write!(
                f,
                "raw part {} {pod} {part} {} {}",
                runtime.name(),
                mem.rss_kib,
                mem.pss_kib
            ),
            Record::GuestRam {
                pod,
                held_kib,
                size_mib,
            } => write!(f, "raw guest-ram vessel {pod} {held_kib} {size_mib}"),
            Record::Daemon { runtime, pods, mem } => write!(
                f,
                "raw daemon {} {pods} {} {}",
                runtime.name(),
                mem.rss_kib,
                mem.pss_kib
            ),
        }
    }
}

impl std::str::FromStr for Record {
    type Err = String;
    fn from_str(line: &str) -> Result<Record, String> {
        let bad = || format!("not a raw record: {line:?}");
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 4 || w[0] != "raw" {
            return Err(bad());
        }
        let runtime = Runtime::parse(w[2]).ok_or_else(bad)?;
        let int = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad);
        let float = |i: usize| w.get(i).and_then(|s| s.parse::<f64>().ok()).ok_or_else(bad);
        let mem = |i: usize| -> Result<Memory, String> {
            Ok(Memory {
                rss_kib: int(i)?,
                pss_kib: int(i + 1)?,
            })
        };
        let record = match (w[1], w.len()) {
            ("round", 9) => Record::Round {
                runtime,
                round: int(3)? as usize,
                ms: [float(4)?, float(5)?, float(6)?, float(7)?, float(8)?],
            },
            ("failed", 5) => Record::Failed {
                runtime,
                round: int(3)? as usize,
                step: w[4].to_string(),
            },
            ("exec", 4) => Record::Exec {
                runtime,
                ms: float(3)?,
            },
            ("part", 7) => Record::Part {
                runtime,
                pod: int(3)? as usize,
                part: w[4].to_string(),
                mem: mem(5)?,
            },
            ("guest-ram", 6) => Record::GuestRam {
                pod: int(3)? as usize,
                held_kib: int(4)?,
                size_mib: int(5)?,
            },
            ("daemon", 6) => Record::Daemon {
                runtime,
                pods: int(3)? as usize,
                mem: mem(4)?,
            },
            _ => return Err(bad()),
        };
        Ok(record)
    }
}

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
    out.push_str(&memory_table(records));
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

    #[test]
    fn records_survive_a_round_trip_through_their_line() {
        let records = [
            Record::Round {
                runtime: Runtime::Vessel,
                round: 3,
                ms: [1.5, 2.0, 3.0, 4.0, 5.25],
            },
            Record::Failed {
                runtime: Runtime::Containerd,
                round: 1,
                step: "StartContainer".into(),
            },
            Record::Exec {
                runtime: Runtime::Vessel,
                ms: 12.5,
            },
            Record::Part {
                runtime: Runtime::Containerd,
                pod: 2,
                part: "shim".into(),
                mem: Memory {
                    rss_kib: 9000,
                    pss_kib: 4000,
                },
            },
            Record::GuestRam {
                pod: 0,
                held_kib: 53248,
                size_mib: 256,
            },
            Record::Daemon {
                runtime: Runtime::Vessel,
                pods: 3,
                mem: Memory {
                    rss_kib: 20000,
                    pss_kib: 15000,
                },
            },
        ];
        for r in records {
            let line = r.to_string();
            assert_eq!(line.parse::<Record>(), Ok(r), "{line}");
        }
        assert!("raw round qemu 1 1 2 3 4 5".parse::<Record>().is_err());
        assert!("round vessel 1 1 2 3 4 5".parse::<Record>().is_err());
    }

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
