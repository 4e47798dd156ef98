//! Wire types: OPEA JSON round-trips, OPEA defaults, validation naming the field.

use comps_core::extract::parse_json;
use comps_core::protocol::*;
use comps_core::{ServiceError, handle_message};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Parse `input`, serialize, and check every key of `input` comes back with the same value.
fn round_trip<T: DeserializeOwned + Serialize>(input: Value) -> Value {
    let parsed: T = serde_json::from_value(input.clone()).expect("parses");
    let out = serde_json::to_value(&parsed).unwrap();
    for (k, v) in input.as_object().unwrap() {
        assert_eq!(out.get(k), Some(v), "key {k} changed in round trip: {out}");
    }
    // And the output parses again to the same value.
    let again: T = serde_json::from_value(out.clone()).unwrap();
    assert_eq!(serde_json::to_value(&again).unwrap(), out);
    out
}

fn is_doc_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
}

#[test]
fn chat_request_string_messages_take_opea_defaults() {
    let r: ChatCompletionRequest = serde_json::from_value(json!({"messages": "hi"})).unwrap();
    assert_eq!(r.messages, Messages::Text("hi".into()));
    assert_eq!(r.max_tokens, Some(1024));
    assert_eq!(r.temperature, Some(0.01));
    assert_eq!(r.stream, Some(false));
    assert_eq!(r.search.k, 4);
    assert_eq!(r.search.fetch_k, 20);
    assert_eq!(r.top_n, 1);
    assert_eq!(r.search.lambda_mult, 0.5);
    assert_eq!(r.search.score_threshold, 0.2);
    assert_eq!(r.search.search_type, "similarity");
    assert_eq!(r.n, Some(1));
    assert_eq!(r.repetition_penalty, Some(1.0));
    assert_eq!(r.stop, Some(Stop::Many(vec![])));
    assert_eq!(r.encoding_format.as_deref(), Some("float"));
    assert_eq!(r.request_type, "chat");
    assert_eq!(r.language, "auto");
    assert!(r.top_k.is_none() && r.top_p.is_none());
    assert!(r.validate().is_ok());
}

#[test]
fn chat_request_round_trips_every_opea_field() {
    let input = json!({
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]},
            {"role": "assistant", "content": "a cat"}
        ],
        "model": "Intel/neural-chat-7b-v3-3",
        "max_tokens": 17, "n": 1, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
        "typical_p": 0.95, "repetition_penalty": 1.1, "frequency_penalty": 0.1, "presence_penalty": -0.2,
        "stop": ["\n\n", "User:"], "stream": true, "stream_options": {"include_usage": true},
        "seed": 42, "documents": ["doc one", {"title": "t", "text": "doc two"}],
        "chat_template": "{context} {question}", "chat_template_kwargs": {"enable_thinking": false},
        "input": "what is this?", "encoding_format": "base64", "dimensions": 128,
        "embedding": [0.25, -0.5],
        "search_type": "mmr", "k": 3, "fetch_k": 12, "lambda_mult": 0.25, "score_threshold": 0.5,
        "distance_threshold": 0.75,
        "retrieved_docs": [{"text": "chunk", "metadata": {"source": "a.txt"}}],
        "index_name": "rag", "top_n": 2, "reranked_docs": [{"text": "chunk", "score": 0.5}],
        "language": "en", "request_type": "chat"
    });
    let out = round_trip::<ChatCompletionRequest>(input);
    let r: ChatCompletionRequest = serde_json::from_value(out).unwrap();
    assert!(r.validate().is_ok());
    assert_eq!(r.last_user_text().as_deref(), Some("what is this?"));
    assert_eq!(r.stop.unwrap().to_vec(), vec!["\n\n".to_string(), "User:".to_string()]);
    assert_eq!(r.embedding.vector(), Some(&[0.25f32, -0.5][..]));
}

#[test]
fn chat_request_stop_as_string_and_unknown_fields_ignored() {
    let r: ChatCompletionRequest =
        serde_json::from_value(json!({"messages": "x", "stop": "END", "logit_bias": null, "foo": {"bar": 1}})).unwrap();
    assert_eq!(r.stop, Some(Stop::One("END".into())));
}

#[test]
fn docs_generate_ids_and_take_defaults() {
    let t: TextDoc = serde_json::from_value(json!({"text": "hello"})).unwrap();
    let v = serde_json::to_value(&t).unwrap();
    assert!(is_doc_id(&v["id"]), "{v}");
    assert_eq!(v["downstream_black_list"], json!([]));
    let t2: TextDoc = serde_json::from_value(json!({"text": ["a", "b"], "downstream_black_list": null})).unwrap();
    assert_eq!(t2.text_str(), "a\nb");
    assert!(t2.downstream_black_list.is_empty());

    let p: LLMParams = serde_json::from_value(json!({})).unwrap();
    assert!(p.stream);
    assert_eq!((p.sampling.max_tokens, p.sampling.max_new_tokens, p.sampling.top_k), (1024, 1024, 10));
    assert_eq!(
        (p.sampling.top_p, p.sampling.typical_p, p.sampling.temperature, p.sampling.repetition_penalty),
        (0.95, 0.95, 0.01, 1.03)
    );
    assert_eq!(p.language, "auto");
    assert!(is_doc_id(&json!(p.id)));

    let d = LLMParamsDoc::new("q");
    assert!(d.stream && d.documents.is_empty() && d.sampling.max_new_tokens == 1024);

    let r = RetrieverParms::default();
    assert_eq!(
        (r.search.search_type.as_str(), r.search.k, r.search.fetch_k, r.search.lambda_mult, r.search.score_threshold),
        ("similarity", 4, 20, 0.5, 0.2)
    );
    assert!(r.search.distance_threshold.is_none());
    assert_eq!(RerankerParms::default().top_n, 1);
}

#[test]
fn every_doc_round_trips() {
    let id = "0123456789abcdef0123456789abcdef";
    round_trip::<TextDoc>(json!({"id": id, "text": "t", "downstream_black_list": [".*"]}));
    round_trip::<EmbedDoc>(json!({
        "id": id, "text": "q", "embedding": [0.5, 0.25], "search_type": "similarity_score_threshold",
        "k": 2, "distance_threshold": null, "fetch_k": 9, "lambda_mult": 0.75, "score_threshold": 0.5,
        "constraints": {"source": "x"}, "index_name": "i"
    }));
    let e = round_trip::<EmbedDoc>(json!({"text": ["a", "b"], "embedding": [[0.5], [0.25]]}));
    assert_eq!((e["k"].as_u64(), e["fetch_k"].as_u64()), (Some(4), Some(20)));
    let s = round_trip::<SearchedDoc>(json!({
        "id": id, "retrieved_docs": [{"id": id, "text": "d", "downstream_black_list": []}], "initial_query": "q"
    }));
    assert_eq!(s["top_n"], 1);
    round_trip::<RerankedDoc>(
        json!({"id": id, "reranked_docs": [{"id": id, "text": "d", "downstream_black_list": []}], "initial_query": "q"}),
    );
    round_trip::<LLMParamsDoc>(json!({
        "id": id, "model": "m", "query": "q", "max_tokens": 5, "max_new_tokens": 6, "top_k": 3, "top_p": 0.5,
        "typical_p": 0.5, "temperature": 0.0, "frequency_penalty": 0.5, "presence_penalty": 0.25,
        "repetition_penalty": 1.5, "stream": false, "language": "zh", "input_guardrail_params": null,
        "output_guardrail_params": null, "chat_template": "{question}", "documents": ["a", {"text": "b"}]
    }));
    round_trip::<GeneratedDoc>(json!({"id": id, "text": "answer", "prompt": "q", "output_guardrail_params": null}));
    round_trip::<LLMParams>(
        json!({"id": id, "model": null, "max_tokens": 7, "stream": false, "index_name": "x", "chat_template": null}),
    );
    round_trip::<RetrieverParms>(
        json!({"id": id, "search_type": "mmr", "k": 1, "fetch_k": 2, "lambda_mult": 1.0, "score_threshold": 0.0, "distance_threshold": 0.5}),
    );
    round_trip::<RerankerParms>(json!({"id": id, "top_n": 3}));
}

#[test]
fn openai_types_round_trip() {
    round_trip::<EmbeddingRequest>(
        json!({"input": ["a", "b"], "model": "m", "encoding_format": "base64", "dimensions": 8, "user": null, "request_type": "embedding"}),
    );
    let t: EmbeddingRequest = serde_json::from_value(json!({"input": [[1, 2], [3]]})).unwrap();
    assert_eq!(t.input, EmbeddingInput::TokenBatches(vec![vec![1, 2], vec![3]]));
    let t: EmbeddingRequest = serde_json::from_value(json!({"input": [1, 2]})).unwrap();
    assert_eq!(t.input, EmbeddingInput::Tokens(vec![1, 2]));
    round_trip::<EmbeddingResponse>(json!({
        "object": "list", "model": "m",
        "data": [{"index": 0, "object": "embedding", "embedding": [0.5]}, {"index": 1, "object": "embedding", "embedding": "AACAPw=="}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3, "completion_tokens": 0}
    }));
    round_trip::<RetrievalRequest>(
        json!({"embedding": [0.5, 0.5], "input": "q", "search_type": "mmr", "k": 2, "fetch_k": 8, "lambda_mult": 0.5, "score_threshold": 0.2, "distance_threshold": null, "request_type": "retrieval"}),
    );
    let rr: RetrievalRequest =
        serde_json::from_value(json!({"embedding": {"data": [{"index": 0, "embedding": [1.0]}]}})).unwrap();
    assert_eq!(rr.embedding.unwrap().vector(), Some(&[1.0f32][..]));
    round_trip::<RetrievalResponse>(
        json!({"retrieved_docs": [{"text": "a", "metadata": {"k": 1}}, {"text": "b", "metadata": null}]}),
    );
    let rq = round_trip::<RerankingRequest>(
        json!({"input": "q", "retrieved_docs": ["a", {"text": "b", "metadata": null}, {"text": "c", "other": 1}], "top_n": 2, "request_type": "reranking"}),
    );
    let rq: RerankingRequest = serde_json::from_value(rq).unwrap();
    assert_eq!(rq.retrieved_docs.iter().map(RerankInputDoc::text).collect::<Vec<_>>(), ["a", "b", "c"]);
    round_trip::<RerankingResponse>(json!({"reranked_docs": [{"text": "a", "score": 0.5}]}));
    let resp = ChatCompletionResponse::single("chatqna", "hello", FinishReason::Stop, UsageInfo::new(3, 2));
    let v = round_trip::<ChatCompletionResponse>(serde_json::to_value(&resp).unwrap());
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"], json!({"role": "assistant", "content": "hello", "audio": null}));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}));
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let chunk = round_trip::<ChatCompletionStreamResponse>(json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": null}]
    }));
    assert!(chunk.get("usage").is_none(), "usage only when set");
}

fn invalid_field(body: Value) -> (Option<String>, String) {
    let r: Result<ChatCompletionRequest, _> = parse_json(body.to_string().as_bytes());
    let err = match r {
        Ok(req) => req.validate().expect_err("should be invalid"),
        Err(e) => e,
    };
    match err {
        ServiceError::InvalidField { field, message } => (field, message),
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

#[test]
fn invalid_values_name_the_field() {
    for (body, field) in [
        (json!({"messages": "x", "max_tokens": 0}), "max_tokens"),
        (json!({"messages": "x", "n": 0}), "n"),
        (json!({"messages": "x", "temperature": -1}), "temperature"),
        (json!({"messages": "x", "temperature": 2.5}), "temperature"),
        (json!({"messages": "x", "top_p": 2}), "top_p"),
        (json!({"messages": "x", "top_k": 0}), "top_k"),
        (json!({"messages": "x", "k": 0}), "k"),
        (json!({"messages": "x", "search_type": "fuzzy"}), "search_type"),
        (json!({"messages": "x", "encoding_format": "hex"}), "encoding_format"),
        (json!({"messages": []}), "messages"),
        (json!({"messages": "x", "max_tokens": "many"}), "max_tokens"),
        (json!({"messages": "x", "max_tokens": -3}), "max_tokens"),
        (json!({"messages": 5}), "messages"),
        (json!({"model": "m"}), "messages"),
        (json!({"messages": "x", "stream": "yes"}), "stream"),
    ] {
        let (got, message) = invalid_field(body.clone());
        assert_eq!(got.as_deref(), Some(field), "{body} -> {message}");
        assert!(message.contains(field), "message should name {field}: {message}");
    }
    // top_k = -1 means "off" in vLLM and OPEA.
    let r: ChatCompletionRequest = serde_json::from_value(json!({"messages": "x", "top_k": -1})).unwrap();
    assert!(r.validate().is_ok());
}

#[test]
fn malformed_json_is_not_a_field_error() {
    for body in ["{", "", "   ", "{\"messages\": \"x\",}", "[1, 2"] {
        let r: Result<ChatCompletionRequest, _> = parse_json(body.as_bytes());
        assert!(matches!(r, Err(ServiceError::MalformedRequest(_))), "{body:?} -> {r:?}");
    }
    let r: Result<ChatCompletionRequest, _> = parse_json(b"{\"messages\": \"x\"} trailing");
    assert!(matches!(r, Err(ServiceError::MalformedRequest(_))));
}

#[test]
fn nested_wrong_type_names_the_path() {
    let (field, _) = invalid_field(
        json!({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": "yes"}}),
    );
    assert_eq!(field.as_deref(), Some("stream_options.include_usage"));
    let r: Result<LLMParamsDoc, _> = parse_json(json!({"max_tokens": 3}).to_string().as_bytes());
    match r {
        Err(ServiceError::InvalidField { field, .. }) => assert_eq!(field.as_deref(), Some("query")),
        other => panic!("{other:?}"),
    }
}

fn msgs(v: Value) -> Messages {
    serde_json::from_value(v).unwrap()
}

#[test]
fn handle_message_matches_opea() {
    let p = handle_message(&msgs(json!([{"role": "user", "content": "opea project! "}]))).unwrap();
    assert_eq!(p.text, "user: opea project! \n");
    let p = handle_message(&msgs(json!([
        {"role": "system", "content": "System Prompt"},
        {"role": "user", "content": "opea project! "}
    ])))
    .unwrap();
    assert_eq!(p.text, "System Prompt\nuser: opea project! \n");
    let p = handle_message(&msgs(json!([
        {"role": "user", "content": "hello, "},
        {"role": "assistant", "content": "opea project! "},
        {"role": "user", "content": ""}
    ])))
    .unwrap();
    assert_eq!(p.text, "user: hello, \nassistant: opea project! \nuser:");
    let err = handle_message(&msgs(json!([{"role": "user_test", "content": "opea project! "}]))).unwrap_err();
    match err {
        ServiceError::InvalidField { field, message } => {
            assert_eq!(field.as_deref(), Some("messages.0.role"));
            assert_eq!(message, "Unknown role: user_test");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(handle_message(&Messages::Text("plain".into())).unwrap().text, "plain");
}

#[test]
fn handle_message_collects_images_and_joins_text_parts() {
    let p = handle_message(&msgs(json!([{"role": "user", "content": [
        {"type": "text", "text": "hello, "},
        {"type": "text", "text": "again"},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/a.jpg"}}
    ]}])))
    .unwrap();
    assert_eq!(p.text, "user: hello, \nagain\n");
    assert_eq!(p.images, vec!["https://example.invalid/a.jpg".to_string()]);
    let p = handle_message(&msgs(json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "aGVsbG8="}}
    ]}])))
    .unwrap();
    assert_eq!(p.text, "user:");
}

#[tokio::test]
async fn images_load_from_data_uri_file_and_base64() {
    use comps_core::utils::load_image;
    use std::time::Duration;
    let t = Duration::from_secs(1);
    assert_eq!(load_image("data:image/png;base64,aGVsbG8=", t).await.unwrap(), "aGVsbG8=");
    assert_eq!(load_image("aGVsbG8=", t).await.unwrap(), "aGVsbG8=");
    let dir = std::env::temp_dir().join(format!("comps-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("x.bin");
    std::fs::write(&f, b"hello").unwrap();
    assert_eq!(load_image(f.to_str().unwrap(), t).await.unwrap(), "aGVsbG8=");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(load_image("not base64 !!", t).await, Err(ServiceError::InvalidField { .. })));
    assert!(matches!(load_image("data:image/png,raw", t).await, Err(ServiceError::InvalidField { .. })));
}

#[test]
fn service_types_keep_opea_numbering() {
    use comps_core::ServiceType;
    assert_eq!(ServiceType::Gateway.value(), 0);
    assert_eq!(ServiceType::Llm.value(), 4);
    assert_eq!(ServiceType::Guardrail.value(), 7);
    assert_eq!(ServiceType::Lvm.value(), 12);
    assert_eq!(ServiceType::ArbPostHearingAssistant.value(), 28);
    for (i, t) in ServiceType::ALL.iter().enumerate() {
        assert_eq!(usize::from(t.value()), i);
        assert_eq!(ServiceType::try_from(i as u8).unwrap(), *t);
        assert_eq!(ServiceType::from_opea_name(t.opea_name()), Some(*t));
    }
    assert!(ServiceType::try_from(29).is_err());
}

#[test]
fn microservice_endpoint_path_and_node_id() {
    use comps_core::{MicroService, ServiceRoleType, ServiceType};
    let s = MicroService::new("s1").host("localhost").port(8083).endpoint("/v1/add");
    assert_eq!(s.endpoint_path(), "http://localhost:8083/v1/add");
    assert_eq!(s.node_id(), "s1/MicroService");
    assert_eq!(s.service_role, ServiceRoleType::MicroService);
    assert_eq!(s.service_type, ServiceType::Llm);
    let hosted = MicroService::new("llm")
        .host("https://api.example.invalid")
        .endpoint("/v1/chat/completions")
        .api_key(Some("k".into()));
    assert_eq!(hosted.endpoint_path(), "https://api.example.invalid/v1/chat/completions");
    let u = MicroService::from_url("tei", "http://10.1.2.3:6006/embed").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.endpoint.as_str()), ("10.1.2.3", 6006, "/embed"));
    assert!(u.use_remote_service);
    assert_eq!(MicroService::from_url("x", "https://h/v1").unwrap().port, 443);
    assert!(MicroService::from_url("x", "not a url").is_err());
    assert!(MicroService::new("x").api_key(Some(String::new())).api_key.is_none());
}

#[test]
fn percentiles_follow_numpy() {
    use comps_core::stats::percentile;
    let v = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(percentile(&v, 50.0), Some(2.5));
    assert!((percentile(&v, 99.0).unwrap() - 3.97).abs() < 1e-12);
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
}

#[test]
fn base_statistics_match_opea() {
    use comps_core::StatisticsRegistry;
    use std::time::Duration;
    let reg = StatisticsRegistry::new();
    let s1 = reg.register("s1");
    let empty = reg.collect_all();
    for k in ["p50_latency", "p99_latency", "average_latency", "p50_latency_first_token"] {
        assert_eq!(empty["s1"][k], Value::Null);
    }
    for (lat, ft) in [(1.0, Some(0.5)), (2.0, None), (3.0, Some(0.0)), (4.0, Some(1.5))] {
        s1.append_latency(Duration::from_secs_f64(lat), ft.map(Duration::from_secs_f64));
    }
    let v = reg.collect_all();
    assert_eq!(v["s1"]["p50_latency"], 2.5);
    assert!((v["s1"]["p99_latency"].as_f64().unwrap() - 3.97).abs() < 1e-9);
    assert_eq!(v["s1"]["average_latency"], 2.5);
    // A zero first-token latency is skipped, as OPEA skips a falsy one.
    assert_eq!(v["s1"]["p50_latency_first_token"], 1.0);
    assert_eq!(v["s1"]["average_latency_first_token"], 1.0);
    assert_eq!(v["s1"]["count"], 4);
    // Two ~equal latencies give int(p50) == int(p99), as OPEA's test_base_statistics checks.
    let s2 = reg.register("s2");
    s2.append_latency(Duration::from_millis(1002), None);
    s2.append_latency(Duration::from_millis(1005), None);
    let v = reg.collect_all();
    assert_eq!(v["s2"]["p50_latency"].as_f64().unwrap() as i64, v["s2"]["p99_latency"].as_f64().unwrap() as i64);
}

#[test]
fn port_and_ip_utilities() {
    use comps_core::utils::{check_ports_availability, get_internal_ip, is_port_free};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    assert!(!is_port_free("127.0.0.1", port));
    assert!(!check_ports_availability(&["127.0.0.1"], &[port]));
    drop(l);
    assert!(is_port_free("127.0.0.1", port));
    let ip = get_internal_ip();
    assert!(ip.is_ipv4());
}
