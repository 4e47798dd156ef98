//! OPEA's YAML flows (`ServiceOrchestratorWithYaml`), built into the same concurrent
//! orchestrator:
//!
//! ```yaml
//! opea_micro_services:
//!   s1: {endpoint: http://localhost:8081/v1/add}
//!   s2: {endpoint: http://localhost:8082/v1/add, service_type: LLM, timeout_secs: 30}
//! opea_mega_service:
//!   mega_flow:
//!     - s1 >> s2
//! ```
//!
//! Chains may hold groups: `"(s1, s5) >> s2"`, `"s2 >> (s3, s4)"`, `"(a, b) >> c >> (d, e)"`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{GraphError, NodePolicy, ServiceOrchestrator};
use crate::service::{MicroService, ServiceType};

/// Why a YAML flow was refused.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Not YAML, or not the expected shape.
    #[error("flow file is not valid: {0}")]
    Parse(String),
    /// A service entry is wrong.
    #[error("service '{service}': {reason}")]
    Service {
        /// The service name.
        service: String,
        /// What is wrong.
        reason: String,
    },
    /// A flow rule is wrong.
    #[error("mega_flow rule '{rule}': {reason}")]
    Rule {
        /// The rule text.
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the file failed.
    #[error("cannot read flow file {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    opea_micro_services: BTreeMap<String, ServiceEntry>,
    #[serde(default)]
    opea_mega_service: Option<MegaEntry>,
}

#[derive(Debug, Deserialize)]
struct ServiceEntry {
    endpoint: String,
    #[serde(default)]
    service_type: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    timeout_secs: Option<f64>,
    #[serde(default)]
    retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct MegaEntry {
    #[serde(default)]
    mega_flow: Vec<String>,
}

/// A parsed flow: its services in file order and its edges.
#[derive(Debug)]
pub struct Flow {
    /// Services by name.
    pub services: Vec<(MicroService, NodePolicy)>,
    /// Edges by service name.
    pub edges: Vec<(String, String)>,
}

impl ServiceOrchestrator {
    /// Build an orchestrator from a YAML flow file.
    pub fn from_yaml_file(path: &str) -> Result<Self, FlowError> {
        let text = std::fs::read_to_string(path).map_err(|source| FlowError::Io { path: path.to_string(), source })?;
        Self::from_yaml_str(&text)
    }

    /// Build an orchestrator from YAML text.
    pub fn from_yaml_str(text: &str) -> Result<Self, FlowError> {
        let flow = parse_flow(text)?;
        let mut orch = ServiceOrchestrator::new();
        let mut by_name = BTreeMap::new();
        for (svc, policy) in flow.services {
            by_name.insert(svc.name.clone(), svc.clone());
            orch.add_with_policy(svc, policy).map_err(|e| FlowError::Parse(e.to_string()))?;
        }
        for (from, to) in flow.edges {
            let (a, b) = (&by_name[&from], &by_name[&to]);
            orch.flow_to(a, b).map_err(|e| FlowError::Rule {
                rule: format!("{from} >> {to}"),
                reason: match e {
                    GraphError::Cycle { .. } => "it would create a cycle".into(),
                    other => other.to_string(),
                },
            })?;
        }
        Ok(orch)
    }
}

/// Parse and check a flow without building it.
pub fn parse_flow(text: &str) -> Result<Flow, FlowError> {
    let file: FlowFile = serde_norway::from_str(text).map_err(|e| FlowError::Parse(e.to_string()))?;
    if file.opea_micro_services.is_empty() {
        return Err(FlowError::Parse("opea_micro_services lists no service".into()));
    }
    let mut services = Vec::new();
    for (name, entry) in &file.opea_micro_services {
        let err = |reason: String| FlowError::Service { service: name.clone(), reason };
        let mut svc = MicroService::from_url(name, &entry.endpoint).map_err(err)?;
        if let Some(t) = &entry.service_type {
            let ty = ServiceType::from_opea_name(t)
                .ok_or_else(|| err(format!("unknown service_type '{t}' (use OPEA's names: LLM, EMBEDDING, ...)")))?;
            svc = svc.service_type(ty);
        } else {
            // A plain node unless said otherwise: no LLM parameters injected, no streaming.
            svc = svc.service_type(ServiceType::Undefined);
        }
        svc = svc.api_key(entry.api_key.clone());
        let mut policy = NodePolicy::default();
        if let Some(t) = entry.timeout_secs {
            if !(t > 0.0 && t.is_finite()) {
                return Err(err(format!("timeout_secs must be a positive number, got {t}")));
            }
            policy.timeout = Duration::from_secs_f64(t);
            policy.stream_idle_timeout = policy.timeout;
        }
        if let Some(r) = entry.retries {
            policy.retries = r;
        }
        services.push((svc, policy));
    }
    let mut edges = Vec::new();
    for rule in file.opea_mega_service.map(|m| m.mega_flow).unwrap_or_default() {
        let rule_err = |reason: String| FlowError::Rule { rule: rule.clone(), reason };
        let groups: Vec<&str> = rule.split(">>").map(str::trim).collect();
        let mut prev: Option<Vec<String>> = None;
        for g in groups {
            let names: Vec<String> = if let Some(inner) = g.strip_prefix('(') {
                let inner = inner.strip_suffix(')').ok_or_else(|| rule_err(format!("group '{g}' is missing ')'")))?;
                inner.split(',').map(|s| s.trim().to_string()).collect()
            } else {
                vec![g.to_string()]
            };
            for n in &names {
                if n.is_empty() {
                    return Err(rule_err("empty node name".into()));
                }
                if n.contains('(') || n.contains(')') || n.contains(',') {
                    return Err(rule_err(format!("'{n}' is not a node name")));
                }
                if !file.opea_micro_services.contains_key(n) {
                    return Err(rule_err(format!("unknown node '{n}' (not in opea_micro_services)")));
                }
            }
            if let Some(p) = &prev {
                for a in p {
                    for b in &names {
                        edges.push((a.clone(), b.clone()));
                    }
                }
            }
            prev = Some(names);
        }
    }
    Ok(Flow { services, edges })
}
