//! storefront: the S3 load-balancing reverse proxy's runtime.
//!
//! A tokio + hyper server and backend client that drive `storefront-core`: core decides
//! (classify, authorise, route, pick, retry, eject); this crate does the IO (accept, read,
//! dial, sign, stream, time out) and reports back. See `proxy` for the request path.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod body;
pub mod clock;
#[cfg(feature = "demo")]
pub mod demo;
pub mod driver;
pub mod events;
pub mod pods;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod server;
pub mod settings;
pub mod sign;
pub mod sts;
pub mod tls;
pub mod transport;
pub mod verify;

pub use app::App;
