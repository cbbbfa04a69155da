//! Answers sent before the request body was read (401, 403, 413) on a
//! connection the client keeps alive: the client must either be able to
//! send its next request on it or be told (`Connection: close`) that it
//! cannot, and it must always read the answer itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{access_rule, ConfigDir, Instance, Server};
use base64::Engine as _;

/// An answer as read off the connection.
struct Answer {
    status: u16,
    close: bool,
    location: Option<String>,
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

/// Reads one answer (head and body) from `reader`.
fn read_answer(reader: &mut BufReader<TcpStream>) -> std::io::Result<Answer> {
    let mut status = None;
    let mut close = false;
    let mut length = 0usize;
    let mut location = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection ended before an answer",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            if status == Some(100) {
                status = None;
                continue;
            }
            break;
        }
        if status.is_none() {
            status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
            continue;
        }
        let (name, value) = line.split_once(':').expect("header line");
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "content-length" => length = value.parse().unwrap(),
            "location" => location = Some(value.to_string()),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(Answer {
        status: status.expect("status line"),
        close,
        location,
    })
}

/// One kept-alive connection.
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let writer = TcpStream::connect(addr).unwrap();
        writer
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let reader = BufReader::new(writer.try_clone().unwrap());
        Conn { writer, reader }
    }

    /// Sends a request whose body is written beside the reading of the
    /// answer, as HTTP clients do; a body the server does not take may fail
    /// to write once the answer said the connection closes.
    fn send(&mut self, head: &str, body: Vec<u8>) -> std::io::Result<Answer> {
        self.writer.write_all(head.as_bytes())?;
        let mut w = self.writer.try_clone().unwrap();
        let sender = std::thread::spawn(move || w.write_all(&body));
        let answer = read_answer(&mut self.reader);
        let sent = sender.join().unwrap();
        match &answer {
            Ok(a) if !a.close => sent.map_err(|e| {
                std::io::Error::other(format!(
                    "the body could not be sent ({e}) on a connection kept open"
                ))
            })?,
            _ => {}
        }
        answer
    }
}

#[test]
fn early_answers_keep_the_connection_usable_or_say_it_closes() {
    let mut ci = Instance::new("ci")
        .with_users(&["pusher", "reader"])
        .tolerating_failed_logins();
    ci.extra.push_str(&format!(
        "[limits]\nmax_blob_size = \"16B\"\n{}{}",
        access_rule(&["pusher"], &["*"], "push"),
        access_rule(&["reader"], &["*"], "pull")
    ));
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let addr = server.addr("ci").to_string();
    let pusher = basic("pusher", "pusher-pw");
    let reader = basic("reader", "reader-pw");
    let wrong = basic("pusher", "wrong");
    let digest = format!("sha256:{}", "0".repeat(64));

    let mut conn = Conn::open(&addr);
    let open_session = |conn: &mut Conn| -> String {
        let head = format!("POST /v2/r/blobs/uploads/ HTTP/1.1\r\nHost: ci.test\r\n{pusher}Content-Length: 0\r\n\r\n");
        let a = conn.send(&head, Vec::new()).expect("POST of a session");
        assert_eq!(a.status, 202);
        a.location.expect("Location of the session")
    };

    let mut broken = Vec::new();
    let mut cases = 0;
    for size in [42usize, 4 << 10, 300 << 10, 8 << 20] {
        for (refusal, auth, status) in [
            ("no credentials", "", 401),
            ("wrong password", wrong.as_str(), 401),
            ("pull-only user", reader.as_str(), 403),
            ("too large", pusher.as_str(), 413),
        ] {
            for (method, expect_continue) in [
                ("PATCH", false),
                ("PUT upload", false),
                ("POST ?digest=", false),
                ("PUT manifest", false),
                ("PATCH", true),
            ] {
                // Manifests have no size limit of their own below 8 MiB.
                if refusal == "too large" && method == "PUT manifest" {
                    continue;
                }
                let target = match method {
                    "PATCH" => open_session(&mut conn),
                    "PUT upload" => format!("{}?digest={digest}", open_session(&mut conn)),
                    "POST ?digest=" => format!("/v2/r/blobs/uploads/?digest={digest}"),
                    _ => "/v2/r/manifests/latest".to_string(),
                };
                let verb = method.split(' ').next().unwrap();
                let expect = if expect_continue {
                    "Expect: 100-continue\r\n"
                } else {
                    ""
                };
                let head = format!(
                    "{verb} {target} HTTP/1.1\r\nHost: ci.test\r\n{auth}{expect}Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
                );
                let what = format!(
                    "{method} of {size} bytes, {refusal}{}",
                    if expect_continue {
                        ", 100-continue"
                    } else {
                        ""
                    }
                );
                cases += 1;
                let answer = match conn.send(&head, vec![7u8; size]) {
                    Ok(a) => a,
                    Err(e) => {
                        broken.push(format!("{what}: no answer: {e}"));
                        conn = Conn::open(&addr);
                        continue;
                    }
                };
                assert_eq!(answer.status, status, "{what}");
                if answer.close {
                    conn = Conn::open(&addr);
                    continue;
                }
                // Not told otherwise: the connection must take the next request.
                let next = "GET /v2/ HTTP/1.1\r\nHost: ci.test\r\n".to_string() + &pusher + "\r\n";
                match conn.send(&next, Vec::new()) {
                    Ok(a) if a.status == 200 => {}
                    Ok(a) => panic!("{what}: next request got {}", a.status),
                    Err(e) => {
                        broken.push(format!("{what}: the next request broke: {e}"));
                        conn = Conn::open(&addr);
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} of {cases} cases broke the connection without saying so:\n{}",
        broken.len(),
        broken.join("\n")
    );
    server.stop();
}
