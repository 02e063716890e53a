//! The dashboard: static files embedded in the binary (`crates/codmir-server/dashboard/`),
//! served at `/` and `/dashboard/…` with a policy that lets the page load only its own files
//! and talk only to its own origin. It holds no server-side logic: the page signs in with an
//! API key and uses the public `/v1` API like any client.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Every file, by name: (bytes, content type).
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", include_str!("../../dashboard/app.js"), JS),
    ("lib.js", include_str!("../../dashboard/lib.js"), JS),
    ("life.js", include_str!("../../dashboard/life.js"), JS),
    ("forms.js", include_str!("../../dashboard/forms.js"), JS),
    (
        "settings.js",
        include_str!("../../dashboard/settings.js"),
        JS,
    ),
    (
        "snippets.js",
        include_str!("../../dashboard/snippets.js"),
        JS,
    ),
    (
        "webhooks.js",
        include_str!("../../dashboard/webhooks.js"),
        JS,
    ),
    ("webhook.js", include_str!("../../dashboard/webhook.js"), JS),
    (
        "delivery.js",
        include_str!("../../dashboard/delivery.js"),
        JS,
    ),
    ("events.js", include_str!("../../dashboard/events.js"), JS),
    (
        "style.css",
        include_str!("../../dashboard/style.css"),
        "text/css; charset=utf-8",
    ),
    (
        "icon.svg",
        include_str!("../../dashboard/icon.svg"),
        "image/svg+xml",
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("../../dashboard/index.html");

/// Scripts and styles from this origin only (no inline ones, no `eval`), requests to this
/// origin only, never framed.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Small files that change with the binary: always revalidated, never stale.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(super) async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

pub(super) async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, body, content_type)| page(body, content_type))
        .ok_or(ApiError::NotFound("dashboard file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the page imports is served: a new file must be added to `FILES`.
    #[test]
    fn every_imported_module_is_embedded() {
        for (_, body, _) in FILES.iter().filter(|(_, _, t)| *t == JS) {
            for line in body.lines().filter(|l| l.contains(" from \"./")) {
                let module = line.split("from \"./").nth(1).unwrap_or_default();
                let module = module.split('"').next().unwrap_or_default();
                assert!(
                    FILES.iter().any(|(f, _, _)| *f == module),
                    "{module} is imported but not embedded"
                );
            }
        }
        assert!(INDEX.contains("/dashboard/app.js"));
    }
}
