//! Connection-level defences: the deadline of a connection between requests, and the limits
//! on how many connections the proxy, and one client address, may hold.
//!
//! hyper's own header timer starts at a request's first byte, so a connection that sends
//! nothing at all, or idles after a response, would hold its slot for ever: twenty silent
//! sockets would lock every client out of a proxy with `max_connections = 20`. The watchdog
//! runs beside every connection and closes it when no request is in progress and
//!
//! - no complete request head arrived within `client_header` of the accept (or of the last
//!   response's end, once bytes of a next head arrived), or
//! - nothing at all arrived within `client_idle` of the last response's end (keep-alive idle).
//!
//! With HTTP/2 a request is a stream: a connection that opens none is closed the same way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a connection is doing, as the watchdog needs to know it.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    /// Requests (HTTP/2: streams) in progress: from the head's arrival to the response's end.
    active: AtomicUsize,
    /// Requests started so far.
    requests: AtomicU64,
    /// When the connection last became idle (nanoseconds since the accept).
    idle_since: AtomicU64,
    /// When bytes last arrived (nanoseconds since the accept; 0: never).
    last_read: AtomicU64,
    changed: Notify,
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// No complete request head in time.
    Header,
    /// Idle between requests for too long.
    Idle,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Self {
        Activity {
            accepted: Instant::now(),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            last_read: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn since_accept(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived from the client. Only what arrives between requests matters to the
    /// deadlines, so a read during a request (a body streaming in) costs one atomic load, not
    /// a clock reading.
    pub fn read(&self) {
        if self.active.load(Ordering::Relaxed) == 0 {
            // Never 0, which means "nothing yet".
            self.last_read.store(self.since_accept().max(1), Ordering::Relaxed);
        }
    }

    /// A request head arrived; the request is in progress until the guard drops (with the
    /// response body, when hyper has sent it or given up on it).
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
        RequestGuard(self.clone())
    }

    /// Wait until the connection has been without a request past its deadline.
    pub async fn expired(&self, client_header: Duration, client_idle: Duration) -> Expired {
        loop {
            let changed = self.changed.notified();
            if self.active.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let since = self.idle_since.load(Ordering::Acquire);
            let heard = self.last_read.load(Ordering::Relaxed) > since;
            let first = self.requests.load(Ordering::Relaxed) == 0;
            let (limit, reason) = if first || heard {
                (client_header, Expired::Header)
            } else {
                (client_idle, Expired::Idle)
            };
            let deadline = self.accepted + Duration::from_nanos(since) + limit;
            if Instant::now() >= deadline {
                return reason;
            }
            tokio::select! {
                biased;
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// A request in progress on its connection.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.since_accept(), Ordering::Release);
        activity.active.fetch_sub(1, Ordering::AcqRel);
        activity.changed.notify_one();
    }
}

/// A response body that keeps its request in progress until hyper is done with it.
pub struct Guarded {
    body: crate::request::ProxyBody,
    _guard: RequestGuard,
}

impl Guarded {
    /// `body`, its request in progress while it lives.
    pub fn new(body: crate::request::ProxyBody, guard: RequestGuard) -> Self {
        Guarded { body, _guard: guard }
    }
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = crate::request::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Connections held per client address, bounded.
#[derive(Debug)]
pub struct PerClient {
    limit: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One client connection counted against its address; uncounted on drop.
#[derive(Debug)]
pub struct ClientSlot {
    table: Arc<PerClient>,
    address: IpAddr,
}

impl PerClient {
    /// At most `limit` connections per address (0: no limit).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(PerClient {
            limit,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Count a connection from `address`, unless it already holds its share.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<ClientSlot> {
        if self.limit == 0 {
            return Some(ClientSlot {
                table: self.clone(),
                address,
            });
        }
        let mut held = self.held.lock().expect("the per-client table lock is never poisoned");
        let count = held.entry(address).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: self.clone(),
            address,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if self.table.limit == 0 {
            return;
        }
        let mut held = self
            .table
            .held
            .lock()
            .expect("the per-client table lock is never poisoned");
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_at_the_header_deadline_and_an_idle_one_at_the_idle_one() {
        // Proves the deadlines: silent from the accept, the header deadline; after a response,
        // the idle deadline; with bytes of a next head, the header deadline again; never while
        // a request is in progress.
        let header = Duration::from_secs(30);
        let idle = Duration::from_secs(20);
        let activity = Arc::new(Activity::new());
        let started = Instant::now();
        assert_eq!(activity.expired(header, idle).await, Expired::Header);
        assert_eq!(started.elapsed(), header);

        let activity = Arc::new(Activity::new());
        let guard = activity.begin();
        let waiting = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired(header, idle).await })
        };
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!waiting.is_finished(), "expired with a request in progress");
        let ended = Instant::now();
        drop(guard);
        assert_eq!(waiting.await.expect("task"), Expired::Idle);
        assert_eq!(ended.elapsed(), idle);

        let activity = Arc::new(Activity::new());
        drop(activity.begin());
        tokio::time::sleep(Duration::from_secs(5)).await;
        activity.read();
        let ended = Instant::now() - Duration::from_secs(5);
        assert_eq!(activity.expired(header, idle).await, Expired::Header);
        assert_eq!(ended.elapsed(), header);
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        // Proves the per-client bound: the limit per address, others unaffected, a closed
        // connection frees its place; 0 means no limit.
        let table = PerClient::new(2);
        let one: IpAddr = "10.0.0.1".parse().expect("address");
        let two: IpAddr = "10.0.0.2".parse().expect("address");
        let first = table.admit(one).expect("first");
        let _second = table.admit(one).expect("second");
        assert!(table.admit(one).is_none(), "a third from one address");
        assert!(table.admit(two).is_some(), "another address is not affected");
        drop(first);
        assert!(table.admit(one).is_some(), "a closed connection frees its place");
        let unlimited = PerClient::new(0);
        let held: Vec<_> = (0..100).map(|_| unlimited.admit(one).expect("no limit")).collect();
        assert_eq!(held.len(), 100);
    }
}
