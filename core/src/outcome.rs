//! What one attempt against a backend came to, and whose fault it was.
//!
//! Balance (latency penalties), health (ejection), retry (may we try again) and metrics all
//! read the same value, so the classification lives here once. As Pingora's error type does,
//! every outcome knows which side it came from and the retry module decides from that.

/// Which side of the proxy an outcome is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller: disconnected, too slow, or sent something malformed.
    Client,
    /// The proxy itself: a limit, a policy, a missing backend.
    Proxy,
    /// The storage node.
    Backend,
}

/// An IO phase with its own timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Reading the client's request head.
    ClientHeader,
    /// Waiting for the next chunk of the client's request body (a slow writer).
    ClientBodyIdle,
    /// Waiting for the client to accept more response bytes (a slow reader).
    ResponseWriteIdle,
    /// Opening a connection to the backend.
    BackendConnect,
    /// Waiting for the backend to accept more request-body bytes (its receive window full).
    BackendSendIdle,
    /// Waiting for the backend's response head after the request was sent.
    BackendFirstByte,
    /// Waiting for the next chunk of the backend's response body.
    BackendBodyIdle,
    /// The whole exchange's optional deadline.
    Total,
}

impl Side {
    /// The side's name in logs and metric attributes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Proxy => "proxy",
            Side::Backend => "backend",
        }
    }
}

impl Phase {
    /// The phase's name in logs and metric attributes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::ClientHeader => "client_header",
            Phase::ClientBodyIdle => "client_body_idle",
            Phase::ResponseWriteIdle => "response_write_idle",
            Phase::BackendConnect => "backend_connect",
            Phase::BackendSendIdle => "backend_send_idle",
            Phase::BackendFirstByte => "backend_first_byte",
            Phase::BackendBodyIdle => "backend_body_idle",
            Phase::Total => "total",
        }
    }

    /// Whose slowness the phase measures.
    pub const fn side(self) -> Side {
        match self {
            Phase::ClientHeader | Phase::ClientBodyIdle | Phase::ResponseWriteIdle => Side::Client,
            Phase::BackendConnect | Phase::BackendSendIdle | Phase::BackendFirstByte | Phase::BackendBodyIdle => {
                Side::Backend
            }
            Phase::Total => Side::Proxy,
        }
    }

    /// A stable name for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::ClientHeader => "client_header",
            Phase::ClientBodyIdle => "client_body_idle",
            Phase::ResponseWriteIdle => "response_write_idle",
            Phase::BackendConnect => "backend_connect",
            Phase::BackendSendIdle => "backend_send_idle",
            Phase::BackendFirstByte => "backend_first_byte",
            Phase::BackendBodyIdle => "backend_body_idle",
            Phase::Total => "total",
        }
    }
}

/// How one attempt against one backend ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The backend answered with this status and the exchange completed (or was handed on).
    Response {
        /// HTTP status of the backend's response.
        status: u16,
    },
    /// No connection could be made: nothing reached the backend.
    ConnectFailed,
    /// The connection broke. `response_started` tells whether a response head had arrived.
    Reset {
        /// True when the backend had already sent a response head.
        response_started: bool,
    },
    /// A phase timed out.
    Timeout(Phase),
    /// The client went away, stalled or sent something bad; the backend is not to blame.
    Abandoned,
    /// The proxy itself failed the attempt (signing, building the backend request); the
    /// backend is not to blame and another backend would fare no better.
    ProxyFault,
    /// A hedge race was won by the other attempt, and the proxy dropped this one before its
    /// answer came. Not a failure; its time so far is a lower bound of the backend's latency.
    Cancelled,
}

impl AttemptOutcome {
    /// The outcome's kind, as logs and metric attributes name it (`response`,
    /// `connect_failed`, `reset`, `timeout`, `abandoned`, `proxy_fault`).
    pub const fn kind(self) -> &'static str {
        match self {
            AttemptOutcome::Response { .. } => "response",
            AttemptOutcome::ConnectFailed => "connect_failed",
            AttemptOutcome::Reset { .. } => "reset",
            AttemptOutcome::Timeout(_) => "timeout",
            AttemptOutcome::Abandoned => "abandoned",
            AttemptOutcome::ProxyFault => "proxy_fault",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    /// Whose fault the outcome is.
    pub fn side(self) -> Side {
        match self {
            AttemptOutcome::Response { .. } | AttemptOutcome::ConnectFailed | AttemptOutcome::Reset { .. } => {
                Side::Backend
            }
            AttemptOutcome::Timeout(phase) => phase.side(),
            AttemptOutcome::Abandoned => Side::Client,
            AttemptOutcome::ProxyFault | AttemptOutcome::Cancelled => Side::Proxy,
        }
    }

    /// True when the outcome counts against the backend: a status in `failures` (see
    /// [`StatusSet::TRANSIENT`]), a failed connect, a reset, or a backend-phase timeout. Any
    /// other answer (a 4xx, `501 Not Implemented`, `505`) says the request was wrong, not the
    /// node, and counts as the node answering: no caller can eject a healthy node by choosing
    /// what to ask.
    pub fn is_backend_failure(self, failures: &StatusSet) -> bool {
        match self {
            AttemptOutcome::Response { status } => failures.contains(status),
            AttemptOutcome::ConnectFailed | AttemptOutcome::Reset { .. } => true,
            AttemptOutcome::Timeout(phase) => phase.side() == Side::Backend,
            AttemptOutcome::Abandoned | AttemptOutcome::ProxyFault | AttemptOutcome::Cancelled => false,
        }
    }

    /// True for a backend's "slow down" answer (503 or 429): the node is overloaded and did not
    /// process the request.
    pub fn is_slow_down(self) -> bool {
        matches!(self, AttemptOutcome::Response { status: 503 | 429 })
    }

    /// A stable name for logs and metrics labels.
    pub fn class(self) -> &'static str {
        match self {
            AttemptOutcome::Response { .. } if self.is_slow_down() => "slow_down",
            AttemptOutcome::Response { status } if status >= 500 => "server_error",
            AttemptOutcome::Response { status } if status >= 400 => "client_error",
            AttemptOutcome::Response { .. } => "success",
            AttemptOutcome::ConnectFailed => "connect_failed",
            AttemptOutcome::Reset {
                response_started: false,
            } => "reset_before_response",
            AttemptOutcome::Reset { response_started: true } => "reset_mid_body",
            AttemptOutcome::Timeout(_) => "timeout",
            AttemptOutcome::Abandoned => "abandoned",
            AttemptOutcome::ProxyFault => "proxy_fault",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

/// A set of HTTP statuses (100 to 599): which answers count against a node
/// (`health.passive.failure_statuses`) and which are retried (`retry.retry_statuses`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusSet([u64; 10]);

impl StatusSet {
    /// No status.
    pub const EMPTY: StatusSet = StatusSet([0; 10]);

    /// 429, 500, 502, 503 and 504: the answers the AWS SDKs treat as transient (their
    /// standard retry mode), which say the node, not the request, failed. The defaults of
    /// both lists.
    pub const TRANSIENT: StatusSet = StatusSet::EMPTY.with(429).with(500).with(502).with(503).with(504);

    /// This set and `status` (outside 0 to 639: unchanged).
    pub const fn with(mut self, status: u16) -> StatusSet {
        let index = status as usize;
        if index < 640 {
            self.0[index / 64] |= 1 << (index % 64);
        }
        self
    }

    /// The set of `statuses`.
    pub fn of(statuses: &[u16]) -> StatusSet {
        statuses.iter().fold(StatusSet::EMPTY, |set, &status| set.with(status))
    }

    /// Whether `status` is in the set.
    pub const fn contains(&self, status: u16) -> bool {
        let index = status as usize;
        index < 640 && self.0[index / 64] & (1 << (index % 64)) != 0
    }

    /// The statuses, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0u16..640).filter(|&status| self.contains(status))
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet::TRANSIENT
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_attributed_to_the_right_side() {
        // Proves that client misbehaviour never counts against a backend's health.
        let failures = &StatusSet::TRANSIENT;
        assert!(AttemptOutcome::Response { status: 503 }.is_backend_failure(failures));
        assert!(AttemptOutcome::Response { status: 503 }.is_slow_down());
        assert!(AttemptOutcome::Response { status: 500 }.is_backend_failure(failures));
        assert!(!AttemptOutcome::Response { status: 404 }.is_backend_failure(failures));
        assert!(!AttemptOutcome::Response { status: 200 }.is_backend_failure(failures));
        assert!(AttemptOutcome::Timeout(Phase::BackendFirstByte).is_backend_failure(failures));
        assert!(!AttemptOutcome::Timeout(Phase::ResponseWriteIdle).is_backend_failure(failures));
        assert!(!AttemptOutcome::Timeout(Phase::ClientBodyIdle).is_backend_failure(failures));
        assert!(!AttemptOutcome::Abandoned.is_backend_failure(failures));
        assert!(!AttemptOutcome::ProxyFault.is_backend_failure(failures));
        // The request's fault, not the node's: a feature the node lacks, an HTTP version.
        assert!(!AttemptOutcome::Response { status: 501 }.is_backend_failure(failures));
        assert!(!AttemptOutcome::Response { status: 505 }.is_backend_failure(failures));
        assert!(!AttemptOutcome::Response { status: 403 }.is_backend_failure(failures));
        assert_eq!(AttemptOutcome::Response { status: 501 }.class(), "server_error");
        assert_eq!(AttemptOutcome::ProxyFault.side(), Side::Proxy);
        assert_eq!(
            AttemptOutcome::Reset { response_started: true }.class(),
            "reset_mid_body"
        );
    }

    #[test]
    fn a_status_set_holds_exactly_its_statuses() {
        // Proves the bit set: members in, neighbours and out-of-range codes out.
        let set = StatusSet::of(&[100, 429, 599]);
        assert!(set.contains(100) && set.contains(429) && set.contains(599));
        assert!(!set.contains(428) && !set.contains(430) && !set.contains(500));
        assert!(!StatusSet::of(&[700]).contains(700));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![100, 429, 599]);
        assert_eq!(format!("{:?}", StatusSet::TRANSIENT), "{429, 500, 502, 503, 504}");
    }
}
