//! PROTOCOL.md section 1: who may open a socket, refused before the upgrade.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::harness::{Ws, spawn_app};

fn sign(secret: &[u8], user_id: &str, username: &str, exp_offset_secs: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims =
        json!({"sub": user_id, "username": username, "exp": now + exp_offset_secs, "iat": now});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn handshakes_are_refused_with_the_contract_statuses_and_json_bodies() {
    let app = spawn_app().await;
    let rooms = app.fixture(2, 1).await;
    let (room, member) = (&rooms[0], &rooms[0].members[0]);
    let url = app.ws_url(&room.host, &room.slug);
    let origin = app.origin();
    let secret = app.secret();

    let good = format!("JWT={}", member.token);
    let bad_signature = format!(
        "JWT={}",
        sign(b"not the secret", &member.user_id, &member.username, 3600)
    );
    let expired = format!(
        "JWT={}",
        sign(&secret, &member.user_id, &member.username, -10)
    );
    let alg_none = format!(
        "JWT={}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(
            json!({"sub": member.user_id, "username": member.username, "exp": 4_102_444_800i64})
                .to_string()
                .as_bytes()
        )
    );
    let other = &rooms[1].members[0];
    let non_participant = format!("JWT={}", other.token);
    let unknown_room = app.ws_url(&room.host, "no-such-room");

    /// What is tried, where, with which headers, and the status it must get.
    type Case<'a> = (&'a str, String, Vec<(&'a str, String)>, u16);
    let cases: Vec<Case> = vec![
        (
            "no token",
            url.clone(),
            vec![("Origin", origin.clone())],
            401,
        ),
        (
            "bad signature",
            url.clone(),
            vec![("Cookie", bad_signature), ("Origin", origin.clone())],
            401,
        ),
        (
            "expired",
            url.clone(),
            vec![("Cookie", expired), ("Origin", origin.clone())],
            401,
        ),
        (
            "alg none",
            url.clone(),
            vec![("Cookie", alg_none), ("Origin", origin.clone())],
            401,
        ),
        (
            "garbage bearer",
            url.clone(),
            vec![("Authorization", "Bearer x.y.z".into())],
            401,
        ),
        (
            "foreign origin",
            url.clone(),
            vec![
                ("Cookie", good.clone()),
                ("Origin", "http://evil.example".into()),
            ],
            403,
        ),
        (
            "unknown room",
            unknown_room,
            vec![("Cookie", good.clone()), ("Origin", origin.clone())],
            404,
        ),
        (
            "not a participant",
            url.clone(),
            vec![("Cookie", non_participant), ("Origin", origin.clone())],
            403,
        ),
    ];
    for (what, url, headers, status) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match Ws::connect(&url, &headers).await {
            Ok(_) => panic!("{what}: handshake was accepted"),
            Err(refusal) => {
                assert_eq!(refusal.status, status, "{what}: {:?}", refusal.body);
                assert!(
                    refusal.body["error"]
                        .as_str()
                        .is_some_and(|e| !e.is_empty()),
                    "{what}: {:?}",
                    refusal.body
                );
                assert!(
                    refusal.body["code"].is_string(),
                    "{what}: {:?}",
                    refusal.body
                );
            }
        }
    }
}

#[tokio::test]
async fn a_bearer_token_works_for_services_without_a_cookie_or_origin() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let room = &rooms[0];
    let bearer = format!("Bearer {}", room.members[0].token);
    let mut ws = Ws::connect(
        &app.ws_url(&room.host, &room.slug),
        &[("Authorization", &bearer)],
    )
    .await
    .expect("bearer accepted");
    ws.send_json(json!({"message": "from a service"})).await;
    assert_eq!(ws.next_json().await["body"], "from a service");
}

#[tokio::test]
async fn the_connection_limit_refuses_with_503() {
    let temp = tempfile::tempdir().expect("temp dir");
    let options = crate::harness::Options {
        max_connections: Some(1),
        ..Default::default()
    };
    let app = crate::harness::spawn_app_in(temp.path(), options).await;
    let rooms = app.fixture(1, 2).await;
    let _first = app.connect(&rooms[0], 0).await;
    let room = &rooms[0];
    let cookie = format!("JWT={}", room.members[1].token);
    let refusal = Ws::connect(&app.ws_url(&room.host, &room.slug), &[("Cookie", &cookie)])
        .await
        .err()
        .expect("refused at the limit");
    assert_eq!(refusal.status, 503);
}

#[tokio::test]
async fn the_seed_url_works_with_or_without_a_trailing_slash() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let room = &rooms[0];
    let cookie = format!("JWT={}", room.members[0].token);
    let url = format!("{}/", app.ws_url(&room.host, &room.slug));
    let mut ws = Ws::connect(&url, &[("Cookie", &cookie), ("Origin", &app.origin())])
        .await
        .expect("accepted with a trailing slash");
    ws.send_json(json!({"message": "slash"})).await;
    assert_eq!(ws.next_json().await["body"], "slash");
}
