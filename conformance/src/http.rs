//! Raw HTTP requests, for what SDKs do not send: browser forms and presigned URLs fetched as a
//! browser or `curl` would (hyper's HTTP/1.1 client over one fresh connection).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// An answer: status, headers, whole body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The `<Code>` of an S3 error body, if there is one.
    pub fn code(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let start = text.find("<Code>")? + "<Code>".len();
        let end = text[start..].find("</Code>")? + start;
        Some(text[start..end].to_owned())
    }

    /// The status and error code, for a failure message.
    pub fn summary(&self) -> String {
        format!("{} {}", self.status, self.code().unwrap_or_default())
    }
}

/// Send `method target` (origin form: path and query) with `headers` and `body` to `endpoint`
/// (`http://host:port`) and read the whole answer.
pub async fn send(
    endpoint: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<Answer, String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("{endpoint}: raw requests need an http:// endpoint"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|error| format!("connect {authority}: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|error| format!("handshake: {error}"))?;
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, authority);
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(body))
        .map_err(|error| format!("request: {error}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("{method} {target}: {error}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| format!("{method} {target} body: {error}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// The path and query of an absolute URL.
pub fn origin_form(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.find('/') {
        Some(at) => rest[at..].to_owned(),
        None => "/".to_owned(),
    }
}
