//! One error type for every service, mapped once to an HTTP status and the OpenAI envelope
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Every failure a comps service can answer with. Each variant has exactly one status code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The body is not valid JSON (or not the expected content type).
    #[error("{0}")]
    MalformedRequest(String),
    /// A field has the wrong type or an out-of-range value.
    #[error("{message}")]
    InvalidField {
        /// The offending field, dotted path when nested (`messages.0.role`).
        field: Option<String>,
        /// Human readable reason, naming the field.
        message: String,
    },
    /// [`ServiceError::InvalidField`] on an OpenAI route: 400, as OpenAI and vLLM answer it
    /// (the SDKs raise `BadRequestError`); OPEA's FastAPI-shaped routes keep 422.
    #[error("{message}")]
    BadField {
        /// The offending field.
        field: Option<String>,
        /// Human readable reason, naming the field.
        message: String,
    },
    /// Missing or wrong API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The route does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this HTTP method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request names a model this service does not serve (OpenAI's `model_not_found`).
    #[error("{0}")]
    ModelNotFound(String),
    /// The body is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Too many requests in flight; the caller should retry later.
    #[error("{0}")]
    Overloaded(String),
    /// An upstream node answered with an error or unusable data.
    #[error("{0}")]
    Upstream(String),
    /// An upstream node did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// The request took longer than this service allows.
    #[error("{0}")]
    Timeout(String),
    /// The service is starting or shutting down.
    #[error("{0}")]
    NotReady(String),
    /// The model failed on this request (it panicked, or its forward pass returned an error):
    /// 424 Failed Dependency, as TEI answers a backend failure.
    #[error("{0}")]
    ModelFailed(String),
    /// A bug or an unexpected local failure.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// A 422 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField { field: Some(field.into()), message: message.into() }
    }

    /// A 400 naming `field` (a request the API in question answers with 400, not 422).
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadField { field: Some(field.into()), message: message.into() }
    }

    /// This error as an OpenAI route answers it: a bad field is a 400 (see
    /// [`ServiceError::BadField`]); everything else is unchanged.
    pub fn openai(self) -> Self {
        match self {
            Self::InvalidField { field, message } => Self::BadField { field, message },
            other => other,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedRequest(_) | Self::BadField { .. } => StatusCode::BAD_REQUEST,
            Self::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) | Self::ModelNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ModelFailed(_) => StatusCode::FAILED_DEPENDENCY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI `error.type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MalformedRequest(_)
            | Self::InvalidField { .. }
            | Self::BadField { .. }
            | Self::ModelNotFound(_)
            | Self::MethodNotAllowed(_) => "invalid_request_error",
            Self::Unauthorized(_) => "authentication_error",
            Self::NotFound(_) => "not_found_error",
            Self::PayloadTooLarge(_) => "invalid_request_error",
            Self::Overloaded(_) => "rate_limit_error",
            Self::Upstream(_) | Self::UpstreamTimeout(_) => "upstream_error",
            Self::Timeout(_) => "timeout_error",
            Self::NotReady(_) => "service_unavailable",
            Self::ModelFailed(_) => "model_error",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The envelope body for this error.
    pub fn body(&self) -> ErrorResponse {
        let param = match self {
            Self::InvalidField { field, .. } | Self::BadField { field, .. } => field.clone(),
            Self::ModelNotFound(_) => Some("model".into()),
            _ => None,
        };
        // OpenAI's code for an unknown model; the status for everything else, as vLLM sends it.
        let code = match self {
            Self::ModelNotFound(_) => "model_not_found".to_string(),
            _ => self.status().as_u16().to_string(),
        };
        ErrorResponse {
            error: ErrorDetail {
                // Whatever built the message, a client's oversized value is never echoed whole.
                message: crate::limits::excerpt_to(&self.to_string(), crate::limits::ERROR_MESSAGE_CHARS),
                r#type: self.kind().to_string(),
                param,
                code: Some(code),
            },
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        (status, Json(self.body())).into_response()
    }
}

/// The OpenAI error envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The inside of the OpenAI error envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, naming the field when there is one.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `upstream_error`, ...
    #[serde(rename = "type")]
    pub r#type: String,
    /// The offending field.
    pub param: Option<String>,
    /// The HTTP status as a string, as vLLM and TGI send it.
    pub code: Option<String>,
}

/// Result alias for handlers.
pub type ServiceResult<T> = Result<T, ServiceError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_failure_is_a_424_and_a_wrong_method_a_405_each_with_its_own_code() {
        let model = ServiceError::ModelFailed("the encoder panicked".into());
        assert_eq!(model.status(), StatusCode::FAILED_DEPENDENCY);
        let body = model.body().error;
        assert_eq!((body.r#type.as_str(), body.code.as_deref()), ("model_error", Some("424")));
        assert_eq!(body.message, "the encoder panicked");

        let method = ServiceError::MethodNotAllowed("method GET is not allowed for /v1/echo".into());
        assert_eq!(method.status(), StatusCode::METHOD_NOT_ALLOWED);
        let body = method.body().error;
        assert_eq!(
            (body.r#type.as_str(), body.code.as_deref(), body.param),
            ("invalid_request_error", Some("405"), None)
        );
    }

    #[test]
    fn a_bad_field_is_a_400_on_openai_routes_and_a_422_on_opea_ones() {
        let opea = ServiceError::invalid("max_tokens", "invalid value for 'max_tokens': must be at least 1");
        assert_eq!(opea.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let openai = opea.openai();
        assert_eq!(openai.status(), StatusCode::BAD_REQUEST);
        let body = openai.body().error;
        assert_eq!(
            (body.r#type.as_str(), body.param.as_deref(), body.code.as_deref()),
            ("invalid_request_error", Some("max_tokens"), Some("400"))
        );
        assert!(body.message.contains("max_tokens"));
        let other = ServiceError::Overloaded("busy".into()).openai();
        assert_eq!(other.status(), StatusCode::TOO_MANY_REQUESTS, "only bad fields change");
    }
}
