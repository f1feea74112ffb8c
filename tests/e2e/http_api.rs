//! PROTOCOL.md section 6: the HTTP API, over real HTTP, together with the
//! WebSocket it feeds.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, Ws, spawn_app};

/// A signed-up user as the API returned them.
pub(crate) struct Account {
    pub username: String,
    pub token: String,
    pub refresh: String,
}

/// A small HTTP client for the API (also used by `rooms.rs`).
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub(crate) fn new(app: &TestApp) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{}", app.addr),
        }
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value, headers)
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, v, _) = self
            .call(reqwest::Method::GET, path, Some(token), None)
            .await;
        (s, v)
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let (s, v, _) = self
            .call(reqwest::Method::POST, path, token, Some(body))
            .await;
        (s, v)
    }

    /// Logs the token's session out; the status says whether it did.
    pub(crate) async fn logout(&self, token: &str) -> StatusCode {
        let (status, _, _) = self
            .call(reqwest::Method::POST, "/api/auth/logout", Some(token), None)
            .await;
        status
    }

    pub(crate) async fn signup(&self, username: &str) -> Account {
        let (status, body, headers) = self
            .call(
                reqwest::Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"username": username, "email": format!("{username}@Example.com"), "password": "correct horse battery", "name": username.to_uppercase()})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["user"]["username"], username);
        let cookie = headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("cookie set");
        assert!(
            cookie.starts_with("JWT=")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        Account {
            username: username.into(),
            token: body["token"].as_str().expect("token").into(),
            refresh: body["refresh"].as_str().expect("refresh").into(),
        }
    }
}

pub(crate) fn assert_error_shape(body: &Value) {
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );
}

pub(crate) async fn ws(
    app: &TestApp,
    host: &str,
    slug: &str,
    token: &str,
) -> Result<Ws, crate::harness::Refusal> {
    Ws::connect(
        &app.ws_url(host, slug),
        &[
            ("Cookie", &format!("JWT={token}")),
            ("Origin", &app.origin()),
        ],
    )
    .await
}

#[tokio::test]
async fn two_people_sign_up_make_a_room_and_chat() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;

    let (status, me) = api.get("/api/me", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "alice");
    assert_eq!(me["name"], "ALICE");

    let (status, room) = api
        .post(
            "/api/rooms",
            Some(&alice.token),
            json!({"name": "Book Club!", "visibility": "public"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    assert_eq!(room["visibility"], "public");
    assert_eq!(room["slug"], "book-club");
    assert_eq!(room["host"], "alice");
    assert_eq!(room["participants_count"], 1);
    let (status, again) = api
        .post(
            "/api/rooms",
            Some(&alice.token),
            json!({"name": "x", "slug": "book-club"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error_shape(&again);

    // Bob is not in yet: no socket, no history.
    assert_eq!(
        ws(&app, "alice", "book-club", &bob.token)
            .await
            .err()
            .map(|r| r.status),
        Some(403)
    );
    let (status, body) = api
        .get("/api/rooms/alice/book-club/messages", &bob.token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error_shape(&body);
    // Only the host adds participants.
    let (status, _, _) = api
        .call(
            reqwest::Method::PUT,
            "/api/rooms/alice/book-club/participants/alice",
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, detail, _) = api
        .call(
            reqwest::Method::PUT,
            "/api/rooms/alice/book-club/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let names: Vec<&str> = detail["participants"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["username"].as_str())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(detail["last_seq"], 0);

    let mut alice_ws = ws(&app, "alice", "book-club", &alice.token)
        .await
        .expect("alice connects");
    let mut bob_ws = ws(&app, "alice", "book-club", &bob.token)
        .await
        .expect("bob connects");
    alice_ws
        .send_json(json!({"type": "text", "message": "hi bob"}))
        .await;
    assert_eq!(bob_ws.next_json().await["body"], "hi bob");
    assert_eq!(alice_ws.next_json().await["body"], "hi bob");

    // A post over HTTP is broadcast like a frame, and honours clientId.
    let (status, posted) = api
        .post(
            "/api/rooms/alice/book-club/messages",
            Some(&bob.token),
            json!({"body": "hi alice", "clientId": "b-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{posted}");
    assert_eq!(posted["seq"], 2);
    assert_eq!(posted["user"], "bob");
    let live = alice_ws.next_json().await;
    assert_eq!(live["id"], posted["id"]);
    assert_eq!(live["clientId"], "b-1");
    let (status, dup) = api
        .post(
            "/api/rooms/alice/book-club/messages",
            Some(&bob.token),
            json!({"body": "hi alice", "clientId": "b-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dup["id"], posted["id"]);
    let (status, long) = api
        .post(
            "/api/rooms/alice/book-club/messages",
            Some(&bob.token),
            json!({"body": "x".repeat(501)}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        long,
        json!({"error": "Message exceeds 500 characters.", "code": "too_long"})
    );

    let (status, rooms) = api.get("/api/rooms", &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rooms.as_array().map(Vec::len), Some(1));
    let (_, detail) = api.get("/api/rooms/alice/book-club", &bob.token).await;
    assert_eq!(detail["last_seq"], 2);
    assert_eq!(detail["participants_count"], 2);
}

#[tokio::test]
async fn history_pages_back_across_250_messages() {
    let app = crate::harness::spawn_unlimited_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;
    api.post(
        "/api/rooms",
        Some(&alice.token),
        json!({"name": "log", "slug": "log"}),
    )
    .await;
    let mut ids = Vec::new();
    let mut socket = ws(&app, "alice", "log", &alice.token)
        .await
        .expect("connect");
    for i in 0..250 {
        socket.send_json(json!({"message": format!("m{i}")})).await;
        ids.push(socket.next_json().await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut before: Option<Value> = None;
    loop {
        let path = match &before {
            None => "/api/rooms/alice/log/messages?limit=100".to_owned(),
            Some(id) => format!(
                "/api/rooms/alice/log/messages?limit=100&before={}",
                id.as_str().expect("id")
            ),
        };
        let (status, page) = api.get(&path, &alice.token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["last_seq"], 250);
        let messages = page["messages"].as_array().expect("messages").clone();
        if messages.is_empty() {
            break;
        }
        assert!(messages.len() <= 100);
        let seqs: Vec<u64> = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "oldest first within a page"
        );
        before = Some(messages[0]["id"].clone());
        let mut page_ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        page_ids.extend(seen);
        seen = page_ids;
    }
    assert_eq!(seen, ids);
    let (status, capped) = api
        .get("/api/rooms/alice/log/messages?limit=1000", &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(capped["messages"].as_array().map(Vec::len), Some(100));
    let (status, bad) = api
        .get("/api/rooms/alice/log/messages?before=nope", &alice.token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error_shape(&bad);
}

#[tokio::test]
async fn refresh_tokens_rotate_reuse_is_refused_and_logout_revokes() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;

    let (status, wrong) = api
        .post(
            "/api/auth/login",
            None,
            json!({"username": "alice", "password": "wrong password"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, nobody) = api
        .post(
            "/api/auth/login",
            None,
            json!({"username": "nobody", "password": "wrong password"}),
        )
        .await;
    assert_eq!(
        wrong, nobody,
        "login errors never say whether the user exists"
    );
    let (status, by_email) = api
        .post(
            "/api/auth/login",
            None,
            json!({"email": "ALICE@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{by_email}");
    assert_eq!(by_email["user"]["username"], alice.username);

    let (status, rotated) = api
        .post("/api/auth/refresh", None, json!({"refresh": alice.refresh}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_refresh = rotated["refresh"].as_str().expect("refresh").to_owned();
    assert_ne!(new_refresh, alice.refresh);
    let (status, me) = api
        .get("/api/me", rotated["token"].as_str().expect("token"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "alice");
    // The old one again: refused, and the session it belongs to is revoked.
    let (status, reused) = api
        .post("/api/auth/refresh", None, json!({"refresh": alice.refresh}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error_shape(&reused);
    let (status, _) = api
        .post("/api/auth/refresh", None, json!({"refresh": new_refresh}))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a replay revokes the whole family"
    );

    // Logout revokes the session's refresh token and clears the cookie.
    let login = by_email;
    let (status, _, headers) = api
        .call(
            reqwest::Method::POST,
            "/api/auth/logout",
            Some(login["token"].as_str().expect("token")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cookie = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie");
    assert!(
        cookie.starts_with("JWT=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    let (status, _) = api
        .post(
            "/api/auth/refresh",
            None,
            json!({"refresh": login["refresh"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn removing_a_participant_closes_their_live_socket_with_1008() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;
    let bob = api.signup("bob").await;
    api.post(
        "/api/rooms",
        Some(&alice.token),
        json!({"name": "team", "visibility": "public"}),
    )
    .await;
    let (status, _) = api
        .post("/api/rooms/alice/team/join", Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut bob_ws = ws(&app, "alice", "team", &bob.token)
        .await
        .expect("bob connects");
    let mut alice_ws = ws(&app, "alice", "team", &alice.token)
        .await
        .expect("alice connects");

    let (status, _, _) = api
        .call(
            reqwest::Method::DELETE,
            "/api/rooms/alice/team/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(bob_ws.closed().await, Some(1008));
    assert_eq!(
        ws(&app, "alice", "team", &bob.token)
            .await
            .err()
            .map(|r| r.status),
        Some(403)
    );
    // Alice stays connected and unaffected.
    alice_ws.send_json(json!({"message": "still here"})).await;
    assert_eq!(alice_ws.next_json().await["body"], "still here");

    // Removed means banned: the public room is closed to bob until alice
    // adds him back.
    let (status, _) = api
        .post("/api/rooms/alice/team/join", Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = api
        .call(
            reqwest::Method::PUT,
            "/api/rooms/alice/team/participants/bob",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Leaving closes one's own sockets too.
    let mut bob_ws = ws(&app, "alice", "team", &bob.token)
        .await
        .expect("bob is back");
    let (status, _) = api
        .post("/api/rooms/alice/team/leave", Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(bob_ws.closed().await, Some(1008));
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (client.post(format!("{base}/api/auth/register")).header("content-type", "application/json").body("{not json"), 400),
        (client.post(format!("{base}/api/auth/register")).json(&json!({"username": 5, "email": "a@b", "password": "x"})), 400),
        (client.post(format!("{base}/api/auth/register")).json(&json!({"username": "Bad Name", "email": "a@b.c", "password": "long enough"})), 400),
        (client.post(format!("{base}/api/auth/register")).json(&json!({"username": "alice", "email": "other@b.c", "password": "long enough"})), 409),
        (client.post(format!("{base}/api/auth/register")).json(&json!({"username": "alice", "email": "ALICE@example.com", "password": "long enough"})), 409),
        (client.post(format!("{base}/api/rooms")).bearer_auth(&alice.token).json(&json!({"name": "x".repeat(100_000)})), 413),
        (client.get(format!("{base}/api/me")), 401),
        (client.get(format!("{base}/api/me")).bearer_auth("nope"), 401),
        (client.get(format!("{base}/api/rooms/alice/none")).bearer_auth(&alice.token), 404),
        (client.get(format!("{base}/api/nothing-here")), 404),
        (client.delete(format!("{base}/api/me")), 405),
    ];
    for (i, (request, status)) in cases.into_iter().enumerate() {
        let response = request.send().await.expect("request");
        assert_eq!(response.status().as_u16(), status, "case {i}");
        let body: Value = response.json().await.expect("JSON error body");
        assert_error_shape(&body);
    }
    // A body that is not JSON by its Content-Type is 415 with its own code.
    let response = client
        .post(format!("{base}/api/auth/login"))
        .header("content-type", "text/plain")
        .body(r#"{"username":"alice","password":"x"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 415);
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["code"], "unsupported_media_type", "{body}");
}

#[tokio::test]
async fn operations_endpoints_report_health_metrics_and_the_api() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;
    api.post("/api/rooms", Some(&alice.token), json!({"name": "ops"}))
        .await;
    let mut socket = ws(&app, "alice", "ops", &alice.token)
        .await
        .expect("connect");
    socket.send_json(json!({"message": "counted"})).await;
    socket.next_json().await;
    assert_eq!(
        ws(&app, "alice", "ops", "bad-token")
            .await
            .err()
            .map(|r| r.status),
        Some(401)
    );

    let client = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "roomcast_events_stored_total",
        "roomcast_handshake_refusals_total",
        "roomcast_connections",
        "roomcast_http_request_duration_seconds",
        "roomcast_events_broadcast_total",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from /metrics:\n{metrics}"
        );
    }

    let doc: Value = client
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')));
    let paths = doc["paths"].as_object().expect("paths");
    for route in [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/me",
        "/api/rooms",
        "/api/rooms/{host}/{slug}",
        "/api/rooms/{host}/{slug}/join",
        "/api/rooms/{host}/{slug}/leave",
        "/api/rooms/{host}/{slug}/participants/{username}",
        "/api/rooms/{host}/{slug}/messages",
        "/healthz",
        "/readyz",
        "/metrics",
        "/ws/chat/{host}/{slug}",
        "/api/openapi.json",
    ] {
        assert!(
            paths.contains_key(route),
            "{route} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn the_api_docs_page_is_served_from_the_binary() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    let page = client
        .get(format!("{base}/api/docs"))
        .send()
        .await
        .expect("docs");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    let html = page.text().await.expect("html");
    // Every script and style sheet comes from this server.
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "init.js"] {
        assert!(html.contains(&format!("/api/docs/{asset}")), "{asset}");
        let response = client
            .get(format!("{base}/api/docs/{asset}"))
            .send()
            .await
            .expect("asset");
        assert_eq!(response.status(), 200, "{asset}");
        assert!(!response.text().await.expect("text").is_empty(), "{asset}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let missing = client
        .get(format!("{base}/api/docs/nothing.js"))
        .send()
        .await
        .expect("missing asset");
    assert_eq!(missing.status(), 404);
}
