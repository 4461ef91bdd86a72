use std::time::Duration;

use super::*;

fn sleeper(seconds: &str) -> SpawnSpec {
    SpawnSpec {
        role: "process",
        program: "/bin/sleep".into(),
        args: vec![seconds.into()],
        output: Output::Null,
        fds: Vec::new(),
        namespaces: 0,
        cgroup_procs: Vec::new(),
    }
}

#[tokio::test]
async fn a_child_is_watched_by_pidfd_and_stopped_in_order() {
    let mut p = sleeper("30").spawn().unwrap();
    assert!(p.try_exit().unwrap().is_none());
    // Its own session: it does not die with our process group.
    let sid = unsafe { libc::getsid(p.pid() as i32) };
    assert_eq!(sid, p.pid() as i32);
    let exit = p.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(exit, Exit::Signal(libc::SIGTERM));
    // Stopping again is harmless and answers the same.
    assert_eq!(p.stop(Duration::from_secs(1)).await.unwrap(), exit);
}

#[tokio::test]
async fn an_exit_code_is_reported() {
    let mut spec = sleeper("0");
    spec.program = "/bin/sh".into();
    spec.args = vec!["-c".into(), "exit 7".into()];
    let mut p = spec.spawn().unwrap();
    assert_eq!(
        p.wait(Duration::from_secs(10)).await.unwrap(),
        Exit::Code(7)
    );
}

#[test]
fn a_missing_program_fails_at_exec_with_its_errno() {
    let mut spec = sleeper("1");
    spec.program = "/nonexistent/vessel-vmm".into();
    let err = spec.spawn().unwrap_err();
    assert!(
        matches!(&err, ProcessError::Spawn { step: "exec", source, .. } if source.raw_os_error() == Some(libc::ENOENT)),
        "{err}"
    );
}

#[tokio::test]
async fn descriptors_are_handed_over_at_their_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut spec = sleeper("0");
    spec.program = "/bin/sh".into();
    spec.args = vec!["-c".into(), "echo hi >&5; echo out".into()];
    spec.fds = vec![(w, 5)];
    spec.output = Output::File(std::fs::File::create(&out).unwrap());
    let mut p = spec.spawn().unwrap();
    assert_eq!(
        p.wait(Duration::from_secs(10)).await.unwrap(),
        Exit::Code(0)
    );
    let mut got = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut got).unwrap();
    assert_eq!(got, "hi\n");
    assert_eq!(std::fs::read_to_string(out).unwrap(), "out\n");
}

#[tokio::test]
async fn a_recorded_process_is_adopted_and_a_recycled_pid_is_not() {
    let mut p = sleeper("30").spawn().unwrap();
    let record = p.record(Vec::new());
    let mut adopted = Supervised::adopt(&record).unwrap().expect("still runs");
    assert_eq!(adopted.pid(), p.pid());
    // Same pid, other start time: another process, not ours.
    let mut wrong = record.clone();
    wrong.start_time += 1;
    assert!(Supervised::adopt(&wrong).unwrap().is_none());
    adopted.signal(libc::SIGKILL).unwrap();
    assert_eq!(
        p.wait(Duration::from_secs(10)).await.unwrap(),
        Exit::Signal(9)
    );
    // The adopter sees it gone, without a status (it was not its child).
    assert_eq!(
        adopted.wait(Duration::from_secs(10)).await.unwrap(),
        Exit::Unknown
    );
    assert!(Supervised::adopt(&record).unwrap().is_none());
}

#[tokio::test]
async fn new_pid_and_ipc_namespaces_make_it_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut spec = sleeper("0");
    spec.program = "/bin/sh".into();
    spec.args = vec!["-c".into(), "echo $$; readlink /proc/self/ns/ipc".into()];
    spec.namespaces = (libc::CLONE_NEWPID | libc::CLONE_NEWIPC) as u64;
    spec.output = Output::File(std::fs::File::create(&out).unwrap());
    let mut p = spec.spawn().unwrap();
    assert_eq!(
        p.wait(Duration::from_secs(10)).await.unwrap(),
        Exit::Code(0)
    );
    let text = std::fs::read_to_string(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("1"), "{text}");
    let ours = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    assert_ne!(lines.next().map(std::path::PathBuf::from), Some(ours));
}
