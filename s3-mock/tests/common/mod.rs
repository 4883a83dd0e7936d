//! Helpers shared by s3-mock's integration tests: a cluster on loopback and SDK clients.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, retry::RetryConfig};
use aws_smithy_http_client::tls;
use s3_mock::{ClusterConfig, MockCluster, NodeHandle};

pub const ACCESS_KEY: &str = "test-access";
pub const SECRET_KEY: &str = "test-secret";

/// A cluster of `nodes` on loopback with the test credentials.
pub async fn cluster(nodes: usize, mut config: ClusterConfig) -> Vec<NodeHandle> {
    config.credentials = Some((ACCESS_KEY.into(), SECRET_KEY.into()));
    anonymous_cluster(nodes, config).await
}

/// A cluster of `nodes` on loopback with `config`'s credentials (none: anonymous).
pub async fn anonymous_cluster(nodes: usize, mut config: ClusterConfig) -> Vec<NodeHandle> {
    config.nodes = nodes;
    MockCluster::start_tcp(&config, IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
        .await
        .expect("loopback ports are free")
}

/// An aws-sdk-s3 client for `address` (path style, no SDK retries so tests see each answer).
pub fn client(address: SocketAddr, secret: &str) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .http_client(http)
        .endpoint_url(format!("http://{address}"))
        .force_path_style(true)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, secret, None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// One client per node, in node order.
pub fn clients(handles: &[NodeHandle]) -> Vec<aws_sdk_s3::Client> {
    handles
        .iter()
        .map(|handle| client(handle.address().expect("node bound"), SECRET_KEY))
        .collect()
}

/// The S3 error code of an SDK error, if it carries one.
pub fn code<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> Option<String>
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    error.as_service_error().and_then(|e| e.code()).map(str::to_owned)
}

/// The HTTP status of an SDK error's raw response, if any.
pub fn status<E>(error: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> Option<u16> {
    error.raw_response().map(|response| response.status().as_u16())
}
