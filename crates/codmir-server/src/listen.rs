//! The HTTP listener: accepts connections up to a bound and serves them with timeouts, so
//! that idle, silent or trickling clients cannot exhaust the server's file descriptors or
//! memory. (axum's own `serve` has no bound and no header timeout.)

mod automatic;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::tasks::Tasks;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; past it a new connection is closed at once.
    pub max_connections: usize,
    /// Open connections at most from one client address (a /64 for IPv6), so that one client
    /// cannot fill `max_connections`; past it its new connection is closed at once.
    pub max_per_client: usize,
    /// How long a client may take to send a request's headers — and, on a kept-alive
    /// connection, to start the next request — before the connection is closed.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_per_client: ConnectionLimits::per_client_default(10_000),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionLimits {
    /// A quarter of `max_connections`, at least 64 (or all of a smaller bound): room for a
    /// busy client's pool, and for three more clients as busy, however one behaves.
    pub fn per_client_default(max_connections: usize) -> usize {
        (max_connections / 4).max(64.min(max_connections))
    }
}

/// What the per-client bounds count by: an IPv4 address (also when mapped into IPv6), or an
/// IPv6 address's /64, which one host usually holds whole.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Open connections per client address.
#[derive(Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

/// One open connection of a client, counted until dropped.
struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .clients
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The app with each request told its connection's peer (`ConnectInfo`), for the limits that
/// count per client.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.inner.call(request)
    }
}

/// The largest request head read; past it the answer is a 431.
const MAX_HEAD: usize = 64 * 1024;

/// How long shutdown waits for open connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `tasks` stop, then stops accepting and lets open
/// connections finish their requests (at most [`DRAIN`]). Each connection's task is tracked
/// by `tasks`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tasks: Tasks,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(Clients::default());
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A request head (line and headers) is buffered whole: 64 KiB bounds what each
        // connection can make the server hold (hyper's default is about 400 KiB).
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut refused_logged = None::<tokio::time::Instant>;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tasks.stopping() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or similar: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // At the bound: close the newcomer at once; open connections keep being served.
            drop(stream);
            crate::telemetry::connection_refused();
            if refused_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection refused: at --max-connections"
                );
                refused_logged = Some(tokio::time::Instant::now());
            }
            continue;
        };
        let Some(client) = clients.enter(client_key(peer.ip()), limits.max_per_client) else {
            // This client holds its share: its newcomer is closed at once, others get in.
            drop(stream);
            drop(slot);
            crate::telemetry::connection_refused();
            if refused_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections_per_client = limits.max_per_client,
                    client = %client_key(peer.ip()),
                    "connection refused: the client is at --max-connections-per-client"
                );
                refused_logged = Some(tokio::time::Instant::now());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, builder, watcher) = (app.clone(), builder.clone(), graceful.watcher());
        let within = limits.header_read_timeout;
        tasks.spawn(Connection(Box::pin(async move {
            // hyper's header timeout starts once it knows the protocol; a client that sends
            // nothing (or stalls inside the HTTP/2 preface) never gets that far.
            if !speaks(&stream, within).await {
                drop((slot, client));
                return;
            }
            let service = WithPeer {
                inner: TowerToHyperService::new(app),
                peer,
            };
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(automatic::JsonAutomaticErrors::new(stream)),
                service,
            );
            let _ = watcher.watch(conn).await;
            drop((slot, client));
        })));
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within the shutdown drain; closed");
    }
    Ok(())
}

/// One connection's task, with a `poll` of its own that is never inlined: profiles
/// (`codmir-bench --scenario cost`) find the API's work by this frame.
struct Connection(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);

impl std::future::Future for Connection {
    type Output = ();

    #[inline(never)]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// Waits, up to `within`, for the client to send enough to tell its protocol: a first byte,
/// or the whole 24-byte HTTP/2 preface when it starts like one. False on a silent client or
/// a closed connection.
async fn speaks(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if buf[0] != b'P' || n == buf.len() => return true,
                // Part of a preface: the data already there keeps the socket readable, so
                // look again a little later rather than spin.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(within, wait).await.unwrap_or(false)
}
