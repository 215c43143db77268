//! What the two providers share: building a reqwest client and mapping its errors.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::ProviderError;

/// Credentials the controller resolved from the spec's Secret references.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No authentication.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    // Never print secrets into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => write!(f, "None"),
            Credentials::Bearer(_) => write!(f, "Bearer(<redacted>)"),
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
        }
    }
}

/// Installs ring as rustls' process-wide provider (reqwest is built without one); a provider
/// installed earlier by someone else is kept.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is then in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

pub(crate) fn build_client(
    timeout: Duration,
    headers: &[(String, String)],
    ca_cert_pem: Option<&[u8]>,
) -> Result<reqwest::Client, ProviderError> {
    ensure_crypto_provider();
    let mut header_map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|error| ProviderError::Config(format!("header name {name:?}: {error}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|error| ProviderError::Config(format!("header {name} value: {error}")))?;
        header_map.append(name, value);
    }
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(header_map);
    if let Some(pem) = ca_cert_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|error| ProviderError::Config(format!("CA certificate: {error}")))?;
        if certificates.is_empty() {
            return Err(ProviderError::Config(
                "CA certificate: no PEM certificate found".to_owned(),
            ));
        }
        // Only the given CA is trusted, so a private Prometheus cannot be impersonated by any
        // public certificate.
        builder = builder.tls_certs_only(certificates);
    }
    builder
        .build()
        .map_err(|error| ProviderError::Config(format!("HTTP client: {error}")))
}

pub(crate) fn request_error(url: &str, timeout: Duration, error: &reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout {
            url: url.to_owned(),
            after: timeout,
        }
    } else if error.is_builder() {
        ProviderError::Config(format!("{url}: {error}"))
    } else {
        ProviderError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(error),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &str) -> String {
    const LIMIT: usize = 300;
    match body.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_owned(),
    }
}
