//! Request bodies and queries that, when they do not parse, are answered with an
//! [`ApiError`] saying what was expected.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(JsonRejection::MissingJsonContentType(r)) => Err(ApiError::new(
                r.status(),
                "the request body must be JSON, sent with `Content-Type: application/json`",
            )),
            Err(r) => Err(ApiError::new(
                r.status(),
                format!("the request body is not what this route takes: {}", r.body_text()),
            )),
        }
    }
}

/// A URL query.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Params(value)),
            Err(r @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the query is not what this route takes: {}", r.body_text()),
            )),
            Err(r) => Err(ApiError::new(r.status(), r.body_text())),
        }
    }
}
