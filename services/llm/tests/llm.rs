//! The LLM service with the real SmolLM2-135M-Instruct GGUF (fetched by
//! `scripts/fetch-models.sh`, which the test command runs), over real HTTP on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use comps_core::{CommonArgs, ServerHandle};
use comps_llm::{AppState, ChatModel, EngineConfig, Llm, LocalGenerator, Quantize, RemoteGenerator};
use comps_mock_backends::{MockConfig, spawn_mock};
use futures::StreamExt;
use serde_json::{Value, json};

const SYSTEM: &str =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

fn gguf() -> PathBuf {
    let path = std::env::var_os("LLM_TEST_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does)", path.display());
    path
}

/// The model requantized to Q8_0 (fast), loaded once for every test.
fn model() -> ChatModel {
    static M: OnceLock<ChatModel> = OnceLock::new();
    M.get_or_init(|| ChatModel::load(&gguf(), Quantize::Q8_0).expect("SmolLM2 loads")).clone()
}

fn generator(cfg: EngineConfig) -> Arc<LocalGenerator> {
    Arc::new(LocalGenerator::new(model(), None, cfg).expect("generator starts"))
}

async fn serve(llm: impl Into<Llm>) -> ServerHandle {
    let state = AppState { llm: llm.into() };
    comps_llm::server(state, &CommonArgs::local(), 0).bind().await.unwrap().spawn()
}

async fn post(h: &ServerHandle, body: Value) -> (u16, Value) {
    let r =
        comps_core::http_client().post(format!("{}/v1/chat/completions", h.url())).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A streamed answer: the chunks' payloads, `[DONE]` excluded.
async fn post_stream(h: &ServerHandle, body: Value) -> Vec<Value> {
    let r =
        comps_core::http_client().post(format!("{}/v1/chat/completions", h.url())).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "stream ends with [DONE]: {text}");
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|p| *p != "[DONE]")
        .map(|p| serde_json::from_str(p).expect("chunk is JSON"))
        .collect()
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

fn ask(question: &str) -> Value {
    json!({"messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 40})
}

#[tokio::test]
async fn greedy_is_deterministic_and_identical_streamed_and_not() {
    let h = serve(generator(EngineConfig::default())).await;
    let body = ask("Name three colors.");
    let (s1, a) = post(&h, body.clone()).await;
    let (s2, b) = post(&h, body.clone()).await;
    assert_eq!((s1, s2), (200, 200));
    let text = a["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert_eq!(text, b["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(a["object"], "chat.completion");

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let chunks = post_stream(&h, sbody).await;
    assert_eq!(streamed_text(&chunks), text);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], a["choices"][0]["finish_reason"]);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn answers_what_is_two_plus_two() {
    let h = serve(generator(EngineConfig::default())).await;
    let (status, v) = post(&h, ask("What is 2+2?")).await;
    assert_eq!(status, 200);
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains('4'), "the answer mentions 4: {text:?}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_tokens_and_usage_are_exact() {
    let g = generator(EngineConfig::default());
    let h = serve(g.clone()).await;
    let mut body = ask("Tell me a story about a dragon.");
    body["max_tokens"] = json!(5);
    let (status, v) = post(&h, body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    // The prompt count is the tokenizer's count of the rendered prompt.
    let req: comps_core::protocol::ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
    let prompt = g.render_prompt(&req).unwrap();
    let n = g.tokenize(&prompt).unwrap().len();
    assert_eq!(v["usage"]["prompt_tokens"], n);
    assert_eq!(v["usage"]["total_tokens"], n + 5);
    // The five tokens are the text: encoding it again gives five tokens.
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(g.tokenize(text).unwrap().len(), 5, "{text:?}");

    // The same usage as the last chunk of a stream with include_usage.
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let chunks = post_stream(&h, body).await;
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], v["usage"]);
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "length");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stop_string_ends_the_text_before_it() {
    let h = serve(generator(EngineConfig::default())).await;
    let body = ask("Write two sentences about the sea.");
    let (_, v) = post(&h, body.clone()).await;
    let full = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    // A word from the middle of the greedy answer, as the stop string.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 6, "a long enough answer: {full:?}");
    let stop = words[words.len() / 2];
    let at = full.find(stop).unwrap();
    let mut with_stop = body.clone();
    with_stop["stop"] = json!([stop]);
    let (_, cut) = post(&h, with_stop.clone()).await;
    assert_eq!(cut["choices"][0]["message"]["content"], &full[..at]);
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    // Streamed, no part of the stop string leaks either.
    with_stop["stream"] = json!(true);
    assert_eq!(streamed_text(&post_stream(&h, with_stop).await), &full[..at]);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn same_seed_same_sampled_text() {
    let h = serve(generator(EngineConfig::default())).await;
    let body = json!({"messages": "Invent a name for a cat.", "temperature": 1.0, "top_p": 0.95, "seed": 42, "max_tokens": 16});
    let (_, a) = post(&h, body.clone()).await;
    let (_, b) = post(&h, body).await;
    assert_eq!(a["choices"][0]["message"]["content"], b["choices"][0]["message"]["content"]);
    h.shutdown().await.unwrap();
}

#[test]
fn the_chatml_prompt_is_rendered_as_transformers_does() {
    let g = generator(EngineConfig::default());
    let req: comps_core::protocol::ChatCompletionRequest = serde_json::from_value(json!({"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"},
    ]}))
    .unwrap();
    let expected = format!(
        "{SYSTEM}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(g.render_prompt(&req).unwrap(), expected);
    // A system message replaces the default one.
    let req: comps_core::protocol::ChatCompletionRequest = serde_json::from_value(
        json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}),
    )
    .unwrap();
    assert_eq!(
        g.render_prompt(&req).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn the_gguf_tokenizer_round_trips_and_matches_known_ids() {
    let m = model();
    let t = &m.tokenizer;
    assert_eq!(t.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    assert!(m.stop_ids.contains(&2));
    for text in
        ["Hello, world! 12345", "  spaces\tand\nnewlines ", "naïve café — 東京 🚀", "<|im_start|>user\nHi<|im_end|>"]
    {
        let ids = t.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(t.decode(&ids, false).unwrap(), text, "{text:?} -> {ids:?}");
    }
    // Special tokens are single ids; digits are split one by one (SmolLM's pre-tokenizer).
    let ids = t.encode("<|im_start|>user\n2024", false).unwrap().get_ids().to_vec();
    assert_eq!(ids[0], 1);
    assert_eq!(ids.len(), 1 + 2 + 4, "{ids:?}");
    // The same ids as llama.cpp's tokenizer on the same file (committed fixture).
    let fixture: Value = serde_json::from_str(include_str!("fixtures/llamacpp-greedy.json")).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let ids = t.encode(case["prompt"].as_str().unwrap(), false).unwrap().get_ids().to_vec();
        let want: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want, "prompt {:?}", case["prompt"]);
    }
}

/// Read a stream, reporting the time of its first non-empty content and of its end.
async fn timed_stream(url: String, body: Value, first: tokio::sync::oneshot::Sender<Instant>) -> Instant {
    let r = comps_core::http_client().post(url).json(&body).send().await.unwrap();
    let mut stream = r.bytes_stream();
    let mut first = Some(first);
    while let Some(c) = stream.next().await {
        let c = String::from_utf8_lossy(&c.unwrap()).into_owned();
        if c.contains("\"content\":\"")
            && !c.contains("\"content\":\"\"")
            && let Some(tx) = first.take()
        {
            let _ = tx.send(Instant::now());
        }
    }
    Instant::now()
}

#[tokio::test]
async fn concurrent_requests_interleave() {
    let h = serve(generator(EngineConfig { max_active: 2, ..EngineConfig::default() })).await;
    let url = format!("{}/v1/chat/completions", h.url());
    let long = json!({"messages": "Count from 1 to 100.", "temperature": 0, "max_tokens": 150, "ignore_eos": true, "stream": true});
    let short = json!({"messages": "Hi", "temperature": 0, "max_tokens": 3, "ignore_eos": true, "stream": true});
    let (a_tx, a_first) = tokio::sync::oneshot::channel();
    let a = tokio::spawn(timed_stream(url.clone(), long, a_tx));
    // The long answer is producing tokens before the short request is sent.
    a_first.await.unwrap();
    let (b_tx, b_first) = tokio::sync::oneshot::channel();
    let b = tokio::spawn(timed_stream(url, short, b_tx));
    let b_first = b_first.await.unwrap();
    let b_end = b.await.unwrap();
    let a_end = a.await.unwrap();
    assert!(b_first < a_end, "the second request's first token came after the first request finished");
    assert!(b_end < a_end, "the short request finished while the long one was still generating");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_disconnected_client_frees_its_slot_and_a_full_queue_is_refused() {
    let g = generator(EngineConfig { max_active: 1, max_queued: 0, ..EngineConfig::default() });
    let h = serve(g.clone()).await;
    let client = comps_core::http_client().clone();
    let url = format!("{}/v1/chat/completions", h.url());
    let endless =
        json!({"messages": "Count.", "temperature": 0, "max_tokens": 3000, "ignore_eos": true, "stream": true});
    let resp = client.post(&url).json(&endless).send().await.unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    // The one slot is taken: another request is refused at once.
    let (status, v) = post(&h, ask("Hi")).await;
    assert_eq!(status, 429, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("busy"));
    // Hang up; the slot comes back quickly (long before 3000 tokens).
    drop(body);
    let t = Instant::now();
    while g.engine().load().in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "the slot was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = post(&h, ask("Hi")).await;
    assert_eq!(status, 200);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn opea_llm_params_doc_streams_in_opea_framing() {
    let h = serve(generator(EngineConfig::default())).await;
    let r = comps_core::http_client()
        .post(format!("{}/v1/chat/completions", h.url()))
        .json(&json!({"query": "What is 2+2?", "max_tokens": 8, "top_k": 1, "temperature": 0.01}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("data: b'") || text.starts_with("data: b\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let decoded: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|p| *p != "[DONE]")
        .map(|p| comps_core::sse::parse_py_bytes(p).expect("python bytes literal"))
        .collect();
    // Not streamed: a GeneratedDoc with the same text (top_k 1 is greedy).
    let (status, v) = post(&h, json!({"query": "What is 2+2?", "max_tokens": 8, "top_k": 1, "stream": false})).await;
    assert_eq!(status, 200);
    assert_eq!(v["text"], decoded.as_str());
    assert_eq!(v["prompt"], "What is 2+2?");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field() {
    let h = serve(generator(EngineConfig::default())).await;
    // OpenAI's shape: 400, as OpenAI and vLLM answer (the SDKs' BadRequestError); OPEA's
    // LLMParamsDoc: 422, as its FastAPI service answers.
    let cases = [
        (json!({"messages": []}), 400, "messages"),
        (json!({"messages": [{"role": "wizard", "content": "hi"}]}), 400, "messages.0.role"),
        (json!({"messages": "hi", "temperature": -1}), 400, "temperature"),
        (json!({"messages": "hi", "top_p": 2}), 400, "top_p"),
        (json!({"messages": "hi", "max_tokens": 0}), 400, "max_tokens"),
        (json!({"messages": "hi", "n": 3}), 400, "n"),
        (json!({"messages": "hi", "tools": [{"type": "function"}]}), 400, "tools"),
        (json!({"messages": "hi", "max_tokens": 100000}), 400, "max_tokens"),
        (json!({"messages": "hi", "logit_bias": {"999999": 5}}), 400, "logit_bias"),
        (json!({"messages": "hi", "chat_template": "{% for %}"}), 400, "chat_template"),
        (json!({"messages": "hi", "max_tokens": -1}), 400, "max_tokens"),
        (json!({"query": "hi", "temperature": -1}), 422, "temperature"),
        (json!({"query": "hi", "max_tokens": "many"}), 422, "max_tokens"),
    ];
    for (body, status, field) in cases {
        let (s, v) = post(&h, body.clone()).await;
        assert_eq!(s, status, "{body} -> {v}");
        assert_eq!(v["error"]["param"], field, "{body} -> {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(field), "{body} -> {v}");
    }
    let r = comps_core::http_client()
        .post(format!("{}/v1/chat/completions", h.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn remote_mode_passes_streams_through_and_names_the_upstream() {
    let reply = "Paris is the capital of France.";
    let (addr, stats) =
        spawn_mock(MockConfig { reply: Some(reply.into()), events_per_chunk: 3, ..MockConfig::default() })
            .await
            .unwrap();
    let remote =
        RemoteGenerator::new(&format!("http://{addr}"), None, Some("upstream-model".into()), Duration::from_secs(5));
    let h = serve(Arc::new(remote)).await;
    let chunks = post_stream(&h, json!({"messages": "Capital of France?", "stream": true})).await;
    assert_eq!(streamed_text(&chunks).trim(), reply);
    let (status, v) = post(&h, json!({"messages": "Capital of France?"})).await;
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap().trim(), reply);
    assert_eq!(stats.snapshot()["requests"], 2, "both calls reached the upstream: {}", stats.snapshot());
    h.shutdown().await.unwrap();

    // An upstream that is down: 502 naming it.
    let dead = RemoteGenerator::new("http://127.0.0.1:9", None, None, Duration::from_secs(2));
    let h = serve(Arc::new(dead)).await;
    let (status, v) = post(&h, json!({"messages": "hi"})).await;
    assert_eq!(status, 502, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("llm-upstream"), "{v}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn models_lists_the_served_model() {
    let h = serve(generator(EngineConfig::default())).await;
    let v: Value =
        comps_core::http_client().get(format!("{}/v1/models", h.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
    // The GGUF's own context length (the native backend has no 4096 cap as candle's llama has).
    assert_eq!(v["data"][0]["max_model_len"], 8192);
    h.shutdown().await.unwrap();
}

/// A request's `model` must be the served name or an alias (or absent / empty), as vLLM
/// checks it; anything else is OpenAI's 404 `model_not_found`, naming what is served.
#[tokio::test]
async fn an_unknown_model_name_is_404_and_aliases_are_served() {
    let g = LocalGenerator::new(model(), None, EngineConfig::default())
        .expect("generator starts")
        .with_aliases(["smol".to_string(), "models/SmolLM2-135M-Instruct".to_string()]);
    let h = serve(Arc::new(g)).await;
    let one = |m: Value| {
        let mut b = ask("Say hi.");
        b["max_tokens"] = json!(2);
        if !m.is_null() {
            b["model"] = m;
        }
        b
    };
    for name in [
        json!("SmolLM2-135M-Instruct.Q4_1"),
        json!("smol"),
        json!("models/SmolLM2-135M-Instruct"),
        json!(""),
        Value::Null,
    ] {
        let (status, v) = post(&h, one(name.clone())).await;
        assert_eq!(status, 200, "{name}: {v}");
    }
    let (status, v) = post(&h, one(json!("gpt-4o"))).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    assert_eq!(v["error"]["param"], "model", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("gpt-4o") && msg.contains("`smol`"), "{msg}");
    // OPEA's LLMParamsDoc carries `model` too.
    let (status, v) = post(&h, json!({"query": "hi", "model": "gpt-4o", "max_tokens": 2, "stream": false})).await;
    assert_eq!(status, 404, "{v}");
    h.shutdown().await.unwrap();
}

/// Continuous batching: greedy answers to three prompts sent together (decoded in shared
/// steps, prompt chunks of 8 tokens beside the others' decode tokens) are token for token the
/// answers each gets alone.
#[test]
fn batched_sequences_answer_as_they_do_alone() {
    use comps_llm::{Engine, GenEvent, GenRequest};
    let m = Arc::new(model());
    assert!(m.batched(), "{}", m.description);
    let prompts: Vec<Vec<u32>> = ["What is 2+2?", "Name three rivers of Europe.", "Write a haiku about rain."]
        .iter()
        .map(|q| {
            let text = format!("<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
            m.tokenizer.encode(text, false).unwrap().get_ids().to_vec()
        })
        .collect();
    let run = |max_active: usize| {
        let engine = Engine::start(
            m.clone(),
            EngineConfig { max_active, max_queued: 8, prefill_chunk: 8, ..EngineConfig::default() },
        )
        .unwrap();
        let mut streams: Vec<_> = prompts
            .iter()
            .map(|p| {
                let req = GenRequest {
                    prompt_ids: p.clone(),
                    max_tokens: 24,
                    sampling: Default::default(),
                    stop: Vec::new(),
                    ignore_eos: true,
                };
                engine.submit(req).unwrap()
            })
            .collect();
        let texts: Vec<String> = streams
            .iter_mut()
            .map(|rx| {
                let mut text = String::new();
                loop {
                    match rx.blocking_recv().expect("the engine answers") {
                        GenEvent::Text(t) => text.push_str(&t),
                        GenEvent::Done(d) => {
                            assert_eq!(d.completion_tokens, 24);
                            return text;
                        }
                        GenEvent::Failed(e) => panic!("generation failed: {e}"),
                    }
                }
            })
            .collect();
        (texts, engine.load().max_batch.load(std::sync::atomic::Ordering::SeqCst))
    };
    let (alone, one) = run(1);
    let (together, three) = run(3);
    assert_eq!((one, three), (1, 3), "steps ran one sequence, then all three");
    assert_eq!(together, alone);
    assert!(alone.iter().all(|t| !t.is_empty()));
}

/// The prefix cache: prompts sent one after another that share a long start (a RAG prompt's
/// instructions) run only the rest, counted in the engine's gauge, and get token for token the
/// answers they get with the cache off; the same prompt again runs its last token only.
#[test]
fn prompts_sharing_a_start_reuse_it_and_answer_as_without() {
    use comps_llm::{Engine, GenEvent, GenRequest};
    use std::sync::atomic::Ordering;
    let m = Arc::new(model());
    let instructions = "You are a helpful, respectful and honest assistant. Answer the question from the \
        search results below; if they do not hold the answer, say that you do not know.";
    let prompts: Vec<Vec<u32>> = ["What is 2+2?", "Name three rivers of Europe.", "What is 2+2?"]
        .iter()
        .map(|q| {
            let text = format!(
                "<|im_start|>system\n{instructions}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
            );
            m.tokenizer.encode(text, false).unwrap().get_ids().to_vec()
        })
        .collect();
    let shared = prompts[0].iter().zip(&prompts[1]).take_while(|(a, b)| a == b).count();
    assert!(shared > 30, "the prompts share their instructions ({shared} tokens)");
    let run = |bytes: usize| {
        let cfg = EngineConfig { prefill_chunk: 16, prefix_cache_bytes: bytes, ..EngineConfig::default() };
        let engine = Engine::start(m.clone(), cfg).unwrap();
        let mut hits = Vec::new();
        let texts: Vec<String> = prompts
            .iter()
            .map(|p| {
                let req = GenRequest {
                    prompt_ids: p.clone(),
                    max_tokens: 16,
                    sampling: Default::default(),
                    stop: Vec::new(),
                    ignore_eos: true,
                };
                let mut rx = engine.submit(req).unwrap();
                let mut text = String::new();
                loop {
                    match rx.blocking_recv().expect("the engine answers") {
                        GenEvent::Text(t) => text.push_str(&t),
                        GenEvent::Done(d) => {
                            assert_eq!((d.prompt_tokens, d.completion_tokens), (p.len(), 16));
                            break;
                        }
                        GenEvent::Failed(e) => panic!("generation failed: {e}"),
                    }
                }
                hits.push(engine.load().prefix_hit_tokens.load(Ordering::SeqCst));
                text
            })
            .collect();
        (texts, hits, engine.load().prefix_cache_bytes.load(Ordering::SeqCst))
    };
    let (without, no_hits, no_bytes) = run(0);
    assert_eq!((no_hits, no_bytes), (vec![0, 0, 0], 0));
    let (with, hits, bytes) = run(EngineConfig::default().prefix_cache_bytes);
    assert_eq!(with, without);
    assert!(without.iter().all(|t| !t.is_empty()));
    // The first prompt runs whole; the second takes the shared start; the third is the first
    // again and takes all of it but its last token.
    assert_eq!(hits, vec![0, shared, shared + prompts[2].len() - 1]);
    assert!(bytes > 0 && bytes <= EngineConfig::default().prefix_cache_bytes);
}

async fn post_to(h: &ServerHandle, path: &str, body: Value) -> (u16, String) {
    let r = comps_core::http_client().post(format!("{}{path}", h.url())).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The legacy `/v1/completions`: the prompt continued as it is (no chat template), whole and
/// streamed alike, OpenAI's default of 16 tokens, and its own refusals.
#[tokio::test]
async fn legacy_completions_continue_the_prompt_as_it_is() {
    let g = generator(EngineConfig::default());
    let h = serve(g.clone()).await;
    let body = json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0});
    let (status, text) = post_to(&h, "/v1/completions", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let answer = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!answer.is_empty());
    assert!(v["choices"][0]["logprobs"].is_null());
    // No template: the prompt is the text's tokens (plus the tokenizer's own special tokens).
    let plain = g.tokenize("The capital of France is").unwrap().len() as u64;
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!((plain..=plain + 1).contains(&prompt_tokens), "{prompt_tokens} prompt tokens for a {plain}-token text");

    // Streamed: the same text, in text_completion chunks, the finish last, then [DONE].
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, sse) = post_to(&h, "/v1/completions", streamed).await;
    assert_eq!(status, 200);
    assert!(sse.ends_with("data: [DONE]\n\n"), "{sse}");
    let chunks: Vec<Value> = sse
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|p| *p != "[DONE]")
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion" && c["id"] == chunks[0]["id"]));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, answer);
    let usage = chunks.last().unwrap();
    assert!(usage["choices"].as_array().unwrap().is_empty() && usage["usage"]["prompt_tokens"] == prompt_tokens);
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], v["choices"][0]["finish_reason"]);

    // Token ids and a list of one prompt are the same prompt.
    let ids = g.tokenize("The capital of France is").unwrap();
    for prompt in [json!(["The capital of France is"]), json!(ids)] {
        let (status, t) =
            post_to(&h, "/v1/completions", json!({"prompt": prompt, "max_tokens": 8, "temperature": 0})).await;
        assert_eq!(status, 200, "{t}");
        let w: Value = serde_json::from_str(&t).unwrap();
        assert!(!w["choices"][0]["text"].as_str().unwrap().is_empty());
    }

    // OpenAI's default budget is 16 tokens.
    let (_, t) =
        post_to(&h, "/v1/completions", json!({"prompt": "Once upon a time", "temperature": 0, "ignore_eos": true}))
            .await;
    let d: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(d["usage"]["completion_tokens"], 16, "{t}");

    for (body, field) in [
        (json!({"max_tokens": 4}), "prompt"),
        (json!({"prompt": 5}), "prompt"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"prompt": [1, 2, 999999]}), "prompt"),
        (json!({"prompt": []}), "prompt"),
        (json!({"prompt": "x", "logprobs": 3}), "logprobs"),
        (json!({"prompt": "x", "echo": true}), "echo"),
        (json!({"prompt": "x", "temperature": 9}), "temperature"),
        (json!({"prompt": "x", "max_tokens": 100000}), "max_tokens"),
        (json!({"prompt": "x", "model": "gpt-4"}), "model"),
    ] {
        let (status, t) = post_to(&h, "/v1/completions", body.clone()).await;
        let e: Value = serde_json::from_str(&t).unwrap();
        let want = if field == "model" { 404 } else { 400 };
        assert_eq!(status, want, "{body} -> {t}");
        assert_eq!(e["error"]["param"], field, "{body} -> {t}");
    }
    h.shutdown().await.unwrap();
}
