//! SSE helpers: OPEA's `b'...'` framing, event text extraction, stream reading, and the
//! mid-stream error answer.

use axum::body::Bytes;
use comps_core::ServiceError;
use comps_core::sse::*;
use futures::StreamExt;

#[test]
fn py_bytes_repr_matches_python() {
    // Expected values are what CPython prints for repr(s.encode("utf-8")).
    assert_eq!(py_bytes_repr("hello"), "b'hello'");
    assert_eq!(py_bytes_repr(" OPEA "), "b' OPEA '");
    assert_eq!(py_bytes_repr("it's"), "b\"it's\"");
    assert_eq!(py_bytes_repr("it's \"x\""), "b'it\\'s \"x\"'");
    assert_eq!(py_bytes_repr("a\\b"), "b'a\\\\b'");
    assert_eq!(py_bytes_repr("line\nnext\tt\r"), "b'line\\nnext\\tt\\r'");
    assert_eq!(py_bytes_repr("é"), "b'\\xc3\\xa9'");
    assert_eq!(py_bytes_repr("你好"), "b'\\xe4\\xbd\\xa0\\xe5\\xa5\\xbd'");
    assert_eq!(py_bytes_repr("\u{7f}\u{1}"), "b'\\x7f\\x01'");
    assert_eq!(py_bytes_repr(""), "b''");
}

#[test]
fn py_bytes_round_trip() {
    for s in ["hello", "it's", "it's \"x\"", "a\\b", "line\nnext", "é 你好", ""] {
        assert_eq!(parse_py_bytes(&py_bytes_repr(s)).as_deref(), Some(s), "{s:?}");
    }
    assert_eq!(parse_py_bytes("plain"), None);
    assert_eq!(parse_py_bytes("b'unterminated"), None);
}

#[test]
fn event_text_reads_every_shape() {
    let chunk = chunk_payload("id", "m", "tok");
    assert_eq!(event_text(&chunk).as_deref(), Some("tok"));
    assert_eq!(event_text(r#"{"choices":[{"index":0,"text":"c"}]}"#).as_deref(), Some("c"));
    assert_eq!(event_text(r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#), None);
    assert_eq!(event_text(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#), None);
    assert_eq!(event_text(r#"{"text":"doc"}"#).as_deref(), Some("doc"));
    assert_eq!(event_text("b' OPEA'").as_deref(), Some(" OPEA"));
    assert_eq!(event_text("raw token").as_deref(), Some("raw token"));
    assert_eq!(opea_frame("it's"), Bytes::from("data: b\"it's\"\n\n"));
}

fn chunks(parts: &[&str]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let v: Vec<Result<Bytes, std::io::Error>> = parts.iter().map(|p| Ok(Bytes::from(p.to_string()))).collect();
    futures::stream::iter(v)
}

#[tokio::test]
async fn read_events_handles_coalesced_and_split_events() {
    let timeout = std::time::Duration::from_secs(1);
    let events = read_events(
        chunks(&["data: a\n\ndata: b\n\nda", "ta: c\n", "\ndata: [DONE]\n\ndata: ignored\n\n"]),
        timeout,
        ServiceError::Upstream,
        || ServiceError::UpstreamTimeout("idle".into()),
    );
    let got: Vec<String> = events.map(|r| r.unwrap()).collect().await;
    assert_eq!(got, ["a", "b", "c"]);
}

#[tokio::test]
async fn read_events_times_out_when_idle() {
    let stalled = futures::stream::pending::<Result<Bytes, std::io::Error>>();
    let mut events = read_events(stalled, std::time::Duration::from_millis(50), ServiceError::Upstream, || {
        ServiceError::UpstreamTimeout("node x sent nothing".into())
    });
    match events.next().await {
        Some(Err(ServiceError::UpstreamTimeout(m))) => assert!(m.contains("node x")),
        other => panic!("{other:?}"),
    }
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn sse_response_ends_a_failed_stream_with_an_error_event_and_done() {
    let frames: ByteStream = futures::stream::iter(vec![
        Ok(data_frame("one")),
        Err(ServiceError::Upstream("node llm/MicroService broke off its stream".into())),
        Ok(data_frame("never")),
    ])
    .boxed();
    let resp = sse_response(frames);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events[0], "data: one");
    let err: serde_json::Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["error"]["type"], "upstream_error");
    assert!(err["error"]["message"].as_str().unwrap().contains("llm/MicroService"));
    assert_eq!(events[2], "data: [DONE]");
    assert_eq!(events.len(), 3);

    // A stream that already sent [DONE] gets no second one.
    let ok = sse_response(frame_events(futures::stream::iter(vec![Ok("x".to_string())]).boxed()));
    let body = axum::body::to_bytes(ok.into_body(), 1 << 20).await.unwrap();
    assert_eq!(&body[..], b"data: x\n\ndata: [DONE]\n\n");
}

#[tokio::test]
async fn opea_framing_of_an_event_stream() {
    let events: EventStream = futures::stream::iter(vec![
        Ok(chunk_payload("id", "m", " OPEA")),
        Ok(r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#.to_string()),
        Ok(chunk_payload("id", "m", " it's é")),
    ])
    .boxed();
    let body: Vec<u8> = frame_opea(events).map(|b| b.unwrap().to_vec()).concat().await;
    assert_eq!(String::from_utf8(body).unwrap(), "data: b' OPEA'\n\ndata: b\" it's \\xc3\\xa9\"\n\ndata: [DONE]\n\n");
}

/// A silent stream gets a comment line every interval (proxies cut idle streams); our own
/// reader, as every SSE client does, skips the comments and sees only the events.
#[tokio::test]
async fn a_silent_stream_is_kept_alive_with_comments_that_readers_skip() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, ServiceError>>();
    let frames = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(260)).await;
        let _ = tx.send(Ok(data_frame("late")));
    });
    let every = std::time::Duration::from_millis(100);
    let got: Vec<Bytes> = keep_alive(frames, every).map(|r| r.unwrap()).collect().await;
    let texts: Vec<&str> = got.iter().map(|b| std::str::from_utf8(b).unwrap()).collect();
    assert!(texts.len() >= 3, "{texts:?}");
    let (last, silent) = texts.split_last().unwrap();
    assert!(silent.iter().all(|t| *t == KEEP_ALIVE), "{texts:?}");
    assert_eq!(*last, "data: late\n\n");

    let wire: Vec<&str> = texts.clone();
    let events = read_events(chunks(&wire), std::time::Duration::from_secs(1), ServiceError::Upstream, || {
        ServiceError::UpstreamTimeout("idle".into())
    });
    let read: Vec<String> = events.map(|r| r.unwrap()).collect().await;
    assert_eq!(read, ["late"]);
}
