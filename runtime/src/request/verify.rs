//! A CompleteMultipartUpload answered 404, verified before the client hears it: the backend's
//! answer is held unread while a HEAD of the object asks the same backend for its ETag, and
//! core decides from it (and the part list kept from the request body) whether the client
//! gets that answer or the success an earlier try of the completion lost.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use storefront_core::exchange::{Answer, Dispatch, Step};

use crate::backend::pool::{Checkout, Lease};
use crate::request::attempt::{Attempt, AttemptResult};
use crate::request::body::{BodySource, ForwardBody};
use crate::request::response::{PROXY_REQUEST_ID, ProxyBody};
use crate::transport::Connect;

/// Why no ETag came back.
enum Unverified {
    /// The object is not there, or the backend did not answer the HEAD in time: nothing is
    /// known, so the backend's answer stands.
    Unknown,
    /// Core's total deadline for the exchange passed.
    Deadline,
}

impl<C: Connect> Attempt<'_, C> {
    /// Carry out core's [`Step::Verify`]: `held` is the backend's answer (with its connection
    /// `lease`), returned as it is unless core answers otherwise.
    pub(crate) async fn verify(
        &mut self,
        check: Dispatch,
        held: http::Response<Incoming>,
        lease: Lease,
    ) -> AttemptResult {
        let etag = match self.object_etag(&check).await {
            Ok(etag) => Some(etag),
            Err(Unverified::Unknown) => None,
            Err(Unverified::Deadline) => {
                let step = self.step(|exchange, now| exchange.handle_deadline(now));
                return AttemptResult::Next(step);
            }
        };
        let kept = self.source.kept();
        let step = self.step(|exchange, now| exchange.handle_verified(now, etag.as_deref(), kept.as_deref()));
        match step {
            Step::Return => AttemptResult::Respond(self.respond(held, lease)),
            Step::Answer(answer) => {
                // The held answer is dropped unread: its connection closes, never pooled
                // with a response pending on it.
                drop((held, lease));
                AttemptResult::Respond(answer_response(answer, self.request_id))
            }
            other => AttemptResult::Next(other),
        }
    }

    /// The object's ETag, from a HEAD that `check` plans, on its backend: each wait bounded
    /// by the connect and first-byte timeouts, and all of it by core's total deadline.
    async fn object_etag(&mut self, check: &Dispatch) -> Result<String, Unverified> {
        let due = self.due();
        let timeouts = *self.generation.timeouts();
        let head = async {
            let settings = self.generation.pool_settings(check.pool.0).ok_or(Unverified::Unknown)?;
            let connections = &self.proxy.connections;
            let slot = match connections.slot(&check.address, settings) {
                Checkout::Ready(slot) => slot,
                Checkout::Wait(pending) => within(timeouts.backend_connect, pending.wait())
                    .await?
                    .map_err(|_| Unverified::Unknown)?,
                Checkout::Full => return Err(Unverified::Unknown),
            };
            let mut lease = match connections.reuse(slot).await {
                Ok(lease) => lease,
                Err(slot) => within(timeouts.backend_connect, connections.dial(slot, &check.address))
                    .await?
                    .map_err(|_| Unverified::Unknown)?,
            };
            let request = self.head_request(check)?;
            let response = within(timeouts.backend_first_byte, lease.sender().send_request(request))
                .await?
                .map_err(|_| Unverified::Unknown)?;
            let etag = (response.status() == http::StatusCode::OK)
                .then(|| response.headers().get(header::ETAG)?.to_str().ok().map(str::to_owned))
                .flatten();
            // A HEAD's answer has no body: the connection can take the next request.
            if response.into_body().is_end_stream() {
                lease.release();
            }
            etag.ok_or(Unverified::Unknown)
        };
        tokio::select! {
            biased;
            etag = head => etag,
            () = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => Err(Unverified::Deadline),
        }
    }

    /// The HEAD `check` plans, addressed and signed for its backend.
    fn head_request(&self, check: &Dispatch) -> Result<http::Request<ForwardBody>, Unverified> {
        let signer = self.generation.signer(check.pool.0).ok_or(Unverified::Unknown)?;
        let mut builder = http::Request::builder()
            .method(check.plan.method.clone())
            .uri(check.plan.uri.clone())
            .version(http::Version::HTTP_11);
        *builder.headers_mut().expect("builder is valid") = check.plan.headers.clone();
        let body = ForwardBody::new(BodySource::empty(self.generation.timeouts().client_body_idle));
        let request = builder
            .header(
                header::HOST,
                HeaderValue::from_str(&check.address).map_err(|_| Unverified::Unknown)?,
            )
            .body(body)
            .map_err(|_| Unverified::Unknown)?;
        let (mut head, body) = request.into_parts();
        if let Err(error) = signer.sign(&mut head, &check.plan.payload_hash, self.proxy.clock.wall()) {
            tracing::warn!(%error, "signing a completion's verification failed");
            return Err(Unverified::Unknown);
        }
        Ok(http::Request::from_parts(head, body))
    }
}

/// `future`, or `Unknown` after `limit`.
async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> Result<T, Unverified> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| Unverified::Unknown)
}

/// The response for an answer core made itself.
fn answer_response(answer: Answer, request_id: &str) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(
        Full::new(bytes::Bytes::from(answer.body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(PROXY_REQUEST_ID, value);
    }
    response
}
