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

impl Phase {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl AttemptOutcome {
    /// Whose fault the outcome is.
    pub fn side(self) -> Side {
        match self {
            AttemptOutcome::Response { .. } | AttemptOutcome::ConnectFailed | AttemptOutcome::Reset { .. } => {
                Side::Backend
            }
            AttemptOutcome::Timeout(phase) => phase.side(),
            AttemptOutcome::Abandoned => Side::Client,
            AttemptOutcome::ProxyFault => Side::Proxy,
        }
    }

    /// True when the outcome counts against the backend: a 5xx (503 SlowDown included) or a
    /// 429, a failed connect, a reset, or a backend-phase timeout. Client errors (4xx) are the
    /// client's business and say nothing about the node's health.
    pub fn is_backend_failure(self) -> bool {
        match self {
            AttemptOutcome::Response { status } => is_failure_status(status),
            AttemptOutcome::ConnectFailed | AttemptOutcome::Reset { .. } => true,
            AttemptOutcome::Timeout(phase) => phase.side() == Side::Backend,
            AttemptOutcome::Abandoned | AttemptOutcome::ProxyFault => false,
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
            AttemptOutcome::Response { status } if is_failure_status(status) => {
                if self.is_slow_down() {
                    "slow_down"
                } else {
                    "server_error"
                }
            }
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
        }
    }
}

/// 5xx and 429 count against a backend.
pub fn is_failure_status(status: u16) -> bool {
    status >= 500 || status == 429
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_attributed_to_the_right_side() {
        // Proves that client misbehaviour never counts against a backend's health.
        assert!(AttemptOutcome::Response { status: 503 }.is_backend_failure());
        assert!(AttemptOutcome::Response { status: 503 }.is_slow_down());
        assert!(AttemptOutcome::Response { status: 500 }.is_backend_failure());
        assert!(!AttemptOutcome::Response { status: 404 }.is_backend_failure());
        assert!(!AttemptOutcome::Response { status: 200 }.is_backend_failure());
        assert!(AttemptOutcome::Timeout(Phase::BackendFirstByte).is_backend_failure());
        assert!(!AttemptOutcome::Timeout(Phase::ResponseWriteIdle).is_backend_failure());
        assert!(!AttemptOutcome::Timeout(Phase::ClientBodyIdle).is_backend_failure());
        assert!(!AttemptOutcome::Abandoned.is_backend_failure());
        assert!(!AttemptOutcome::ProxyFault.is_backend_failure());
        assert_eq!(AttemptOutcome::ProxyFault.side(), Side::Proxy);
        assert_eq!(
            AttemptOutcome::Reset { response_started: true }.class(),
            "reset_mid_body"
        );
    }
}
