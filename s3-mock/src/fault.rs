//! Fault injection per node: slowness, error answers, and broken response bodies.
//!
//! Crash and restart live on the node itself (they stop the listener and drop connections);
//! everything else is here and applies per request, switchable at run time.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use crate::stats::{InFlight, NodeStats};

/// What a failing request answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorKind {
    /// `500 InternalError`.
    #[default]
    InternalError,
    /// `503 SlowDown`.
    SlowDown,
}

/// How response bodies misbehave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyFault {
    /// Bodies are sent normally.
    #[default]
    None,
    /// After this many body bytes, send nothing more and never finish (0: a stalled write:
    /// the head goes out, then nothing).
    StallAfter(u64),
    /// After this many body bytes, break the connection (the client sees the body end short
    /// of its Content-Length).
    ResetAfter(u64),
    /// Send at most this many body bytes per second.
    Throttle(u64),
}

/// A node's fault settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Multiplies the service time (1.0: healthy; 10.0: ten times slower).
    pub slow_factor: f64,
    /// Probability that a request stalls: its service time is multiplied by `stall_factor`
    /// too (a heavy tail: a garbage collection, a rebuild, a disk retrying a sector).
    pub stall_rate: f64,
    /// How much longer a stalled request takes.
    pub stall_factor: f64,
    /// Probability that a request is answered with `error_kind` instead of served.
    pub error_rate: f64,
    /// The error injected.
    pub error_kind: ErrorKind,
    /// Response-body misbehaviour.
    pub body: BodyFault,
    /// A CompleteMultipartUpload that succeeds loses its answer: the node commits the object,
    /// then closes the connection without answering, as a node crashing at that instant would.
    pub lose_completions: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            slow_factor: 1.0,
            stall_rate: 0.0,
            stall_factor: 1.0,
            error_rate: 0.0,
            error_kind: ErrorKind::InternalError,
            body: BodyFault::None,
            lose_completions: false,
        }
    }
}

/// The response body a node sends: the S3 layer's body, with the node's body fault applied,
/// bytes counted, and the request's in-flight slot released when it ends or is dropped.
pub struct FaultyBody<B> {
    inner: B,
    fault: BodyFault,
    sent: u64,
    stats: Arc<NodeStats>,
    in_flight: Option<InFlight>,
    /// The node's service slot, when it is held until the body is sent.
    slot: Option<OwnedSemaphorePermit>,
    /// A part of a frame held back by throttling, and the timer before it may go.
    pending: Option<Bytes>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The fault cut the body short: it must never look finished.
    truncated: bool,
    broken: bool,
}

/// How long a body about to break waits first, so that hyper flushes the head and the bytes
/// before the break (otherwise it may drop the connection with them unsent, and the client
/// would see no response at all rather than a short one).
const BREAK_DELAY: Duration = Duration::from_millis(20);

/// Largest body frame a node sends.
const FRAME_MAX: usize = 64 * 1024;

impl<B> FaultyBody<B> {
    /// Wrap `inner`; the request counts as in flight until the body ends or is dropped.
    pub(crate) fn new(
        inner: B,
        fault: BodyFault,
        stats: Arc<NodeStats>,
        in_flight: InFlight,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        FaultyBody {
            inner,
            fault,
            sent: 0,
            stats,
            in_flight: Some(in_flight),
            slot,
            pending: None,
            sleep: None,
            truncated: false,
            broken: false,
        }
    }

    fn finish(&mut self) {
        self.in_flight = None;
        self.slot = None;
    }
}

/// The error that breaks a connection mid-body.
#[derive(Debug, thiserror::Error)]
#[error("s3-mock: injected connection reset mid-body")]
pub struct InjectedReset;

impl<B> Body for FaultyBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        if this.broken {
            return Poll::Ready(Some(Err(Box::new(InjectedReset))));
        }
        if let BodyFault::StallAfter(limit) = this.fault
            && this.sent >= limit
        {
            // Never wake: the client waits until it gives up.
            return Poll::Pending;
        }
        let data = match this.pending.take() {
            Some(data) => data,
            None => match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(error))) => {
                    this.finish();
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            },
        };
        let mut data = data;
        // A node streams a body in bounded frames (as it reads it from disk), so a client that
        // stops reading holds the sender back once the connection's window is full. Throttling
        // sends a tenth of a second's worth at a time.
        let frame_max = match this.fault {
            BodyFault::Throttle(bytes_per_second) => ((bytes_per_second / 10).max(1) as usize).min(FRAME_MAX),
            _ => FRAME_MAX,
        };
        if data.len() > frame_max {
            this.pending = Some(data.split_off(frame_max));
        }
        match this.fault {
            BodyFault::None => {}
            BodyFault::StallAfter(limit) | BodyFault::ResetAfter(limit) => {
                let room = limit.saturating_sub(this.sent);
                if (data.len() as u64) > room {
                    data.truncate(room as usize);
                    this.truncated = true;
                    if matches!(this.fault, BodyFault::ResetAfter(_)) {
                        this.broken = true;
                        this.sleep = Some(Box::pin(tokio::time::sleep(BREAK_DELAY)));
                    }
                }
            }
            BodyFault::Throttle(bytes_per_second) => {
                // Wait for this frame to have "left" before the next one.
                let delay = Duration::from_secs_f64(data.len() as f64 / bytes_per_second.max(1) as f64);
                this.sleep = Some(Box::pin(tokio::time::sleep(delay)));
            }
        }
        this.sent += data.len() as u64;
        this.stats.bytes_sent(data.len() as u64);
        if data.is_empty() && this.truncated {
            // Nothing left to send before the fault: go straight to it (stall or break).
            return Pin::new(this).poll_frame(cx);
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        !self.truncated && self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The declared length stays the true one: a broken body must look short, not complete.
        let mut hint = self.inner.size_hint();
        if let Some(pending) = &self.pending {
            let held = pending.len() as u64;
            hint.set_lower(hint.lower() + held);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + held);
            }
        }
        hint
    }
}
