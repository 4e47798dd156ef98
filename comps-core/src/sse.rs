//! Server-sent events: reading an upstream stream properly (several events in one TCP chunk,
//! one event split across chunks), writing OpenAI and OPEA framings, and answering a stream
//! that may fail midway (an error event, then always `[DONE]`).
//!
//! OPEA's UIs read ChatQnA tokens as `data: b'<token>'\n\n`: the Python `repr` of the token's
//! UTF-8 bytes. [`py_bytes_repr`] writes exactly that and [`parse_py_bytes`] reads it back.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use eventsource_stream::Eventsource;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::error::ServiceError;

/// Event payloads (the `data` of each event; `[DONE]` ends the stream and is not included).
pub type EventStream = BoxStream<'static, Result<String, ServiceError>>;

/// Framed bytes ready for the client.
pub type ByteStream = BoxStream<'static, Result<Bytes, ServiceError>>;

/// The SSE comment a silent stream sends to stay open.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";

/// `frames`, with a [`KEEP_ALIVE`] comment whenever `every` passes without a frame.
pub fn keep_alive(frames: ByteStream, every: Duration) -> ByteStream {
    async_stream::stream! {
        let mut frames = frames;
        loop {
            match tokio::time::timeout(every, frames.next()).await {
                Err(_) => yield Ok(Bytes::from_static(KEEP_ALIVE.as_bytes())),
                Ok(Some(item)) => yield item,
                Ok(None) => break,
            }
        }
    }
    .boxed()
}

/// The end-of-stream event of OpenAI and OPEA.
pub const DONE: &str = "data: [DONE]\n\n";

/// Read an HTTP response body as SSE events. `idle` bounds the wait for each event; `on_error`
/// turns transport failures into the caller's error (naming the node).
pub fn read_events<S, E>(
    body: S,
    idle: Duration,
    on_error: impl Fn(String) -> ServiceError + Send + Sync + 'static,
    on_idle: impl Fn() -> ServiceError + Send + Sync + 'static,
) -> EventStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut events = Box::pin(body.eventsource());
    async_stream::stream! {
        loop {
            match tokio::time::timeout(idle, events.next()).await {
                Err(_) => {
                    yield Err(on_idle());
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    yield Err(on_error(e.to_string()));
                    break;
                }
                Ok(Some(Ok(ev))) => {
                    if ev.data.trim() == "[DONE]" {
                        break;
                    }
                    if ev.data.is_empty() {
                        continue;
                    }
                    yield Ok(ev.data);
                }
            }
        }
    }
    .boxed()
}

/// The text carried by one event payload: an OpenAI chunk's `choices[0].delta.content` (or a
/// completion's `choices[0].text`, or a doc's `text`), an OPEA `b'...'` literal, or the raw
/// payload. `None` for payloads without text (role-only or usage chunks).
pub fn event_text(payload: &str) -> Option<String> {
    let trimmed = payload.trim_start();
    if trimmed.starts_with('{')
        && let Ok(v) = serde_json::from_str::<Value>(trimmed)
    {
        if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
            let content = choice
                .get("delta")
                .and_then(|d| d.get("content"))
                .or_else(|| choice.get("text"))
                .or_else(|| choice.get("message").and_then(|m| m.get("content")));
            return content.and_then(Value::as_str).map(str::to_string);
        }
        if v.get("choices").is_some() {
            return None;
        }
        return v.get("text").and_then(Value::as_str).map(str::to_string);
    }
    if let Some(s) = parse_py_bytes(payload) {
        return Some(s);
    }
    Some(payload.to_string())
}

/// Python's `repr(bytes)` of the UTF-8 of `text`: `b'...'`, or `b"..."` when the text has a
/// single quote and no double quote; `\\`, the quote, `\t`, `\n`, `\r` escaped; other bytes
/// outside printable ASCII as `\xNN`.
pub fn py_bytes_repr(text: &str) -> String {
    let bytes = text.as_bytes();
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') { b'"' } else { b'\'' };
    let mut out = String::with_capacity(bytes.len() + 3);
    out.push('b');
    out.push(quote as char);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if b == quote => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote as char);
    out
}

/// Read a Python bytes literal (`b'...'` or `b"..."`) back to text (lossy UTF-8).
pub fn parse_py_bytes(lit: &str) -> Option<String> {
    let lit = lit.trim();
    let rest = lit.strip_prefix('b')?;
    let q = rest.chars().next()?;
    if (q != '\'' && q != '"') || rest.len() < 2 || !rest.ends_with(q) {
        return None;
    }
    let inner = &rest.as_bytes()[1..rest.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' || i + 1 == inner.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = inner[i + 1];
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'x' if i + 2 <= inner.len() => {
                let hex = std::str::from_utf8(&inner[i..i + 2]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// One OPEA token frame: `data: b'<token>'\n\n`.
pub fn opea_frame(token: &str) -> Bytes {
    Bytes::from(format!("data: {}\n\n", py_bytes_repr(token)))
}

/// `data: <payload>\n\n`.
pub fn data_frame(payload: &str) -> Bytes {
    Bytes::from(format!("data: {payload}\n\n"))
}

/// Frame events as-is (`data: <payload>`), then `[DONE]`.
pub fn frame_events(events: EventStream) -> ByteStream {
    events.map(|r| r.map(|p| data_frame(&p))).chain(futures::stream::once(async { Ok(Bytes::from(DONE)) })).boxed()
}

/// Frame the text of each event OPEA's way (`data: b'...'`), then `[DONE]`.
pub fn frame_opea(events: EventStream) -> ByteStream {
    events
        .filter_map(|r| async move {
            match r {
                Ok(p) => event_text(&p).filter(|t| !t.is_empty()).map(|t| Ok(opea_frame(&t))),
                Err(e) => Some(Err(e)),
            }
        })
        .chain(futures::stream::once(async { Ok(Bytes::from(DONE)) }))
        .boxed()
}

/// An OpenAI `chat.completion.chunk` payload carrying `content`.
pub fn chunk_payload(id: &str, model: &str, content: &str) -> String {
    serde_json::json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": crate::protocol::unix_now(),
        "model": model,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": null}],
    })
    .to_string()
}

/// A `text/event-stream` response of pre-framed bytes. A failure midway is sent as an error
/// event in the OpenAI envelope, followed by `[DONE]` so clients stop cleanly; a stream that
/// already ended with `[DONE]` gets no second one.
pub fn sse_response(frames: ByteStream) -> Response {
    let frames = keep_alive(frames, Duration::from_secs(crate::limits::SSE_KEEP_ALIVE_SECS));
    let body = async_stream::stream! {
        let mut frames = frames;
        let mut done = false;
        while let Some(item) = frames.next().await {
            match item {
                Ok(b) => {
                    if b.ends_with(DONE.as_bytes()) {
                        done = true;
                    }
                    yield Ok::<Bytes, std::convert::Infallible>(b);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream failed midway");
                    let body = serde_json::to_string(&e.body()).unwrap_or_default();
                    yield Ok(data_frame(&body));
                    break;
                }
            }
        }
        if !done {
            yield Ok(Bytes::from(DONE));
        }
    };
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(body))
        .into_response()
}
