//! The HTTP server behind --metrics-addr, made for a port anyone on the pod network can reach:
//! it never stops accepting, a peer holds a bounded number of connections, a connection must
//! start its request within a second and send its headers within two, and when the table is
//! full the connection idle the longest makes room. The kubelet's probe and Prometheus' scrape
//! are answered however many silent or half-written connections others hold.
use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
    task::JoinSet,
};

/// Connections held at once, all peers together (each costs a task and, while a request is
/// read or answered, hyper's buffers).
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one peer address holds at once: its next one closes its longest idle.
pub const PER_PEER: usize = 16;
/// A connection that has sent nothing for this long is closed (clients send at once).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(1);
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// No connection lives longer (a slow reader of a big /terminations included).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// At shutdown, connections between requests close at once; requests in flight get this long
/// before their connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// One held connection: whose, when it last moved a byte, and how to close it.
struct Held {
    peer: IpAddr,
    active: Arc<AtomicU64>,
    close: Arc<Notify>,
}

/// The connections held, by id.
#[derive(Default)]
struct Table {
    next: u64,
    held: HashMap<u64, Held>,
}

impl Table {
    /// Makes room for a new connection from `peer` (closing the longest idle of its own, or of
    /// all when the table is full), then holds it.
    fn admit(&mut self, peer: IpAddr, now_ms: u64) -> (u64, Arc<AtomicU64>, Arc<Notify>) {
        let own = self.held.values().filter(|h| h.peer == peer).count();
        let victim = if own >= PER_PEER {
            self.idlest(|h| h.peer == peer)
        } else if self.held.len() >= MAX_CONNECTIONS {
            self.idlest(|_| true)
        } else {
            None
        };
        if let Some(h) = victim.and_then(|id| self.held.remove(&id)) {
            h.close.notify_one();
        }
        let (active, close) = (Arc::new(AtomicU64::new(now_ms)), Arc::new(Notify::new()));
        self.next += 1;
        self.held.insert(
            self.next,
            Held {
                peer,
                active: active.clone(),
                close: close.clone(),
            },
        );
        (self.next, active, close)
    }

    fn idlest(&self, of: impl Fn(&Held) -> bool) -> Option<u64> {
        self.held
            .iter()
            .filter(|(_, h)| of(h))
            .min_by_key(|(_, h)| h.active.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
    }
}

/// A stream that notes when it last read or wrote a byte (ms since the server started).
struct Noting {
    inner: TcpStream,
    active: Arc<AtomicU64>,
    epoch: Instant,
}

impl Noting {
    fn note(&self) {
        self.active
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Noting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.note();
        }
        polled
    }
}

impl AsyncWrite for Noting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.note();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Until the server shuts down (the guard `wait_for` gives is not held across awaits).
async fn shut_down(shutting: &mut watch::Receiver<bool>) {
    let _ = shutting.wait_for(|down| *down).await;
}

/// Serves `router` until `shutdown`, holding connections as the module says, with a shutdown
/// that no client can hold up (the daemon must not be SIGKILLed itself).
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let table = Arc::new(Mutex::new(Table::default()));
    let epoch = Instant::now();
    let (down, shutting) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: others' closing frees them.
                    tracing::debug!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let now_ms = epoch.elapsed().as_millis() as u64;
        let Ok((id, active, close)) = table.lock().map(|mut t| t.admit(peer.ip(), now_ms)) else {
            break;
        };
        let (service, table) = (TowerToHyperService::new(router.clone()), table.clone());
        let mut shutting = shutting.clone();
        connections.spawn(async move {
            let served = async {
                // Nothing is read before the first byte: a silent connection costs no buffer.
                let mut byte = [0u8; 1];
                tokio::select! {
                    first = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut byte)) => {
                        if !matches!(first, Ok(Ok(n)) if n > 0) {
                            return;
                        }
                    }
                    _ = shut_down(&mut shutting) => return,
                }
                let io = Noting {
                    inner: stream,
                    active,
                    epoch,
                };
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(io), service);
                tokio::pin!(conn);
                let lived = tokio::time::timeout(CONNECTION_LIFETIME, async {
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = shut_down(&mut shutting) => {
                            // Between requests it closes now; a request in flight finishes.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.as_mut().await;
                        }
                    }
                });
                let _ = lived.await;
            };
            tokio::select! {
                _ = served => {}
                _ = close.notified() => {}
            }
            if let Ok(mut t) = table.lock() {
                t.held.remove(&id);
            }
        });
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = down.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        connections.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_peer_at_its_limit_closes_its_own_longest_idle() {
        let mut t = Table::default();
        let first = t.admit(peer(1), 0);
        for ms in 1..PER_PEER as u64 {
            t.admit(peer(1), ms);
        }
        let other = t.admit(peer(2), 0);
        assert_eq!(t.held.len(), PER_PEER + 1);
        // The first one moved a byte last: the second is the idlest of peer 1.
        first.1.store(100, Ordering::Relaxed);
        t.admit(peer(1), 200);
        assert_eq!(t.held.len(), PER_PEER + 1);
        assert!(t.held.contains_key(&first.0));
        assert!(
            !t.held.contains_key(&2),
            "the idlest of the peer was closed"
        );
        assert!(t.held.contains_key(&other.0), "another peer's was not");
    }

    #[test]
    fn a_full_table_closes_the_longest_idle_of_all() {
        let mut t = Table::default();
        for i in 0..MAX_CONNECTIONS {
            t.admit(peer((i % 200) as u8), 10 + i as u64);
        }
        let oldest = t.idlest(|_| true);
        let (new, _, _) = t.admit(peer(250), 10_000);
        assert_eq!(t.held.len(), MAX_CONNECTIONS);
        assert!(t.held.contains_key(&new));
        assert!(!t.held.contains_key(&oldest.unwrap()));
    }
}
