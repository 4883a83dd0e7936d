//! A hedge's IO: the same bodyless request to a second backend, on a connection of its own,
//! up to its response head. It decides nothing: the attempt that started it reports how it
//! ended to core, which says whether it won ([`storefront_core::exchange::Exchange`]'s
//! `handle_hedge_*` calls). Dropped unfinished (the other attempt answered first), it drops
//! its connection, which is closed, never pooled mid-request.

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use storefront_core::exchange::Dispatch;
use storefront_core::outcome::{AttemptOutcome, Phase};
use storefront_core::time::Instant;
use storefront_core::trace::TraceContext;

use crate::backend::pool::{Checkout, Lease};
use crate::request::Proxy;
use crate::request::attempt::backend_request;
use crate::request::body::BodySource;
use crate::request::generation::Generation;
use crate::transport::Connect;

/// How a hedge ended.
pub(crate) enum HedgeEnd {
    /// Its response head arrived (boxed: the rare case, kept out of every attempt's future).
    Head(Box<HedgeHead>),
    /// It failed before a head.
    Failed {
        outcome: AttemptOutcome,
        sent_at: Option<Instant>,
    },
}

/// A hedge's response head, its connection, and when its request went out.
pub(crate) struct HedgeHead {
    pub(crate) response: http::Response<Incoming>,
    pub(crate) lease: Lease,
    pub(crate) sent_at: Instant,
}

/// Send `dispatch` (a bodyless request, so `source` is empty and never read) and wait for its
/// head. A hedge never waits for a connection slot (that wait is the proxy's own limit and
/// would only add to the delay it is meant to save); its dial is bounded by the connect
/// timeout, its wait for the head by the deadlines of the attempt that awaits it.
pub(crate) async fn run<C: Connect>(
    proxy: Arc<Proxy<C>>,
    generation: Arc<Generation>,
    dispatch: Dispatch,
    source: Arc<BodySource>,
    trace: Option<TraceContext>,
) -> HedgeEnd {
    let failed = |outcome: AttemptOutcome| HedgeEnd::Failed { outcome, sent_at: None };
    let Some(settings) = generation.pool_settings(dispatch.pool.0) else {
        return failed(AttemptOutcome::ProxyFault);
    };
    let slot = match proxy.connections.slot(&dispatch.address, settings) {
        Checkout::Ready(slot) => slot,
        Checkout::Wait(_) | Checkout::Full => return failed(AttemptOutcome::Abandoned),
    };
    let mut lease = match proxy.connections.reuse(slot).await {
        Ok(lease) => lease,
        Err(slot) => {
            let connect = generation.timeouts().backend_connect;
            match tokio::time::timeout(connect, proxy.connections.dial(slot, &dispatch.address)).await {
                Ok(Ok(lease)) => lease,
                Ok(Err(_)) => return failed(AttemptOutcome::ConnectFailed),
                Err(_) => return failed(AttemptOutcome::Timeout(Phase::BackendConnect)),
            }
        }
    };
    let Some(signer) = generation.signer(dispatch.pool.0) else {
        return failed(AttemptOutcome::ProxyFault);
    };
    let Ok(request) = backend_request(&dispatch.plan, &dispatch.address, source, None) else {
        return failed(AttemptOutcome::ProxyFault);
    };
    let (mut head, body) = request.into_parts();
    if let (Some(tracer), Some(trace)) = (&proxy.tracer, &trace) {
        tracer.inject(trace, dispatch.attempt, &mut head.headers);
    }
    if signer
        .sign(&mut head, &dispatch.plan.payload_hash, proxy.clock.wall())
        .is_err()
    {
        return failed(AttemptOutcome::ProxyFault);
    }
    let mut pending = Some(http::Request::from_parts(head, body));
    loop {
        let request = pending.take().expect("a request to send");
        let sent_at = proxy.clock.now();
        match lease.sender().try_send_request(request).await {
            Ok(response) => {
                return HedgeEnd::Head(Box::new(HedgeHead {
                    response,
                    lease,
                    sent_at,
                }));
            }
            Err(mut error) => match error.take_message() {
                // A pooled connection the backend had closed: nothing went out; once more on
                // a fresh one.
                Some(unsent) if lease.reused => match proxy.connections.open(&dispatch.address, settings).await {
                    Ok(sender) => {
                        lease.replace(sender);
                        pending = Some(unsent);
                    }
                    Err(_) => return failed(AttemptOutcome::ConnectFailed),
                },
                _ => {
                    return HedgeEnd::Failed {
                        outcome: AttemptOutcome::Reset {
                            response_started: false,
                        },
                        sent_at: Some(sent_at),
                    };
                }
            },
        }
    }
}

/// Wait for the hedge in `hedge`, or forever when there is none.
pub(crate) async fn ended<F: Future<Output = HedgeEnd> + Unpin>(hedge: &mut Option<F>) -> HedgeEnd {
    match hedge {
        Some(hedge) => hedge.await,
        None => std::future::pending().await,
    }
}
