//! The JSON extractors every handler uses: any parse failure or invalid value becomes the OpenAI
//! error envelope — 400 for malformed JSON, 413 for an oversize body, 422 naming the field for a
//! wrong type, a missing field or an out-of-range value. [`Json`] reads one type; [`JsonBody`]
//! serves a route that takes several request shapes (OpenAI's and OPEA's): the body is parsed
//! once, its keys decide the shape, and the chosen type is read from that same parse.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ServiceError;
use crate::protocol::Validate;

/// A JSON body parsed into `T` and checked with [`Validate`]; as a response, serialized JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value: T = parse_json(&read_body(req, state).await?)?;
        value.validate()?;
        Ok(Json(value))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ServiceError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServiceError::PayloadTooLarge("request body is larger than this service's limit".into())
        } else {
            ServiceError::MalformedRequest(format!("could not read the request body: {rejection}"))
        }
    })
}

/// A JSON object body, parsed once. A handler asks it which keys it has to decide the request's
/// shape, then reads the shape's type with [`JsonBody::typed`] (errors as [`parse_json`] gives
/// them: the field named).
#[derive(Debug, Clone)]
pub struct JsonBody(Value);

impl JsonBody {
    /// Parse `bytes`: empty, malformed or not an object are errors.
    pub fn parse(bytes: &[u8]) -> Result<Self, ServiceError> {
        match parse_json::<Value>(bytes)? {
            v @ Value::Object(_) => Ok(Self(v)),
            _ => Err(ServiceError::invalid("body", "the request body must be a JSON object")),
        }
    }

    /// Whether the body has `key` (with any value, `null` included).
    pub fn has(&self, key: &str) -> bool {
        self.0.get(key).is_some()
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Set `key` (a value the service fills in before reading the body, e.g. a computed vector).
    pub fn insert(&mut self, key: &str, value: Value) {
        if let Value::Object(m) = &mut self.0 {
            m.insert(key.to_string(), value);
        }
    }

    /// The body as it came (an object).
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The body's keys and values.
    pub fn as_map(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        // `parse` only ever builds an object; the empty map is never seen.
        self.0.as_object().unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    /// The body as a JSON value (an object).
    pub fn into_value(self) -> Value {
        self.0
    }

    /// The body read as `T` (no validation).
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        from_value(&self.0)
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Self::parse(&read_body(req, state).await?)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Read a parsed JSON value as `T`, errors naming the field as [`parse_json`]'s do.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, ServiceError> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

/// Parse `bytes` as `T`, mapping errors as the extractor does (no validation).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ServiceError::MalformedRequest("request body is empty; expected a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A data error found before the parser reached broken syntax is still malformed JSON.
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return ServiceError::MalformedRequest(format!("malformed JSON: {syntax}"));
        }
        path_error(e)
    })?;
    de.end().map_err(|e| ServiceError::MalformedRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ServiceError {
    use serde_json::error::Category;
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ServiceError::MalformedRequest(format!("malformed JSON: {inner}"))
        }
        Category::Data => {
            let mut message = json_words(&strip_position(&inner.to_string()));
            // serde reports a missing field, and a bad one of a flattened parameter group, at
            // its parent; name the field itself.
            let named = message.strip_prefix(crate::protocol::params::FIELD_ERROR_PREFIX).and_then(|r| {
                let (name, rest) = r.split_once("`: ")?;
                Some((name.to_string(), rest.to_string()))
            });
            let child = match named {
                Some((name, rest)) => {
                    message = rest;
                    Some(name)
                }
                None => message.strip_prefix("missing field `").and_then(|r| r.split('`').next()).map(str::to_string),
            };
            let field = match child {
                Some(child) if path == "." => child,
                Some(child) => format!("{path}.{child}"),
                None if path == "." => String::new(),
                None => path,
            };
            if field.is_empty() {
                ServiceError::InvalidField { field: None, message: format!("invalid request body: {message}") }
            } else {
                ServiceError::invalid(field.clone(), format!("invalid value for '{field}': {message}"))
            }
        }
    }
}

/// serde names Rust types (`expected u32`, `invalid type: floating point`); a client sent JSON
/// and reads JSON's words: `expected an integer from 0 to 4294967295`, `invalid type: number`.
fn json_words(msg: &str) -> String {
    let (head, expected) = match msg.rsplit_once(", expected ") {
        Some((head, expected)) => (head, Some(expected)),
        None => (msg, None),
    };
    let mut out = head.to_string();
    for (rust, json) in [("floating point", "number"), ("map", "object"), ("sequence", "array"), ("unit value", "null")]
    {
        for kind in ["invalid type: ", "invalid value: "] {
            out = out.replacen(&format!("{kind}{rust}"), &format!("{kind}{json}"), 1);
        }
    }
    if let Some(expected) = expected {
        let plain = match expected {
            "u8" => "an integer from 0 to 255",
            "u16" => "an integer from 0 to 65535",
            "u32" => "an integer from 0 to 4294967295",
            "u64" | "usize" => "a non-negative integer",
            "i8" | "i16" | "i32" | "i64" | "isize" => "an integer",
            "f32" | "f64" => "a number",
            "a sequence" => "an array",
            "a map" => "an object",
            "unit" => "null",
            e if e.starts_with("struct ") => "an object",
            e => e,
        };
        out.push_str(", expected ");
        out.push_str(plain);
    }
    out
}

/// serde_json appends " at line L column C"; the field path says more to a client. The
/// client's values serde quotes (`` `...` `` or `"..."`) are cut to an excerpt.
fn strip_position(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    bound_quoted(msg)
}

/// `msg` with every quoted part longer than [`crate::limits::ERROR_EXCERPT_CHARS`] cut to an
/// excerpt.
pub fn bound_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(4 * crate::limits::ERROR_EXCERPT_CHARS));
    let mut rest = msg;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        match closing(after, quote) {
            Some(close) => {
                out.push_str(&crate::limits::excerpt(&after[..close]));
                out.push(quote);
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&crate::limits::excerpt(after));
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Where the quote that `quote` opened ends: the next `quote` not escaped by a backslash
/// (serde writes strings with Rust's `{:?}`, and variants raw between backticks).
fn closing(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChatCompletionRequest, EmbedDoc};

    #[test]
    fn a_body_is_parsed_once_and_read_as_the_shape_its_keys_choose() {
        let mut body = JsonBody::parse(br#"{"text": "where", "k": 3}"#).unwrap();
        assert!(body.has("text") && !body.has("messages"));
        assert_eq!(body.get("k"), Some(&serde_json::json!(3)));
        body.insert("embedding", serde_json::json!([0.5, 0.25]));
        let doc: EmbedDoc = body.typed().unwrap();
        assert_eq!(doc.search.k, 3);
        assert_eq!(body.as_map().len(), 3);
    }

    #[test]
    fn bodies_that_are_not_objects_or_not_json_are_refused_as_parse_json_refuses_them() {
        for (bytes, status) in [(&b""[..], 400), (b"  ", 400), (b"{\"a\": ", 400), (b"[1, 2]", 422), (b"\"x\"", 422)] {
            let e = JsonBody::parse(bytes).unwrap_err();
            assert_eq!(e.status(), status, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn a_wrong_field_of_a_flattened_group_is_named() {
        use crate::protocol::{LLMParamsDoc, RetrievalRequest};
        let cases: [(&[u8], &str); 3] = [
            (br#"{"text": "q", "embedding": [0.1], "k": "four"}"#, "k"),
            (br#"{"query": "q", "top_p": "high"}"#, "top_p"),
            (br#"{"embedding": [0.1], "lambda_mult": [1]}"#, "lambda_mult"),
        ];
        for (i, (bytes, field)) in cases.into_iter().enumerate() {
            let body = JsonBody::parse(bytes).unwrap();
            let e = match i {
                0 => body.typed::<EmbedDoc>().unwrap_err(),
                1 => body.typed::<LLMParamsDoc>().unwrap_err(),
                _ => body.typed::<RetrievalRequest>().unwrap_err(),
            };
            match &e {
                ServiceError::InvalidField { field: Some(f), message } => {
                    assert_eq!(f, field);
                    assert!(message.starts_with(&format!("invalid value for '{field}': invalid type")), "{message}");
                }
                other => panic!("expected a 422 naming {field}, got {other:?}"),
            }
        }
        // The groups stay flat on the wire and keep their defaults.
        let doc: EmbedDoc =
            JsonBody::parse(br#"{"text": "q", "embedding": [0.1], "fetch_k": 9}"#).unwrap().typed().unwrap();
        assert_eq!((doc.search.k, doc.search.fetch_k, doc.search.search_type.as_str()), (4, 9, "similarity"));
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!((v["k"].as_u64(), v["fetch_k"].as_u64()), (Some(4), Some(9)));
    }

    #[test]
    fn errors_speak_json_not_rust() {
        let cases: [(&[u8], &str, &str); 4] = [
            (
                br#"{"messages": "hi", "max_tokens": -1}"#,
                "max_tokens",
                "integer `-1`, expected an integer from 0 to 4294967295",
            ),
            (
                br#"{"messages": "hi", "max_tokens": 1.5}"#,
                "max_tokens",
                "invalid type: number `1.5`, expected an integer",
            ),
            (br#"{"messages": "hi", "temperature": "hot"}"#, "temperature", "expected a number"),
            (br#"{"messages": "hi", "logprobs": {"a": 1}}"#, "logprobs", "invalid type: object, expected a boolean"),
        ];
        for (bytes, field, says) in cases {
            let e = JsonBody::parse(bytes).unwrap().typed::<ChatCompletionRequest>().unwrap_err();
            let ServiceError::InvalidField { field: Some(f), message } = &e else { panic!("{e:?}") };
            assert_eq!(f, field);
            assert!(message.contains(says), "{message}");
            for rust in ["u32", "f32", "i64", "floating point", "map,", "struct "] {
                assert!(!message.contains(rust), "{message}");
            }
        }
    }

    #[test]
    fn a_wrong_field_is_named_with_its_path() {
        let body = JsonBody::parse(br#"{"messages": [{"role": 7, "content": "hi"}], "max_tokens": -1}"#).unwrap();
        let e = body.typed::<ChatCompletionRequest>().unwrap_err();
        match &e {
            ServiceError::InvalidField { field: Some(f), message } => {
                assert!(f.starts_with("messages") || f == "max_tokens", "{f}: {message}");
                assert!(!message.contains(" at line "), "{message}");
            }
            other => panic!("expected a 422 naming the field, got {other:?}"),
        }
        let missing = JsonBody::parse(br#"{"text": "q"}"#).unwrap().typed::<EmbedDoc>().unwrap_err();
        assert!(
            matches!(&missing, ServiceError::InvalidField { field: Some(f), .. } if f == "embedding"),
            "{missing:?}"
        );
    }
}
