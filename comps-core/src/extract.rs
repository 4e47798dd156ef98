//! The JSON extractor every handler uses: any parse failure or invalid value becomes the OpenAI
//! error envelope — 400 for malformed JSON, 413 for an oversize body, 422 naming the field for a
//! wrong type, a missing field or an out-of-range value.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ServiceError::PayloadTooLarge("request body is larger than this service's limit".into())
            } else {
                ServiceError::MalformedRequest(format!("could not read the request body: {rejection}"))
            }
        })?;
        let value: T = parse_json(&bytes)?;
        value.validate()?;
        Ok(Json(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
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
            let message = strip_position(&inner.to_string());
            // serde reports a missing field at its parent; name the field itself.
            let field = match message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
                Some(missing) if path == "." => missing.to_string(),
                Some(missing) => format!("{path}.{missing}"),
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
