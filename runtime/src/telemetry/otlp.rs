//! OTLP/HTTP export (protobuf, no protoc: opentelemetry-otlp's generated types) to a
//! configured collector, over http or https (rustls, trusting `ca_file` only), off unless
//! `[telemetry.otlp]` is given.
//!
//! The SDK's periodic reader exports from its own thread; the HTTP client here hands each
//! export to the proxy's tokio runtime and waits for it there, bounded by the configured
//! timeout. A dead or slow collector costs one export's worth of memory at a time: a failed
//! export is dropped and counted (`storefront.otlp.export_failures`), never retried or queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use storefront_core::config::OtlpSection;

/// The exporter's HTTP client: hyper on the proxy's runtime.
#[derive(Clone)]
pub struct RuntimeClient {
    handle: tokio::runtime::Handle,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    timeout: Duration,
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RuntimeClient {
    /// A client for `section`'s collector running its requests on `handle`, each bounded by
    /// the section's timeout, counting failures in `failures`; `Err` names an unusable
    /// `ca_file`.
    pub fn new(
        handle: tokio::runtime::Handle,
        section: &OtlpSection,
        failures: Arc<AtomicU64>,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(file) = &section.ca_file {
            for certificate in
                crate::backend::tls::certificates(file).map_err(|error| format!("telemetry.otlp.ca_file: {error}"))?
            {
                roots
                    .add(certificate)
                    .map_err(|error| format!("telemetry.otlp.ca_file: unusable CA certificate in `{file}`: {error}"))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::backend::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("telemetry.otlp: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(RuntimeClient {
            handle,
            client,
            timeout: section.timeout.get(),
            failures,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let sent = self.handle.spawn(async move {
            let request = request.map(Full::new);
            let exchange = async {
                let response = client.request(request).await?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(answered) => answered,
                Err(_) => Err(format!("the collector did not answer within {timeout:?}").into()),
            }
        });
        let answered = match sent.await {
            Ok(answered) => answered,
            Err(error) => Err(Box::new(error) as HttpError),
        };
        match &answered {
            Ok(response) if response.status().is_success() => {}
            _ => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        answered
    }
}

/// What every export says of its source: `service.name` `storefront` and the version.
pub fn resource() -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name("storefront")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// The periodic reader exporting metrics to `section`'s collector, and the count of failed
/// exports; `Err` when no tokio runtime runs here or the exporter cannot be built.
pub fn metrics_reader(
    section: &OtlpSection,
) -> Result<
    (
        opentelemetry_sdk::metrics::PeriodicReader<opentelemetry_otlp::MetricExporter>,
        Arc<AtomicU64>,
    ),
    String,
> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "telemetry.otlp: no tokio runtime to export from".to_owned())?;
    let failures = Arc::new(AtomicU64::new(0));
    let client = RuntimeClient::new(handle, section, failures.clone())?;
    let endpoint = format!("{}/v1/metrics", section.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(section.timeout.get())
        .with_http_client(client)
        .build()
        .map_err(|error| format!("telemetry.otlp: {error}"))?;
    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter)
        .with_interval(section.interval.get())
        .build();
    Ok((reader, failures))
}
