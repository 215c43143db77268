//! The web dashboard's files, embedded at compile time from `api/dashboard/` (`build.rs`), and
//! the headers every response carries. The page is a client of the REST API: the server builds
//! no HTML from cluster data, so a name or message holding markup can only ever arrive as JSON.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// A file of the dashboard: its path below `/dashboard/`, and its bytes.
pub(crate) type Asset = (&'static str, &'static [u8]);

pub(crate) static EMBEDDED: &[Asset] = include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// Scripts and styles only from the server's own files, nothing inline, nothing from elsewhere,
/// no framing: injected markup could run nothing even if the page rendered some.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes(assets: &'static [Asset]) -> Router {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::permanent("/dashboard/") }),
        )
        .route(
            "/dashboard/",
            get(move || async move { serve(assets, "index.html") }),
        )
        .route(
            "/dashboard/{*path}",
            get(move |Path(path): Path<String>| async move { serve(assets, &path) }),
        )
}

fn serve(assets: &[Asset], path: &str) -> Response {
    let Some((_, bytes)) = assets.iter().find(|(name, _)| *name == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, content_type(path)),
            // Names carry no content hash: the browser asks again each time, and an upgraded
            // controller is never shown with the last version's script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *bytes,
    )
        .into_response()
}

fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The headers of every response, page or API: the policy above, no content sniffing (a JSON
/// answer is never read as HTML), no referrer (a URL never leaves), no framing, and nothing
/// cached that was not marked cacheable (answers hold cluster data).
pub(crate) fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
