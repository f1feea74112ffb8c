//! The web client served by the binary at `/` (issue 14): the embedded
//! build, its caching and compression, and the paths it must not take over.

use std::io::Read;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::Value;

use crate::harness::spawn_app;

fn header(res: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_app_is_served_at_the_root_and_for_its_own_routes_uncached() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    for path in ["/", "/rooms/alice/book-club", "/some/page"] {
        let res = http
            .get(format!("http://{}{path}", app.addr))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&res, CONTENT_TYPE), "text/html; charset=utf-8");
        assert!(header(&res, CACHE_CONTROL).contains("no-cache"), "{path}");
        let html = res.text().await.expect("body");
        assert!(html.contains(r#"<div id="app">"#), "{path}");
    }
}

#[tokio::test]
async fn hashed_assets_are_immutable_and_gzipped_when_accepted() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    let html = http
        .get(&base)
        .send()
        .await
        .expect("index")
        .text()
        .await
        .expect("body");
    let script = html
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .expect("index.html names its script");
    let plain = http
        .get(format!("{base}{script}"))
        .send()
        .await
        .expect("asset");
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(
        header(&plain, CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert!(header(&plain, CACHE_CONTROL).contains("immutable"));
    assert_eq!(header(&plain, CONTENT_ENCODING), "");
    let plain = plain.bytes().await.expect("body");

    let zipped = http
        .get(format!("{base}{script}"))
        .header(ACCEPT_ENCODING, "gzip, deflate, br")
        .send()
        .await
        .expect("asset");
    assert_eq!(header(&zipped, CONTENT_ENCODING), "gzip");
    assert!(header(&zipped, CACHE_CONTROL).contains("immutable"));
    let zipped = zipped.bytes().await.expect("body");
    assert!(zipped.len() < plain.len() / 2, "compressed");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .expect("valid gzip");
    assert_eq!(unzipped, plain);

    let missing = http
        .get(format!("{base}/assets/nope-123.js"))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_websocket_and_operator_paths_keep_their_own_answers() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    for path in ["/api/nope", "/api", "/ws/nope", "/ws/chat/a/b/c/d"] {
        let res = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(header(&res, CONTENT_TYPE).starts_with("application/json"));
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["code"], "not_found", "{path}");
    }
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(header(&health, CONTENT_TYPE).starts_with("application/json"));
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert!(header(&metrics, CONTENT_TYPE).starts_with("text/plain"));
    let me = http.get(format!("{base}/api/me")).send().await.expect("me");
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
}
