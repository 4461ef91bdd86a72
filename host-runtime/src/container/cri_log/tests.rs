use super::*;

/// The records of a log file: (stream, tag, content); each timestamp is
/// checked to be RFC 3339 in UTC with a trimmed fraction.
fn records(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().unwrap();
            check_timestamp(ts);
            let stream = parts.next().unwrap().to_string();
            let tag = parts.next().unwrap().to_string();
            let content = parts
                .next()
                .expect("content field, maybe empty")
                .to_string();
            (stream, tag, content)
        })
        .collect()
}

fn check_timestamp(ts: &str) {
    // 2026-12-02T11:30:00.123456789Z, fraction optional and without trailing zeros.
    assert!(ts.ends_with('Z'), "{ts}");
    let (date, time) = ts.split_once('T').unwrap_or_else(|| panic!("{ts}"));
    assert_eq!(date.len(), 10, "{ts}");
    let time = &time[..time.len() - 1];
    match time.split_once('.') {
        Some((hms, frac)) => {
            assert_eq!(hms.len(), 8, "{ts}");
            assert!(
                (1..=9).contains(&frac.len()) && !frac.ends_with('0'),
                "{ts}"
            );
            assert!(frac.bytes().all(|b| b.is_ascii_digit()), "{ts}");
        }
        None => assert_eq!(time.len(), 8, "{ts}"),
    }
}

fn rec(stream: &str, tag: &str, content: &str) -> (String, String, String) {
    (stream.into(), tag.into(), content.into())
}

fn writer(max_line: usize) -> (tempfile::TempDir, CriLogWriter) {
    let dir = tempfile::tempdir().unwrap();
    let w = CriLogWriter::open(&dir.path().join("0.log"), max_line).unwrap();
    (dir, w)
}

#[test]
fn whole_lines_in_any_chunks_are_f_records() {
    let (_dir, mut w) = writer(DEFAULT_MAX_LINE);
    w.write(Stream::Stdout, b"a\nbb\n").unwrap();
    w.write(Stream::Stdout, b"he").unwrap();
    w.write(Stream::Stdout, b"llo\nwor").unwrap();
    w.write(Stream::Stdout, b"ld\n\n").unwrap();
    w.write(Stream::Stdout, b"crlf\r\nlone\rcr\n").unwrap();
    assert_eq!(
        records(w.path()),
        [
            rec("stdout", "F", "a"),
            rec("stdout", "F", "bb"),
            rec("stdout", "F", "hello"),
            rec("stdout", "F", "world"),
            rec("stdout", "F", ""),
            rec("stdout", "F", "crlf"),
            rec("stdout", "F", "lone\rcr"),
        ]
    );
}

#[test]
fn an_unterminated_last_line_is_one_p_record_at_eof() {
    let (_dir, mut w) = writer(DEFAULT_MAX_LINE);
    w.write(Stream::Stderr, b"done\ntai").unwrap();
    w.write(Stream::Stderr, b"l").unwrap();
    // Nothing of the unfinished line is written before the stream ends.
    assert_eq!(records(w.path()), [rec("stderr", "F", "done")]);
    w.close_stream(Stream::Stderr).unwrap();
    w.close_stream(Stream::Stderr).unwrap();
    w.close_stream(Stream::Stdout).unwrap();
    assert_eq!(
        records(w.path()),
        [rec("stderr", "F", "done"), rec("stderr", "P", "tail")]
    );
}

#[test]
fn long_lines_are_cut_into_p_pieces_of_the_cap_then_f() {
    let (_dir, mut w) = writer(4);
    w.write(Stream::Stdout, b"abcdefghij\nabcdefgh\nabcd\n")
        .unwrap();
    assert_eq!(
        records(w.path()),
        [
            rec("stdout", "P", "abcd"),
            rec("stdout", "P", "efgh"),
            rec("stdout", "F", "ij"),
            rec("stdout", "P", "abcd"),
            rec("stdout", "F", "efgh"),
            rec("stdout", "F", "abcd"),
        ]
    );
}

#[test]
fn pieces_of_a_long_line_go_out_before_its_newline() {
    let (_dir, mut w) = writer(4);
    w.write(Stream::Stdout, b"abcd").unwrap();
    // Exactly the cap: containerd waits for one more byte before cutting.
    assert!(records(w.path()).is_empty());
    w.write(Stream::Stdout, b"efghi").unwrap();
    assert_eq!(
        records(w.path()),
        [rec("stdout", "P", "abcd"), rec("stdout", "P", "efgh")]
    );
    w.write(Stream::Stdout, b"\n").unwrap();
    w.write(Stream::Stdout, b"wxyz!").unwrap();
    w.close_stream(Stream::Stdout).unwrap();
    assert_eq!(
        records(w.path()),
        [
            rec("stdout", "P", "abcd"),
            rec("stdout", "P", "efgh"),
            rec("stdout", "F", "i"),
            rec("stdout", "P", "wxyz"),
            rec("stdout", "P", "!"),
        ]
    );
}

#[test]
fn a_crlf_split_across_chunks_at_the_cap_ends_the_line() {
    let (_dir, mut w) = writer(4);
    w.write(Stream::Stdout, b"abcd\r").unwrap();
    w.write(Stream::Stdout, b"\n").unwrap();
    w.write(Stream::Stdout, b"abcd\r").unwrap();
    w.write(Stream::Stdout, b"x\n").unwrap();
    assert_eq!(
        records(w.path()),
        [
            rec("stdout", "F", "abcd"),
            rec("stdout", "P", "abcd"),
            rec("stdout", "F", "\rx"),
        ]
    );
}

#[test]
fn both_streams_interleave_by_line_in_arrival_order() {
    let (_dir, mut w) = writer(DEFAULT_MAX_LINE);
    w.write(Stream::Stdout, b"o1\no2-").unwrap();
    w.write(Stream::Stderr, b"e1\ne2-").unwrap();
    w.write(Stream::Stdout, b"rest\n").unwrap();
    w.write(Stream::Stderr, b"rest\n").unwrap();
    assert_eq!(
        records(w.path()),
        [
            rec("stdout", "F", "o1"),
            rec("stderr", "F", "e1"),
            rec("stdout", "F", "o2-rest"),
            rec("stderr", "F", "e2-rest"),
        ]
    );
}

#[test]
fn reopen_after_rotation_writes_a_new_file() {
    let (dir, mut w) = writer(DEFAULT_MAX_LINE);
    w.write(Stream::Stdout, b"before\npar").unwrap();
    let rotated = dir.path().join("0.log.20261202-113000");
    std::fs::rename(w.path(), &rotated).unwrap();
    // Until the reopen, output still goes to the renamed file.
    w.write(Stream::Stdout, b"t").unwrap();
    w.write(Stream::Stderr, b"late\n").unwrap();
    w.reopen().unwrap();
    w.write(Stream::Stdout, b"ial\n").unwrap();
    assert_eq!(
        records(&rotated),
        [rec("stdout", "F", "before"), rec("stderr", "F", "late")]
    );
    assert_eq!(records(w.path()), [rec("stdout", "F", "partial")]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    // Opening appends to what is there.
    drop(w);
    let mut again = CriLogWriter::open(&dir.path().join("0.log"), 8).unwrap();
    again.write(Stream::Stdout, b"more\n").unwrap();
    assert_eq!(records(again.path()).len(), 2);
}

#[test]
fn a_missing_directory_and_a_zero_cap_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = CriLogWriter::open(&dir.path().join("gone/0.log"), 10).unwrap_err();
    assert!(
        matches!(
            err,
            CriLogError::Io {
                what: "opening",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        CriLogWriter::open(&dir.path().join("0.log"), 0),
        Err(CriLogError::ZeroMaxLine)
    ));
}

#[test]
fn log_paths_stay_inside_the_log_directory() {
    let dir = "/var/log/pods/ns_pod_uid";
    assert_eq!(
        resolve_log_path(dir, "web/0.log").unwrap(),
        Some(PathBuf::from("/var/log/pods/ns_pod_uid/web/0.log"))
    );
    assert_eq!(
        resolve_log_path(dir, "./web/./0.log").unwrap(),
        Some(PathBuf::from("/var/log/pods/ns_pod_uid/web/0.log"))
    );
    assert_eq!(resolve_log_path(dir, "").unwrap(), None);
    assert_eq!(resolve_log_path("", "").unwrap(), None);
    for (dir, path, field) in [
        (dir, "../other/0.log", "log_path"),
        (dir, "web/../../other/0.log", "log_path"),
        (dir, "/etc/passwd", "log_path"),
        (dir, ".", "log_path"),
        (dir, "web/0.log\0", "log_path"),
        ("", "web/0.log", "log_directory"),
        ("relative/dir", "web/0.log", "log_directory"),
    ] {
        match resolve_log_path(dir, path) {
            Err(CriLogError::InvalidPath { field: f, .. }) => assert_eq!(f, field, "{path:?}"),
            other => panic!("{dir:?} {path:?}: unexpected {other:?}"),
        }
    }
}

#[test]
fn timestamps_trim_trailing_zeros_like_go() {
    let mut out = Vec::new();
    let t = OffsetDateTime::from_unix_timestamp_nanos(1_764_675_000_120_000_000).unwrap();
    t.format_into(&mut out, &Rfc3339).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "2025-12-02T11:30:00.12Z");
    let mut out = Vec::new();
    let t = OffsetDateTime::from_unix_timestamp(1_764_675_000).unwrap();
    t.format_into(&mut out, &Rfc3339).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "2025-12-02T11:30:00Z");
}
