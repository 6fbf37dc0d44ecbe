//! The built-in web UI, served by the query service at `/`.
//!
//! Three static files from `query/ui/` are compiled into the binary (`include_str!`): no Node build and no
//! files on disk at run time. The UI is plain ES2020 with no dependencies; it calls the same HTTP API as any
//! client (`api/v3/trace-summaries` for search, `api/traces/{id}?adjust=skew` and `api/traces/{id}/analysis` for
//! the trace view, `api/dependencies` for the graph), with relative URLs, so it works behind a reverse proxy that
//! serves the query service under a path prefix.
//!
//! Routes: `GET /` (the page), `GET /static/{app.js,style.css,favicon.svg}`, and Jaeger UI's deep links
//! `/search`, `/trace/{id}`, `/dependencies`, which redirect (303, relative `Location`) to the page's fragment
//! routes `#/search`, `#/trace/{id}`, `#/dependencies`, so links built for Jaeger UI (Grafana's "open in Jaeger")
//! keep working. Every response carries a strong `ETag` (CRC-32 of the content and the crate version) and
//! `Cache-Control: no-cache`, so browsers revalidate and get `304 Not Modified` until the binary changes, and a
//! `Content-Security-Policy` that allows only this origin's scripts, styles and API calls.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file: its bytes, media type and entity tag.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let mut h = crc32fast::Hasher::new();
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(body.as_bytes());
        let etag = HeaderValue::from_str(&format!("\"{:08x}\"", h.finalize()))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Self { body, content_type, etag }
    }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../ui/index.html"), "text/html; charset=utf-8"));
static APP_JS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../ui/app.js"), "text/javascript; charset=utf-8"));
static STYLE_CSS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../ui/style.css"), "text/css; charset=utf-8"));
static FAVICON: LazyLock<Asset> = LazyLock::new(|| Asset::new(include_str!("../ui/favicon.svg"), "image/svg+xml"));

/// Scripts, styles and fetches from this origin only; SVG and `data:` images; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || tag.trim().trim_start_matches("W/").as_bytes() == asset.etag.as_bytes());
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (StatusCode::OK, headers, asset.body).into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let asset = match name.as_str() {
        "app.js" => &*APP_JS,
        "style.css" => &*STYLE_CSS,
        "favicon.svg" => &*FAVICON,
        _ => return (StatusCode::NOT_FOUND, "no such UI asset").into_response(),
    };
    serve(asset, &headers)
}

/// A 303 to `location`, relative to the request's own path so a path prefix added by a proxy is kept.
fn see_other(location: String) -> Response {
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "the link cannot be expressed as a UI route").into_response(),
    }
}

/// Keeps a query string only when it is plain URL-encoded text (it becomes part of a `Location` header).
fn query_suffix(raw: Option<String>) -> String {
    match raw {
        Some(q) if !q.is_empty() && q.bytes().all(|b| b.is_ascii_graphic()) => format!("?{q}"),
        _ => String::new(),
    }
}

async fn search_link(RawQuery(raw): RawQuery) -> Response {
    see_other(format!("./#/search{}", query_suffix(raw)))
}

async fn dependencies_link(RawQuery(raw): RawQuery) -> Response {
    see_other(format!("./#/dependencies{}", query_suffix(raw)))
}

async fn trace_link(Path(id): Path<String>) -> Response {
    // A trace ID is hex; anything else is answered here rather than carried into the page.
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (StatusCode::BAD_REQUEST, "a trace ID is 1 to 32 hex digits").into_response();
    }
    see_other(format!("../#/trace/{id}"))
}

/// The UI's routes, merged into the query router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/static/{name}", get(asset))
        .route("/search", get(search_link))
        .route("/dependencies", get(dependencies_link))
        .route("/trace/{id}", get(trace_link))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn get(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut request = axum::http::Request::get(uri);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        routes::<()>().oneshot(request.body(axum::body::Body::empty()).expect("request")).await.expect("response")
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    }

    #[tokio::test]
    async fn the_page_and_every_asset_it_references_are_served_with_their_types() {
        let page = get("/", None).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY].to_str().expect("csp").contains("script-src 'self'"));
        let html = body(page).await;
        // Every src= and href= in the page names an embedded asset, relative (so a path prefix works).
        let refs: Vec<&str> =
            html.split(['"', '\'']).filter(|s| s.starts_with("static/") || s.starts_with("/static/")).collect();
        assert_eq!(refs.len(), 3, "{refs:?}");
        for r in refs {
            assert!(r.starts_with("static/"), "{r} must be relative");
            let response = get(&format!("/{r}"), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{r}");
            let want = if r.ends_with(".js") {
                "text/javascript"
            } else if r.ends_with(".css") {
                "text/css"
            } else {
                "image/svg+xml"
            };
            assert!(response.headers()[header::CONTENT_TYPE].to_str().expect("type").starts_with(want), "{r}");
            assert!(!body(response).await.is_empty());
        }
        // No inline script or style: the CSP forbids them, so one would silently not run.
        assert!(!html.contains("<script>") && !html.contains("style="), "inline script or style in index.html");
        assert_eq!(get("/static/secret.txt", None).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/static/..%2FCargo.toml", None).await.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304_and_a_stale_one_the_body() {
        let first = get("/static/app.js", None).await;
        let tag = first.headers()[header::ETAG].to_str().expect("etag").to_string();
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let again = get("/static/app.js", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(body(again).await.is_empty());
        let listed = get("/static/app.js", Some(&format!("\"x\", W/{tag}"))).await;
        assert_eq!(listed.status(), StatusCode::NOT_MODIFIED);
        let stale = get("/static/app.js", Some("\"00000000\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
        assert_ne!(tag, get("/static/style.css", None).await.headers()[header::ETAG].to_str().expect("etag"));
    }

    #[tokio::test]
    async fn jaeger_ui_links_redirect_to_the_page_routes() {
        let trace = get("/trace/2ea75461946a7dd10f2c15ab36a076cb", None).await;
        assert_eq!(trace.status(), StatusCode::SEE_OTHER);
        assert_eq!(trace.headers()[header::LOCATION], "../#/trace/2ea75461946a7dd10f2c15ab36a076cb");
        let search = get("/search?service=frontend&limit=20", None).await;
        assert_eq!(search.headers()[header::LOCATION], "./#/search?service=frontend&limit=20");
        assert_eq!(get("/dependencies", None).await.headers()[header::LOCATION], "./#/dependencies");
        assert_eq!(get("/trace/not-hex", None).await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(get(&format!("/trace/{}", "a".repeat(33)), None).await.status(), StatusCode::BAD_REQUEST);
    }
}
