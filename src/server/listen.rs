//! Connections: the accept loop of each listener, the TLS handshake (the
//! certificate of the instance the SNI name or the dedicated listener
//! says, within [`HANDSHAKE_TIMEOUT`]), and HTTP/1.1 or h2 on each
//! connection with the limits of [`limits`], every request handed to
//! [`handler::handle`] with the snapshot current when it arrived; plain
//! HTTP on a TLS listener is told to use https ([`wrong_scheme`]). A
//! listener told to stop accepts no more connections and waits for the
//! open ones, which finish their requests in flight.
//!
//! Owns sockets and connections. Must not touch requests themselves
//! (`handler`), decide which instance a name belongs to (`routing`), or
//! open and close listeners (`mod.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::routing::{self, Target, Via};
use super::{early, handler, limits, wrong_scheme, Snapshot};

/// Limit on the TLS handshake, so that silent clients do not pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection as every listener serves it: a closing one lingers
/// ([`early::Lingering`]), a client that takes no data is cut off
/// ([`limits::WriteTimeout`]).
type Connection = limits::WriteTimeout<early::Lingering<TcpStream>>;

fn connection(tcp: TcpStream, snapshot: &ArcSwap<Snapshot>) -> Connection {
    limits::WriteTimeout::new(early::Lingering::new(tcp), snapshot.load().body_timeout)
}

/// One TLS connection: handshake with the certificate of the instance the
/// SNI name (shared listener) or the listener (dedicated) says, then HTTP/1.1
/// or h2 as ALPN agreed. Plain HTTP gets [`wrong_scheme::answer`].
async fn serve_tls_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    target: Target,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let Some(plain) = wrong_scheme::is_plain(&tcp, HANDSHAKE_TIMEOUT).await else {
        return;
    };
    if plain {
        let Ok(local) = tcp.local_addr() else { return };
        let named = match &target {
            Target::Instance(name) => snapshot
                .load()
                .instances
                .get(name)
                .and_then(|i| i.config.hostnames.first().cloned()),
            Target::ByHost | Target::Https | Target::Admin => None,
        };
        let fallback = named.unwrap_or_else(|| match local.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
        let tcp = connection(tcp, &snapshot);
        wrong_scheme::answer(tcp, local, &fallback, HANDSHAKE_TIMEOUT).await;
        return;
    }
    let tcp = connection(tcp, &snapshot);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let Ok(Ok(start)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await else {
        return;
    };
    let hello = start.client_hello();
    let snap = snapshot.load_full();
    let (instance, host_checked) = routing::for_handshake(&snap, &target, hello.server_name());
    // No certificate for names nobody here serves: the handshake just ends.
    let Some((inst, tls)) = instance.and_then(|i| i.tls.clone().map(|t| (i, t))) else {
        return;
    };
    let config = tls.config_for(&hello);
    drop(snap);
    let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await
    else {
        return;
    };
    let via = Via::Tls {
        instance: inst.config.name.clone(),
        host_checked,
    };
    drop(inst);
    serve_http(stream, peer, snapshot, via, watcher).await;
}

/// HTTP/1.1 or h2 on one connection (plain, or TLS after the handshake),
/// with the limits of [`limits::connection_builder`].
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    via: Via,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let metrics = snapshot.load().metrics.clone();
    let _open = metrics.connection();
    let builder = limits::connection_builder(snapshot.load().header_timeout);
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let (snapshot, via) = (snapshot.load_full(), via.clone());
        async move { Ok::<_, std::convert::Infallible>(handler::handle(snapshot, via, req).await) }
    });
    let conn = builder
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// Accepts connections until `stop`, then waits for the open ones (which
/// finish the requests in flight). Aborting this task aborts them.
pub(super) async fn serve_listener(
    listener: TcpListener,
    snapshot: Arc<ArcSwap<Snapshot>>,
    target: Target,
    tls: bool,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Owned here, so that a listener cut off (at the end of the drain
    // timeout) cuts off its connections too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. out of file descriptors: give others a moment
                        // to close theirs instead of spinning.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Small responses must not wait for Nagle's algorithm.
                let _ = tcp.set_nodelay(true);
                let (snapshot, watcher) = (snapshot.clone(), graceful.watcher());
                if tls {
                    connections.spawn(serve_tls_connection(tcp, peer, snapshot, target.clone(), watcher));
                } else {
                    let via = Via::Plain(target.clone());
                    let tcp = connection(tcp, &snapshot);
                    connections.spawn(serve_http(tcp, peer, snapshot, via, watcher));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            // Dropping the guard at once keeps this future `Send`.
            _ = async { drop(stop.wait_for(|s| *s).await) } => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    while connections.join_next().await.is_some() {}
}
