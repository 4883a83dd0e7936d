//! The token exchange: an STS-compatible `AssumeRoleWithWebIdentity` endpoint. A pod presents
//! its projected ServiceAccount token; the proxy has Kubernetes review it (TokenReview, with
//! the configured audience) and answers with session credentials in STS's XML, which
//! unmodified AWS SDKs then sign S3 requests with (`AWS_WEB_IDENTITY_TOKEN_FILE`,
//! `AWS_ROLE_ARN`, `AWS_ENDPOINT_URL_STS`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use storefront_core::config::StsSection;

use crate::auth::sessions::{SessionClaims, Sessions};

/// Longest request body accepted (a ServiceAccount token is a few KiB).
pub const BODY_MAX: usize = 64 * 1024;

/// The endpoint's state.
pub struct Sts {
    audience: String,
    duration: Duration,
    sessions: Sessions,
    client: kube::Client,
}

/// An STS answer: status and XML.
pub struct StsResponse {
    /// HTTP status.
    pub status: u16,
    /// The XML body.
    pub body: Bytes,
}

/// Whether a request is for the token exchange: `POST /` with a form body (as the SDKs send
/// it), or `Action=AssumeRoleWithWebIdentity` in the query.
pub fn is_sts_request(parts: &http::request::Parts) -> bool {
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let action = parts
        .uri
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "Action=AssumeRoleWithWebIdentity"));
    parts.uri.path() == "/" && ((parts.method == http::Method::POST && form) || action)
}

impl Sts {
    /// The endpoint of `section`, with `sessions`, reviewing tokens through `client`.
    pub fn new(section: &StsSection, sessions: Sessions, client: kube::Client) -> Sts {
        Sts {
            audience: section.audience.clone(),
            duration: section.duration.get(),
            sessions,
            client,
        }
    }

    /// Answer one exchange request (its query and form body merged).
    pub async fn handle(&self, query: Option<&str>, body: &[u8], request_id: &str, now: SystemTime) -> StsResponse {
        let mut fields: Vec<(String, String)> = form_urlencoded(query.unwrap_or("").as_bytes());
        fields.extend(form_urlencoded(body));
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        if field("Action") != Some("AssumeRoleWithWebIdentity") {
            return error(
                400,
                "InvalidAction",
                "only AssumeRoleWithWebIdentity is offered",
                request_id,
            );
        }
        let (Some(token), Some(role), Some(session)) =
            (field("WebIdentityToken"), field("RoleArn"), field("RoleSessionName"))
        else {
            return error(
                400,
                "MissingParameter",
                "WebIdentityToken, RoleArn and RoleSessionName are required",
                request_id,
            );
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = match Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(reviewed) => reviewed,
            Err(failure) => {
                tracing::warn!(error = %failure, "TokenReview failed");
                return error(
                    503,
                    "IDPCommunicationError",
                    "the token could not be reviewed",
                    request_id,
                );
            }
        };
        let status = reviewed.status.unwrap_or_default();
        let audience_ok = status
            .audiences
            .as_ref()
            .is_some_and(|audiences| audiences.iter().any(|audience| audience == &self.audience));
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let subject = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'));
        let (Some((namespace, account)), true, true) = (subject, status.authenticated == Some(true), audience_ok)
        else {
            tracing::info!(
                user = %username,
                error = status.error.as_deref().unwrap_or(""),
                "web identity token refused"
            );
            return error(
                403,
                "InvalidIdentityToken",
                "the token is not a valid ServiceAccount token for this audience",
                request_id,
            );
        };
        let pod = user
            .extra
            .as_ref()
            .and_then(|extra| extra.get("authentication.kubernetes.io/pod-name"))
            .and_then(|names| names.first().cloned());
        let requested = field("DurationSeconds")
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .map(Duration::from_secs);
        let lifetime = requested.map_or(self.duration, |requested| requested.min(self.duration));
        let expires = now + lifetime;
        let claims = SessionClaims {
            v: 1,
            ns: namespace.to_owned(),
            sa: account.to_owned(),
            pod,
            exp: expires.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs()),
        };
        let credentials = self.sessions.mint(&claims);
        tracing::info!(namespace, account, access_key = %credentials.access_key, "session issued");
        let xml = format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleWithWebIdentityResult>\
             <SubjectFromWebIdentityToken>{subject}</SubjectFromWebIdentityToken>\
             <Audience>{audience}</Audience>\
             <AssumedRoleUser><Arn>{role}/{session}</Arn><AssumedRoleId>{key}:{session}</AssumedRoleId></AssumedRoleUser>\
             <Credentials>\
             <SessionToken>{token}</SessionToken>\
             <SecretAccessKey>{secret}</SecretAccessKey>\
             <Expiration>{expiration}</Expiration>\
             <AccessKeyId>{key}</AccessKeyId>\
             </Credentials>\
             <Provider>storefront</Provider>\
             </AssumeRoleWithWebIdentityResult>\
             <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
             </AssumeRoleWithWebIdentityResponse>",
            subject = escape(&username),
            audience = escape(&self.audience),
            role = escape(role),
            session = escape(session),
            key = credentials.access_key,
            token = credentials.token,
            secret = credentials.secret_key,
            expiration = storefront_core::calendar::format_iso8601(credentials.expiration),
        );
        StsResponse {
            status: 200,
            body: Bytes::from(xml),
        }
    }
}

fn error(status: u16, code: &str, message: &str, request_id: &str) -> StsResponse {
    let xml = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        escape(message)
    );
    StsResponse {
        status,
        body: Bytes::from(xml),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `application/x-www-form-urlencoded` pairs.
fn form_urlencoded(input: &[u8]) -> Vec<(String, String)> {
    let decode = |text: &[u8]| {
        let spaced: Vec<u8> = text
            .iter()
            .map(|&byte| if byte == b'+' { b' ' } else { byte })
            .collect();
        percent_encoding::percent_decode(&spaced)
            .decode_utf8_lossy()
            .into_owned()
    };
    input
        .split(|&byte| byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&byte| byte == b'=') {
            Some(at) => (decode(&pair[..at]), decode(&pair[at + 1..])),
            None => (decode(pair), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_forms() {
        // Proves the date formatting against known instants and form decoding.
        assert_eq!(
            storefront_core::calendar::format_iso8601(UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            storefront_core::calendar::format_iso8601(UNIX_EPOCH + Duration::from_secs(1_795_774_500)),
            "2026-11-27T10:15:00Z"
        );
        assert_eq!(
            storefront_core::calendar::format_iso8601(UNIX_EPOCH + Duration::from_secs(951_825_600)),
            "2000-02-29T12:00:00Z"
        );
        assert_eq!(
            form_urlencoded(b"Action=AssumeRoleWithWebIdentity&RoleSessionName=a+b%2Fc&x"),
            vec![
                ("Action".to_owned(), "AssumeRoleWithWebIdentity".to_owned()),
                ("RoleSessionName".to_owned(), "a b/c".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
    }
}
