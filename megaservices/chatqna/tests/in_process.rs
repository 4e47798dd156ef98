//! ChatQnA's graph and hooks run in process: the orchestrator reaches its nodes through a
//! `NodeTransport` that answers as TEI, the retriever and an OpenAI server would, and records
//! what each node was sent. No sockets, so each test states exactly what every node got.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use clap::Parser;
use comps_chatqna::request::Defaults;
use comps_chatqna::{Args, Framing, RequestContext};
use comps_core::client::Target;
use comps_core::extract::JsonBody;
use comps_core::orchestrator::{NodeTransport, RunOptions};
use comps_core::sse::EventStream;
use comps_core::{Extras, ServiceError, ServiceOrchestrator};
use futures::StreamExt;
use serde_json::{Value, json};

/// The other side of every wire: fixed answers per node, every call recorded.
#[derive(Default)]
struct Nodes {
    docs: Vec<&'static str>,
    calls: Mutex<Vec<(String, Value)>>,
}

impl Nodes {
    fn with_docs(docs: &[&'static str]) -> Arc<Self> {
        Arc::new(Self { docs: docs.to_vec(), calls: Mutex::default() })
    }

    fn sent_to(&self, node: &str) -> Option<Value> {
        self.calls.lock().unwrap().iter().find(|(n, _)| n.starts_with(node)).map(|(_, b)| b.clone())
    }

    fn called(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().map(|(n, _)| n.split('/').next().unwrap_or_default().to_string()).collect()
    }

    fn record(&self, target: &Target<'_>, body: &Value) {
        self.calls.lock().unwrap().push((target.node.to_string(), body.clone()));
    }
}

#[async_trait]
impl NodeTransport for Nodes {
    async fn json(&self, target: &Target<'_>, body: &Value) -> Result<Value, ServiceError> {
        self.record(target, body);
        let node = target.node.split('/').next().unwrap_or_default();
        Ok(match node {
            "embedding" => json!([[0.6, 0.8]]),
            "retriever" => json!({
                "retrieved_docs": self.docs.iter().map(|d| json!({"text": d})).collect::<Vec<_>>(),
                "initial_query": body["text"],
            }),
            // TEI's answer: the longest text scores highest.
            "rerank" => {
                let texts = body["texts"].as_array().cloned().unwrap_or_default();
                let mut scores: Vec<Value> = texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"index": i, "score": t.as_str().unwrap_or_default().len() as f64}))
                    .collect();
                scores.reverse();
                Value::Array(scores)
            }
            "llm" => json!({
                "id": "c1", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Forty-two."}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53},
            }),
            "guardrail_out" => json!({"text": body["text"]}),
            other => return Err(ServiceError::Upstream(format!("node {other} is not part of this test"))),
        })
    }

    async fn stream(&self, target: &Target<'_>, body: &Value) -> Result<EventStream, ServiceError> {
        self.record(target, body);
        let chunk = |content: &str| {
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                   "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
            .to_string()
        };
        let events = vec![Ok(chunk("Forty")), Ok(chunk("-two.")), Ok("[DONE]".to_string())];
        Ok(futures::stream::iter(events).boxed())
    }
}

fn pipeline(flags: &[&str], nodes: &Arc<Nodes>) -> ServiceOrchestrator {
    let args = Args::try_parse_from(std::iter::once("chatqna").chain(flags.iter().copied())).unwrap();
    comps_chatqna::orchestrator(&args).unwrap().with_transport(nodes.clone())
}

async fn ask(
    orch: &ServiceOrchestrator,
    body: Value,
    framing: Framing,
) -> Result<comps_core::ScheduleResult, ServiceError> {
    let body = JsonBody::parse(body.to_string().as_bytes())?;
    let request = RequestContext::read(&body, framing, &Defaults { model: None, top_n: 1 })?;
    let (inputs, stream) = (json!({"text": request.question}), request.stream);
    let mut extras = Extras::new();
    extras.insert(request);
    orch.run(inputs, RunOptions { stream, llm_params: None, extras }).await
}

#[tokio::test]
async fn each_node_gets_its_part_of_the_one_request_context() {
    let nodes = Nodes::with_docs(&["short", "the longest document", "medium doc"]);
    let orch = pipeline(&[], &nodes);
    let r =
        ask(&orch, json!({"messages": "What is it?", "k": 3, "top_n": 2, "seed": 7, "max_tokens": 9}), Framing::OpenAi)
            .await
            .unwrap();
    assert_eq!(nodes.called(), ["embedding", "retriever", "rerank", "llm"]);
    assert_eq!(nodes.sent_to("embedding").unwrap(), json!({"inputs": "What is it?", "truncate": true}));
    let retrieval = nodes.sent_to("retriever").unwrap();
    assert_eq!((retrieval["k"].as_u64(), retrieval["embedding"].clone()), (Some(3), json!([0.6, 0.8])));
    // The LLM is sent the body built from the request and nothing else: no OPEA LLMParams
    // (max_new_tokens, language, chat_template, repetition_penalty...) merged in.
    let llm = nodes.sent_to("llm").unwrap();
    let mut keys: Vec<&str> = llm.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["frequency_penalty", "max_tokens", "messages", "presence_penalty", "seed", "stream", "temperature", "top_p"]
    );
    assert_eq!(
        (llm["max_tokens"].as_u64(), llm["seed"].as_u64(), llm["stream"].as_bool()),
        (Some(9), Some(7), Some(false))
    );
    // top_n = 2 of the reranked chunks, best first.
    let prompt = llm["messages"][0]["content"].as_str().unwrap();
    let (best, second) = (prompt.find("the longest document").unwrap(), prompt.find("medium doc").unwrap());
    assert!(best < second && !prompt.contains("short"), "{prompt}");
    // The final answer carries the LLM's usage and finish reason.
    let leaf = r.leaf_json().unwrap();
    assert_eq!((leaf["text"].as_str(), leaf["usage"]["total_tokens"].as_u64()), (Some("Forty-two."), Some(53)));
    assert_eq!(leaf["finish_reason"], "length");
}

#[tokio::test]
async fn nothing_retrieved_skips_rerank_for_this_request_only() {
    let empty = Nodes::with_docs(&[]);
    let orch = pipeline(&[], &empty);
    ask(&orch, json!({"messages": "Anyone?"}), Framing::Opea).await.unwrap();
    assert_eq!(empty.called(), ["embedding", "retriever", "llm"]);
    // The graph itself is untouched: the next request with documents goes through rerank.
    assert!(orch.graph().nodes().iter().any(|n| n.starts_with("rerank")));
    let full = Nodes::with_docs(&["a doc"]);
    let orch = orch.with_transport(full.clone());
    ask(&orch, json!({"messages": "Anyone?", "stream": false}), Framing::Opea).await.unwrap();
    assert_eq!(full.called(), ["embedding", "retriever", "rerank", "llm"]);
}

#[tokio::test]
async fn an_output_guard_s_final_answer_keeps_the_llm_s_usage() {
    let nodes = Nodes::with_docs(&["doc"]);
    let orch = pipeline(&["--with-output-guard", "--without-rerank"], &nodes);
    let r = ask(&orch, json!({"messages": "Q?"}), Framing::OpenAi).await.unwrap();
    assert_eq!(nodes.called(), ["embedding", "retriever", "llm", "guardrail_out"]);
    assert_eq!(nodes.sent_to("guardrail_out").unwrap(), json!({"text": "Forty-two."}), "the guard gets a TextDoc only");
    let leaf = r.leaf_json().unwrap();
    assert_eq!(leaf["usage"]["completion_tokens"], 3);
    assert_eq!(leaf["finish_reason"], "length");
}

#[tokio::test]
async fn a_streamed_answer_is_framed_for_its_route() {
    let nodes = Nodes::with_docs(&["doc"]);
    let orch = pipeline(&[], &nodes);
    for (framing, expect) in [(Framing::Opea, "data: b'Forty'"), (Framing::OpenAi, "\"model\":\"chatqna\"")] {
        let mut r = ask(&orch, json!({"messages": "Q?", "stream": true}), framing).await.unwrap();
        assert_eq!(nodes.sent_to("llm").unwrap()["stream"], true);
        let frames: Vec<_> = r.take_stream().unwrap().collect().await;
        let text: String =
            frames.into_iter().map(|f| String::from_utf8(f.unwrap().to_vec()).unwrap()).collect::<Vec<_>>().concat();
        assert!(text.contains(expect), "{framing:?}: {text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
}

#[tokio::test]
async fn a_node_without_a_request_context_is_an_error_not_a_default() {
    let nodes = Nodes::with_docs(&["doc"]);
    let orch = pipeline(&[], &nodes);
    let err = orch.run(json!({"text": "Q"}), RunOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("without a ChatQnA request"), "{err}");
}
