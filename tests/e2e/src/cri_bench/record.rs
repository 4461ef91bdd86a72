//! The benchmark's raw records: one line each, so that rounds run in
//! several test hosts can be merged before the tables are made.

use std::time::Duration;

use super::lifecycle::Steps;
use super::Runtime;
use crate::pss::Memory;

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
    /// One streaming measurement: `what` is one of [`super::streams::KINDS`].
    Stream {
        /// Whose.
        runtime: Runtime,
        /// Which measurement.
        what: String,
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
            Record::Stream { runtime, what, ms } => {
                write!(f, "raw stream {} {what} {ms}", runtime.name())
            }
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
            ("stream", 5) => Record::Stream {
                runtime,
                what: w[3].to_string(),
                ms: float(4)?,
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
            Record::Stream {
                runtime: Runtime::Containerd,
                what: "forward-64MiB".into(),
                ms: 2500.5,
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
}
