//! CPU percentages for the stats tables, as crictl computes them: the
//! runtime's `usage_nano_cores` when it gives one, else the growth of
//! `usage_core_nano_seconds` between two samples.

use std::collections::HashMap;
use std::time::Duration;

use k8s_cri::v1::CpuUsage;

/// How far apart the two samples are (crictl's default `--seconds 1`).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether some sample has only cumulative usage, so a second sample is needed.
pub fn needs_second_sample<'a>(samples: impl IntoIterator<Item = Option<&'a CpuUsage>>) -> bool {
    samples
        .into_iter()
        .flatten()
        .any(|c| c.usage_nano_cores.is_none() && c.usage_core_nano_seconds.is_some())
}

/// Percent of one core: from `new.usage_nano_cores`, else from the growth
/// since `old` over their timestamps (or `elapsed` if they carry none).
pub fn percent(old: Option<&CpuUsage>, new: Option<&CpuUsage>, elapsed: Duration) -> String {
    let Some(new) = new else {
        return "0.00".into();
    };
    if let Some(nano_cores) = new.usage_nano_cores {
        return format!("{:.2}", nano_cores.value as f64 / 1e7);
    }
    let (Some(old), Some(used_new)) = (old, new.usage_core_nano_seconds) else {
        return "0.00".into();
    };
    let used_old = old.usage_core_nano_seconds.map_or(0, |v| v.value);
    let span = match new.timestamp - old.timestamp {
        t if t > 0 => t as f64,
        _ => elapsed.as_nanos() as f64,
    };
    if span <= 0.0 {
        return "0.00".into();
    }
    format!(
        "{:.2}",
        used_new.value.saturating_sub(used_old) as f64 / span * 100.0
    )
}

/// First samples by ID, to pair with the second ones.
pub fn by_id<'a>(
    samples: impl IntoIterator<Item = (String, Option<&'a CpuUsage>)>,
) -> HashMap<String, CpuUsage> {
    samples
        .into_iter()
        .filter_map(|(id, cpu)| cpu.map(|c| (id, *c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::UInt64Value;

    fn sample(ts: i64, total: Option<u64>, cores: Option<u64>) -> CpuUsage {
        CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: total.map(|value| UInt64Value { value }),
            usage_nano_cores: cores.map(|value| UInt64Value { value }),
        }
    }

    #[test]
    fn nano_cores_win_else_two_samples() {
        let s = Duration::from_secs(1);
        assert_eq!(
            percent(None, Some(&sample(0, None, Some(250_000_000))), s),
            "25.00"
        );
        let old = sample(1_000_000_000, Some(1_000_000_000), None);
        let new = sample(2_000_000_000, Some(1_500_000_000), None);
        assert_eq!(percent(Some(&old), Some(&new), s), "50.00");
        // No timestamps: the measured interval.
        let (old, new) = (
            sample(0, Some(0), None),
            sample(0, Some(2_000_000_000), None),
        );
        assert_eq!(
            percent(Some(&old), Some(&new), Duration::from_secs(2)),
            "100.00"
        );
        assert_eq!(percent(None, Some(&new), s), "0.00");
        assert_eq!(percent(None, None, s), "0.00");
        assert!(needs_second_sample([Some(&new), None]));
        assert!(!needs_second_sample([Some(&sample(0, Some(1), Some(1)))]));
    }
}
