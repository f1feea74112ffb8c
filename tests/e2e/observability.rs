//! What operators see: JSON access logs of a request and of a socket's
//! life, request ids, and CORS for the HTTP API.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use roomcast_app::LogFormat;
use serde_json::{Value, json};

use crate::harness::{Options, spawn_app, spawn_app_in, spawn_node};
use crate::http_api::{Api, ws};

/// Everything the process logs, as the binary's JSON subscriber writes it.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber =
            roomcast_app::logging::subscriber(LogFormat::Json, None, move || Capture(sink.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logged lines that `matches` picks, once there are `want` of them.
async fn lines(want: usize, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
    let logs = captured();
    for _ in 0..100 {
        let found: Vec<Value> = {
            let bytes = logs.lock().expect("logs").clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("every line is one JSON object"))
                .filter(|l| matches(l))
                .collect()
        };
        if found.len() >= want {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {want} matching log lines");
}

#[tokio::test]
async fn json_logs_tell_a_requests_and_a_sockets_life() {
    captured();
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("logsalice").await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    let request_id = format!("logs-{}", uuid::Uuid::new_v4());

    let me = client
        .get(format!("{base}/api/me"))
        .bearer_auth(&alice.token)
        .header("x-request-id", &request_id)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);
    assert_eq!(me.headers()["x-request-id"], request_id.as_str());
    let user_id = me.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Without one, the server makes one up.
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert!(!health.headers()["x-request-id"].is_empty());

    let access = lines(1, |l| {
        l["span"]["request_id"] == request_id.as_str() && l["message"] == "request"
    })
    .await;
    let line = &access[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["status"], 200);
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["span"]["method"], "GET");
    assert_eq!(line["span"]["route"], "/api/me");
    assert_eq!(line["span"]["user_id"], user_id.as_str());

    api.post("/api/rooms", Some(&alice.token), json!({"name": "logs"}))
        .await;
    let mut socket = ws(&app, "logsalice", "logs", &alice.token)
        .await
        .expect("connect");
    assert_eq!(socket.close_with(4000).await.0, Some(4000));
    let opened = lines(1, |l| {
        l["message"] == "socket opened" && l["user_id"] == user_id.as_str()
    })
    .await;
    assert_eq!(opened[0]["room"], "logsalice/logs");
    assert_eq!(opened[0]["span"]["route"], "/ws/chat/{host}/{slug}");
    let closed = lines(1, |l| {
        l["message"] == "socket closed" && l["user_id"] == user_id.as_str()
    })
    .await;
    assert_eq!(closed[0]["code"], 4000, "{}", closed[0]);
    assert_eq!(closed[0]["reason"], "bye");
    assert!(closed[0]["duration_ms"].as_f64().is_some());

    // Never a token or a password.
    let all = String::from_utf8_lossy(&captured().lock().expect("logs")).into_owned();
    assert!(!all.contains(&alice.token), "a token was logged");
    assert!(
        !all.contains("correct horse battery"),
        "a password was logged"
    );
}

#[tokio::test]
async fn cors_is_off_by_default_and_allows_listed_origins_with_credentials() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let preflight = |base: String| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/api/me"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "GET")
            .send()
    };
    let off = preflight(format!("http://{}", app.addr))
        .await
        .expect("preflight");
    assert!(off.headers().get("access-control-allow-origin").is_none());

    let temp = tempfile::tempdir().expect("temp dir");
    let options = Options {
        cors_origins: vec!["https://app.example.com".into()],
        ..Options::default()
    };
    let on = spawn_app_in(temp.path(), options).await;
    let base = format!("http://{}", on.addr);
    let answer = preflight(base.clone()).await.expect("preflight");
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(answer.headers()["access-control-allow-credentials"], "true");
    let other = client
        .get(format!("{base}/healthz"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_fresh_server_exposes_every_documented_metric_with_its_help() {
    let app = spawn_app().await;
    let text = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for (name, kind, _, _) in roomcast_transport::metrics::CATALOGUE {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP line for {name}:\n{text}"
        );
        let sample = match kind {
            roomcast_transport::metrics::Kind::Histogram
            | roomcast_transport::metrics::Kind::Sizes => format!("{name}_bucket{{"),
            _ => name.to_string(),
        };
        assert!(
            text.lines().any(|l| l.starts_with(&sample)),
            "no sample of {name}:\n{text}"
        );
    }
    // Latencies are histograms with millisecond buckets, not summaries.
    assert!(text.contains("# TYPE roomcast_storage_write_duration_seconds histogram"));
    assert!(text.contains("le=\"0.001\""), "{text}");
    // Batch sizes count writes: their buckets are sizes, not seconds.
    assert!(
        text.contains("roomcast_storage_batch_size_bucket{le=\"512\"}"),
        "{text}"
    );
    assert!(text.contains("roomcast_build_info{version="), "{text}");
}

#[tokio::test]
async fn metrics_bind_serves_metrics_on_their_own_listener_and_not_on_the_public_one() {
    let temp = tempfile::tempdir().expect("temp dir");
    let app = spawn_node(temp.path(), |args| {
        args.metrics_bind = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let metrics = app.server().metrics_addr().expect("a metrics listener");
    assert_ne!(metrics, app.addr);

    let private = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .expect("metrics listener");
    assert_eq!(private.status(), 200);
    let text = private.text().await.expect("text");
    assert!(text.contains("# HELP roomcast_connections "), "{text}");

    let public = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .expect("public listener");
    assert_eq!(public.status(), 404);
    // The metrics listener serves nothing else.
    let other = reqwest::get(format!("http://{metrics}/api/me"))
        .await
        .expect("metrics listener");
    assert_eq!(other.status(), 404);
}
