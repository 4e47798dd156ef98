//! The ChatQnA megaservice against backends in their native formats: TEI `/embed` and
//! `/rerank` (comps-core's mocks), an OPEA retriever and a vLLM-style OpenAI server that record
//! what they receive. Checks what each backend is sent, the OPEA stream framing byte for byte,
//! the variants, and how failures are reported.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, post};
use clap::Parser;
use comps_core::ServerHandle;
use comps_mock_backends::{MockConfig, MockStats, spawn_mock};
use comps_tests::{payloads, serve};
use serde_json::{Value, json};

/// Bodies a backend received.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Value>>>);

impl Seen {
    fn last(&self) -> Value {
        self.0.lock().unwrap().last().cloned().expect("the backend was called")
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn capture(seen: Seen, reply: fn(&Value) -> Response) -> MethodRouter {
    post(move |axum::Json(body): axum::Json<Value>| {
        let seen = seen.clone();
        async move {
            let r = reply(&body);
            seen.0.lock().unwrap().push(body);
            r
        }
    })
}

/// An OPEA retriever: `EmbedDoc` in, `SearchedDoc` out. What it finds depends on the question.
fn retriever_reply(body: &Value) -> Response {
    let q = body["text"].as_str().unwrap_or_default();
    let docs: Vec<&str> = if q.contains("nothing") {
        vec![]
    } else if q.contains("首都") {
        vec!["北京是中华人民共和国的首都。", "上海是中国最大的城市。"]
    } else {
        vec!["Paris is the capital of France.", "Berlin is the capital of Germany.", "The Nile is a long river."]
    };
    let retrieved: Vec<Value> = docs
        .iter()
        .map(|d| json!({"id": comps_core::protocol::new_id(), "text": d, "downstream_black_list": []}))
        .collect();
    axum::Json(
        json!({"id": comps_core::protocol::new_id(), "retrieved_docs": retrieved, "initial_query": q, "top_n": 1}),
    )
    .into_response()
}

const PIECES: [&str; 6] = ["It's", " \"quoted\"", " back\\slash", "\nnew", " café", " 北京"];

/// A vLLM-style OpenAI server. Streams put every event in one TCP chunk.
fn llm_reply(body: &Value) -> Response {
    let text = if body["messages"][0]["content"].as_str().unwrap_or_default().contains("secret") {
        vec!["Hello there.", " The secret", " is 42.", " More text."]
    } else {
        PIECES.to_vec()
    };
    if body["stream"] == true {
        let mut sse = String::new();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "vllm-model",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        sse.push_str(&format!("data: {}\n\n", chunk(json!({"role": "assistant", "content": ""}), Value::Null)));
        for p in &text {
            sse.push_str(&format!("data: {}\n\n", chunk(json!({"content": p}), Value::Null)));
        }
        sse.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
        sse.push_str("data: [DONE]\n\n");
        return ([("content-type", "text/event-stream")], Body::from(sse)).into_response();
    }
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "vllm-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text.concat()}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }))
    .into_response()
}

fn failing_llm(_: &Value) -> Response {
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "CUDA out of memory").into_response()
}

/// A guard that flags any sentence mentioning a secret.
fn guard_reply(body: &Value) -> Response {
    let text = body["text"].as_str().unwrap_or_default();
    if text.contains("secret") {
        return axum::Json(
            json!({"text": "Violated policies: secrets, please check your input.", "downstream_black_list": [".*"]}),
        )
        .into_response();
    }
    axum::Json(json!({"text": text, "downstream_black_list": []})).into_response()
}

struct Pipeline {
    mega: ServerHandle,
    tei: Arc<MockStats>,
    retrieved: Seen,
    llm: Seen,
    guard: Seen,
    _backends: Vec<ServerHandle>,
}

impl Pipeline {
    async fn start(flags: &[&str], llm: fn(&Value) -> Response) -> Pipeline {
        let (tei_addr, tei) = spawn_mock(MockConfig::default()).await.unwrap();
        let (retrieved, llm_seen, guard) = (Seen::default(), Seen::default(), Seen::default());
        let (r, rh) = serve("retriever", "/v1/retrieval", capture(retrieved.clone(), retriever_reply)).await;
        let (l, lh) = serve("llm", "/v1/chat/completions", capture(llm_seen.clone(), llm)).await;
        let (g, gh) = serve("guard", "/v1/guardrails", capture(guard.clone(), guard_reply)).await;
        let dataprep = serve(
            "dataprep",
            "/v1/dataprep/{*rest}",
            any(|uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                (
                    axum::http::StatusCode::CREATED,
                    axum::Json(json!({"path": uri.to_string(), "content_type": ct, "bytes": body.len()})),
                )
            }),
        )
        .await;
        let port = |p: u16| p.to_string();
        let mut args = vec![
            "chatqna".to_string(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            format!("--embedding-port={}", port(tei_addr.port())),
            format!("--rerank-port={}", port(tei_addr.port())),
            format!("--retriever-port={}", port(r.port)),
            format!("--llm-port={}", port(l.port)),
            format!("--guardrail-port={}", port(g.port)),
            format!("--dataprep-port={}", port(dataprep.0.port)),
            "--retries=0".into(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let args = comps_chatqna::Args::try_parse_from(args).unwrap();
        let mega = comps_chatqna::server(&args).unwrap().bind().await.unwrap().spawn();
        Pipeline { mega, tei, retrieved, llm: llm_seen, guard, _backends: vec![rh, lh, gh, dataprep.1] }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.mega.url())
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        comps_core::http_client().post(self.url(path)).json(&body).send().await.unwrap()
    }

    fn tei_calls(&self) -> u64 {
        self.tei.requests.load(Ordering::SeqCst)
    }
}

fn prompt_sent(llm: &Seen) -> String {
    let body = llm.last();
    assert_eq!(body["messages"][0]["role"], "user");
    body["messages"][0]["content"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn each_backend_gets_its_native_format_and_the_request_settings() {
    let p = Pipeline::start(&[], llm_reply).await;
    let q = "What is the capital of France?";
    let r = p
        .post(
            "/v1/chatqna",
            json!({"messages": q, "stream": false, "model": "my-model", "top_k": 7, "repetition_penalty": 1.1,
                   "temperature": 0, "max_tokens": 64, "seed": 5, "search_type": "mmr", "k": 3, "fetch_k": 9,
                   "lambda_mult": 0.3}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["model"], "chatqna");
    assert_eq!(answer["choices"][0]["message"]["content"], PIECES.concat());
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"], json!({"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}));

    // TEI embed and TEI rerank were each called once.
    assert_eq!(p.tei_calls(), 2);
    // The retriever got an EmbedDoc with the request's search parameters.
    let ret = p.retrieved.last();
    assert_eq!(ret["text"], q);
    assert_eq!(ret["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(
        (ret["search_type"].as_str(), ret["k"].as_u64(), ret["fetch_k"].as_u64()),
        (Some("mmr"), Some(3), Some(9))
    );
    assert_eq!(ret["lambda_mult"], 0.3);
    // The LLM got an OpenAI request with the request's model and sampling settings, and the
    // top reranked document (top_n = 1) in the RAG prompt.
    let llm = p.llm.last();
    assert_eq!(llm["model"], "my-model");
    assert_eq!(llm["top_k"], 7);
    assert_eq!(llm["repetition_penalty"], 1.1);
    assert_eq!(llm["temperature"], 0.0);
    assert_eq!(llm["max_tokens"], 64);
    assert_eq!(llm["seed"], 5);
    assert_eq!(llm["stream"], false);
    // OPEA's template, as OPEA's chatqna.py renders it.
    let prompt = prompt_sent(&p.llm);
    assert!(prompt.starts_with("\n### You are a helpful, respectful and honest assistant"), "{prompt}");
    assert!(prompt.contains("### Search results: Paris is the capital of France. \n\n"), "{prompt}");
    assert!(!prompt.contains("Berlin"), "{prompt}");
    assert!(prompt.ends_with(&format!("### Question: {q} \n\n### Answer:\n")), "{prompt}");

    // top_n keeps more documents; a request template replaces the default one.
    let r = p
        .post(
            "/v1/chatqna",
            json!({"messages": q, "stream": false, "top_n": 2, "chat_template": "Facts:\n{context}\nQ: {question}\nA:"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let prompt = prompt_sent(&p.llm);
    assert!(prompt.starts_with("Facts:\n") && prompt.ends_with(&format!("Q: {q}\nA:")), "{prompt}");
    assert!(prompt.contains("Paris") && prompt.contains("Berlin") && !prompt.contains("Nile"), "{prompt}");
    // With nothing set, OPEA's defaults are sent and vLLM extensions are left out.
    let llm = p.llm.last();
    assert!(
        llm.get("model").is_none() && llm.get("top_k").is_none() && llm.get("repetition_penalty").is_none(),
        "{llm}"
    );
    assert_eq!((llm["max_tokens"].as_u64(), llm["top_p"].as_f64()), (Some(1024), Some(0.95)));
}

#[tokio::test]
async fn stream_is_framed_as_python_bytes_reprs() {
    let p = Pipeline::start(&[], llm_reply).await;
    let r = p.post("/v1/chatqna", json!({"messages": "What is the capital of France?"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let body = r.text().await.unwrap();
    let expected = concat!(
        "data: b\"It's\"\n\n",
        "data: b' \"quoted\"'\n\n",
        "data: b' back\\\\slash'\n\n",
        "data: b'\\nnew'\n\n",
        "data: b' caf\\xc3\\xa9'\n\n",
        "data: b' \\xe5\\x8c\\x97\\xe4\\xba\\xac'\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(body, expected);
    let decoded: String = payloads(&body).iter().map(|p| comps_core::sse::parse_py_bytes(p).unwrap()).collect();
    assert_eq!(decoded, PIECES.concat());
    assert_eq!(p.llm.last()["stream"], true);
}

#[tokio::test]
async fn openai_route_sends_standard_chunks() {
    let p = Pipeline::start(&[], llm_reply).await;
    let r = p
        .post("/v1/chat/completions", json!({"model": "chatqna", "messages": [{"role": "user", "content": "What is the capital of France?"}], "stream": true}))
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"));
    let chunks: Vec<Value> = payloads(&body).iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "chatqna"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, PIECES.concat());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    // "chatqna" is ChatQnA's own name, not the LLM's.
    assert!(p.llm.last().get("model").is_none());
    // Without "stream", the OpenAI route answers in one piece.
    let r = p.post("/v1/chat/completions", json!({"messages": "What is the capital of France?"})).await;
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    let models: Value = comps_core::http_client().get(p.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "chatqna");
}

#[tokio::test]
async fn no_documents_skip_rerank_and_send_the_empty_template_or_the_question_alone() {
    // OPEA's template (the default) is sent with an empty context, as OPEA sends it.
    let p = Pipeline::start(&[], llm_reply).await;
    let r = p.post("/v1/chatqna", json!({"messages": "Tell me nothing", "stream": false})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(p.tei_calls(), 1, "only the embedding is called; rerank is skipped");
    let prompt = prompt_sent(&p.llm);
    assert!(prompt.contains("### Search results:  \n\n### Question: Tell me nothing \n\n"), "{prompt:?}");
    // Ours sends the bare question.
    let p = Pipeline::start(&["--rag-template=comps"], llm_reply).await;
    let r = p.post("/v1/chatqna", json!({"messages": "Tell me nothing", "stream": false})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(prompt_sent(&p.llm), "Tell me nothing");
}

/// `--top-n` is the deployment's default for requests without `top_n`; a request's own wins.
#[tokio::test]
async fn the_deployments_top_n_applies_when_the_request_sets_none() {
    let p = Pipeline::start(&["--top-n=2"], llm_reply).await;
    let q = "What is the capital of France?";
    let r = p.post("/v1/chatqna", json!({"messages": q, "stream": false})).await;
    assert_eq!(r.status(), 200);
    let prompt = prompt_sent(&p.llm);
    assert!(prompt.contains("Paris") && prompt.contains("Berlin") && !prompt.contains("Nile"), "{prompt}");
    let r = p.post("/v1/chatqna", json!({"messages": q, "stream": false, "top_n": 1})).await;
    assert_eq!(r.status(), 200);
    let prompt = prompt_sent(&p.llm);
    assert!(prompt.contains("Paris") && !prompt.contains("Berlin"), "{prompt}");
}

#[tokio::test]
async fn chinese_context_gets_the_chinese_prompt() {
    let p = Pipeline::start(&[], llm_reply).await;
    let r = p.post("/v1/chatqna", json!({"messages": "中国的首都是哪里？", "stream": false, "top_n": 2})).await;
    assert_eq!(r.status(), 200);
    let prompt = prompt_sent(&p.llm);
    assert!(prompt.contains("### 搜索结果：") && prompt.contains("北京是中华人民共和国的首都。"), "{prompt}");
    assert!(prompt.contains("### 问题：中国的首都是哪里？"), "{prompt}");
}

#[tokio::test]
async fn without_rerank_all_retrieved_documents_reach_the_llm() {
    let p = Pipeline::start(&["--without-rerank"], llm_reply).await;
    let r = p.post("/v1/chatqna", json!({"messages": "What is the capital of France?", "stream": false})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(p.tei_calls(), 1);
    let prompt = prompt_sent(&p.llm);
    assert!(prompt.contains("Paris") && prompt.contains("Berlin") && prompt.contains("Nile"), "{prompt}");
}

#[tokio::test]
async fn input_guard_refusal_never_reaches_the_pipeline() {
    let p = Pipeline::start(&["--with-guardrails"], llm_reply).await;
    let r = p.post("/v1/chatqna", json!({"messages": "tell me the secret", "stream": false})).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Violated policies"));
    assert_eq!((p.tei_calls(), p.retrieved.count(), p.llm.count()), (0, 0, 0));
    // A question that passes goes all the way.
    let r = p.post("/v1/chatqna", json!({"messages": "What is the capital of France?", "stream": false})).await;
    assert_eq!(r.status(), 200);
    assert_eq!((p.guard.count(), p.llm.count()), (2, 1));
}

#[tokio::test]
async fn output_guard_ends_the_stream_at_a_violation() {
    let p = Pipeline::start(&["--with-output-guard"], llm_reply).await;
    let r = p.post("/v1/chatqna", json!({"messages": "What is the secret?"})).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let text: String = payloads(&body).iter().map(|p| comps_core::sse::parse_py_bytes(p).unwrap()).collect();
    assert!(text.starts_with("Hello there.") && text.contains("Violated policies: secrets"), "{text}");
    assert!(!text.contains("42") && !text.contains("More text"), "{text}");
    // Non-streamed, the guard sees the whole answer.
    let r = p.post("/v1/chatqna", json!({"messages": "What is the secret?", "stream": false})).await;
    let answer: Value = r.json().await.unwrap();
    assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Violated policies"), "{answer}");
}

#[tokio::test]
async fn upstream_failures_are_502s_naming_the_node() {
    let p = Pipeline::start(&[], failing_llm).await;
    for stream in [false, true] {
        let r = p.post("/v1/chatqna", json!({"messages": "What is the capital of France?", "stream": stream})).await;
        assert_eq!(r.status(), 502);
        let err: Value = r.json().await.unwrap();
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains("node llm/MicroService answered 500") && msg.contains("CUDA out of memory"), "{msg}");
    }

    // An embedding server that is not there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args = comps_chatqna::Args::try_parse_from([
        "chatqna".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        format!("--embedding-port={closed}"),
        format!("--dataprep-port={closed}"),
        "--retries=0".into(),
    ])
    .unwrap();
    let mega = comps_chatqna::server(&args).unwrap().bind().await.unwrap().spawn();
    let r = comps_core::http_client()
        .post(format!("{}/v1/chatqna", mega.url()))
        .json(&json!({"messages": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains("node embedding/MicroService could not be reached"),
        "{err}"
    );
    let r = comps_core::http_client().post(format!("{}/v1/dataprep/get", mega.url())).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("node dataprep could not be reached"), "{err}");
}

#[tokio::test]
async fn dataprep_is_forwarded_as_it_came() {
    let p = Pipeline::start(&[], llm_reply).await;
    let form = reqwest::multipart::Form::new()
        .part("files", reqwest::multipart::Part::bytes(b"hello world".to_vec()).file_name("a.txt"))
        .text("chunk_size", "100");
    let r = comps_core::http_client().post(p.url("/v1/dataprep/ingest?x=1")).multipart(form).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "the upstream status comes back: {v}");
    assert_eq!(v["path"], "/v1/dataprep/ingest?x=1");
    assert!(v["content_type"].as_str().unwrap().starts_with("multipart/form-data; boundary="), "{v}");
    assert!(v["bytes"].as_u64().unwrap() > 11);
}

/// `return_sources` is opt-in: the chunks the LLM was given come first in the stream as an
/// `event: sources` (OPEA framing and OpenAI's), or beside a whole answer as `sources`, best
/// first with their rerank scores. Without it nothing changes. `rerank: false` skips the
/// reranker for that request only.
#[tokio::test]
async fn sources_are_opt_in_first_in_the_stream_or_beside_the_answer() {
    let p = Pipeline::start(&[], llm_reply).await;
    let ask = json!({"messages": "What is the capital of France?", "return_sources": true, "top_n": 2});
    let body = p.post("/v1/chatqna", ask.clone()).await.text().await.unwrap();
    let (first, rest) = body.split_once("\n\n").unwrap();
    let event: Value = serde_json::from_str(first.strip_prefix("event: sources\ndata: ").expect(first)).unwrap();
    let list = event["sources"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{event}");
    let prompt = prompt_sent(&p.llm);
    let at: Vec<usize> =
        list.iter().map(|s| prompt.find(s["text"].as_str().unwrap()).expect("a source is in the prompt")).collect();
    assert!(at[0] < at[1], "in the prompt's order");
    assert!(list[0]["score"].as_f64().unwrap() >= list[1]["score"].as_f64().unwrap());
    let decoded: String = payloads(rest).iter().map(|p| comps_core::sse::parse_py_bytes(p).unwrap()).collect();
    assert_eq!(decoded, PIECES.concat(), "the answer's frames follow unchanged");

    let mut openai = ask.clone();
    openai["stream"] = json!(true);
    let body = p.post("/v1/chat/completions", openai).await.text().await.unwrap();
    assert!(body.starts_with("event: sources\ndata: {\"sources\":["), "{body}");
    let mut whole = ask.clone();
    whole["stream"] = json!(false);
    let answer: Value = p.post("/v1/chatqna", whole).await.json().await.unwrap();
    assert_eq!(
        (answer["object"].as_str(), answer["sources"].as_array().map(Vec::len)),
        (Some("chat.completion"), Some(2))
    );

    // Not asked: OPEA's shapes as they were.
    let body = p.post("/v1/chatqna", json!({"messages": "What is the capital of France?"})).await.text().await.unwrap();
    assert!(body.starts_with("data: b"), "{body}");
    let answer: Value =
        p.post("/v1/chatqna", json!({"messages": "What is the capital?", "stream": false})).await.json().await.unwrap();
    assert!(answer.get("sources").is_none());

    // rerank: false for one request: the embedder is the only TEI call, every chunk reaches the LLM.
    let before = p.tei_calls();
    let answer: Value = p
        .post(
            "/v1/chatqna",
            json!({"messages": "What is the capital?", "stream": false, "rerank": false, "return_sources": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p.tei_calls() - before, 1);
    assert_eq!(answer["sources"].as_array().map(Vec::len), Some(3));
    assert!(prompt_sent(&p.llm).contains("The Nile is a long river."));
    let before = p.tei_calls();
    p.post("/v1/chatqna", json!({"messages": "What is the capital?", "stream": false})).await;
    assert_eq!(p.tei_calls() - before, 2, "the next request is reranked again");

    let r = p.post("/v1/chatqna", json!({"messages": "x", "return_sources": "yes"})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "return_sources");
    let r = p.post("/v1/chat/completions", json!({"messages": "x", "rerank": 1})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "rerank");
}

/// The web UI: served at `/` with its script and style from the binary, no inline script (the
/// CSP forbids it), every file it names on this origin, and `/v1/ui/config` saying what the
/// page needs; all of that open while the API routes keep asking for the key.
#[tokio::test]
async fn the_web_ui_is_served_from_the_binary_without_the_key() {
    let p = Pipeline::start(&["--api-key=ui-key"], llm_reply).await;
    let get = |path: &str| comps_core::http_client().get(p.url(path)).send();
    let r = get("/").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
    let mut named = 0;
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let url = part.split('"').next().unwrap();
            if url.starts_with("data:") {
                continue; // the empty icon, so the browser asks for no /favicon.ico
            }
            assert!(url.starts_with('/') && !url.starts_with("//"), "{url} is not on this origin");
            assert_eq!(get(url).await.unwrap().status(), 200, "{url}");
            named += 1;
        }
    }
    assert_eq!(named, 2, "the script and the style");
    let js = get("/ui/app.js").await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(!js.text().await.unwrap().contains("innerHTML"), "text only ever goes in as text");
    let config: Value = get("/v1/ui/config").await.unwrap().json().await.unwrap();
    assert_eq!(config["api_key_required"], true);
    assert_eq!(config["rerank"], true);
    assert_eq!(config["defaults"]["top_n"], 1);
    let r = p.post("/v1/chat/completions", json!({"messages": "x"})).await;
    assert_eq!(r.status(), 401, "the API itself still wants the key");
}
