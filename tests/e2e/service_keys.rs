//! Service keys (issue 18): made with `roomcast keys create`, a program
//! posts, edits and deletes in any room as its bot user, over HTTP, with
//! the seq, clientId idempotency and broadcast of a person's message; a
//! key without the scope is refused (403), a revoked one shut out (401).

use clap::Parser;
use reqwest::{Method, StatusCode};
use roomcast_app::{Cli, Command};
use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app};
use crate::http_api::{Api, assert_error_shape, ws};

/// Runs `roomcast keys ARGS` against the app's database, as an operator
/// would (same parsing, same code); returns what it printed.
async fn keys(app: &TestApp, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["roomcast", "keys"];
    argv.extend_from_slice(args);
    let data_dir = app.dir.display().to_string();
    argv.extend(["--data-dir", &data_dir]);
    let url;
    if let Some(u) = &app.database_url {
        url = u.clone();
        argv.extend(["--database-url", &url]);
    }
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let Command::Keys(keys) = cli.command else {
        panic!("parsed as keys")
    };
    let mut out = Vec::new();
    roomcast_app::keys::run(keys.command, &mut out)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8(out).expect("utf-8"))
}

async fn create_key(app: &TestApp, name: &str, scope: &str) -> String {
    let out = keys(app, &["create", name, "--scope", scope])
        .await
        .expect("keys create");
    let key = out.lines().next().expect("the key on the first line");
    assert!(key.starts_with("rk_"), "{out}");
    key.to_owned()
}

#[tokio::test]
async fn a_service_key_posts_edits_and_deletes_in_any_room_as_its_bot() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;
    // A private room the bot takes no part in.
    let (status, _) = api
        .post("/api/rooms", Some(&alice.token), json!({"name": "ops"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut socket = ws(&app, "alice", "ops", &alice.token)
        .await
        .expect("alice connects");
    let (status, first) = api
        .post(
            "/api/rooms/alice/ops/messages",
            Some(&alice.token),
            json!({"body": "deploying?"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(socket.next_json().await["seq"], 1);

    let key = create_key(&app, "deploy-bot", "publish").await;
    let path = "/api/rooms/alice/ops/messages";
    let (status, posted) = api
        .post(
            path,
            Some(&key),
            json!({"body": "v2 is live", "clientId": "deploy-42"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{posted}");
    assert_eq!(posted["user"], "deploy-bot");
    assert_eq!(posted["seq"], 2);
    let heard = socket.next_json().await;
    assert_eq!(heard["action"], "new");
    assert_eq!(heard["user"], "deploy-bot");
    assert_eq!(heard["id"], posted["id"]);
    assert_eq!(heard["seq"], 2);
    assert_eq!(heard["clientId"], "deploy-42");

    // A retry with the same clientId: the original, nothing stored or sent.
    let (status, again) = api
        .post(
            path,
            Some(&key),
            json!({"body": "v2 is live", "clientId": "deploy-42"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], posted["id"]);

    let id = posted["id"].as_str().expect("id");
    let (status, edited, _) = api
        .call(
            Method::PATCH,
            &format!("{path}/{id}"),
            Some(&key),
            Some(json!({"body": "v2.1 is live"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["seq"], 3);
    assert_eq!(edited["edited"], true);
    let heard = socket.next_json().await;
    assert_eq!(
        (&heard["action"], &heard["body"], &heard["seq"]),
        (&json!("update"), &json!("v2.1 is live"), &json!(3)),
        "the retry sent nothing: the next frame is the edit"
    );

    // Only its own messages.
    let alices = first["id"].as_str().expect("id");
    let (status, refused, _) = api
        .call(
            Method::DELETE,
            &format!("{path}/{alices}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"], "You can only delete your own messages.");

    let (status, deleted, _) = api
        .call(Method::DELETE, &format!("{path}/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted, json!({"id": id, "seq": 4}));
    let heard = socket.next_json().await;
    assert_eq!(
        (&heard["action"], &heard["seq"]),
        (&json!("delete"), &json!(4))
    );

    // Alice sees the bot's messages in history like anyone's.
    let (status, history) = api.get(path, &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["last_seq"], 4);
}

#[tokio::test]
async fn keys_are_refused_beyond_their_scope_and_once_revoked() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let alice = api.signup("alice").await;
    api.post("/api/rooms", Some(&alice.token), json!({"name": "ops"}))
        .await;
    let publisher = create_key(&app, "deploy-bot", "publish").await;
    let reader = create_key(&app, "archiver", "read").await;
    let path = "/api/rooms/alice/ops/messages";

    let insufficient = |(status, body): (StatusCode, Value)| {
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "insufficient_scope", "{body}");
        assert_error_shape(&body);
    };
    // A read key cannot post; a publish key cannot read history.
    insufficient(api.post(path, Some(&reader), json!({"body": "hi"})).await);
    insufficient(api.get(path, &publisher).await);
    // Keys are not people: every other endpoint refuses them.
    insufficient(api.get("/api/me", &publisher).await);
    insufficient(
        api.post("/api/rooms", Some(&publisher), json!({"name": "mine"}))
            .await,
    );
    let (status, history) = api.get(path, &reader).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    // Nor do they open sockets: the handshake takes people's tokens only.
    let refused = ws(&app, "alice", "ops", &publisher).await.err();
    assert_eq!(refused.map(|r| r.status), Some(401));
    // No room, no post.
    let (status, _) = api
        .post(
            "/api/rooms/alice/nope/messages",
            Some(&publisher),
            json!({"body": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Unknown keys and revoked ones: 401.
    let unknown = format!("rk_{}", "A".repeat(43));
    let (status, body) = api.post(path, Some(&unknown), json!({"body": "hi"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = api
        .post(path, Some(&publisher), json!({"body": "hi"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let out = keys(&app, &["revoke", "deploy-bot"]).await.expect("revoke");
    assert!(out.contains("revoked"), "{out}");
    let (status, body) = api
        .post(path, Some(&publisher), json!({"body": "hi"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "unauthorized");
    assert!(
        keys(&app, &["revoke", "nobody"]).await.is_err(),
        "no such key"
    );

    // The list names every key and never shows one.
    let listed = keys(&app, &["list"]).await.expect("list");
    assert!(
        listed.contains("deploy-bot") && listed.contains("archiver"),
        "{listed}"
    );
    assert!(!listed.contains("rk_"), "{listed}");
    // A key's name is its bot's username: taken names are refused.
    let taken = keys(&app, &["create", "alice", "--scope", "publish"]).await;
    assert!(taken.is_err_and(|e| e.contains("exists already")));
    // Nobody logs in as a bot.
    let (status, _) = api
        .post(
            "/api/auth/login",
            None,
            json!({"username": "archiver", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
