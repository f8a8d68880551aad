//! Use-case errors as problem documents. Internal errors are logged once with their cause
//! chain; clients see an opaque detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zivio_app::AppError;

use crate::problem::{FieldError, Problem};

/// Wraps `AppError` so handlers can use `?`.
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        Self(error)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self.0 {
            AppError::Unauthenticated(detail) => Problem::new(StatusCode::UNAUTHORIZED, detail),
            AppError::Forbidden(detail) => Problem::new(StatusCode::FORBIDDEN, detail),
            AppError::NotFound(what) => {
                Problem::new(StatusCode::NOT_FOUND, format!("No such {what}."))
            }
            AppError::Validation(errors) => {
                let mut problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, summary(&errors));
                problem.errors = errors.into_iter().map(field).collect();
                problem
            }
            AppError::BadRequest(errors) => {
                let mut problem = Problem::new(StatusCode::BAD_REQUEST, summary(&errors));
                problem.errors = errors.into_iter().map(field).collect();
                problem
            }
            AppError::InvalidParameter(error) => {
                let mut problem = Problem::new(
                    StatusCode::BAD_REQUEST,
                    format!("Query parameter `{}` {}.", error.field, error.message),
                );
                problem.errors = vec![field(error)];
                problem
            }
            AppError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, detail),
            AppError::RateLimited(seconds) => {
                let mut response = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many requests; retry in {seconds} s."),
                )
                .into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(seconds),
                );
                return response;
            }
            AppError::Busy(seconds) => {
                let mut response = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("The service is busy; retry in {seconds} s."),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
            AppError::Unavailable(cause) => {
                tracing::warn!(error = %chain(&cause), "database unavailable");
                let mut response = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is unavailable; retry shortly.",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return response;
            }
            AppError::Internal(cause) => {
                tracing::error!(error = %chain(&cause), "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The service failed to handle this request.",
                )
            }
        };
        problem.into_response()
    }
}

fn field(error: zivio_app::FieldError) -> FieldError {
    FieldError {
        field: error.field,
        message: error.message,
    }
}

fn summary(errors: &[zivio_app::FieldError]) -> String {
    match errors {
        [one] => format!("`{}` {}.", one.field, one.message),
        _ => format!("{} fields are invalid; see `errors`.", errors.len()),
    }
}

/// An error and its sources, one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
