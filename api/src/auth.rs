//! Bearer-token authentication: every route but `GET /v1/health` needs the token from the
//! home's `api.token`, compared in constant time.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiState;
use crate::error::ApiError;

/// Equal-length comparison that looks at every byte, so timing says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn authenticate(State(api): State<ApiState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let refused = match given {
        Some(token) if same(token.trim().as_bytes(), api.token.as_bytes()) => return next.run(request).await,
        Some(_) => "the bearer token is wrong (see HOME/api.token)",
        None => "send `Authorization: Bearer <token>` (the token is in HOME/api.token)",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, refused).into_response()
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_match_only_byte_for_byte() {
        assert!(same(b"s3cret-token", b"s3cret-token"));
        assert!(!same(b"s3cret-token", b"s3cret-tokeN"));
        assert!(!same(b"s3cret", b"s3cret-token"));
        assert!(!same(b"", b"x"));
    }
}
