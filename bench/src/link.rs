//! A network link between a client and a server on 127.0.0.1: a TCP relay
//! whose server-to-client direction carries at most a set number of bytes
//! per second, shared by all of its connections (a token bucket, as a
//! link's shaper), so that a server on this machine can stand for one
//! across a network. The other direction (requests, uploads) is not
//! paced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes relayed per read and write.
const PIECE: usize = 64 << 10;
/// How long a burst the bucket holds, at the link's rate: more than the
/// timer's resolution, so that sleeps do not slow the link below its rate.
const BURST: Duration = Duration::from_millis(4);

/// A running link to one server; it stops with the process.
pub struct Link {
    /// Where clients connect.
    pub addr: SocketAddr,
}

/// The shaper of a link's direction toward the clients.
struct Bucket {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    /// How long to wait before `n` more bytes may go (taken from the
    /// bucket now; the caller sleeps that long).
    fn take(&self, n: usize) -> Duration {
        let mut state = self.state.lock().expect("the bucket's lock");
        let (tokens, at) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        *tokens -= n as f64;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }
}

impl Link {
    /// A link on 127.0.0.1 to `server` carrying `rate` bytes/s toward the
    /// clients.
    pub async fn start(server: SocketAddr, rate: u64) -> Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let burst = (rate as f64 * BURST.as_secs_f64()).max(PIECE as f64);
        let bucket = Arc::new(Bucket {
            rate: rate as f64,
            burst,
            state: std::sync::Mutex::new((burst, Instant::now())),
        });
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let bucket = bucket.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(server).await {
                        relay(client, server, &bucket).await;
                    }
                });
            }
        });
        Ok(Link { addr })
    }
}

/// Relays one connection until either side closes it.
async fn relay(client: TcpStream, server: TcpStream, bucket: &Bucket) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        let _ = server_tx.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0; PIECE];
        while let Ok(n) = server_rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let wait = bucket.take(n);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(up, down);
}
