//! The client's request body on its way to a backend.
//!
//! A retry can go to another backend only if no request-body byte has reached a backend yet:
//! bodies are streamed, not buffered. So the client's body sits in a [`BodySource`] that every
//! attempt shares; an attempt's [`ForwardBody`] takes it out on its first poll (from then on
//! the body is committed to that attempt, and [`BodySource::started`] says so). An attempt that
//! fails before its body was polled leaves the source untouched for the next one.
//!
//! The body never ends cleanly unless the client's body did: if the client disconnects or
//! stalls past the idle timeout, the body yields an error, hyper aborts the backend request,
//! and the backend sees a broken connection instead of a complete (truncated) upload.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use std::collections::VecDeque;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use storefront_core::s3::chunked::{
    ChunkedDecoder, ChunkedError, ChunkedEvent, encode_unsigned_chunk, encode_unsigned_end,
};
use storefront_core::s3::form::FileScan;
use tokio::sync::Notify;

use crate::auth::sigv4::ChunkVerifier;

/// How the client's body is transformed on its way to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyMode {
    /// Forwarded byte for byte.
    Raw,
    /// A signed aws-chunked stream without trailers, decoded to the plain data (the backend
    /// request carries the decoded length and an unsigned payload).
    DecodeSigned,
    /// A signed aws-chunked stream with trailers, re-framed as unsigned aws-chunked with the
    /// same trailers (the checksum reaches the backend; the trailer signature does not).
    ReframeSigned,
}

/// How the client's body ended (as far as the proxy read it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Read to its end.
    Complete,
    /// The client connection broke mid-body.
    ClientGone,
    /// The client sent nothing for longer than the client-body idle timeout.
    IdleTimeout,
    /// The client's aws-chunked framing was broken.
    Malformed,
    /// A chunk signature of the client's signed aws-chunked upload did not verify.
    BadSignature,
    /// A form upload's file is outside its policy's size range (the code says which way).
    OutOfRange(storefront_core::s3::ErrorCode),
}

/// Errors a forwarded body yields to hyper (which then aborts the backend request).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The client broke off.
    #[error("client request body broke off: {0}")]
    Client(hyper::Error),
    /// The client stalled.
    #[error("client request body idle for {0:?}")]
    Idle(Duration),
    /// The aws-chunked framing is broken.
    #[error("malformed aws-chunked request body: {0}")]
    Malformed(ChunkedError),
    /// A form upload's file broke its policy's size range.
    #[error("form upload refused: {0}")]
    OutOfRange(&'static str),
    /// A second attempt tried to send a body the first one had started (a bug guard).
    #[error("request body already committed to another attempt")]
    AlreadyTaken,
}

struct SourceState {
    incoming: Incoming,
    /// Frames read before an attempt took the body: by `prime`, or a form's bytes after its
    /// fields (read to find the file).
    prefetched: VecDeque<Frame<Bytes>>,
    /// Watches a form upload's file for its end and size.
    file: Option<FileScan>,
    mode: BodyMode,
    decoder: ChunkedDecoder,
    /// Output waiting to be sent (decoded or re-framed pieces).
    queue: VecDeque<Bytes>,
    /// Trailers seen, for re-framing.
    trailers: Vec<(String, String)>,
    /// The source ended and its last output is queued.
    finished: bool,
    /// Checks the chunk signatures of a verified signed upload.
    verifier: Option<ChunkVerifier>,
}

/// The client's request body, shared by the attempts of one exchange.
pub struct BodySource {
    /// Boxed: the state is most of a kilobyte, and an attempt's body (which takes it) is
    /// moved with its request through every step of the attempt's future.
    slot: Mutex<Option<Box<SourceState>>>,
    started: AtomicBool,
    /// Body bytes taken from the client, as they arrived (before any decoding).
    received: AtomicU64,
    end: Mutex<Option<BodyEnd>>,
    completed_at: Mutex<Option<tokio::time::Instant>>,
    sent: Notify,
    /// When the backend side last pulled from the body, and whether that pull took a frame
    /// (then the next pull is the backend's to make: if it does not come, the backend is not
    /// accepting bytes) or found nothing yet (waiting on the client).
    pulled: Mutex<(tokio::time::Instant, bool)>,
    empty: bool,
    length: Option<u64>,
    idle_timeout: Duration,
    /// A copy of what was sent, when core asked for one ([`BodySource::keep`]); `keeping` says
    /// so without the lock.
    kept: Mutex<Option<Kept>>,
    keeping: AtomicBool,
}

/// A copy of a (small) request body as sent, up to a limit.
struct Kept {
    data: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl BodySource {
    /// Hold `incoming`. `empty` and `length` (of what is sent to the backend) come from the
    /// request's framing headers; `mode` says how the body is transformed.
    pub fn new(
        incoming: Incoming,
        empty: bool,
        length: Option<u64>,
        mode: BodyMode,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(BodySource {
            slot: Mutex::new((!empty).then(|| {
                Box::new(SourceState {
                    incoming,
                    prefetched: VecDeque::new(),
                    file: None,
                    mode,
                    decoder: ChunkedDecoder::new(),
                    queue: VecDeque::new(),
                    trailers: Vec::new(),
                    finished: false,
                    verifier: None,
                })
            })),
            started: AtomicBool::new(false),
            received: AtomicU64::new(0),
            end: Mutex::new(empty.then_some(BodyEnd::Complete)),
            completed_at: Mutex::new(empty.then(tokio::time::Instant::now)),
            sent: Notify::new(),
            pulled: Mutex::new((tokio::time::Instant::now(), false)),
            empty,
            length,
            idle_timeout,
            kept: Mutex::new(None),
            keeping: AtomicBool::new(false),
        })
    }

    /// A source with no body (for probes and bodyless requests built by the proxy).
    pub fn empty(idle_timeout: Duration) -> Arc<Self> {
        Arc::new(BodySource {
            slot: Mutex::new(None),
            started: AtomicBool::new(false),
            received: AtomicU64::new(0),
            end: Mutex::new(Some(BodyEnd::Complete)),
            completed_at: Mutex::new(Some(tokio::time::Instant::now())),
            sent: Notify::new(),
            pulled: Mutex::new((tokio::time::Instant::now(), false)),
            empty: true,
            length: Some(0),
            idle_timeout,
            kept: Mutex::new(None),
            keeping: AtomicBool::new(false),
        })
    }

    /// This body is a form upload's, whose fields (`taken` bytes) were read already: `rest`
    /// is what was read past them (the file's first bytes), sent first; `scan` watches the
    /// file's size as it streams.
    pub fn form(&self, taken: u64, rest: Bytes, scan: FileScan) {
        self.received.fetch_add(taken, Ordering::Relaxed);
        if let Some(state) = self.slot.lock().expect("slot lock is never poisoned").as_mut() {
            if !rest.is_empty() {
                state.prefetched.push_front(Frame::data(rest));
            }
            state.file = Some(scan);
        }
    }

    /// Verify the chunk signatures of this (signed aws-chunked) body as it streams.
    pub fn verify_chunks(&self, verifier: ChunkVerifier) {
        if let Some(state) = self.slot.lock().expect("slot lock is never poisoned").as_mut() {
            state.verifier = Some(verifier);
        }
    }

    /// Keep a copy of the body as it is sent, up to `limit` bytes (what core asks for with
    /// `Exchange::keeps_request_body`).
    pub fn keep(&self, limit: usize) {
        *self.kept.lock().expect("kept lock is never poisoned") = Some(Kept {
            data: Vec::new(),
            limit,
            overflowed: false,
        });
        self.keeping.store(true, Ordering::Release);
    }

    /// The copy of the body as sent, when one was kept and the body fitted its limit; taken
    /// (it is read once, by the verification).
    pub fn kept(&self) -> Option<Bytes> {
        let kept = self.kept.lock().expect("kept lock is never poisoned").take()?;
        (!kept.overflowed).then(|| Bytes::from(kept.data))
    }

    fn keep_copy(&self, data: &[u8]) {
        if !self.keeping.load(Ordering::Acquire) {
            return;
        }
        let mut kept = self.kept.lock().expect("kept lock is never poisoned");
        if let Some(kept) = kept.as_mut().filter(|kept| !kept.overflowed) {
            if kept.data.len() + data.len() > kept.limit {
                kept.overflowed = true;
                kept.data = Vec::new();
            } else {
                kept.data.extend_from_slice(data);
            }
        }
    }

    /// True when the request has no body.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// True once some body byte was handed to a backend attempt.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Body bytes taken from the client so far, as sent (aws-chunked framing included).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// How the body ended, if it has.
    pub fn end(&self) -> Option<BodyEnd> {
        *self.end.lock().expect("end lock is never poisoned")
    }

    /// When the whole body had been read, if it has.
    pub fn completed_at(&self) -> Option<tokio::time::Instant> {
        *self.completed_at.lock().expect("completed_at lock is never poisoned")
    }

    /// Resolve once the backend has not taken a body frame for `idle` although one was ready
    /// for it (its receive window stayed full); never while the body waits on the client or
    /// once it has been sent whole.
    pub async fn stalled(&self, idle: Duration) {
        loop {
            if self.end().is_some() {
                std::future::pending::<()>().await;
            }
            let (at, handed) = *self.pulled.lock().expect("pulled lock is never poisoned");
            let now = tokio::time::Instant::now();
            if handed && now >= at + idle {
                return;
            }
            tokio::time::sleep_until(if handed { at + idle } else { now + idle }).await;
        }
    }

    /// Wait until the whole body has been read (immediately for an empty body).
    pub async fn sent(&self) {
        loop {
            let notified = self.sent.notified();
            if self.end() == Some(BodyEnd::Complete) {
                return;
            }
            notified.await;
        }
    }

    /// Poll the client's body once, without committing it to any attempt. With `Expect:
    /// 100-continue` this is what makes hyper send `100 Continue` to the client at once; a
    /// frame that is already there is kept for the first attempt.
    pub async fn prime(&self) {
        std::future::poll_fn(|cx| {
            let mut slot = self.slot.lock().expect("slot lock is never poisoned");
            if let Some(state) = slot.as_mut()
                && state.prefetched.is_empty()
            {
                match Pin::new(&mut state.incoming).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => state.prefetched.push_back(frame),
                    Poll::Ready(Some(Err(_))) => self.finish(BodyEnd::ClientGone),
                    Poll::Ready(None) => {
                        // Keep an empty end-of-stream marker so the attempt ends cleanly.
                        state.prefetched.push_back(Frame::data(Bytes::new()));
                    }
                    Poll::Pending => {}
                }
            }
            Poll::Ready(())
        })
        .await;
    }

    fn finish(&self, end: BodyEnd) {
        let mut current = self.end.lock().expect("end lock is never poisoned");
        if current.is_none() {
            *current = Some(end);
            if end == BodyEnd::Complete {
                *self.completed_at.lock().expect("completed_at lock is never poisoned") =
                    Some(tokio::time::Instant::now());
                self.sent.notify_waiters();
            }
        }
    }
}

/// One attempt's view of the client's body.
pub struct ForwardBody {
    source: Arc<BodySource>,
    state: Option<Box<SourceState>>,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
    /// This attempt's own first bytes (a re-signed form's fields), sent before the client's.
    prefix: Option<Bytes>,
    /// The length this attempt sends, when it differs from the source's.
    length: Option<u64>,
}

impl ForwardBody {
    /// A body for one attempt.
    pub fn new(source: Arc<BodySource>) -> Self {
        let done = source.empty;
        let length = source.length;
        ForwardBody {
            source,
            state: None,
            idle: None,
            done,
            prefix: None,
            length,
        }
    }

    /// A body for one attempt that sends `prefix` first, then the client's body; `length` is
    /// the whole, when known.
    pub fn with_prefix(source: Arc<BodySource>, prefix: Bytes, length: Option<u64>) -> Self {
        ForwardBody {
            prefix: Some(prefix),
            length,
            ..ForwardBody::new(source)
        }
    }
}

/// Decode (and re-frame) one piece of a signed aws-chunked stream into the output queue.
fn transform(state: &mut SourceState, data: Bytes) -> Result<(), ChunkedError> {
    let mut events = Vec::new();
    state.decoder.feed(data, &mut events)?;
    for event in events {
        if let Some(verifier) = state.verifier.as_mut() {
            verifier.observe(&event)?;
        }
        match (event, state.mode) {
            (ChunkedEvent::Data(data), BodyMode::DecodeSigned) => state.queue.push_back(data),
            (ChunkedEvent::Data(data), BodyMode::ReframeSigned) => state.queue.push_back(encode_unsigned_chunk(&data)),
            (ChunkedEvent::Trailer { name, value }, BodyMode::ReframeSigned) if name != "x-amz-trailer-signature" => {
                state.trailers.push((name, value));
            }
            (ChunkedEvent::End, BodyMode::ReframeSigned) => state.queue.push_back(encode_unsigned_end(&state.trailers)),
            _ => {}
        }
    }
    Ok(())
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = ForwardError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ForwardError>>> {
        let polled = self.as_mut().poll_next(cx);
        let handed = matches!(polled, Poll::Ready(Some(Ok(_))));
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.source.keep_copy(data);
        }
        *self.source.pulled.lock().expect("pulled lock is never poisoned") = (tokio::time::Instant::now(), handed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) if self.state.is_none() => SizeHint::with_exact(length),
            _ => SizeHint::default(),
        }
    }
}

impl ForwardBody {
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ForwardError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.state.is_none() {
            let taken = this.source.slot.lock().expect("slot lock is never poisoned").take();
            match taken {
                Some(mut state) => {
                    this.source.started.store(true, Ordering::Release);
                    if let Some(prefix) = this.prefix.take() {
                        state.queue.push_front(prefix);
                    }
                    this.state = Some(state);
                }
                None => return Poll::Ready(Some(Err(ForwardError::AlreadyTaken))),
            }
        }
        let state = this.state.as_mut().expect("taken above");
        loop {
            if let Some(data) = state.queue.pop_front() {
                this.idle = None;
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if state.finished {
                this.done = true;
                this.source.finish(BodyEnd::Complete);
                return Poll::Ready(None);
            }
            let polled = match state.prefetched.pop_front() {
                Some(frame) if frame.data_ref().is_some_and(Bytes::is_empty) && state.incoming.is_end_stream() => {
                    Poll::Ready(None)
                }
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => Pin::new(&mut state.incoming).poll_frame(cx),
            };
            match polled {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle = None;
                    if let Some(data) = frame.data_ref() {
                        this.source.received.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    if state.mode == BodyMode::Raw {
                        if let (Some(scan), Some(data)) = (state.file.as_mut(), frame.data_ref())
                            && let Err(error) = scan.observe(data)
                        {
                            this.done = true;
                            this.source.finish(BodyEnd::OutOfRange(error.code));
                            return Poll::Ready(Some(Err(ForwardError::OutOfRange(error.code.as_str()))));
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    if let Ok(data) = frame.into_data()
                        && let Err(error) = transform(state, data)
                    {
                        this.done = true;
                        this.source.finish(if error == ChunkedError::BadSignature {
                            BodyEnd::BadSignature
                        } else {
                            BodyEnd::Malformed
                        });
                        return Poll::Ready(Some(Err(ForwardError::Malformed(error))));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    this.source.finish(BodyEnd::ClientGone);
                    return Poll::Ready(Some(Err(ForwardError::Client(error))));
                }
                Poll::Ready(None) => {
                    if state.mode != BodyMode::Raw
                        && let Err(error) = state.decoder.finish()
                    {
                        this.done = true;
                        this.source.finish(BodyEnd::Malformed);
                        return Poll::Ready(Some(Err(ForwardError::Malformed(error))));
                    }
                    state.finished = true;
                }
                Poll::Pending => {
                    let timeout = this.source.idle_timeout;
                    let sleep = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        this.source.finish(BodyEnd::IdleTimeout);
                        return Poll::Ready(Some(Err(ForwardError::Idle(timeout))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Target size of one write when a body arrives in small pieces.
pub const COALESCE_BYTES: usize = 64 * 1024;

/// What ended a coalescing run, held back to be yielded next.
enum Stash<E> {
    Frame(Frame<Bytes>),
    Error(E),
    End,
}

/// A body whose small data frames are joined with whatever more data is already available (up
/// to [`COALESCE_BYTES`]), so that a backend sending in small pieces costs one client write per
/// 64 KiB instead of one per piece. It never waits for data (it stops at the first `Pending`),
/// and it never loses what ends a run: an error, the end or trailers met while joining are
/// yielded on the next poll, so a broken body can never pass for a complete one.
pub struct Coalescing<B: Body> {
    inner: B,
    stash: Option<Stash<B::Error>>,
}

impl<B: Body<Data = Bytes> + Unpin> Coalescing<B> {
    /// Wrap `inner`.
    pub fn new(inner: B) -> Self {
        Coalescing { inner, stash: None }
    }

    /// The next frame, joined where possible.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let first = match self.stash.take() {
            Some(Stash::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
            Some(Stash::Error(error)) => return Poll::Ready(Some(Err(error))),
            Some(Stash::End) => return Poll::Ready(None),
            None => match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            },
        };
        if first.len() >= COALESCE_BYTES || self.inner.is_end_stream() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let mut joined: Option<bytes::BytesMut> = None;
        while joined.as_ref().map_or(first.len(), bytes::BytesMut::len) < COALESCE_BYTES && !self.inner.is_end_stream()
        {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(more) => {
                        let buffer = joined.get_or_insert_with(|| {
                            let mut buffer = bytes::BytesMut::with_capacity(COALESCE_BYTES + more.len());
                            buffer.extend_from_slice(&first);
                            buffer
                        });
                        buffer.extend_from_slice(&more);
                    }
                    Err(trailers) => {
                        self.stash = Some(Stash::Frame(trailers));
                        break;
                    }
                },
                Poll::Ready(Some(Err(error))) => {
                    self.stash = Some(Stash::Error(error));
                    break;
                }
                Poll::Ready(None) => {
                    self.stash = Some(Stash::End);
                    break;
                }
                Poll::Pending => break,
            }
        }
        Poll::Ready(Some(Ok(Frame::data(joined.map_or(first, bytes::BytesMut::freeze)))))
    }

    /// True when nothing more will come (nothing held back, and the inner body is done).
    pub fn is_end_stream(&self) -> bool {
        self.stash.is_none() && self.inner.is_end_stream()
    }

    /// The inner body's size hint (joining moves bytes, it does not add or drop any).
    pub fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use http_body_util::StreamBody;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Broken;

    type Frames = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Broken>>>>;

    fn body(frames: Vec<Result<Frame<Bytes>, Broken>>) -> Coalescing<Frames> {
        Coalescing::new(StreamBody::new(stream::iter(frames)))
    }

    fn poll<B: Body<Data = Bytes> + Unpin>(body: &mut Coalescing<B>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let waker = futures::task::noop_waker();
        body.poll_frame(&mut Context::from_waker(&waker))
    }

    #[test]
    fn ready_pieces_are_joined_and_an_error_after_them_is_not_lost() {
        // Proves the safety of joining: data then an error, all ready at once, gives the joined
        // data and then the error (never a clean end after the data).
        let mut joined = body(vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"def"))),
            Err(Broken),
        ]);
        let Poll::Ready(Some(Ok(frame))) = poll(&mut joined) else {
            panic!("data first")
        };
        assert_eq!(frame.into_data().ok(), Some(Bytes::from_static(b"abcdef")));
        assert!(!joined.is_end_stream(), "the held-back error keeps the stream open");
        assert!(matches!(poll(&mut joined), Poll::Ready(Some(Err(Broken)))));
    }

    #[test]
    fn joining_stops_at_the_limit_and_keeps_the_end_and_trailers() {
        // Proves the size bound, and that trailers and the end survive a joining run.
        let piece = Bytes::from(vec![1u8; COALESCE_BYTES / 2]);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-amz-checksum-crc32", http::HeaderValue::from_static("AAAAAA=="));
        let mut joined = body(vec![
            Ok(Frame::data(piece.clone())),
            Ok(Frame::data(piece.clone())),
            Ok(Frame::data(piece.clone())),
            Ok(Frame::trailers(trailers.clone())),
        ]);
        let Poll::Ready(Some(Ok(frame))) = poll(&mut joined) else {
            panic!("data")
        };
        assert_eq!(frame.into_data().map(|d| d.len()).ok(), Some(COALESCE_BYTES));
        let Poll::Ready(Some(Ok(frame))) = poll(&mut joined) else {
            panic!("data")
        };
        assert_eq!(frame.into_data().map(|d| d.len()).ok(), Some(COALESCE_BYTES / 2));
        let Poll::Ready(Some(Ok(frame))) = poll(&mut joined) else {
            panic!("trailers")
        };
        assert_eq!(frame.into_trailers().ok(), Some(trailers));
        assert!(matches!(poll(&mut joined), Poll::Ready(None)));
    }
}
