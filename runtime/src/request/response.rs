//! The backend's response on its way to the client, and the S3 errors the proxy answers itself.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use storefront_core::exchange::{Exchange, Step};
use storefront_core::outcome::Phase;
use storefront_core::s3::{ErrorCode, S3ErrorResponse};

use crate::backend::pool::Lease;
use crate::clock::Clock;
use crate::request::ConnState;
use crate::request::body::Coalescing;
use crate::request::generation::Generation;

/// Errors a response body may yield to hyper (which then breaks the client connection).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The backend's response body on its way to the client. Reports the exchange's end to core:
/// done, backend broke (`Abort`: the client connection is broken too, never a short body
/// passed off as whole), backend idle, or, when dropped early, client gone or too slow.
pub struct ResponseBody {
    pub(crate) incoming: Coalescing<Incoming>,
    /// Request body bytes the client sent (for the record).
    pub(crate) request_bytes: u64,
    /// Response body bytes handed to hyper so far.
    pub(crate) response_bytes: u64,
    pub(crate) exchange: Option<Exchange>,
    pub(crate) lease: Option<Lease>,
    pub(crate) generation: Arc<Generation>,
    pub(crate) clock: Clock,
    pub(crate) conn: Arc<ConnState>,
    pub(crate) idle_timeout: Duration,
    pub(crate) idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The exchange's total deadline, if configured.
    pub(crate) deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Why a response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The backend's connection broke mid-body.
    #[error("storage node broke off the response: {0}")]
    Backend(hyper::Error),
    /// The backend sent nothing for the body-idle timeout.
    #[error("storage node idle for {0:?} mid-response")]
    BackendIdle(Duration),
    /// The exchange's total deadline passed mid-response.
    #[error("the request's total deadline passed mid-response")]
    Deadline,
}

impl ResponseBody {
    fn finish(&mut self, f: impl FnOnce(&mut Exchange, storefront_core::time::Instant) -> Step) {
        if let Some(mut exchange) = self.exchange.take() {
            let now = self.clock.now();
            exchange.handle_transferred(self.request_bytes, self.response_bytes);
            self.generation.step(&mut exchange, |exchange| f(exchange, now));
        }
    }

    pub(crate) fn complete(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        self.finish(|exchange, now| exchange.handle_response_done(now));
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.exchange.is_none() {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.lease = None;
            this.finish(|exchange, now| exchange.handle_timeout(now, Phase::Total));
            return Poll::Ready(Some(Err(Box::new(ResponseError::Deadline))));
        }
        match this.incoming.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle = None;
                if let Some(data) = frame.data_ref() {
                    this.response_bytes += data.len() as u64;
                }
                if this.incoming.is_end_stream() {
                    // The last frame: hyper will not poll again once `is_end_stream` says so,
                    // so the exchange completes (and the connection goes back to the pool) now.
                    this.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.complete();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.lease = None;
                this.finish(|exchange, now| exchange.handle_backend_reset(now));
                Poll::Ready(Some(Err(Box::new(ResponseError::Backend(error)))))
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let sleep = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.lease = None;
                    this.finish(|exchange, now| exchange.handle_timeout(now, Phase::BackendBodyIdle));
                    return Poll::Ready(Some(Err(Box::new(ResponseError::BackendIdle(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none() || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.exchange.is_some() {
            // Dropped before the end: the client went away, or stopped reading until the write
            // timeout closed its connection. The lease drops with us: that backend connection
            // is closed, never pooled.
            self.lease = None;
            if self.conn.write_timed_out.load(Ordering::Acquire) {
                self.finish(|exchange, now| exchange.handle_timeout(now, Phase::ResponseWriteIdle));
            } else {
                self.finish(|exchange, now| exchange.handle_client_gone(now));
            }
        }
    }
}

/// The header that carries the proxy's own request id on every response (the access log's
/// `request_id`): a proxied answer keeps the backend's `x-amz-request-id`, which the backend's
/// own logs know, and gets this beside it.
pub const PROXY_REQUEST_ID: &str = "x-storefront-request-id";

/// An S3 XML error response from the proxy itself. `close` asks the client to drop the
/// connection (used when a request body was left unread).
pub fn error_response(
    error: &S3ErrorResponse,
    resource: &str,
    request_id: &str,
    close: bool,
) -> http::Response<ProxyBody> {
    let xml = error.to_xml(resource, request_id);
    let mut response = http::Response::new(
        Full::new(Bytes::from(xml))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() =
        http::StatusCode::from_u16(error.status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amz-request-id", value.clone());
        headers.insert(PROXY_REQUEST_ID, value);
    }
    if error.code == ErrorCode::SlowDown || error.code == ErrorCode::ServiceUnavailable {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
