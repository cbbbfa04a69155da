//! A minimal HTTP/1.1 client over one keep-alive connection, plain TCP or
//! TLS (rustls, as berth's server): just what the registry API needs, with
//! as little client-side work as possible so that the servers are what is
//! measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Size of the blob generator's block and of each write of a blob body.
pub const BLOCK: usize = 1 << 20;
/// Size of one chunk of a `Transfer-Encoding: chunked` body (Go's HTTP
/// client, and so docker, writes chunks of this order).
const WIRE_CHUNK: usize = 32 << 10;
const READ_BUF: usize = 256 << 10;
/// How long one request (sent and answered) may take: a server that stops
/// reading or answering fails the run instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A deterministic blob of `size` bytes: blocks of a shared pseudo-random
/// MiB, each stamped with the blob's seed and the block index so that every
/// blob (and every block) has its own content and digest.
#[derive(Clone)]
pub struct Blob {
    base: Arc<Vec<u8>>,
    pub seed: u64,
    pub size: u64,
}

impl Blob {
    pub fn new(base: Arc<Vec<u8>>, seed: u64, size: u64) -> Blob {
        Blob { base, seed, size }
    }

    /// The pseudo-random block all blobs are made of.
    pub fn base_block() -> Arc<Vec<u8>> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v = Vec::with_capacity(BLOCK);
        while v.len() < BLOCK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        Arc::new(v)
    }

    fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK as u64)
    }

    /// Writes block `i` into `buf` (a copy of the base block) and returns its length.
    fn stamp(&self, i: u64, buf: &mut [u8]) -> usize {
        buf[..8].copy_from_slice(&self.seed.to_le_bytes());
        buf[8..16].copy_from_slice(&i.to_le_bytes());
        let rest = self.size - i * BLOCK as u64;
        rest.min(BLOCK as u64) as usize
    }

    /// `sha256:HEX` of the content.
    pub fn digest(&self) -> String {
        let mut buf = self.base.as_ref().clone();
        let mut h = Sha256::new();
        for i in 0..self.blocks() {
            let n = self.stamp(i, &mut buf);
            h.update(&buf[..n]);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

pub enum Body<'a> {
    Empty,
    /// A blob with `Content-Length`.
    Blob(&'a Blob),
    /// A blob with `Transfer-Encoding: chunked` (a streamed upload).
    BlobChunked(&'a Blob),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, when it was kept.
    pub body: Vec<u8>,
    /// Bytes of body received.
    pub body_len: u64,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Location` header as a path (absolute URLs lose scheme and host).
    pub fn location(&self) -> Result<String> {
        let loc = self
            .header("location")
            .ok_or_else(|| anyhow!("status {} without Location", self.status))?;
        Ok(strip_origin(loc))
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn strip_origin(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        }
    } else {
        url.to_string()
    }
}

/// Where a server listens: its address, and for HTTPS the client's TLS
/// settings and the name it asks for (SNI and `Host`).
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    tls: Option<Arc<Tls>>,
}

struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, tls: None }
    }

    /// HTTPS to `addr` as `name`, trusting the PEM certificates in `roots`
    /// (the server's CA), over HTTP/1.1.
    pub fn https(addr: SocketAddr, name: &str, roots: &[u8]) -> Result<Endpoint> {
        let mut store = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(roots) {
            store.add(cert.context("reading the CA certificate")?)?;
        }
        ensure!(!store.is_empty(), "no CA certificate to trust");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = Tls {
            config: Arc::new(config),
            name: ServerName::try_from(name.to_string())?,
        };
        Ok(Endpoint {
            addr,
            tls: Some(Arc::new(tls)),
        })
    }

    /// The same server over TLS asking for HTTP/2 by ALPN (`None` for a
    /// plain endpoint).
    pub fn h2(&self) -> Option<Endpoint> {
        let tls = self.tls.as_ref()?;
        let mut config = tls.config.as_ref().clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(Endpoint {
            addr: self.addr,
            tls: Some(Arc::new(Tls {
                config: Arc::new(config),
                name: tls.name.clone(),
            })),
        })
    }

    /// The `Host` header (the `:authority` of HTTP/2): the name asked for
    /// over TLS, else the address.
    pub fn host(&self) -> String {
        match &self.tls {
            Some(t) => format!("{}:{}", t.name.to_str(), self.addr.port()),
            None => self.addr.to_string(),
        }
    }

    /// A new connection, with the TLS handshake done; the protocol the
    /// server chose by ALPN.
    pub async fn connect(&self) -> Result<(Box<dyn Stream>, Option<Vec<u8>>)> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {self}"))?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            None => (Box::new(tcp), None),
            Some(t) => {
                let connector = tokio_rustls::TlsConnector::from(t.config.clone());
                // rustls reads a few KiB at a time: large reads below it
                // save the client system calls (a client's CPU is taken from
                // the server under test on these cores).
                let tcp = tokio::io::BufReader::with_capacity(READ_BUF, tcp);
                let tls = connector
                    .connect(t.name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {self}"))?;
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                (Box::new(tls), alpn)
            }
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tls {
            Some(t) => write!(f, "https://{} ({})", self.host(), t.name.to_str()),
            None => write!(f, "http://{}", self.addr),
        }
    }
}

/// A connection's byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// One client connection (reconnects when the server closed it).
pub struct Conn {
    to: Endpoint,
    host: String,
    auth: String,
    stream: Option<Box<dyn Stream>>,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Conn {
    /// `auth` is the full `Authorization` header value.
    pub fn new(to: &Endpoint, auth: &str) -> Conn {
        Conn {
            to: to.clone(),
            host: to.host(),
            auth: auth.to_string(),
            stream: None,
            buf: vec![0; READ_BUF],
            pos: 0,
            end: 0,
        }
    }

    async fn stream(&mut self) -> Result<&mut Box<dyn Stream>> {
        if self.stream.is_none() {
            self.stream = Some(self.to.connect().await?.0);
            self.pos = 0;
            self.end = 0;
        }
        Ok(self.stream.as_mut().expect("connected"))
    }

    /// Sends one request and reads the whole response; the body is kept
    /// when `keep_body`, else only counted.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        keep_body: bool,
    ) -> Result<Response> {
        let exchange = async {
            self.write_request(method, path, headers, body).await?;
            self.read_response(method == "HEAD", keep_body).await
        };
        let r = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                let secs = REQUEST_TIMEOUT.as_secs();
                Err(anyhow!("no complete answer in {secs} s"))
            });
        if r.is_err() {
            self.stream = None;
        }
        r.with_context(|| format!("{method} {path}"))
    }

    /// Writes the request head and body.
    async fn write_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<()> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nUser-Agent: berth-bench\r\n",
            self.host, self.auth
        );
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        match &body {
            Body::Empty => {
                if method != "GET" && method != "HEAD" {
                    head.push_str("Content-Length: 0\r\n");
                }
            }
            Body::Blob(b) => head.push_str(&format!(
                "Content-Length: {}\r\nContent-Type: application/octet-stream\r\n",
                b.size
            )),
            Body::BlobChunked(_) => head.push_str(
                "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n",
            ),
        }
        head.push_str("\r\n");
        let stream = self.stream().await?;
        match body {
            Body::Empty => stream.write_all(head.as_bytes()).await?,
            Body::Blob(blob) => {
                stream.write_all(head.as_bytes()).await?;
                let mut buf = blob.base.as_ref().clone();
                for i in 0..blob.blocks() {
                    let n = blob.stamp(i, &mut buf);
                    stream.write_all(&buf[..n]).await?;
                }
            }
            Body::BlobChunked(blob) => {
                stream.write_all(head.as_bytes()).await?;
                let mut buf = blob.base.as_ref().clone();
                let mut frame = Vec::with_capacity(BLOCK + BLOCK / WIRE_CHUNK * 16 + 16);
                for i in 0..blob.blocks() {
                    let n = blob.stamp(i, &mut buf);
                    frame.clear();
                    for piece in buf[..n].chunks(WIRE_CHUNK) {
                        frame.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        frame.extend_from_slice(piece);
                        frame.extend_from_slice(b"\r\n");
                    }
                    stream.write_all(&frame).await?;
                }
                stream.write_all(b"0\r\n\r\n").await?;
            }
        }
        // TLS keeps what it has not sent yet until asked.
        stream.flush().await?;
        Ok(())
    }

    /// Reads more bytes into the buffer; false at end of stream.
    async fn fill(&mut self) -> Result<bool> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.pos == 0 {
                let len = self.buf.len();
                self.buf.resize(len * 2, 0);
            } else {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
        }
        let end = self.end;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| anyhow!("not connected"))?;
        let n = stream.read(&mut self.buf[end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    async fn read_line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..self.end], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Ok(line);
            }
            if !self.fill().await? {
                bail!("connection closed in the middle of a line");
            }
        }
    }

    /// Consumes `n` bytes of body.
    async fn take(&mut self, mut n: u64, out: &mut Option<&mut Vec<u8>>) -> Result<()> {
        while n > 0 {
            if self.pos == self.end && !self.fill().await? {
                bail!("connection closed with {n} body bytes missing");
            }
            let k = ((self.end - self.pos) as u64).min(n) as usize;
            if let Some(v) = out.as_deref_mut() {
                v.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            }
            self.pos += k;
            n -= k as u64;
        }
        Ok(())
    }

    async fn read_response(&mut self, head_only: bool, keep_body: bool) -> Result<Response> {
        let status_line = self.read_line().await?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if status == 100 {
            return Box::pin(self.read_response(head_only, keep_body)).await;
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || version == "HTTP/1.0";
        let framing = if head_only || status == 204 || status == 304 || (100..200).contains(&status)
        {
            Framing::None
        } else if get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else if let Some(len) = get("content-length") {
            Framing::Length(len.parse().context("bad Content-Length")?)
        } else {
            Framing::UntilClose
        };
        let mut body = Vec::new();
        let mut body_len = 0u64;
        {
            let mut out = if keep_body { Some(&mut body) } else { None };
            match framing {
                Framing::None => {}
                Framing::Length(n) => {
                    self.take(n, &mut out).await?;
                    body_len = n;
                }
                Framing::Chunked => loop {
                    let line = self.read_line().await?;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(size, 16)
                        .with_context(|| format!("bad chunk size {line:?}"))?;
                    if size == 0 {
                        while !self.read_line().await?.is_empty() {}
                        break;
                    }
                    self.take(size, &mut out).await?;
                    body_len += size;
                    if !self.read_line().await?.is_empty() {
                        bail!("chunk not followed by CRLF");
                    }
                },
                Framing::UntilClose => {
                    loop {
                        let k = self.end - self.pos;
                        if let Some(v) = out.as_deref_mut() {
                            v.extend_from_slice(&self.buf[self.pos..self.end]);
                        }
                        body_len += k as u64;
                        self.pos = self.end;
                        if !self.fill().await? {
                            break;
                        }
                    }
                    self.stream = None;
                }
            }
        }
        if close {
            self.stream = None;
        }
        Ok(Response {
            status,
            headers,
            body,
            body_len,
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Appends `key=value` to a path that may already have a query.
pub fn with_query(path: &str, kv: &str) -> String {
    if path.contains('?') {
        format!("{path}&{kv}")
    } else {
        format!("{path}?{kv}")
    }
}
