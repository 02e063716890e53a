//! Connections to endpoints, made and kept by us: names resolved through the target policy,
//! TLS verified with the platform's roots, HTTP/1.1, and idle connections kept per origin.
//!
//! A general client (reqwest, hyper-util's pool) cost about a third of an attempt for
//! features a webhook POST never uses — redirects, proxies, decompression, per-request
//! configuration — so this module does the one thing an attempt needs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codmir_core::target::TargetPolicy;
use http_body_util::Full;
use hyper::Uri;
use hyper::client::conn::http1;
use hyper::header::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::tasks::Tasks;

/// The sending half of one HTTP/1.1 connection; its connection task runs on its own.
pub(super) type Conn = http1::SendRequest<Full<Bytes>>;

/// An idle connection is closed by us after this long unused.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Most idle connections kept per origin (a webhook has at most 64 attempts in flight).
const IDLE_PER_ORIGIN: usize = 256;
/// How often idle connections past [`IDLE_FOR`] are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Where connections go: one pool of idle connections per origin.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    https: bool,
    host: Arc<str>,
    port: u16,
    /// The host as an address when the URL spells one: the resolver is not asked.
    literal: Option<IpAddr>,
}

/// A webhook URL taken apart once for every attempt that uses it.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) origin: Origin,
    /// The `Host` header.
    pub(super) authority: HeaderValue,
    /// Path and query: HTTP/1.1's origin form.
    pub(super) path: Uri,
}

impl Target {
    pub(super) fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("invalid URL: {e}"))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("invalid URL: unsupported scheme {other}")),
        };
        let (host, literal) = match url.host() {
            Some(url::Host::Domain(d)) => (d.to_owned(), None),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
            None => return Err("invalid URL: no host".into()),
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        // `url` spells the authority as a Host header wants it: IPv6 in brackets, the
        // port only when it is not the scheme's default.
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Self {
            origin: Origin {
                https,
                host: host.into(),
                port,
                literal,
            },
            authority: HeaderValue::try_from(authority).map_err(|e| format!("invalid URL: {e}"))?,
            path: path.parse().map_err(|e| format!("invalid URL: {e}"))?,
        })
    }

    pub(super) fn is_https(&self) -> bool {
        self.origin.https
    }

    pub(super) fn literal(&self) -> Option<IpAddr> {
        self.origin.literal
    }
}

/// Why no connection was made; the text goes to the delivery log.
#[derive(Debug)]
pub(super) struct ConnectError(pub(super) String);

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One origin's idle connections, and the signal that one was put back.
#[derive(Default)]
struct Lane {
    idle: Vec<Idle>,
    freed: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Pool {
    lanes: HashMap<Origin, Lane>,
}

#[derive(Clone)]
pub(super) struct Connector {
    policy: Arc<TargetPolicy>,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    pool: Arc<Mutex<Pool>>,
    /// The server's tasks: the sweeper and each connection being made run through them.
    tasks: Tasks,
}

impl Connector {
    pub(super) fn new(
        policy: Arc<TargetPolicy>,
        connect_timeout: Duration,
        tasks: Tasks,
    ) -> Result<Self, rustls::Error> {
        use rustls_platform_verifier::BuilderVerifierExt;
        crate::install_crypto_provider();
        let mut tls = rustls::ClientConfig::builder()
            .with_platform_verifier()?
            .with_no_client_auth();
        // We speak HTTP/1.1 only: one request per connection at a time is what the
        // per-webhook in-flight bound counts, and what every receiver supports.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let pool: Arc<Mutex<Pool>> = Arc::default();
        // Without traffic nothing would close idle connections; the sweeper ends with the
        // last connector, or when the server stops.
        let weak = Arc::downgrade(&pool);
        let sweeper = tasks.clone();
        tasks.spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = sweeper.stopping() => return,
                }
                let Some(pool) = weak.upgrade() else { return };
                sweep(&mut lock(&pool));
            }
        });
        Ok(Self {
            policy,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout,
            pool,
            tasks,
        })
    }

    /// The addresses and schemes attempts may reach.
    pub(super) fn policy(&self) -> &TargetPolicy {
        &self.policy
    }

    /// A connection to `origin`, and whether it was kept from an earlier attempt: an idle one
    /// if there is one; else a new one, unless a connection is put back before the new one
    /// is made — then that one, and the new one is kept for later when it is made. (Under a
    /// burst, such as one event to a thousand webhooks of one receiver, a new connection can
    /// wait a second for a dropped SYN to be sent again; an attempt need not wait with it.)
    pub(super) async fn checkout(&self, origin: &Origin) -> Result<(Conn, bool), ConnectError> {
        if let Some(conn) = self.idle(origin) {
            return Ok((conn, true));
        }
        let freed = {
            let mut pool = lock(&self.pool);
            pool.lanes.entry(origin.clone()).or_default().freed.clone()
        };
        let (made, mut made_rx) = tokio::sync::oneshot::channel();
        let (connector, target) = (self.clone(), origin.clone());
        self.tasks.spawn(async move {
            let result = connector.connect(&target).await;
            // The attempt took a connection put back meanwhile: this one is kept for later.
            if let Err(Ok(conn)) = made.send(result) {
                connector.keep(&target, conn);
            }
        });
        loop {
            tokio::select! {
                result = &mut made_rx => {
                    let conn = result.unwrap_or_else(|_| {
                        Err(ConnectError("connection failed: the connecting task ended".into()))
                    })?;
                    return Ok((conn, false));
                }
                () = freed.notified() => {
                    if let Some(conn) = self.idle(origin) {
                        return Ok((conn, true));
                    }
                }
            }
        }
    }

    /// An idle connection to `origin`, most recently used first.
    fn idle(&self, origin: &Origin) -> Option<Conn> {
        let mut pool = lock(&self.pool);
        let list = &mut pool.lanes.get_mut(origin)?.idle;
        while let Some(idle) = list.pop() {
            if !idle.conn.is_closed() && idle.since.elapsed() < IDLE_FOR {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Keeps a connection whose last response was read to its end.
    pub(super) fn keep(&self, origin: &Origin, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let mut pool = lock(&self.pool);
        let lane = pool.lanes.entry(origin.clone()).or_default();
        if lane.idle.len() < IDLE_PER_ORIGIN {
            lane.idle.push(Idle {
                conn,
                since: Instant::now(),
            });
            lane.freed.notify_one();
        }
    }

    /// A new connection to `origin`, within the connect timeout: resolution, TCP and TLS.
    async fn connect(&self, origin: &Origin) -> Result<Conn, ConnectError> {
        match tokio::time::timeout(self.connect_timeout, self.open(origin)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError(format!(
                "connection failed: no connection within {:?}",
                self.connect_timeout
            ))),
        }
    }

    async fn open(&self, origin: &Origin) -> Result<Conn, ConnectError> {
        let failed = |e: &dyn std::fmt::Display| ConnectError(format!("connection failed: {e}"));
        let addrs = self.resolve(origin).await?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(failed(&e)),
            (None, None) => return Err(failed(&"no address")),
        };
        stream.set_nodelay(true).map_err(|e| failed(&e))?;
        let handshake = http1::Builder::new();
        if !origin.https {
            let (conn, connection) = handshake
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| failed(&e))?;
            spawn(connection);
            return Ok(conn);
        }
        let name = match origin.literal {
            Some(ip) => ServerName::IpAddress(ip.into()),
            None => ServerName::try_from(origin.host.to_string()).map_err(|e| failed(&e))?,
        };
        // rustls' error (e.g. "invalid peer certificate: UnknownIssuer") is the cause given.
        let tls = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| failed(&e))?;
        let (conn, connection) = handshake
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| failed(&e))?;
        spawn(connection);
        Ok(conn)
    }

    /// The addresses the policy lets us connect to: a literal was checked by the caller; a
    /// name is resolved by the system resolver and only the addresses the policy allows are
    /// tried, so the connection is made to one of those or to none.
    async fn resolve(&self, origin: &Origin) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Some(ip) = origin.literal {
            return Ok(vec![SocketAddr::new(ip, origin.port)]);
        }
        let host = &*origin.host;
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, origin.port))
            .await
            .map_err(|e| ConnectError(format!("connection failed: {e}")))?
            .collect();
        let allowed: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.policy.allows(a.ip()))
            .collect();
        if allowed.is_empty() && !found.is_empty() {
            return Err(ConnectError(format!(
                "connection failed: `{host}` resolves only to addresses that are not public, refused (see --allow-cidr)"
            )));
        }
        Ok(allowed)
    }
}

fn spawn<F>(connection: F)
where
    F: std::future::Future<Output = hyper::Result<()>> + Send + 'static,
{
    use hyper::rt::Executor;
    // The connection's task ends when its sender is dropped or the peer closes it.
    TokioExecutor::new().execute(async move {
        let _ = connection.await;
    });
}

fn lock(pool: &Mutex<Pool>) -> std::sync::MutexGuard<'_, Pool> {
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

fn sweep(pool: &mut Pool) {
    pool.lanes.retain(|_, lane| {
        lane.idle
            .retain(|i| !i.conn.is_closed() && i.since.elapsed() < IDLE_FOR);
        // A lane an attempt waits on is kept: its signal is the one the attempt listens to.
        !lane.idle.is_empty() || Arc::strong_count(&lane.freed) > 1
    });
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn a_target_keeps_what_the_request_line_and_host_header_need() {
        let t = Target::parse("https://hooks.example.com/in?x=1&y=2").unwrap();
        assert!(t.is_https());
        assert_eq!(t.origin.port, 443);
        assert_eq!(t.authority, "hooks.example.com");
        assert_eq!(t.path, "/in?x=1&y=2");
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(t.authority, "[::1]:8080");
        assert_eq!(t.path, "/");
        assert_eq!(t.literal(), Some("::1".parse().unwrap()));
        let t = Target::parse("http://127.0.0.1:80/a").unwrap();
        assert_eq!(t.authority, "127.0.0.1");
        assert_eq!(t.origin.port, 80);
        assert!(Target::parse("ftp://x.example.com/").is_err());
    }
}
