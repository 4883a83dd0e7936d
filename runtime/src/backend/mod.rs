//! The proxy's side of the backends: pooled keep-alive connections with their limits, TLS to
//! the backends, and re-signing every forwarded request with credentials only the proxy holds.

pub mod pool;
pub mod sign;
pub mod tls;
