//! RFC 9457 problem details: every error the API answers is `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One invalid input field, for validation errors.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Validation errors, one per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem whose type is named after the status (`.../problems/not-found`).
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        Self {
            kind: format!("https://zivio.dev/problems/{}", slug(title)),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

fn slug(title: &str) -> String {
    title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// What clients are told about an error that layers below the handlers produced with an
/// empty or plain body (unknown route, wrong method, body too large, timeout).
pub fn detail_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "No resource exists at this path.",
        StatusCode::METHOD_NOT_ALLOWED => "This path does not accept this method.",
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than this endpoint accepts.",
        StatusCode::REQUEST_TIMEOUT => "The request took too long.",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "The request body must be JSON (application/json).",
        _ if status.is_server_error() => "The service failed to handle this request.",
        _ => "The request was refused.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_problem_json_with_type_title_status_detail() {
        let problem = Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too big");
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["type"], "https://zivio.dev/problems/payload-too-large");
        assert_eq!(json["title"], "Payload Too Large");
        assert_eq!(json["status"], 413);
        assert_eq!(json["detail"], "too big");
        assert!(json.get("errors").is_none());
        let response = problem.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}
