//! Finding a recorded host process again: its pid and start time.

use super::records::ProcessRecord;

impl ProcessRecord {
    /// The record of the running process `pid` (its start time from
    /// `/proc/<pid>/stat`); `NotFound` if there is no such process.
    pub fn of(pid: u32) -> std::io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let start_time = start_time(&stat).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat has no start time"),
            )
        })?;
        Ok(ProcessRecord { pid, start_time })
    }

    /// Whether the recorded process still runs: a process with its pid has
    /// its start time (so a reused pid is not mistaken for it). A zombie
    /// counts as running until it is reaped.
    pub fn is_running(&self) -> bool {
        ProcessRecord::of(self.pid).is_ok_and(|now| now.start_time == self.start_time)
    }
}

impl ProcessRecord {
    /// Whether the recorded process still runs and is not a zombie (dead,
    /// waiting to be reaped by its parent): what a watcher of a child needs.
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        start_time(&stat) == Some(self.start_time) && !is_zombie(&stat)
    }
}

/// Field 3 (`state`) of a `/proc/<pid>/stat` line is `Z` (zombie) or `X` (dead).
fn is_zombie(stat: &str) -> bool {
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command (field
/// 2) is in parentheses and may hold spaces and `)`, so fields are counted
/// from the last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the command: field 22 is the 20th of them.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_past_a_command_with_spaces_and_parens() {
        let stat = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615";
        assert_eq!(start_time(stat), Some(987_654));
        assert_eq!(start_time("1 (x) S 1"), None);
        assert!(!is_zombie(stat));
        assert!(is_zombie("1234 (a) b (c) Z 1 1234"));
        assert_eq!(start_time("garbage"), None);
    }

    #[test]
    fn this_process_is_found_and_a_wrong_start_time_is_not() {
        let me = ProcessRecord::of(std::process::id()).expect("own stat");
        assert!(me.start_time > 0);
        assert!(me.is_running());
        let reused = ProcessRecord {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_running());
        assert!(!ProcessRecord {
            pid: u32::MAX,
            start_time: 1
        }
        .is_running());
    }

    #[test]
    fn an_exited_process_is_not_running() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let record = ProcessRecord::of(child.id()).expect("child stat");
        child.wait().expect("reap");
        assert!(!record.is_running());
    }
}
