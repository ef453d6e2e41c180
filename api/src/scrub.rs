//! Every answer leaves scrubbed of every secret the process knows: JSON as a value (each
//! string on its own), anything else as text.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::ApiError;

pub async fn scrub_answer(response: Response) -> Response {
    let secrets = roster_blocks::redact::process();
    if secrets.is_empty() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("the answer could not be read to scrub it of secrets").into_response();
    };
    let clean = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            if !secrets.scrub_value(&mut value) {
                return Response::from_parts(parts, Body::from(bytes));
            }
            serde_json::to_vec(&value).unwrap_or_default()
        }
        Err(_) => secrets.scrub(&String::from_utf8_lossy(&bytes)).into_owned().into_bytes(),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(clean))
}
