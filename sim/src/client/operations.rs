//! The HTTP side of a client operation: the requests it makes (signed as its group signs),
//! SDK-style retries, the token exchange, and request bodies that wait for `100 Continue`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::{BUCKET, Class, Manners, Pool};
use crate::scenario::Signing;
use crate::sign::{Keys, sign_request, wall_clock};

/// Ask the proxy's token exchange for session credentials with the ServiceAccount `token`
/// (`AssumeRoleWithWebIdentity`, as an SDK's web identity provider does): the answer, and the
/// credentials if it gave some.
pub(super) async fn assume_role(pool: &Pool, token: &str, session: &str, manners: Manners) -> (Answer, Option<Keys>) {
    let form = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
        form_encode("arn:aws:iam::000000000000:role/sim"),
        form_encode(session),
        form_encode(token)
    );
    let call = Call {
        body: Bytes::from(form),
        keep_body: true,
        content_type: Some("application/x-www-form-urlencoded"),
        ..Call::new("POST", "/".to_owned())
    };
    let answer = with_retries(pool, &call, manners).await;
    if answer.class != Class::Ok {
        return (answer, None);
    }
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    let field = |name: &str| {
        text.split_once(&format!("<{name}>"))
            .and_then(|(_, rest)| rest.split_once(&format!("</{name}>")))
            .map(|(value, _)| value.to_owned())
    };
    match (field("AccessKeyId"), field("SecretAccessKey"), field("SessionToken")) {
        (Some(access_key), Some(secret_key), Some(session_token)) => (
            answer,
            Some(Keys {
                access_key,
                secret_key,
                session_token: Some(session_token),
            }),
        ),
        _ => (
            Answer {
                class: Class::ServerError,
                ..answer
            },
            None,
        ),
    }
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// One HTTP exchange to make.
struct Call {
    method: &'static str,
    path: String,
    body: Bytes,
    range: Option<&'static str>,
    /// Keep the response body (small XML answers the client needs).
    keep_body: bool,
    /// The body's `Content-Type`, if it has one that matters (the token exchange's form).
    content_type: Option<&'static str>,
}

impl Call {
    fn new(method: &'static str, path: String) -> Call {
        Call {
            method,
            path,
            body: Bytes::new(),
            range: None,
            keep_body: false,
            content_type: None,
        }
    }
}

/// What came back.
#[derive(Default)]
pub(super) struct Answer {
    pub(super) class: Class,
    pub(super) ttfb: Option<Duration>,
    etag: Option<String>,
    body: Bytes,
}

/// One client operation (a multipart upload is several HTTP requests), each HTTP request
/// retried as the SDKs do.
pub(super) async fn operate(
    pool: &Pool,
    operation: &'static str,
    key: &str,
    size: usize,
    parts: usize,
    manners: Manners,
) -> Answer {
    let object = format!("/{BUCKET}/{key}");
    let call = match operation {
        "PutObject" => Call {
            body: Bytes::from(vec![7u8; size]),
            ..Call::new("PUT", object)
        },
        "HeadObject" => Call::new("HEAD", object),
        "ListObjectsV2" => Call::new("GET", format!("/{BUCKET}?list-type=2&prefix=objects%2F&max-keys=20")),
        "GetObjectRange" => Call {
            range: Some("bytes=0-1023"),
            ..Call::new("GET", object)
        },
        "MultipartUpload" => return multipart(pool, &object, size, parts, manners).await,
        _ => Call::new("GET", object),
    };
    with_retries(pool, &call, manners).await
}

/// Create, upload `parts` parts, complete; the first failure ends the operation (and aborts
/// the upload, best effort).
async fn multipart(pool: &Pool, object: &str, size: usize, parts: usize, manners: Manners) -> Answer {
    let created = with_retries(
        pool,
        &Call {
            keep_body: true,
            ..Call::new("POST", format!("{object}?uploads"))
        },
        manners,
    )
    .await;
    if created.class != Class::Ok {
        return created;
    }
    let text = String::from_utf8_lossy(&created.body);
    let Some(upload_id) = text
        .split_once("<UploadId>")
        .and_then(|(_, rest)| rest.split_once("</UploadId>"))
        .map(|(id, _)| id.to_owned())
    else {
        return Answer {
            class: Class::ServerError,
            ..created
        };
    };
    let mut complete = String::from("<CompleteMultipartUpload>");
    for number in 1..=parts {
        let part = with_retries(
            pool,
            &Call {
                body: Bytes::from(vec![number as u8; size]),
                ..Call::new("PUT", format!("{object}?partNumber={number}&uploadId={upload_id}"))
            },
            manners,
        )
        .await;
        let etag = part.etag.clone().unwrap_or_default();
        if part.class != Class::Ok {
            let _ = attempt(
                pool,
                &Call::new("DELETE", format!("{object}?uploadId={upload_id}")),
                manners,
            )
            .await;
            return Answer {
                ttfb: created.ttfb,
                ..part
            };
        }
        complete.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    complete.push_str("</CompleteMultipartUpload>");
    let done = with_retries(
        pool,
        &Call {
            body: Bytes::from(complete),
            keep_body: true,
            ..Call::new("POST", format!("{object}?uploadId={upload_id}"))
        },
        manners,
    )
    .await;
    // CompleteMultipartUpload can fail inside a 200 (an <Error> body).
    let class = if done.class == Class::Ok && done.body.windows(7).any(|window| window == b"<Error>") {
        Class::ServerError
    } else {
        done.class
    };
    Answer {
        class,
        ttfb: created.ttfb,
        ..done
    }
}

/// An HTTP request, retried (with SDK-style backoff: 50 ms, 100 ms, ...) when answered 5xx or
/// broken off.
async fn with_retries(pool: &Pool, call: &Call, manners: Manners) -> Answer {
    let mut tries = 0;
    loop {
        let answer = attempt(pool, call, manners).await;
        let retryable = matches!(
            answer.class,
            Class::SlowDown | Class::ServerError | Class::Connect | Class::Reset
        );
        if !retryable || tries >= manners.retries {
            return answer;
        }
        pool.retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50) * 2u32.pow(tries)).await;
        tries += 1;
    }
}

/// One try of an HTTP request on a pooled connection.
async fn attempt(pool: &Pool, call: &Call, manners: Manners) -> Answer {
    let failed = |class| Answer {
        class,
        ..Answer::default()
    };
    let Ok(_permit) = pool.permits.acquire().await else {
        return failed(Class::Connect);
    };
    let mut connection = match pool.take_idle() {
        Some(connection) => connection,
        None => match pool.connect().await {
            Ok(connection) => connection,
            Err(class) => return failed(class),
        },
    };
    let issued = Instant::now();
    let mut builder = http::Request::builder()
        .method(call.method)
        .uri(call.path.as_str())
        .header(http::header::HOST, "s3.cluster");
    if let Some(range) = call.range {
        builder = builder.header(http::header::RANGE, range);
    }
    if let Some(content_type) = call.content_type {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    let expect = manners
        .continue_wait
        .filter(|_| call.method == "PUT" && !call.body.is_empty());
    if expect.is_some() {
        builder = builder.header(http::header::EXPECT, "100-continue");
    }
    let mut head = builder.body(()).expect("valid request");
    let data = match &pool.keys {
        Some(keys) if pool.signing != Signing::None => {
            match sign_request(&mut head, call.body.clone(), pool.signing, keys, wall_clock(pool.start)) {
                Ok(data) => data,
                // The scenario's keys always sign; a failure here is the simulation's bug.
                Err(error) => panic!("signing a simulated request failed: {error}"),
            }
        }
        _ => call.body.clone(),
    };
    let (body, continued) = match expect {
        Some(wait) => {
            let (tell, heard) = tokio::sync::oneshot::channel::<()>();
            (RequestBody::after_continue(data, heard, wait), Some(tell))
        }
        None => (RequestBody::now(data), None),
    };
    let (parts, ()) = head.into_parts();
    let mut request = http::Request::from_parts(parts, body);
    if let Some(tell) = continued {
        let tell = Mutex::new(Some(tell));
        hyper::ext::on_informational(&mut request, move |response| {
            if response.status() == http::StatusCode::CONTINUE
                && let Some(tell) = tell.lock().expect("single-threaded host").take()
            {
                let _ = tell.send(());
            }
        });
    }
    let read_rate = manners.read_rate;
    let keep_body = call.keep_body;
    let head_only = call.method == "HEAD";
    let exchange = async {
        connection.sender.ready().await.map_err(|_| Class::Reset)?;
        let response = connection
            .sender
            .send_request(request)
            .await
            .map_err(|_| Class::Reset)?;
        let ttfb = issued.elapsed();
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let declared: Option<usize> = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let mut body = response.into_body();
        let mut received = 0usize;
        let mut kept = Vec::new();
        if read_rate == Some(0) && !head_only && declared != Some(0) {
            // Stops reading: the response is never consumed; the request times out.
            std::future::pending::<()>().await;
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Class::Reset)?;
            if let Some(data) = frame.data_ref() {
                received += data.len();
                if keep_body {
                    kept.extend_from_slice(data);
                }
                if let Some(rate) = read_rate {
                    tokio::time::sleep(Duration::from_secs_f64(data.len() as f64 / rate.max(1) as f64)).await;
                }
            }
        }
        if !head_only && declared.is_some_and(|declared| received < declared) {
            return Err(Class::Truncated);
        }
        let class = match status {
            200..=399 => Class::Ok,
            403 => Class::Denied,
            503 => Class::SlowDown,
            500..=599 => Class::ServerError,
            _ => Class::ClientError,
        };
        Ok(Answer {
            class,
            ttfb: Some(ttfb),
            etag,
            body: Bytes::from(kept),
        })
    };
    match tokio::time::timeout(manners.timeout, exchange).await {
        Ok(Ok(answer)) => {
            pool.give_back(connection);
            answer
        }
        Ok(Err(class)) => failed(class),
        Err(_) => failed(Class::Timeout),
    }
}

/// A request body: all at once, or (with `Expect: 100-continue`) once the `100 Continue`
/// arrives or the wait runs out, whichever is first.
pub struct RequestBody {
    data: Option<Bytes>,
    gate: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl RequestBody {
    fn now(data: Bytes) -> RequestBody {
        RequestBody {
            data: (!data.is_empty()).then_some(data),
            gate: None,
        }
    }

    fn after_continue(data: Bytes, heard: tokio::sync::oneshot::Receiver<()>, wait: Duration) -> RequestBody {
        RequestBody {
            data: Some(data),
            gate: Some(Box::pin(async move {
                let _ = tokio::time::timeout(wait, heard).await;
            })),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(gate) = self.gate.as_mut() {
            if gate.as_mut().poll(context).is_pending() {
                return Poll::Pending;
            }
            self.gate = None;
        }
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}
