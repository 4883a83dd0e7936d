//! An OpenTelemetry collector on loopback: it hands every OTLP/HTTP export it receives to the
//! test (path, content type, protobuf body) and answers as told.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};

/// What the receiver got: path, content type, body.
pub type Received = (String, String, Bytes);

/// How the collector answers an export.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// An empty success at once.
    Success,
    /// Never: the export is read whole, then the collector holds it unanswered (a stalled
    /// collector).
    Never,
}

/// A collector on a free loopback port answering every export with `answer`.
pub async fn start(answer: Answer) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    serve(answer, None).await
}

/// [`start`] over TLS with `tls`'s certificate.
pub async fn start_tls(
    answer: Answer,
    tls: rustls::ServerConfig,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    serve(answer, Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls)))).await
}

async fn serve(
    answer: Answer,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("bound");
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sender = sender.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let content_type = request
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|body| body.to_bytes())
                            .unwrap_or_default();
                        let _ = sender.send((path, content_type, body));
                        if let Answer::Never = answer {
                            std::future::pending::<()>().await;
                        }
                        let mut answer = http::Response::new(Full::new(Bytes::new()));
                        answer.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, std::convert::Infallible>(answer)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                        }
                        Err(_) => return,
                    },
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                };
            });
        }
    });
    (address, received)
}

/// The string value of attribute `key`, if present.
pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(text) => Some(text.as_str()),
            _ => None,
        })
}

/// The integer value of attribute `key`, if present.
pub fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(value) => Some(*value),
            _ => None,
        })
}
