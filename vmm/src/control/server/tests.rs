use super::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;

#[derive(Default)]
struct Fake {
    stopped: AtomicBool,
}

impl Controller for Fake {
    fn info(&self) -> Value {
        json!({ "state": "running" })
    }
    fn pause(&self) -> Result<Value, String> {
        Ok(json!({ "state": "paused" }))
    }
    fn resume(&self) -> Result<Value, String> {
        Ok(json!({ "state": "running" }))
    }
    fn counters(&self) -> Value {
        json!({})
    }
    fn postmortem(&self) -> Value {
        json!({})
    }
    fn shutdown(&self) -> Result<Value, String> {
        Ok(json!({ "state": "shutting_down" }))
    }
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

fn lines(input: &[u8]) -> Vec<Line> {
    let mut r = LineReader::new(input);
    let mut out = Vec::new();
    loop {
        let l = r.next_line().unwrap();
        if l == Line::Eof {
            return out;
        }
        out.push(l);
    }
}

#[test]
fn line_reader_splits_and_bounds_lines() {
    let req = |s: &str| Line::Request(s.as_bytes().to_vec());
    assert_eq!(
        lines(b"a\nbc\n\nd"),
        vec![req("a"), req("bc"), req(""), req("d")]
    );
    let mut big = vec![b'x'; MAX_LINE];
    big.push(b'\n');
    assert_eq!(lines(&big), vec![Line::Request(vec![b'x'; MAX_LINE])]);
    let mut input = vec![b'y'; MAX_LINE * 3 + 1];
    input.extend_from_slice(b"\nnext\n");
    assert_eq!(lines(&input), vec![Line::TooLong, req("next")]);
    assert_eq!(lines(&vec![b'z'; MAX_LINE + 1]), vec![Line::TooLong]);
}

fn session(input: &[u8], ctl: &Fake) -> Vec<Value> {
    let mut out = Vec::new();
    serve_client(input, &mut out, ctl);
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn connection_survives_bad_requests() {
    let mut input = b"nonsense\n{\"op\":\"nope\"}\n\n".to_vec();
    input.extend(vec![b'{'; MAX_LINE + 10]);
    input.extend_from_slice(b"\n{\"op\":\"pause\"}\n{\"op\":\"info\"}");
    let ctl = Fake::default();
    let got = session(&input, &ctl);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got[0]["error"].as_str().unwrap().contains("not valid JSON"));
    assert!(got[1]["error"].as_str().unwrap().contains("unknown op"));
    assert_eq!(
        got[2]["error"],
        format!("request line longer than {MAX_LINE} bytes")
    );
    assert_eq!(got[3], json!({ "state": "paused" }));
    assert_eq!(got[4], json!({ "state": "running" }));
    assert!(!ctl.stopped.load(Ordering::SeqCst));
}

#[test]
fn stop_is_answered_then_carried_out() {
    let ctl = Fake::default();
    let got = session(b"{\"op\":\"stop\"}\n", &ctl);
    assert_eq!(got, vec![json!({ "state": "stopping" })]);
    assert!(ctl.stopped.load(Ordering::SeqCst));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-api-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn ask(stream: &UnixStream, line: &str) -> Value {
    (&*stream)
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut resp = String::new();
    BufReader::new(stream).read_line(&mut resp).unwrap();
    serde_json::from_str(&resp).unwrap()
}

#[test]
fn socket_is_private_busy_stale_and_removed() {
    let dir = scratch("sock");
    let path = dir.join("api.sock");
    let sock = ApiSocket::bind(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(ApiSocket::bind(&path), Err(ApiError::InUse(_))));
    drop(sock);
    assert!(!path.exists(), "socket removed on drop");

    // A stale socket (nobody listening) is replaced.
    crate::test_sockets::stale_socket(&path);
    assert!(path.exists());
    let sock = ApiSocket::bind(&path).unwrap();
    drop(sock);

    let file = dir.join("file");
    fs::write(&file, b"").unwrap();
    assert!(matches!(
        ApiSocket::bind(&file),
        Err(ApiError::NotASocket(_))
    ));
    let err = ApiSocket::bind(&dir.join("no/such/dir.sock")).unwrap_err();
    assert!(err.to_string().starts_with("--api "), "{err}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn clients_are_served_concurrently_and_bounded() {
    let dir = scratch("clients");
    let path = dir.join("api.sock");
    let ctl: Arc<dyn Controller> = Arc::new(Fake::default());
    let server = ApiSocket::bind(&path).unwrap().serve(ctl).unwrap();
    let held: Vec<UnixStream> = (0..MAX_CLIENTS)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    // Every held client is live (also makes sure all were accepted).
    for s in &held {
        assert_eq!(ask(s, r#"{"op":"info"}"#)["state"], "running");
    }
    let extra = UnixStream::connect(&path).unwrap();
    let mut resp = String::new();
    BufReader::new(&extra).read_line(&mut resp).unwrap();
    assert!(resp.contains("too many clients"), "{resp}");
    drop(held);
    // Slots free up once the client threads notice EOF.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = UnixStream::connect(&path).unwrap();
        // While the slots are still taken the server answers "too many
        // clients" and closes at once, so the write may meet a closed
        // socket (EPIPE): that is a "not yet", like the error line.
        let mut resp = String::new();
        let answered = (&s)
            .write_all(b"{\"op\":\"info\"}\n")
            .and_then(|()| BufReader::new(&s).read_line(&mut resp));
        if answered.is_ok() && resp.contains("running") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots never freed");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(server);
    assert!(!path.exists());
    fs::remove_dir_all(dir).unwrap();
}
