//! The reaper, in its own test binary: it calls `waitpid(-1)`, which would steal
//! the children of other tests running in the same process.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vessel_agent::reaper::{ExitStatus, Reaper};

fn spawn(program: &str, args: &[&str]) -> std::io::Result<((), Pid)> {
    let child = Command::new(program).args(args).spawn()?;
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    // The reaper owns the wait; dropping `Child` does not wait.
    Ok(((), Pid::from_raw(pid)))
}

async fn exit_of(reaper: &Reaper, program: &str, args: &[&str]) -> ExitStatus {
    let supervised = reaper.supervise(|| spawn(program, args)).expect("spawn");
    tokio::time::timeout(Duration::from_secs(10), supervised.exit)
        .await
        .expect("exit status in time")
        .expect("reaper alive")
}

/// Whether `pid` is gone or at least not a zombie.
fn reaped(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => true,
    }
}

// One test: a second reaper in this process would race for the same children.
#[tokio::test]
async fn reaper_publishes_exit_statuses_and_reaps_orphans() {
    let reaper = Reaper::start().expect("start");

    assert_eq!(
        exit_of(&reaper, "sh", &["-c", "exit 7"]).await,
        ExitStatus::Exited(7)
    );

    // Children that exit at once are still delivered: registration cannot lose the race.
    for _ in 0..20 {
        assert_eq!(exit_of(&reaper, "true", &[]).await, ExitStatus::Exited(0));
    }

    let sleeper = reaper.supervise(|| spawn("sleep", &["30"])).expect("spawn");
    kill(sleeper.pid, Signal::SIGKILL).expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(10), sleeper.exit)
        .await
        .expect("in time")
        .expect("reaper alive");
    assert_eq!(
        status,
        ExitStatus::Signaled {
            signal: Signal::SIGKILL as i32,
            core_dumped: false
        }
    );

    // An unsupervised child is reaped too, leaving no zombie.
    let ((), orphan) = spawn("true", &[]).expect("spawn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !reaped(orphan) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "zombie {orphan} left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Adopted after it was reaped (a reparented container init that died early):
    // the cached status is still delivered.
    let adopted = tokio::time::timeout(Duration::from_secs(10), reaper.adopt(orphan))
        .await
        .expect("in time")
        .expect("reaper alive");
    assert_eq!(adopted, ExitStatus::Exited(0));
}
