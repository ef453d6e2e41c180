//! How the driver sends a request: over HTTP for real runs, nowhere for dry runs.

use roster_blocks::http::rate::Permit;
use roster_blocks::http::{self, HttpResponse, SendError};
use roster_blocks::kinds::api::RenderedRequest;
use roster_blocks::preset::Paginate;

use super::credential_cache::Connection;

pub(crate) trait Transport: Sync {
    /// Whether requests go anywhere (a dry run needs no credential and waits on no limit).
    fn sends(&self) -> bool;
    /// Sends one request (all its pages); `None` when nothing was sent.
    async fn send(
        &self,
        connection: Option<&Connection>,
        request: &RenderedRequest,
        paginate: Option<&Paginate>,
        permit: Option<Permit>,
    ) -> Option<Result<HttpResponse, SendError>>;
}

/// Sends over HTTP with the credential's authentication, timeout and rate limit.
pub(crate) struct HttpTransport {
    pub client: reqwest::Client,
}

impl Transport for HttpTransport {
    fn sends(&self) -> bool {
        true
    }

    async fn send(
        &self,
        connection: Option<&Connection>,
        request: &RenderedRequest,
        paginate: Option<&Paginate>,
        permit: Option<Permit>,
    ) -> Option<Result<HttpResponse, SendError>> {
        let credential = connection.map(|c| c.credential.as_ref());
        let timeout = connection.map(|c| c.limits.timeout);
        Some(http::send(&self.client, credential, request, paginate, timeout, permit).await)
    }
}

/// Sends nothing: a dry run shows the request instead.
pub(crate) struct DryTransport;

impl Transport for DryTransport {
    fn sends(&self) -> bool {
        false
    }

    async fn send(
        &self,
        _connection: Option<&Connection>,
        _request: &RenderedRequest,
        _paginate: Option<&Paginate>,
        _permit: Option<Permit>,
    ) -> Option<Result<HttpResponse, SendError>> {
        None
    }
}
