//! A TCP proxy the test controls, put between a node and its database: it passes bytes, or
//! holds them (a partition: nothing gets through either way, connections stay open, and what
//! was held is delivered when it heals, as TCP's retransmissions would), or, once, drops a
//! connection right after passing on a `COMMIT` (the commit takes; its answer never arrives),
//! and may be cut at that instant.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct Proxy {
    pub port: u16,
    cut: Arc<watch::Sender<bool>>,
    drop_commit: Armed,
}

/// The statement after which a `COMMIT`'s answer is dropped, and whether the proxy is cut then.
type Armed = Arc<std::sync::Mutex<Option<(Vec<u8>, bool)>>>;

/// What one connection's two directions share.
#[derive(Default)]
struct Conn {
    /// The client sent the statement the drop waits for.
    seen: std::sync::atomic::AtomicBool,
    /// The server's answers are no longer passed on: the connection is being dropped.
    dropped: std::sync::atomic::AtomicBool,
    /// The proxy is cut once the `COMMIT` is passed on.
    cut_then: std::sync::atomic::AtomicBool,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub(crate) async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(watch::channel(false).0);
        let drop_commit: Armed = Arc::default();
        let state = cut.clone();
        let armed = drop_commit.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = state.clone();
                let state = state.subscribe();
                let armed = armed.clone();
                tokio::spawn(async move {
                    let mut open = state.clone();
                    // A connection opened during a partition waits for it to heal.
                    if open.wait_for(|cut| !*cut).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let conn = Arc::new(Conn::default());
                    let up = Watch {
                        armed: Some((armed, cut)),
                        conn: conn.clone(),
                    };
                    let down = Watch { armed: None, conn };
                    tokio::spawn(pipe(cr, sw, state.clone(), up));
                    tokio::spawn(pipe(sr, cw, state, down));
                });
            }
        });
        Self {
            port,
            cut,
            drop_commit,
        }
    }

    /// Once: the first connection whose client sends `statement` (its text, as sent when it
    /// is first prepared on that connection) and then `COMMIT` has the `COMMIT` passed on and
    /// is dropped before the server's answer: the commit takes, its client never learns.
    pub(crate) fn drop_the_answer_to_a_commit_after(&self, statement: &str) {
        *self.drop_commit.lock().unwrap() = Some((statement.as_bytes().to_vec(), false));
    }

    /// As [`Proxy::drop_the_answer_to_a_commit_after`], and the proxy is cut at that instant
    /// (until [`Proxy::heal`]): nobody can ask the database what became of the commit.
    pub(crate) fn cut_at_a_commit_after(&self, statement: &str) {
        *self.drop_commit.lock().unwrap() = Some((statement.as_bytes().to_vec(), true));
    }

    /// Whether the drop armed last has happened.
    pub(crate) fn dropped(&self) -> bool {
        self.drop_commit.lock().unwrap().is_none()
    }

    /// Nothing passes, either way, until [`Proxy::heal`].
    pub(crate) fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub(crate) fn heal(&self) {
        self.cut.send_replace(false);
    }
}

/// A direction's part in a drop: upstream (client to server) watches for the statement and the
/// commit; downstream stops passing answers once the connection is dropped.
struct Watch {
    armed: Option<(Armed, Arc<watch::Sender<bool>>)>,
    conn: Arc<Conn>,
}

impl Watch {
    /// Whether `bytes`, about to be passed on, end this connection after them.
    fn drops_after(&self, bytes: &[u8]) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let Some((armed, _)) = &self.armed else {
            return false;
        };
        let mut armed = armed.lock().unwrap();
        let Some((statement, and_cut)) = armed.as_ref() else {
            return false;
        };
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        if has(statement) {
            self.conn.seen.store(true, SeqCst);
        }
        if self.conn.seen.load(SeqCst) && has(b"COMMIT") {
            self.conn.cut_then.store(*and_cut, SeqCst);
            *armed = None;
            self.conn.dropped.store(true, SeqCst);
            return true;
        }
        false
    }
}

/// Copies `from` to `to`, holding what it read while the proxy is cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<bool>,
    watch: Watch,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if state.wait_for(|cut| !*cut).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // The drop is decided before the COMMIT goes on, so its answer is never passed back.
        let last = watch.drops_after(&buf[..n]);
        if watch.conn.dropped.load(std::sync::atomic::Ordering::SeqCst) && watch.armed.is_none() {
            return;
        }
        if state.wait_for(|cut| !*cut).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if last {
            if let Some((_, cut)) = &watch.armed
                && watch
                    .conn
                    .cut_then
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                cut.send_replace(true);
            }
            return;
        }
    }
}
