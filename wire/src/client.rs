//! Connecting to a master: JSON-RPC clients with the bearer token set, for the CLI and slaves.

use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use std::time::Duration;

/// Largest JSON-RPC response accepted from a master (a claimed task may carry a 16 MiB upload,
/// hex-encoded; a job's results carry bounded raw data per task).
pub const MAX_RESPONSE_BYTES: u32 = 64 * 1024 * 1024;

/// The master's URL or token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("the token contains characters not allowed in an HTTP header")]
    BadToken,
    #[error("cannot use master URL `{url}`: {detail}")]
    BadUrl { url: String, detail: String },
}

fn headers(token: Option<&str>) -> Result<HeaderMap, ClientSetupError> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientSetupError::BadToken)?;
        headers.insert("authorization", value);
    }
    Ok(headers)
}

/// An HTTP client for `url` (`http://host:port`); `timeout` bounds each call (claims long-poll).
pub fn http_client(
    url: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<HttpClient, ClientSetupError> {
    HttpClientBuilder::default()
        .set_headers(headers(token)?)
        .request_timeout(timeout)
        .max_response_size(MAX_RESPONSE_BYTES)
        .build(url)
        .map_err(|e| ClientSetupError::BadUrl {
            url: url.to_string(),
            detail: e.to_string(),
        })
}

/// A WebSocket client (needed for `subscribe_events`); `url` may be given as `http://`.
pub async fn ws_client(url: &str, token: Option<&str>) -> Result<WsClient, ClientSetupError> {
    let ws_url = if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        url.to_string()
    };
    WsClientBuilder::default()
        .set_headers(headers(token)?)
        .max_response_size(MAX_RESPONSE_BYTES)
        .build(&ws_url)
        .await
        .map_err(|e| ClientSetupError::BadUrl {
            url: ws_url,
            detail: e.to_string(),
        })
}
