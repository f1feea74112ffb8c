//! The web client (`web/`, a Vue app) served at `/`: its built files
//! (`web/dist`, committed) are embedded in the binary, so `cargo run` needs
//! no Node.
//!
//! It is the router's fallback: every path no route claims. The app's own
//! routes (`/`, `/rooms/{host}/{slug}`, ...) get `index.html`, which is never
//! cached, so a new release shows at once; hashed files under `/assets/` are
//! cached for good (`immutable`): their name changes with their content.
//! Text files are sent gzip-compressed to clients that accept it,
//! compressed once on first use. `/api/...` and `/ws/...` paths that no
//! route claims stay the API's JSON 404, never the app's page.

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use include_dir::{Dir, include_dir};

static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web/dist");

/// Hashed build outputs: their content never changes under one name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page that names the current hashed files: always asked again.
const NO_CACHE: &str = "no-cache, no-store, must-revalidate";

/// Serves the web app for whatever path no other route answered.
pub(crate) async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if is_server_path(path) {
        return crate::http::not_found().await;
    }
    if method != Method::GET && method != Method::HEAD {
        return crate::http::method_not_allowed().await;
    }
    let relative = path.trim_start_matches('/');
    let file = match DIST.get_file(relative) {
        Some(file) if !relative.is_empty() => file,
        // A missing hashed file is an error, not the app's page.
        _ if relative.starts_with("assets/") => return crate::http::not_found().await,
        _ => match DIST.get_file("index.html") {
            Some(index) => index,
            None => return crate::http::not_found().await,
        },
    };
    let name = file.path().to_str().unwrap_or_default();
    asset(name, file.contents(), accepts_gzip(&headers))
}

/// Paths that belong to the server, not to the app.
fn is_server_path(path: &str) -> bool {
    ["/api", "/ws"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

fn asset(name: &str, contents: &'static [u8], gzip: bool) -> Response {
    let content_type = content_type(name);
    let cache = if name.starts_with("assets/") {
        IMMUTABLE
    } else {
        NO_CACHE
    };
    let compressed = if gzip { gzipped(name) } else { None };
    let mut response = match compressed {
        Some(bytes) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        None => (StatusCode::OK, contents).into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The gzip form of an embedded text file (compressed once, then kept),
/// or `None` for a file not worth compressing.
fn gzipped(name: &str) -> Option<&'static [u8]> {
    static CACHE: OnceLock<HashMap<&'static str, Vec<u8>>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            all_files(&DIST)
                .into_iter()
                .filter_map(|file| {
                    let name = file.path().to_str()?;
                    if !compressible(name) || file.contents().len() < 256 {
                        return None;
                    }
                    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
                    encoder.write_all(file.contents()).ok()?;
                    Some((name, encoder.finish().ok()?))
                })
                .collect()
        })
        .get(name)
        .map(Vec::as_slice)
}

/// Every file under `dir`, at any depth.
fn all_files(dir: &'static Dir<'static>) -> Vec<&'static include_dir::File<'static>> {
    let mut files: Vec<_> = dir.files().collect();
    for sub in dir.dirs() {
        files.extend(all_files(sub));
    }
    files
}

/// Whether `Accept-Encoding` allows gzip (not refused with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn extension(name: &str) -> &str {
    name.rsplit_once('.')
        .map(|(_, ext)| ext)
        .unwrap_or_default()
}

fn content_type(name: &str) -> &'static str {
    match extension(name) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(name: &str) -> bool {
    matches!(
        extension(name),
        "html" | "js" | "mjs" | "css" | "json" | "map" | "svg" | "txt"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).expect("header"),
        );
        h
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip(&headers("gzip, deflate, br")));
        assert!(accepts_gzip(&headers("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("br, deflate")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn server_paths_are_never_the_app() {
        for path in ["/api", "/api/", "/api/nope", "/ws", "/ws/chat/a/b/c"] {
            assert!(is_server_path(path), "{path}");
        }
        for path in ["/", "/rooms/alice/den", "/apis", "/wsx", "/assets/x.js"] {
            assert!(!is_server_path(path), "{path}");
        }
    }

    #[test]
    fn the_built_app_is_embedded_with_its_entry_page() {
        let index = DIST.get_file("index.html").expect("web/dist/index.html");
        let html = std::str::from_utf8(index.contents()).expect("utf-8");
        assert!(html.contains("/assets/"), "index.html names hashed assets");
        assert!(gzipped("index.html").is_some());
        assert_eq!(
            content_type("assets/index-1.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("assets/index-1.css"),
            "text/css; charset=utf-8"
        );
    }
}
