//! Browser form uploads (PostObject) over real IO: the fields before the file read with a
//! bound, the caller identified by the form's signature, the policy checked by core, then the
//! upload streamed to a backend as a form re-signed for it (see `storefront_core::s3::form`).
//!
//! The fields are parsed by multer from a tap on the client's body that keeps the raw bytes it
//! hands over: once multer has read the file part's headers, the proxy knows the fields, and
//! the raw bytes tell it where the file's first byte is. Everything from there on (the file,
//! the closing delimiter, any field after the file, which S3 ignores) is forwarded byte for
//! byte, so the backend's `Content-Length` is known before the file is read: the client's,
//! less the fields it sent, plus the fields the backend gets.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http_body::Body as _;
use hyper::body::Incoming;
use storefront_core::auth::Caller;
use storefront_core::exchange::Exchange;
use storefront_core::s3::form::{FIELDS_MAX, FileScan, Form, PostPolicy, SizeRange};
use storefront_core::s3::{ErrorCode, S3ErrorResponse};

use crate::backend::sign::{FormPolicy, Signer};
use crate::request::body::{BodyMode, BodySource};
use crate::request::generation::Generation;
use crate::request::response::{ProxyBody, error_response};
use crate::request::{ConnState, Proxy};
use crate::transport::Connect;

/// A form upload read up to its file: what every attempt needs to re-sign it.
pub struct FormUpload {
    form: Form,
    policy: Option<PostPolicy>,
    bucket: String,
    /// What the backend gets after the re-signed fields, when the client declared a length.
    rest_length: Option<u64>,
}

impl FormUpload {
    /// The backend's form fields for a pool signed by `signer` at `time`, and the length of
    /// the whole body that follows them, when known.
    pub fn prefix(&self, signer: &Signer, time: std::time::SystemTime) -> (Bytes, Option<u64>) {
        let policy = match &self.policy {
            Some(policy) => FormPolicy::Caller(policy),
            None => FormPolicy::Admitting {
                form: &self.form,
                bucket: &self.bucket,
            },
        };
        let key = self.form.key().unwrap_or_default();
        let fields = signer.form_fields(policy, &key, time);
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let prefix = self.form.forward_prefix(&pairs);
        let length = self.rest_length.map(|rest| rest + prefix.len() as u64);
        (prefix, length)
    }
}

/// True when `parts` is a browser form upload: a POST of `multipart/form-data` that core
/// classifies as PostObject (to a bucket, no sub-resource).
pub fn is_form_upload(parts: &http::request::Parts, generation: &Generation) -> bool {
    parts.method == http::Method::POST
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
        && storefront_core::s3::classify(parts, generation.snapshot.settings().classify_config())
            .is_ok_and(|request| request.operation == storefront_core::s3::Operation::PostObject)
}

/// Why the tap stopped handing bytes to the parser.
#[derive(Debug, thiserror::Error)]
enum TapError {
    #[error("the form's fields before its file exceed {FIELDS_MAX} bytes")]
    TooLong,
    #[error("the client's body broke off: {0}")]
    Client(String),
}

/// What the tap saw.
struct Tapped {
    incoming: Option<Incoming>,
    seen: Vec<Bytes>,
    total: usize,
    broke: bool,
}

/// The client's body as multer reads it, keeping every byte it hands over.
struct Tap(Arc<Mutex<Tapped>>);

impl futures::Stream for Tap {
    type Item = Result<Bytes, TapError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut tapped = self.0.lock().expect("tap lock is never poisoned");
        let Tapped {
            incoming,
            seen,
            total,
            broke,
        } = &mut *tapped;
        if *total > FIELDS_MAX {
            return Poll::Ready(Some(Err(TapError::TooLong)));
        }
        let Some(incoming) = incoming.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match Pin::new(&mut *incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        *total += data.len();
                        seen.push(data.clone());
                        return Poll::Ready(Some(Ok(data)));
                    }
                    _ => {}
                },
                Poll::Ready(Some(Err(error))) => {
                    *broke = true;
                    return Poll::Ready(Some(Err(TapError::Client(error.to_string()))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A form read up to its file.
struct FormRead {
    form: Form,
    /// The raw bytes read past the file part's head.
    rest: Bytes,
    /// The bytes before the file's first byte.
    taken: u64,
    incoming: Incoming,
}

fn malformed() -> S3ErrorResponse {
    S3ErrorResponse::new(
        ErrorCode::MalformedPostRequest,
        "The body of your POST request is not well-formed multipart/form-data.",
    )
}

fn too_long() -> S3ErrorResponse {
    S3ErrorResponse::new(
        ErrorCode::MaxPostPreDataLengthExceeded,
        "Your POST request fields preceding the upload file were too large.",
    )
}

/// Read the form in `incoming` (parts delimited by `boundary`) up to its file part, each wait
/// bounded by `idle`.
async fn read_form(incoming: Incoming, boundary: &str, idle: Duration) -> Result<FormRead, S3ErrorResponse> {
    let shared = Arc::new(Mutex::new(Tapped {
        incoming: Some(incoming),
        seen: Vec::new(),
        total: 0,
        broke: false,
    }));
    let timed_out = |_| S3ErrorResponse::new(ErrorCode::RequestTimeout, "the form's fields did not arrive in time");
    let failed = |shared: &Mutex<Tapped>| {
        let tapped = shared.lock().expect("tap lock is never poisoned");
        if tapped.total > FIELDS_MAX {
            too_long()
        } else if tapped.broke {
            S3ErrorResponse::new(ErrorCode::RequestTimeout, "the client's body broke off")
        } else {
            malformed()
        }
    };
    let mut multipart = multer::Multipart::new(Tap(shared.clone()), boundary);
    let mut fields = Vec::new();
    let (index, file_name) = loop {
        let field = match tokio::time::timeout(idle, multipart.next_field())
            .await
            .map_err(timed_out)?
        {
            Ok(Some(field)) => field,
            Ok(None) => {
                return Err(S3ErrorResponse::new(
                    ErrorCode::InvalidArgument,
                    "POST requires exactly one file upload per request.",
                ));
            }
            Err(_) => return Err(failed(&shared)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name.eq_ignore_ascii_case("file") {
            break (field.index(), field.file_name().map(str::to_owned));
        }
        let value = match tokio::time::timeout(idle, field.bytes()).await.map_err(timed_out)? {
            Ok(value) => String::from_utf8(value.to_vec()).map_err(|_| malformed())?,
            Err(_) => return Err(failed(&shared)),
        };
        fields.push((name, value));
    };
    drop(multipart);
    let tapped = std::mem::replace(
        &mut *shared.lock().expect("tap lock is never poisoned"),
        Tapped {
            incoming: None,
            seen: Vec::new(),
            total: 0,
            broke: false,
        },
    );
    let mut raw = BytesMut::with_capacity(tapped.total);
    for piece in &tapped.seen {
        raw.extend_from_slice(piece);
    }
    let raw = raw.freeze();
    let (head_start, data_start) = file_head(&raw, boundary, index).ok_or_else(malformed)?;
    if data_start > FIELDS_MAX {
        return Err(too_long());
    }
    Ok(FormRead {
        form: Form::new(boundary, fields, file_name, raw.slice(head_start..data_start)),
        rest: raw.slice(data_start..),
        taken: data_start as u64,
        incoming: tapped.incoming.ok_or_else(malformed)?,
    })
}

/// Where the head of part `index` (from 0) starts (its delimiter line) and ends (its first
/// data byte) in `raw`. Delimiters cannot occur inside a part, so the part's delimiter is the
/// `index`-th one.
fn file_head(raw: &[u8], boundary: &str, index: usize) -> Option<(usize, usize)> {
    let dash = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(dash.as_bytes());
    let start = finder
        .find_iter(raw)
        .filter(|&at| at == 0 || raw[..at].ends_with(b"\r\n"))
        .nth(index)?;
    let end = memchr::memmem::find(&raw[start..], b"\r\n\r\n")?;
    Some((start, start + end + 4))
}

impl<C: Connect> Proxy<C> {
    /// Serve a browser form upload: read its fields, identify the caller by their signature,
    /// check their policy, then run the exchange core starts for the form's key.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn handle_form(
        self: Arc<Self>,
        generation: Arc<Generation>,
        id: u64,
        request_id: String,
        parts: http::request::Parts,
        incoming: Incoming,
        peer: std::net::SocketAddr,
        conn: Arc<ConnState>,
    ) -> http::Response<ProxyBody> {
        let refuse = |error: S3ErrorResponse, caller: &Caller| {
            tracing::info!(%peer, code = error.code.as_str(), message = %error.message, "form upload refused");
            let (mut exchange, _) =
                Exchange::refuse(generation.state(), id, self.clock.now(), &parts, caller, error.clone());
            self.trace(&mut exchange, &parts.headers);
            generation.drain(&mut exchange);
            // The rest of the body is left unread: the connection closes.
            error_response(&error, parts.uri.path(), &request_id, true)
        };
        let anonymous = Caller::anonymous(Some(peer.ip()));
        let boundary = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| multer::parse_boundary(value).ok());
        let Some(boundary) = boundary else {
            return refuse(malformed(), &anonymous);
        };
        let idle = generation.timeouts().client_body_idle;
        let read = match read_form(incoming, &boundary, idle).await {
            Ok(read) => read,
            Err(error) => return refuse(error, &anonymous),
        };
        let wall = self.clock.wall();
        let caller = match generation.identify_form(&read.form, peer.ip(), wall) {
            Ok(caller) => caller,
            Err(rejection) => return refuse(S3ErrorResponse::new(rejection.code, rejection.message), &anonymous),
        };
        let bucket = storefront_core::s3::classify(&parts, generation.snapshot.settings().classify_config())
            .ok()
            .and_then(|request| request.bucket)
            .unwrap_or_default();
        let policy = match read.form.field("policy").map(PostPolicy::decode).transpose() {
            Ok(policy) => policy,
            Err(error) => return refuse(error, &caller),
        };
        let range = match &policy {
            Some(policy) => match policy.check(&read.form, &bucket, wall) {
                Ok(range) => range,
                Err(error) => return refuse(error, &caller),
            },
            None => SizeRange::ANY,
        };
        let key = match read.form.key() {
            Ok(key) => key,
            Err(error) => return refuse(error, &caller),
        };
        let (mut exchange, step) =
            Exchange::start_form(generation.snapshot.clone(), id, self.clock.now(), &parts, &caller, key);
        self.trace(&mut exchange, &parts.headers);
        generation.drain(&mut exchange);
        let rest_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(|length| length.saturating_sub(read.taken));
        let source = BodySource::new(read.incoming, false, None, BodyMode::Raw, idle);
        source.form(read.taken, read.rest, FileScan::new(&boundary, range));
        let upload = FormUpload {
            form: read.form,
            policy,
            bucket,
            rest_length,
        };
        self.drive(
            &generation,
            &parts,
            &source,
            &conn,
            exchange,
            step,
            &request_id,
            Some(&upload),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_head_is_found_after_its_fields_and_a_preamble() {
        let raw = b"preamble\r\n--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\na--Bc\r\n--B\r\n\
                    Content-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nDATA\r\n--B--\r\n";
        let (start, end) = file_head(raw, "B", 1).expect("the second part");
        assert!(raw[start..end].starts_with(b"--B\r\nContent-Disposition: form-data; name=\"file\""));
        assert!(raw[end..].starts_with(b"DATA"));
        let (start, _) = file_head(raw, "B", 0).expect("the first part");
        assert_eq!(start, 10, "a delimiter starts a line; `a--Bc` inside a value is none");
        assert_eq!(file_head(raw, "B", 3), None);
    }
}
