//! Plain HTTP sent to a port that speaks TLS (docker tries `http://` after
//! an `https://` login failed): instead of TLS alert bytes the client cannot
//! read, it gets a plain `HTTP/1.1 400` saying to use
//! `https://NAME:PORT`, as nginx and Caddy answer, and the connection
//! closes.
//!
//! Owns telling such a connection from a TLS one by its first byte and
//! that answer. Must not touch TLS handshakes or requests served over TLS
//! (`listen`, `handler`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Most of a request head read to find its `Host`.
const MAX_HEAD: usize = 8 << 10;

/// Whether the client's first byte starts something other than a TLS
/// handshake; `None` when it sent nothing before closing or `limit`.
pub(super) async fn is_plain(tcp: &TcpStream, limit: Duration) -> Option<bool> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(limit, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0] != TLS_HANDSHAKE),
        _ => None,
    }
}

/// Reads the request head (within `limit`) and answers `400` naming
/// `https://NAME:PORT`: NAME from the `Host` header, else `fallback`;
/// PORT the one the client connected to.
pub(super) async fn answer<I>(mut io: I, local: SocketAddr, fallback: &str, limit: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let read = async {
        let mut buf = [0u8; 2048];
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(limit, read).await;
    let name = host_of(&head).unwrap_or_else(|| fallback.to_string());
    let body = format!(
        "This port speaks TLS: use https://{name}:{}/ instead of http://\n",
        local.port()
    );
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if io.write_all(resp.as_bytes()).await.is_ok() {
        let _ = io.shutdown().await;
    }
}

/// The host of the head's `Host` header without its port, if it is a
/// plain name or address (anything else is not repeated to the client).
fn host_of(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("host").then(|| value.trim())
    })?;
    let host = match value.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split_once(']')?.0),
        None => value.split(':').next()?.to_string(),
    };
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-_:[]".contains(&c));
    plain.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_comes_from_the_header_without_its_port() {
        let head = |host: &str| format!("GET /v2/ HTTP/1.1\r\nUser-Agent: x\r\n{host}\r\n\r\n");
        assert_eq!(
            host_of(head("Host: Ci.Example.com:5000").as_bytes()).as_deref(),
            Some("ci.example.com")
        );
        assert_eq!(
            host_of(head("host: [::1]:443").as_bytes()).as_deref(),
            Some("[::1]")
        );
        assert_eq!(host_of(head("X-Other: y").as_bytes()), None);
        assert_eq!(host_of(head("Host: <script>").as_bytes()), None);
    }
}
