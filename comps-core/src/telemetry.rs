//! OpenTelemetry traces: the `tracing` spans of every service exported over OTLP (HTTP,
//! protobuf) when an endpoint is configured, and the W3C trace context (`traceparent`,
//! `tracestate`) read from every incoming request and sent on every call to another service, so
//! one ChatQnA request is one trace across chatqna and the services it calls.
//!
//! Off unless `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT` (the
//! collector's base URL; `/v1/traces` is added) or OPEA's `TELEMETRY_ENDPOINT` is set; off, it
//! installs nothing and the propagation helpers return at once. The service is named by
//! `OTEL_SERVICE_NAME`, else its binary's name; `service.version` is the crate's. The batch
//! exporter's usual `OTEL_BSP_*` settings apply.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// The traces URL from `--otlp-endpoint`, which wins over the environment.
static FLAG_ENDPOINT: OnceLock<String> = OnceLock::new();

/// Export to `traces_url` whatever the environment says (`--otlp-endpoint`); before logging
/// starts.
pub fn set_endpoint(traces_url: String) {
    let _ = FLAG_ENDPOINT.set(traces_url);
}

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where spans go, if anywhere: `--otlp-endpoint` + `/v1/traces`, else
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`,
/// or OPEA's `TELEMETRY_ENDPOINT` as given.
pub fn endpoint() -> Option<String> {
    if let Some(url) = FLAG_ENDPOINT.get() {
        return Some(url.clone());
    }
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|b| format!("{}/v1/traces", b.trim_end_matches('/'))))
        .or_else(|| var("TELEMETRY_ENDPOINT"))
}

/// `OTEL_SERVICE_NAME`, else the binary's file name.
fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "comps".into())
    })
}

/// Whether spans are exported (and the trace context propagated).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// The exporter's HTTP client: our reqwest client, its requests run on the service's tokio
/// runtime (the SDK's batch exporter calls it from a thread of its own, outside the runtime).
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let task = self.runtime.spawn(async move {
            let mut req = client.request(parts.method, parts.uri.to_string()).body(body).timeout(EXPORT_TIMEOUT);
            for (k, v) in &parts.headers {
                req = req.header(k, v);
            }
            let resp = req.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.bytes().await?))
        });
        let (status, bytes) = task.await??;
        Ok(http::Response::builder().status(status).body(bytes)?)
    }
}

/// The layer that turns spans into OTLP spans, when an endpoint is configured and a tokio
/// runtime is running (call from within it). Only spans at `info` and above are exported,
/// whatever `RUST_LOG` lets the log show.
pub fn layer<S>() -> Option<Box<dyn Layer<S> + Send + Sync + 'static>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let url = endpoint()?;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        eprintln!("OTLP endpoint {url} ignored: tracing starts before the tokio runtime");
        return None;
    };
    let client = RuntimeClient { client: crate::utils::http_client().clone(), runtime };
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OTLP endpoint {url}: {e}; traces are not exported");
            return None;
        }
    };
    let resource = Resource::builder()
        .with_service_name(service_name())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new("telemetry.sdk.name", "comps-rs"))
        .build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("comps-rs");
    PROVIDER.set(provider).ok()?;
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
            .boxed(),
    )
}

/// Make the W3C trace context of `headers` (`traceparent`) the parent of `span`.
pub fn set_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    let _ = span.set_parent(cx);
}

/// The trace context of `span` as `traceparent` / `tracestate` headers for a call it makes.
pub fn headers_of(span: &tracing::Span) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if enabled() {
        TraceContextPropagator::new()
            .inject_context(&span.context(), &mut opentelemetry_http::HeaderInjector(&mut headers));
    }
    headers
}

/// The trace id of `span`, when spans are exported.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    if !enabled() {
        return None;
    }
    let id = span.context().span().span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

/// `make()`'s span when spans are exported, else a disabled span (nothing is allocated).
pub fn span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() { make() } else { tracing::Span::none() }
}

/// `f` on tokio's blocking pool inside a `tokenize` span (of `inputs` texts) under the current
/// span: tokenizing is real CPU work that stays off the async runtime, and a trace shows it.
pub async fn tokenize_off_runtime<T: Send + 'static>(
    inputs: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let span = span(|| tracing::info_span!("tokenize", inputs));
    tokio::task::spawn_blocking(move || span.in_scope(f)).await
}

/// Export what is buffered (at shutdown).
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}
