//! crictl's tables: Go tabwriter alignment (minimum width 20, padding 3),
//! short IDs, "N minutes ago", decimal sizes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_cri::v1 as cri;

/// How many characters of an ID tables show (crictl's `truncatedIDLen`).
pub const SHORT_ID_LEN: usize = 13;

const MIN_WIDTH: usize = 20;
const PADDING: usize = 3;

/// Rows of cells laid out as crictl's tabwriter does: every cell but a row's
/// last is padded to its column's width.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The laid out text, one line per row.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
                let w = (cell.chars().count() + PADDING).max(MIN_WIDTH);
                match widths.get_mut(i) {
                    Some(old) => *old = (*old).max(w),
                    None => widths.push(w),
                }
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The first [`SHORT_ID_LEN`] characters of an ID, after an optional `sha256:`.
pub fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(SHORT_ID_LEN).collect()
}

/// Go's `units.HumanDuration`, which crictl prints with " ago".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 1 {
        return "Less than a second".into();
    }
    if secs == 1 {
        return "1 second".into();
    }
    if secs < 60 {
        return format!("{secs} seconds");
    }
    let minutes = secs / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// "N units ago" for a creation time in Unix nanoseconds, relative to `now`.
pub fn ago(created_nanos: i64, now: SystemTime) -> String {
    let created = UNIX_EPOCH + Duration::from_nanos(u64::try_from(created_nanos).unwrap_or(0));
    format!(
        "{} ago",
        human_duration(now.duration_since(created).unwrap_or_default())
    )
}

/// Go's `units.HumanSizeWithPrecision(size, 3)`: decimal units, 3 significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{v:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// crictl's pod state words.
pub fn pod_state(state: i32) -> &'static str {
    match cri::PodSandboxState::try_from(state) {
        Ok(cri::PodSandboxState::SandboxReady) => "Ready",
        Ok(cri::PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

/// crictl's container state words.
pub fn container_state(state: i32) -> &'static str {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => "Created",
        Ok(cri::ContainerState::ContainerRunning) => "Running",
        Ok(cri::ContainerState::ContainerExited) => "Exited",
        Ok(cri::ContainerState::ContainerUnknown) | Err(_) => "Unknown",
    }
}

/// Splits `repo:tag` (the tag is after the last `:` that follows the last `/`).
pub fn split_repo_tag(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, "<none>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_layout_matches_crictl() {
        let mut t = Table::new(&["POD ID", "CREATED", "STATE"]);
        t.row(vec![
            "f84dd361f8dc5".into(),
            "17 seconds ago".into(),
            "Ready".into(),
        ]);
        t.row(vec![
            "x".into(),
            "a very long creation time text".into(),
            "NotReady".into(),
        ]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("{:<20}{:<33}STATE", "POD ID", "CREATED"));
        assert_eq!(
            lines[1],
            format!("{:<20}{:<33}Ready", "f84dd361f8dc5", "17 seconds ago")
        );
        assert!(lines[2].ends_with("text   NotReady"));
    }

    #[test]
    fn durations_and_sizes_read_like_crictl() {
        assert_eq!(
            human_duration(Duration::from_millis(10)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(17)), "17 seconds");
        assert_eq!(human_duration(Duration::from_secs(61)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3600)), "About an hour");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
        assert_eq!(human_size(742_000), "742kB");
        assert_eq!(human_size(1_150_000), "1.15MB");
        assert_eq!(human_size(12), "12B");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }

    #[test]
    fn ids_tags_and_states() {
        assert_eq!(
            short_id("sha256:8c811b4aec35f259572d0f79207bc0678df4c736eeec50bc9fec37ed936a472a"),
            "8c811b4aec35f"
        );
        assert_eq!(
            split_repo_tag("127.0.0.1:5000/busybox:1.36"),
            ("127.0.0.1:5000/busybox", "1.36")
        );
        assert_eq!(
            split_repo_tag("127.0.0.1:5000/busybox"),
            ("127.0.0.1:5000/busybox", "<none>")
        );
        assert_eq!(
            pod_state(cri::PodSandboxState::SandboxReady as i32),
            "Ready"
        );
        assert_eq!(
            container_state(cri::ContainerState::ContainerExited as i32),
            "Exited"
        );
        assert_eq!(container_state(42), "Unknown");
    }
}
