//! Service descriptors: what a microservice is (name, address, endpoint, type, role) — the
//! counterpart of OPEA's `MicroService(...)` constructor arguments.

use serde::{Deserialize, Serialize};

/// OPEA's `ServiceType`, same members and numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum ServiceType {
    Gateway = 0,
    Embedding = 1,
    Retriever = 2,
    Rerank = 3,
    Llm = 4,
    Asr = 5,
    Tts = 6,
    Guardrail = 7,
    Vectorstore = 8,
    Dataprep = 9,
    Undefined = 10,
    Ragas = 11,
    Lvm = 12,
    KnowledgeGraph = 13,
    WebRetriever = 14,
    Image2Video = 15,
    Text2Image = 16,
    Animation = 17,
    Image2Image = 18,
    Text2Sql = 19,
    Text2Graph = 20,
    Text2Cypher = 21,
    Text2Kg = 22,
    Struct2Graph = 23,
    LanguageDetection = 24,
    PromptTemplate = 25,
    PromptRegistry = 26,
    Text2Query = 27,
    ArbPostHearingAssistant = 28,
}

impl ServiceType {
    /// Every member, in OPEA's order.
    pub const ALL: [ServiceType; 29] = [
        Self::Gateway,
        Self::Embedding,
        Self::Retriever,
        Self::Rerank,
        Self::Llm,
        Self::Asr,
        Self::Tts,
        Self::Guardrail,
        Self::Vectorstore,
        Self::Dataprep,
        Self::Undefined,
        Self::Ragas,
        Self::Lvm,
        Self::KnowledgeGraph,
        Self::WebRetriever,
        Self::Image2Video,
        Self::Text2Image,
        Self::Animation,
        Self::Image2Image,
        Self::Text2Sql,
        Self::Text2Graph,
        Self::Text2Cypher,
        Self::Text2Kg,
        Self::Struct2Graph,
        Self::LanguageDetection,
        Self::PromptTemplate,
        Self::PromptRegistry,
        Self::Text2Query,
        Self::ArbPostHearingAssistant,
    ];

    /// OPEA's numeric value.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// OPEA's member name (`LLM`, `EMBEDDING`, ...), as used in YAML flows.
    pub fn opea_name(self) -> &'static str {
        match self {
            Self::Gateway => "GATEWAY",
            Self::Embedding => "EMBEDDING",
            Self::Retriever => "RETRIEVER",
            Self::Rerank => "RERANK",
            Self::Llm => "LLM",
            Self::Asr => "ASR",
            Self::Tts => "TTS",
            Self::Guardrail => "GUARDRAIL",
            Self::Vectorstore => "VECTORSTORE",
            Self::Dataprep => "DATAPREP",
            Self::Undefined => "UNDEFINED",
            Self::Ragas => "RAGAS",
            Self::Lvm => "LVM",
            Self::KnowledgeGraph => "KNOWLEDGE_GRAPH",
            Self::WebRetriever => "WEB_RETRIEVER",
            Self::Image2Video => "IMAGE2VIDEO",
            Self::Text2Image => "TEXT2IMAGE",
            Self::Animation => "ANIMATION",
            Self::Image2Image => "IMAGE2IMAGE",
            Self::Text2Sql => "TEXT2SQL",
            Self::Text2Graph => "TEXT2GRAPH",
            Self::Text2Cypher => "TEXT2CYPHER",
            Self::Text2Kg => "TEXT2KG",
            Self::Struct2Graph => "STRUCT2GRAPH",
            Self::LanguageDetection => "LANGUAGE_DETECTION",
            Self::PromptTemplate => "PROMPT_TEMPLATE",
            Self::PromptRegistry => "PROMPT_REGISTRY",
            Self::Text2Query => "TEXT2QUERY",
            Self::ArbPostHearingAssistant => "ARB_POST_HEARING_ASSISTANT",
        }
    }

    /// Parse OPEA's member name (case-insensitive).
    pub fn from_opea_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.opea_name().eq_ignore_ascii_case(name))
    }

    /// Whether the orchestrator injects `LLMParams` into this node (OPEA: LLM and LVM).
    pub fn takes_llm_params(self) -> bool {
        matches!(self, Self::Llm | Self::Lvm)
    }
}

impl TryFrom<u8> for ServiceType {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Self::ALL.get(usize::from(v)).copied().ok_or_else(|| format!("no ServiceType with value {v}"))
    }
}

/// OPEA's `ServiceRoleType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[repr(u8)]
pub enum ServiceRoleType {
    /// A single capability.
    #[default]
    MicroService = 0,
    /// A pipeline of microservices.
    MegaService = 1,
}

/// A microservice: the one served by this process, or a remote node of a megaservice.
///
/// ```
/// use comps_core::{MicroService, ServiceType};
/// let llm = MicroService::new("llm")
///     .host("10.0.0.5")
///     .port(9000)
///     .endpoint("/v1/chat/completions")
///     .service_type(ServiceType::Llm)
///     .remote(true);
/// assert_eq!(llm.endpoint_path(), "http://10.0.0.5:9000/v1/chat/completions");
/// assert_eq!(llm.node_id(), "llm/MicroService");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MicroService {
    /// Short name (`llm`, `embedding`).
    pub name: String,
    /// Host to bind (local) or to call (remote).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The main route, e.g. `/v1/embeddings`.
    pub endpoint: String,
    /// `http` or `https`.
    pub protocol: String,
    /// What it does.
    pub service_type: ServiceType,
    /// Micro or mega.
    pub service_role: ServiceRoleType,
    /// Whether this descriptor points at a service running elsewhere.
    pub use_remote_service: bool,
    /// Bearer key: checked when serving, sent when calling.
    pub api_key: Option<String>,
    /// Name of the input type (documentation).
    pub input_datatype: String,
    /// Name of the output type (documentation).
    pub output_datatype: String,
    /// Shown by `/v1/health_check`.
    pub description: String,
    /// Version shown by `/v1/health_check`.
    pub version: String,
}

impl MicroService {
    /// A descriptor with OPEA's defaults: `localhost:8080`, endpoint `/`, type LLM, `TextDoc` in
    /// and out.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            host: "localhost".into(),
            port: 8080,
            endpoint: "/".into(),
            protocol: "http".into(),
            service_type: ServiceType::Llm,
            service_role: ServiceRoleType::MicroService,
            use_remote_service: false,
            api_key: None,
            input_datatype: "TextDoc".into(),
            output_datatype: "TextDoc".into(),
            description: "OPEA Microservice Infrastructure".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// A remote node from a base URL such as `http://host:port/v1/embeddings` or
    /// `https://api.example.com/v1/chat/completions`.
    pub fn from_url(name: impl Into<String>, url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL '{url}': {e}"))?;
        let host = parsed.host_str().ok_or_else(|| format!("URL '{url}' has no host"))?;
        let port = parsed.port_or_known_default().ok_or_else(|| format!("URL '{url}' has no port"))?;
        let mut endpoint = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            endpoint.push('?');
            endpoint.push_str(q);
        }
        Ok(Self::new(name)
            .protocol(parsed.scheme())
            .host(host.trim_start_matches('[').trim_end_matches(']'))
            .port(port)
            .endpoint(endpoint)
            .remote(true))
    }

    /// Set the host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }
    /// Set the port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Set the main endpoint.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }
    /// Set the scheme.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = protocol.into();
        self
    }
    /// Set the service type.
    pub fn service_type(mut self, t: ServiceType) -> Self {
        self.service_type = t;
        self
    }
    /// Set the role.
    pub fn service_role(mut self, r: ServiceRoleType) -> Self {
        self.service_role = r;
        self
    }
    /// Mark as remote (a node to call, not a server to start).
    pub fn remote(mut self, remote: bool) -> Self {
        self.use_remote_service = remote;
        self
    }
    /// Set the API key (empty means none).
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }
    /// Set the input/output type names.
    pub fn datatypes(mut self, input: impl Into<String>, output: impl Into<String>) -> Self {
        self.input_datatype = input.into();
        self.output_datatype = output.into();
        self
    }
    /// Set the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }
    /// Set the version shown by health checks (defaults to comps-core's).
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.version = v.into();
        self
    }

    /// The URL to call this service at. Like OPEA, a service with an API key is a hosted
    /// endpoint whose `host` already carries the scheme (and no port).
    pub fn endpoint_path(&self) -> String {
        if self.api_key.is_some() && (self.host.starts_with("http://") || self.host.starts_with("https://")) {
            return format!("{}{}", self.host.trim_end_matches('/'), self.endpoint);
        }
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{}:{}{}", self.protocol, host, self.port, self.endpoint)
    }

    /// The orchestrator node id, `"<name>/MicroService"` as OPEA.
    pub fn node_id(&self) -> String {
        format!("{}/MicroService", self.name)
    }
}
