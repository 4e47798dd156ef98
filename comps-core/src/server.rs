//! HTTP scaffolding: from a [`MicroService`] plus routes, one call serves it with health,
//! statistics, metrics, errors, limits, auth, request ids, logging and graceful shutdown.
//!
//! ```no_run
//! use axum::routing::post;
//! use comps_core::{MicroService, Server, ServerConfig, Json, TextDoc, ServiceResult};
//!
//! async fn echo(Json(doc): Json<TextDoc>) -> ServiceResult<Json<TextDoc>> {
//!     Ok(Json(TextDoc::new(doc.text_str())))
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let svc = MicroService::new("echo").host("127.0.0.1").port(0).endpoint("/v1/echo");
//! Server::new(svc, ServerConfig::default()).route("/v1/echo", post(echo)).bind().await?.serve().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::serve::ListenerExt;
use http_body::Frame;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::service::MicroService;
use crate::stats::StatisticsRegistry;

/// Paths that never need the API key and never count against the concurrency limit, so
/// liveness probes and scrapers keep working when a service is busy or locked.
pub const OPEN_PATHS: &[&str] =
    &["/v1/health_check", "/v1/health", "/health", "/metrics", crate::openapi::OPENAPI_PATH, crate::openapi::DOCS_PATH];

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags every binary shares; flatten into its clap struct with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Address to listen on.
    #[arg(long, env = "COMPS_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on (each binary has its own default).
    #[arg(long, env = "COMPS_PORT")]
    pub port: Option<u16>,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "COMPS_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a request may take until its response starts (408 after).
    #[arg(long, env = "COMPS_REQUEST_TIMEOUT", default_value_t = 600)]
    pub request_timeout_secs: u64,
    /// Requests served at once; more are refused with 429 immediately.
    #[arg(long, env = "COMPS_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// Bearer key required on every route except health and metrics. A flag is visible in the
    /// process list: prefer the environment variable or --api-key-file.
    #[arg(long, env = "COMPS_API_KEY", hide_env_values = true, conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// File holding the bearer key (surrounding whitespace trimmed), read at start-up; an
    /// unreadable or empty file stops the start.
    #[arg(long, env = "COMPS_API_KEY_FILE", value_name = "PATH", value_parser = ApiKeyFile::read)]
    pub api_key_file: Option<ApiKeyFile>,
    /// Log format.
    #[arg(long, env = "COMPS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Allowed CORS origins, comma separated; `*` allows any (OPEA's default).
    #[arg(long, env = "COMPS_CORS_ALLOW_ORIGINS", value_delimiter = ',', default_value = "*")]
    pub cors_allow_origins: Vec<String>,
    /// Export traces over OTLP/HTTP to this collector (its base URL; `/v1/traces` is added).
    /// Without it, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT or OPEA's
    /// TELEMETRY_ENDPOINT; with none, nothing is exported.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// On SIGTERM, keep serving this many seconds with /v1/health and /v1/health_check answering
    /// 503 ("shutting down"), so a load balancer or Kubernetes takes the replica out before it
    /// stops accepting; then in-flight requests finish. 0 stops accepting at once.
    #[arg(long, env = "COMPS_SHUTDOWN_DRAIN_SECS", default_value_t = 0)]
    pub shutdown_drain_secs: u64,
}

impl CommonArgs {
    /// The defaults, listening on a free loopback port (for tests and embedding).
    pub fn local() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: Some(0),
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_secs: 600,
            max_concurrent_requests: 1024,
            api_key: None,
            api_key_file: None,
            log_format: LogFormat::Text,
            cors_allow_origins: vec!["*".into()],
            otlp_endpoint: None,
            shutdown_drain_secs: 0,
        }
    }

    /// Start logging in `--log-format`, with traces exported to `--otlp-endpoint` (or where the
    /// OpenTelemetry variables say). Call once, inside the tokio runtime.
    pub fn init_logging(&self) {
        if let Some(url) = self.otlp_endpoint.as_deref().filter(|u| !u.trim().is_empty()) {
            crate::telemetry::set_endpoint(format!("{}/v1/traces", url.trim().trim_end_matches('/')));
        }
        init_logging(self.log_format);
    }

    /// Fail at once when this binary's port is taken, before a model loads for seconds (the
    /// real bind checks again: the port could be taken in between). Port 0 always passes.
    pub fn check_port(&self, service: &str, default_port: u16) -> Result<(), StartupError> {
        let port = self.port.unwrap_or(default_port);
        if port == 0 {
            return Ok(());
        }
        let addr = format!("{}:{port}", self.host);
        std::net::TcpListener::bind(&addr).map(drop).map_err(|source| bind_error(service, &addr, source))
    }

    /// The bearer key required: from `--api-key-file` (read when the flags were parsed) or
    /// `--api-key` / `COMPS_API_KEY`. The parser refuses both at once; set in code, the file
    /// wins.
    pub fn api_key(&self) -> Option<String> {
        match &self.api_key_file {
            Some(f) => Some(f.key.clone()),
            None => self.api_key.clone().filter(|k| !k.is_empty()),
        }
    }

    /// The server settings these flags describe. Warns when the key was given as a flag on the
    /// command line, where any user of the machine can read it.
    pub fn server_config(&self) -> ServerConfig {
        if self.api_key_file.is_none()
            && self.api_key.as_deref().is_some_and(|k| !k.is_empty())
            && std::env::args_os().any(|a| a == "--api-key" || a.to_string_lossy().starts_with("--api-key="))
        {
            tracing::warn!(
                "--api-key on the command line is visible in the process list; pass the key in COMPS_API_KEY or a file named by --api-key-file / COMPS_API_KEY_FILE instead"
            );
        }
        ServerConfig {
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            max_concurrent_requests: self.max_concurrent_requests.max(1),
            api_key: self.api_key(),
            cors_allow_origins: self.cors_allow_origins.clone(),
            shutdown_drain: Duration::from_secs(self.shutdown_drain_secs),
        }
    }

    /// Apply host and port (or `default_port`) to a service descriptor.
    pub fn apply(&self, service: MicroService, default_port: u16) -> MicroService {
        service.host(self.host.clone()).port(self.port.unwrap_or(default_port))
    }
}

/// A bearer key read from a file (`--api-key-file`); its `Debug` shows the path, never the key.
#[derive(Clone)]
pub struct ApiKeyFile {
    /// The file.
    pub path: std::path::PathBuf,
    /// Its content, trimmed.
    pub key: String,
}

impl std::fmt::Debug for ApiKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ApiKeyFile {
    /// Read the key in `path`: the content trimmed of surrounding whitespace, one line of at
    /// most [`API_KEY_FILE_MAX_BYTES`](crate::limits::API_KEY_FILE_MAX_BYTES). Errors name
    /// the file, never its content.
    pub fn read(path: &str) -> Result<Self, String> {
        use std::io::Read;
        let max = crate::limits::API_KEY_FILE_MAX_BYTES;
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
            .map_err(|e| format!("cannot read the API key file {path}: {e}"))?;
        if bytes.len() > max {
            return Err(format!("the API key file {path} is larger than {max} bytes"));
        }
        let text = String::from_utf8(bytes).map_err(|_| format!("the API key file {path} is not UTF-8 text"))?;
        let key = text.trim();
        if key.is_empty() {
            return Err(format!("the API key file {path} is empty"));
        }
        if key.chars().any(char::is_control) {
            return Err(format!("the API key file {path} holds more than one line (or control characters)"));
        }
        Ok(Self { path: path.into(), key: key.to_string() })
    }
}

/// Server limits and policies.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body (413 above).
    pub max_body_bytes: usize,
    /// Time until the response starts (408 after).
    pub request_timeout: Duration,
    /// Concurrent requests (429 above).
    pub max_concurrent_requests: usize,
    /// Required bearer key.
    pub api_key: Option<String>,
    /// CORS origins (`*` = any).
    pub cors_allow_origins: Vec<String>,
    /// After the shutdown signal: how long the server keeps serving with its health answering
    /// 503, so load balancers stop sending before it stops accepting.
    pub shutdown_drain: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(600),
            max_concurrent_requests: 1024,
            api_key: None,
            cors_allow_origins: vec!["*".into()],
            shutdown_drain: Duration::ZERO,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The port is taken (OPEA raises at construction too).
    #[error("cannot start '{service}': {addr} is already in use; stop the other process or choose another --port")]
    AddrInUse {
        /// Service name.
        service: String,
        /// host:port.
        addr: String,
    },
    /// Any other bind failure.
    #[error("cannot start '{service}': binding {addr} failed: {source}")]
    Bind {
        /// Service name.
        service: String,
        /// host:port.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Shared {
    service: Arc<MicroService>,
    stats: StatisticsRegistry,
    metrics: Arc<Metrics>,
    limit: Arc<Semaphore>,
    max_concurrent: usize,
    api_key: Option<Arc<[u8]>>,
    timeout: Duration,
    health: Option<crate::health::HealthCheck>,
    /// This service's routes that, like [`OPEN_PATHS`], need no API key.
    open: Arc<Vec<String>>,
    /// Set when the shutdown signal came: health answers 503 while requests are still served.
    draining: Arc<AtomicBool>,
}

/// A service being assembled: its descriptor, its routes and the built-in ones.
pub struct Server {
    shared: Shared,
    config: ServerConfig,
    router: Router,
    openapi: Option<utoipa::openapi::OpenApi>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("service", &self.shared.service.name).finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `service`. Its statistic (named after the service) records every request
    /// to `service.endpoint`.
    pub fn new(service: MicroService, config: ServerConfig) -> Self {
        let stats = StatisticsRegistry::new();
        stats.register(&service.name);
        let api_key = config.api_key.clone().or_else(|| service.api_key.clone()).map(|k| Arc::from(k.as_bytes()));
        let metrics = Metrics::new();
        metrics.register(&replica_info(&service));
        let shared = Shared {
            service: Arc::new(service),
            stats,
            metrics: Arc::new(metrics),
            limit: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            max_concurrent: config.max_concurrent_requests,
            api_key,
            timeout: config.request_timeout,
            health: None,
            open: Arc::default(),
            draining: Arc::default(),
        };
        Self { shared, config, router: Router::new(), openapi: None }
    }

    /// Add a route (OPEA's `add_route`).
    pub fn route(mut self, path: &str, method_router: MethodRouter) -> Self {
        self.router = self.router.route(path, method_router);
        self
    }

    /// Add a route that answers without the API key (a page that asks for the key, its
    /// script): like [`OPEN_PATHS`], outside the concurrency limit too.
    pub fn open_route(mut self, path: &str, method_router: MethodRouter) -> Self {
        Arc::make_mut(&mut self.shared.open).push(path.to_string());
        self.route(path, method_router)
    }

    /// Whether requests must carry the API key.
    pub fn requires_api_key(&self) -> bool {
        self.shared.api_key.is_some()
    }

    /// Add a whole router (with its own state already applied).
    pub fn merge(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// Make the health routes (`/health`, `/v1/health`, `/v1/health_check`) ask `check`: a
    /// failing check answers 503 with its reason, as TEI's `/health` asks its backend, so an
    /// orchestrator restarts a service whose model worker has died.
    pub fn health_check_with(mut self, check: crate::health::HealthCheck) -> Self {
        self.shared.health = Some(check);
        self
    }

    /// `GET /v1/models`: the models `list` gives, as OpenAI lists them (and in the OpenAPI
    /// document). One place for every service that serves a model, and for a megaservice
    /// that answers as one.
    pub fn models(self, list: impl Fn() -> Vec<crate::protocol::ModelCard> + Send + Sync + 'static) -> Self {
        let list = Arc::new(list);
        let handler = move || {
            let list = list.clone();
            async move { axum::Json(crate::protocol::ModelList { object: "list".into(), data: list() }) }
        };
        use utoipa::OpenApi;
        self.route("/v1/models", get(handler)).openapi(crate::openapi::Models::openapi())
    }

    /// Serve TEI's `GET /info` with what `info` says now (one shape for every service that has it).
    pub fn info(self, info: impl Fn() -> crate::protocol::TeiInfo + Send + Sync + 'static) -> Self {
        let info = Arc::new(info);
        let handler = move || {
            let info = info.clone();
            async move { axum::Json(info()) }
        };
        use utoipa::OpenApi;
        self.route("/info", get(handler)).openapi(crate::openapi::Info::openapi())
    }

    /// The OpenAPI document of this service's routes (from its handlers' `#[utoipa::path]`),
    /// served completed with the built-in routes at `/v1/openapi.json` and rendered at `/docs`.
    /// Several calls merge.
    pub fn openapi(mut self, doc: utoipa::openapi::OpenApi) -> Self {
        match &mut self.openapi {
            Some(d) => d.merge(doc),
            None => self.openapi = Some(doc),
        }
        self
    }

    /// The service descriptor.
    pub fn service(&self) -> &MicroService {
        &self.shared.service
    }

    /// The statistics served on `/v1/statistics`; register more names here.
    pub fn statistics(&self) -> StatisticsRegistry {
        self.shared.stats.clone()
    }

    /// The metrics served on `/metrics`; register a service's own collectors here.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The complete application, for `oneshot` tests or embedding in another server.
    pub fn into_router(self) -> Router {
        let shared = self.shared;
        let doc = crate::openapi::complete(
            self.openapi.unwrap_or_else(|| utoipa::openapi::OpenApiBuilder::new().build()),
            &shared.service,
            shared.api_key.is_some(),
        );
        let doc: Arc<str> = doc.to_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")).into();
        let builtin = Router::new()
            .route(
                crate::openapi::OPENAPI_PATH,
                get(move || {
                    let doc = doc.clone();
                    async move { ([(header::CONTENT_TYPE, "application/json")], doc.to_string()) }
                }),
            )
            .route(crate::openapi::DOCS_PATH, get(|| async { axum::response::Html(crate::openapi::DOCS_HTML) }))
            .route("/v1/health_check", get(health_check))
            .route("/v1/health", get(health))
            .route("/health", get(health))
            .route("/v1/statistics", get(statistics))
            .route("/metrics", get(metrics_text))
            .with_state(shared.clone());
        let cors = cors_layer(&self.config.cors_allow_origins);
        self.router
            .merge(builtin)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            // Innermost first: limits and auth run after routing so the route is known.
            .layer(middleware::from_fn_with_state(shared.clone(), guard))
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .layer(cors)
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                let route = req.extensions().get::<MatchedPath>().map_or(req.uri().path(), |m| m.as_str());
                let span = tracing::info_span!(
                    "request",
                    method = %req.method(),
                    uri = %req.uri().path(),
                    request_id = %id,
                    otel.name = tracing::field::Empty,
                    otel.kind = "server",
                    http.request.method = %req.method(),
                    url.path = %req.uri().path(),
                    trace_id = tracing::field::Empty,
                );
                // A caller's W3C trace context makes this request part of its trace; the log
                // lines inside it carry the trace id.
                if crate::telemetry::enabled() {
                    span.record("otel.name", format!("{} {route}", req.method()));
                    crate::telemetry::set_parent(&span, req.headers());
                    if let Some(id) = crate::telemetry::trace_id(&span) {
                        span.record("trace_id", id);
                    }
                }
                span
            }))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
    }

    /// Bind the listener (TCP_NODELAY on every connection). A taken port is a clear error.
    pub async fn bind(self) -> Result<BoundServer, StartupError> {
        let svc = self.shared.service.clone();
        let addr = format!("{}:{}", svc.host, svc.port);
        let listener = TcpListener::bind(&addr).await.map_err(|source| bind_error(&svc.name, &addr, source))?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            service: svc.name.clone(),
            addr: addr.clone(),
            source,
        })?;
        let (drain, draining) = (self.config.shutdown_drain, self.shared.draining.clone());
        Ok(BoundServer { listener, router: self.into_router(), local_addr, name: svc.name.clone(), drain, draining })
    }
}

/// Which replica this is: `COMPS_REPLICA`, else the host name (a pod's or a container's name),
/// on `comps_replica_info{service, version, replica} 1`, so that the replicas of one service
/// tell themselves apart on their `/metrics` whoever scrapes them.
pub fn replica_name() -> String {
    let var = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    var("COMPS_REPLICA")
        .or_else(|| var("HOSTNAME"))
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn replica_info(service: &MicroService) -> prometheus::IntGauge {
    let opts = prometheus::Opts::new("comps_replica_info", "This replica: its service, version and name (always 1)")
        .const_label("service", &service.name)
        .const_label("version", &service.version)
        .const_label("replica", replica_name());
    let g = prometheus::IntGauge::with_opts(opts).expect("fixed options");
    g.set(1);
    g
}

fn bind_error(service: &str, addr: &str, source: std::io::Error) -> StartupError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        StartupError::AddrInUse { service: service.to_string(), addr: addr.to_string() }
    } else {
        StartupError::Bind { service: service.to_string(), addr: addr.to_string(), source }
    }
}

/// A server with its port bound, ready to serve.
pub struct BoundServer {
    listener: TcpListener,
    router: Router,
    local_addr: SocketAddr,
    name: String,
    drain: Duration,
    draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer").field("addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl BoundServer {
    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until SIGTERM or ctrl-c, then finish in-flight requests.
    pub async fn serve(self) -> std::io::Result<()> {
        self.serve_until(shutdown_signal()).await
    }

    /// Serve until `signal` completes, then finish in-flight requests.
    pub async fn serve_until(self, signal: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        tracing::info!(service = %self.name, addr = %self.local_addr, "listening");
        let listener = self.listener.tap_io(|tcp| {
            // Without it an SSE stream stalls ~40 ms per event (Nagle + delayed ACK).
            let _ = tcp.set_nodelay(true);
        });
        // After the signal: health says 503 for the drain time while requests are still served,
        // then the listener closes and in-flight requests finish.
        let (drain, draining, name) = (self.drain, self.draining, self.name.clone());
        let signal = async move {
            signal.await;
            if !drain.is_zero() {
                draining.store(true, Ordering::SeqCst);
                tracing::info!(service = %name, secs = drain.as_secs_f64(), "draining: health answers 503, requests are still served");
                tokio::time::sleep(drain).await;
            }
        };
        let served = axum::serve(listener, self.router).with_graceful_shutdown(signal).await;
        crate::telemetry::flush();
        served
    }

    /// Serve on a background task; the handle stops it.
    pub fn spawn(self) -> ServerHandle {
        let token = CancellationToken::new();
        let addr = self.local_addr;
        let stop = token.clone();
        let task = tokio::spawn(async move { self.serve_until(async move { stop.cancelled().await }).await });
        ServerHandle { addr, token, task }
    }
}

/// A server running on a background task.
#[derive(Debug)]
pub struct ServerHandle {
    /// Bound address.
    pub addr: SocketAddr,
    token: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, finish in-flight requests, and wait.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.token.cancel();
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// Initialise tracing once (later calls are ignored). `RUST_LOG` overrides the `info` default.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer, Registry};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal (never in log files, pipes or `docker logs`), and never with
    // NO_COLOR set.
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi);
    // RUST_LOG filters the log only; traces (when exported) keep their own level.
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let _ = Registry::default().with(fmt).with(crate::telemetry::layer()).try_init();
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let any = origins.is_empty() || origins.iter().any(|o| o.trim() == "*");
    let layer = CorsLayer::new().allow_methods(Any).allow_headers(Any).expose_headers([REQUEST_ID]);
    if any {
        layer.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

/// The health probe's verdict: `Err` is a 503 with the reason.
fn probe_health(s: &Shared) -> Result<(), ServiceError> {
    if s.draining.load(Ordering::SeqCst) {
        return Err(ServiceError::NotReady(format!("{} is shutting down", s.service.name)));
    }
    match &s.health {
        Some(check) => {
            check.check().map_err(|why| ServiceError::NotReady(format!("{} is unhealthy: {why}", s.service.name)))
        }
        None => Ok(()),
    }
}

async fn health_check(State(s): State<Shared>) -> Response {
    if let Err(e) = probe_health(&s) {
        return e.into_response();
    }
    axum::Json(json!({
        "Service Title": s.service.name,
        "Version": s.service.version,
        "Service Description": s.service.description,
    }))
    .into_response()
}

async fn health(State(s): State<Shared>) -> Result<StatusCode, ServiceError> {
    probe_health(&s).map(|()| StatusCode::OK)
}

async fn statistics(State(s): State<Shared>) -> impl IntoResponse {
    axum::Json(s.stats.collect_all())
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

async fn not_found(req: Request) -> ServiceError {
    ServiceError::NotFound(format!("no route for {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ServiceError {
    ServiceError::MethodNotAllowed(format!("method {} is not allowed for {}", req.method(), req.uri().path()))
}

/// Auth, concurrency limit, timeout, metrics and statistics for every request.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // In flight from arrival until the body ends or the client leaves, whichever comes first.
    let in_flight = InFlight::new(&s.metrics, &route);
    let method = req.method().clone();
    let open = OPEN_PATHS.contains(&route.as_str()) || s.open.contains(&route) || method == Method::OPTIONS;

    let response = if open {
        next.run(req).await
    } else if let Err(e) = check_key(&s, &req) {
        e.into_response()
    } else {
        match s.limit.clone().try_acquire_owned() {
            Err(_) => ServiceError::Overloaded(format!(
                "{} is serving its maximum of {} concurrent requests; retry later",
                s.service.name, s.max_concurrent
            ))
            .into_response(),
            Ok(permit) => match tokio::time::timeout(s.timeout, next.run(req)).await {
                Ok(resp) => {
                    let resp = envelope_plain_rejection(resp).await;
                    // The permit lives until the body ends, so streams count while they run.
                    return finish(s, route, method, start, resp, Some(permit), in_flight);
                }
                Err(_) => {
                    ServiceError::Timeout(format!("request did not complete within {} s", s.timeout.as_secs_f64()))
                        .into_response()
                }
            },
        }
    };
    finish(s, route, method, start, response, None, in_flight)
}

/// A client error answered in plain text (an extractor's rejection: a form body where a
/// multipart one was expected, a bad query string, ...) rewritten into the OpenAI envelope
/// with the same status, so every 4xx of every route has one shape.
async fn envelope_plain_rejection(resp: Response) -> Response {
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/plain"));
    if !resp.status().is_client_error() || !plain {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message =
        if text.is_empty() { parts.status.canonical_reason().unwrap_or("bad request").to_string() } else { text };
    let err = match parts.status {
        StatusCode::PAYLOAD_TOO_LARGE => ServiceError::PayloadTooLarge(message),
        StatusCode::UNPROCESSABLE_ENTITY => ServiceError::InvalidField { field: None, message },
        StatusCode::NOT_FOUND => ServiceError::NotFound(message),
        StatusCode::UNAUTHORIZED => ServiceError::Unauthorized(message),
        _ => ServiceError::MalformedRequest(message),
    };
    let mut body = err.body();
    body.error.code = Some(parts.status.as_u16().to_string());
    let mut out = (parts.status, axum::Json(body)).into_response();
    if let Some(id) = parts.headers.get(REQUEST_ID) {
        out.headers_mut().insert(REQUEST_ID, id.clone());
    }
    out
}

/// One request counted in `comps_http_requests_in_flight` for as long as it lives.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn new(metrics: &Metrics, route: &str) -> Self {
        let g = metrics.in_flight.with_label_values(&[route]);
        g.inc();
        Self(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn check_key(s: &Shared, req: &Request) -> Result<(), ServiceError> {
    use subtle::ConstantTimeEq;
    let Some(expected) = &s.api_key else { return Ok(()) };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        None => Err(ServiceError::Unauthorized("missing API key: send 'Authorization: Bearer <key>'".into())),
        Some(k) if bool::from(k.as_bytes().ct_eq(expected)) => Ok(()),
        Some(_) => Err(ServiceError::Unauthorized("invalid API key".into())),
    }
}

fn finish(
    s: Shared,
    route: String,
    method: Method,
    start: Instant,
    resp: Response,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    in_flight: InFlight,
) -> Response {
    let status = resp.status().as_u16().to_string();
    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let stat = (route == s.service.endpoint && resp.status().is_success()).then(|| s.stats.register(&s.service.name));
    let (parts, body) = resp.into_parts();
    let timed = TimedBody {
        inner: body,
        done: false,
        first: None,
        probe: Some(Probe {
            s,
            route,
            method: method.to_string(),
            status,
            start,
            streaming,
            stat,
            _permit: permit,
            _in_flight: in_flight,
        }),
    };
    Response::from_parts(parts, Body::new(timed))
}

struct Probe {
    s: Shared,
    route: String,
    method: String,
    status: String,
    start: Instant,
    streaming: bool,
    stat: Option<Arc<crate::stats::BaseStatistics>>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _in_flight: InFlight,
}

impl Probe {
    fn record(self, first: Option<Duration>) {
        let total = self.start.elapsed();
        let m = &self.s.metrics;
        m.requests.with_label_values(&[&self.method, &self.route, &self.status]).inc();
        m.duration.with_label_values(&[&self.method, &self.route, &self.status]).observe(total.as_secs_f64());
        if let Some(ft) = first {
            m.first_byte.with_label_values(&[&self.method, &self.route]).observe(ft.as_secs_f64());
        }
        if let Some(stat) = self.stat {
            stat.append_latency(total, if self.streaming { first } else { None });
        }
    }
}

/// A response body that records latency when its first chunk goes out and when it ends or is
/// dropped (client gone), and holds the concurrency permit until then.
struct TimedBody {
    inner: Body,
    done: bool,
    first: Option<Duration>,
    probe: Option<Probe>,
}

impl TimedBody {
    fn complete(&mut self) {
        if let Some(p) = self.probe.take() {
            p.record(self.first);
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if this.first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                    this.first = this.probe.as_ref().map(|p| p.start.elapsed());
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.done = true;
                this.complete();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.complete();
    }
}
